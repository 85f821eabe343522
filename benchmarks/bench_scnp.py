"""SCNP operator vs the published two-max-pool formula: time and memory, side by side.

Run: ``python benchmarks/bench_scnp.py [--quick] [--device cpu|cuda]``

For each case it times forward+backward of both in the same process (interleaved,
median of repeats) and measures the bytes each saves for backward with
``torch.autograd.graph.saved_tensors_hooks``. Ratios < 1 mean ours is smaller.
"""

from __future__ import annotations

import argparse
import platform
import statistics
import time

import torch
import torch.nn.functional as F

from instanseg_scnp import scnp
from instanseg_scnp._pooling import ENGINES, _max_pool_engine

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


def run_case(shape, window, device, repeats):
    generator = torch.Generator().manual_seed(0)
    logits = torch.randn(shape, generator=generator).to(device).requires_grad_()
    target = (torch.rand(shape, generator=generator) > 0.5).to(device)
    ours = lambda z, y: scnp(z, y, window)  # noqa: E731
    published = lambda z, y: published_scnp(z, y, window)  # noqa: E731
    with torch.no_grad():
        assert torch.equal(ours(logits, target), published(logits, target)), "outputs differ"
    for fn in (ours, published):  # warm-up
        time_forward_backward(fn, logits, target, 2)
    t_ours, t_pub = [], []
    for _ in range(repeats):  # interleave so machine noise hits both alike
        t_ours += time_forward_backward(ours, logits, target, 1)
        t_pub += time_forward_backward(published, logits, target, 1)
    m_ours, m_pub = saved_bytes(ours, logits, target), saved_bytes(published, logits, target)
    return statistics.median(t_ours), statistics.median(t_pub), m_ours, m_pub


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--device", default="cpu", help="torch device (default: %(default)s)")
    parser.add_argument("--quick", action="store_true", help="fewer repeats and smaller 3D volume")
    args = parser.parse_args(argv)
    repeats = 5 if args.quick else 15
    cases = [((8, 2, 256, 256), w) for w in (3, 5, 9)]
    side = 48 if args.quick else 64
    cases += [((2, 2, side, side, side), w) for w in (3, 5, 9)]
    device = torch.device(args.device)
    name = torch.cuda.get_device_name(device) if device.type == "cuda" else platform.processor() or platform.machine()
    engine = ENGINES.get(device.type, _max_pool_engine).__name__.strip("_")
    print(f"device: {device} ({name}), torch {torch.__version__}, threads {torch.get_num_threads()}, {engine}")
    print("| shape | w | ours fwd+bwd (ms) | published (ms) | time ratio | saved MB ours | saved MB published | memory ratio |")
    print("|---|---|---|---|---|---|---|---|")
    for shape, window in cases:
        t_ours, t_pub, m_ours, m_pub = run_case(shape, window, device, repeats)
        print(
            f"| {'x'.join(map(str, shape))} | {window} | {t_ours * 1e3:.1f} | {t_pub * 1e3:.1f} | "
            f"{t_ours / t_pub:.2f} | {m_ours / 2**20:.1f} | {m_pub / 2**20:.1f} | {m_ours / m_pub:.3f} |"
        )


if __name__ == "__main__":
    main()
