"""SCNP operator vs the published two-max-pool formula: time and memory, side by side.

Run: ``python benchmarks/bench_scnp.py [--quick] [--device cpu|cuda]``

For each case it times forward+backward of ours, once per engine of the device
(CPU: separable; CUDA: the fused Triton kernels and max_pool), and of the
published formula, in the same process (interleaved, median of repeats), and
measures the bytes each saves for backward with
``torch.autograd.graph.saved_tensors_hooks``. Ratios < 1 mean ours is smaller.
"""

from __future__ import annotations

import argparse
import contextlib
import platform
import statistics
import time

import torch
import torch.nn.functional as F

from instanseg_scnp import _pooling, scnp

DEVICE_ENGINES = {"cpu": ("separable",), "cuda": ("triton", "max_pool")}
"""Engines timed per device type (others: max_pool)."""

PUBLISHED_SENTINEL = 9999.0


def published_scnp(logits: torch.Tensor, target: torch.Tensor, window: int) -> torch.Tensor:
    """The formula as published (arXiv:2603.18671 reference code): two max-pools and a ±9999 sentinel."""
    pool = F.max_pool2d if logits.ndim == 4 else F.max_pool3d
    t = target.to(logits.dtype)
    fg_min = -pool(-(logits * t + PUBLISHED_SENTINEL * (1 - t)), window, 1, window // 2)
    bg_max = pool(logits * (1 - t) - PUBLISHED_SENTINEL * t, window, 1, window // 2)
    return fg_min * t + bg_max * (1 - t)


def saved_bytes(fn, logits, target) -> int:
    """Bytes of distinct storages kept for backward by ``fn(logits, target)``."""
    storages = {}

    def pack(tensor):
        storage = tensor.untyped_storage()
        storages[storage.data_ptr()] = storage.nbytes()
        return tensor

    with torch.autograd.graph.saved_tensors_hooks(pack, lambda t: t):
        fn(logits, target)
    return sum(storages.values())


def time_forward_backward(fn, logits, target, repeats: int) -> list[float]:
    times = []
    for _ in range(repeats):
        logits.grad = None
        _sync(logits)
        start = time.perf_counter()
        fn(logits, target).sum().backward()
        _sync(logits)
        times.append(time.perf_counter() - start)
    return times


def _sync(tensor):
    if tensor.is_cuda:
        torch.cuda.synchronize()


@contextlib.contextmanager
def forced_engine(device: torch.device, name: str):
    """Run ``scnp`` on ``device`` with engine ``name``, with no fallback."""
    previous = _pooling.ENGINES.get(device.type)
    _pooling.ENGINES[device.type] = getattr(_pooling, f"_{name}_engine")
    try:
        yield
    finally:
        if previous is None:
            del _pooling.ENGINES[device.type]
        else:
            _pooling.ENGINES[device.type] = previous


def available_engines(device: torch.device) -> list[str]:
    """The device's engines that run here; says why one is left out."""
    names = []
    for name in DEVICE_ENGINES.get(device.type, ("max_pool",)):
        z = torch.randn(1, 1, 8, 8, device=device, requires_grad=True)
        try:
            with forced_engine(device, name):
                scnp(z, z > 0, 3).sum().backward()
        except (ImportError, _pooling.KernelError) as error:
            print(f"{name} engine left out: {error}")
            continue
        names.append(name)
    return names


def run_case(shape, window, device, repeats, engines):
    """Median fwd+bwd seconds and saved bytes per engine name, and for ``"published"``."""
    generator = torch.Generator().manual_seed(0)
    logits = torch.randn(shape, generator=generator).to(device).requires_grad_()
    target = (torch.rand(shape, generator=generator) > 0.5).to(device)
    published = lambda z, y: published_scnp(z, y, window)  # noqa: E731

    def ours(name):
        def run(z, y):
            with forced_engine(device, name):
                return scnp(z, y, window)

        return run

    fns = {name: ours(name) for name in engines} | {"published": published}
    expected = published(logits, target)
    for name in engines:
        with torch.no_grad():
            assert torch.equal(fns[name](logits, target), expected), f"{name}: outputs differ without autograd"
        assert torch.equal(fns[name](logits, target), expected), f"{name}: outputs differ"
    for fn in fns.values():  # warm-up (and Triton's compilation)
        time_forward_backward(fn, logits, target, 2)
    times = {name: [] for name in fns}
    for _ in range(repeats):  # interleave so machine noise hits all alike
        for name, fn in fns.items():
            times[name] += time_forward_backward(fn, logits, target, 1)
    return {name: (statistics.median(times[name]), saved_bytes(fn, logits, target)) for name, fn in fns.items()}


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--device", default="cpu", help="torch device (default: %(default)s)")
    parser.add_argument("--quick", action="store_true", help="fewer repeats and smaller 3D volume")
    args = parser.parse_args(argv)
    repeats = 5 if args.quick else 15
    cases = [((8, 2, 256, 256), w) for w in (3, 5, 9)]
    cases += [(shape, w) for shape in ((4, 2, 512, 512), (16, 1, 128, 128)) for w in (3, 9)]
    side = 48 if args.quick else 64
    cases += [((2, 2, side, side, side), w) for w in (3, 5, 9)]
    device = torch.device(args.device)
    name = torch.cuda.get_device_name(device) if device.type == "cuda" else platform.processor() or platform.machine()
    engines = available_engines(device)
    print(f"device: {device} ({name}), torch {torch.__version__}, threads {torch.get_num_threads()}")
    print("| shape | w | engine | ours fwd+bwd (ms) | published (ms) | time ratio | saved MB ours "
          "| saved MB published | memory ratio |")
    print("|---|---|---|---|---|---|---|---|---|")
    for shape, window in cases:
        results = run_case(shape, window, device, repeats, engines)
        t_pub, m_pub = results.pop("published")
        for engine, (t_ours, m_ours) in results.items():
            print(
                f"| {'x'.join(map(str, shape))} | {window} | {engine} | {t_ours * 1e3:.2f} | {t_pub * 1e3:.2f} | "
                f"{t_ours / t_pub:.2f} | {m_ours / 2**20:.1f} | {m_pub / 2**20:.1f} | {m_ours / m_pub:.3f} |"
            )


if __name__ == "__main__":
    main()
