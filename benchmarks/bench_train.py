"""Training throughput: upstream InstanSeg's loss in a plain loop vs this package's training step, one run.

Run: ``python benchmarks/bench_train.py [--device cpu|cuda] [--quick]``

Both loops train the same model (same initial weights, a fresh Adam each round)
on the same tiles: the synthetic dataset through upstream's augmentations
(:class:`instanseg_scnp.training.samples.Tiles`), loaded by the same
``DataLoader`` settings, so data loading is part of what is timed. They differ
only in the step:

- ``upstream``: images to the device, network, upstream's ``InstanSeg.forward``
  loss (the SCNP hook's per-image callables where SCNP is on), backward, Adam,
  ``loss.item()``: what upstream's ``scripts/train.py`` does per batch;
- ``ours``: :func:`instanseg_scnp.training.fit.train_step` with the loss
  ``train`` builds (the batched loss, gradient clipping, the non-finite guard).

Rounds alternate between the two; tiles/s is the median over rounds. A second
pass times each phase of one step with a synchronization between phases
(data wait, network, seed loss, mask loss, backward, optimizer; the SCNP
operator's share from ``torch.profiler``), and one validation pass. On CUDA it
also reports the GPU busy fraction (the profiled kernel time over the wall time
of the same steps), kernel launches and host-device synchronizations per step.
"""

from __future__ import annotations

import argparse
import contextlib
import copy
import platform
import statistics
import tempfile
import time
from pathlib import Path

import torch
from torch.utils.data import DataLoader

from instanseg_scnp.data import synthetic_dataset
from instanseg_scnp.training import TrainConfig
from instanseg_scnp.training.distributed import Process
from instanseg_scnp.training.fit import _validate, train_step
from instanseg_scnp.training.samples import Tiles, collate, epoch_plan
from instanseg_scnp.training.setup import N_SIGMA, set_up
from instanseg_scnp.upstream import make_loss


def build_run(args, folder: Path):
    """A real run set up by ``train``'s own code on a synthetic dataset (nothing trained yet)."""
    data = folder / "synthetic.pth"
    torch.save(synthetic_dataset(n_train=16, n_validation=args.batch_size, n_test=1,
                                 shape=(args.tile_size * 2, args.tile_size * 2), rng=0), data)
    config = TrainConfig(data=str(data), out=folder / "run", preset=args.preset, device=args.device,
                         batch_size=args.batch_size, tile_size=args.tile_size, workers=args.workers, scnp=args.scnp,
                         precision=args.precision)
    return set_up(config, Process(torch.device(args.device)), out=config.out, overwrite=False, resuming=False)


def upstream_loss(run):
    """Upstream's own ``InstanSeg.forward`` with the run's losses, sharing the run's pixel classifier."""
    config = run.config
    loss = make_loss(seed_loss=config.seed_loss, mask_loss=config.mask_loss, scnp=config.scnp,
                     window=config.scnp_window, mode=config.scnp_mode, device=run.process.device, n_sigma=N_SIGMA,
                     window_size=config.window_size, batched=False)
    loss.initialize_pixel_classifier(run.model)
    return loss


def upstream_step(run, loss_fn, optimizer, images, labels) -> float:
    """One step as upstream's train.py takes it."""
    device = run.process.device
    images, labels = images.to(device), labels.to(device)
    loss = loss_fn(run.model(images), labels).mean()
    optimizer.zero_grad()
    loss.backward()
    optimizer.step()
    return loss.item()


def batches(run, tiles, steps: int, epoch: int):
    config = run.config
    plan = epoch_plan(len(tiles), steps * config.batch_size, seed=config.seed, epoch=epoch)
    return DataLoader(tiles, batch_size=config.batch_size, sampler=plan, collate_fn=collate,
                      num_workers=config.workers, pin_memory=run.process.device.type == "cuda")


def timed_round(run, name, loss_fn, tiles, steps, epoch, initial) -> float:
    """Tiles per second of ``steps`` steps of one loop, data loading included."""
    run.model.load_state_dict(initial)
    run.model.train()
    if name == "ours":
        run.optimizer.state.clear()
        step = lambda images, labels: train_step(run, images, labels)  # noqa: E731
    else:
        optimizer = torch.optim.Adam(run.model.parameters(), lr=run.config.lr)
        step = lambda images, labels: upstream_step(run, loss_fn, optimizer, images, labels)  # noqa: E731
    torch.manual_seed(epoch)
    _sync(run)
    start = time.perf_counter()
    for images, labels in batches(run, tiles, steps, epoch):
        step(images, labels)
    _sync(run)
    return steps * run.config.batch_size / (time.perf_counter() - start)


def phase_times(run, loss_fn, tiles, steps: int, *, batched: bool) -> dict[str, float]:
    """Median seconds per phase of one step, synchronized between phases."""
    model, device = run.model, run.process.device
    optimizer = run.optimizer if batched else torch.optim.Adam(model.parameters(), lr=run.config.lr)
    times = {key: [] for key in ("data", "network", "seed loss", "mask loss", "backward", "optimizer", "SCNP")}
    loader = iter(batches(run, tiles, steps, epoch=99))
    for _ in range(steps):
        _sync(run)
        start = time.perf_counter()
        images, labels = next(loader)
        images, labels = images.to(device, non_blocking=True), labels.to(device, non_blocking=True)
        times["data"].append(_lap(run, start))
        start = time.perf_counter()
        output = model(images)
        times["network"].append(_lap(run, start))
        start = time.perf_counter()
        with _seed_only(loss_fn):
            loss_fn(output.detach(), labels.clone()).mean()
        times["seed loss"].append(_lap(run, start))
        start = time.perf_counter()
        with torch.profiler.profile() as profile:
            loss = loss_fn(output, labels.clone()).mean()
            forward = _lap(run, start)
            start = time.perf_counter()
            optimizer.zero_grad()
            loss.backward()
            times["backward"].append(_lap(run, start))
        times["mask loss"].append(forward - times["seed loss"][-1])
        times["SCNP"].append(sum(e.cpu_time_total + e.device_time_total for e in profile.key_averages()
                                 if e.key in ("SameClassMax", "SameClassMaxBackward")) * 1e-6)
        start = time.perf_counter()
        optimizer.step()
        times["optimizer"].append(_lap(run, start))
    return {key: statistics.median(values) for key, values in times.items()}


@contextlib.contextmanager
def _seed_only(loss_fn):
    """Upstream's forward skips the instance-mask loss when its instance weight is 0."""
    weight, loss_fn.instance_weight = loss_fn.instance_weight, 0
    try:
        yield
    finally:
        loss_fn.instance_weight = weight


def gpu_profile(run, step, tiles, steps: int) -> dict[str, float]:
    """The GPU busy fraction (kernel time over wall time) of ``steps`` profiled steps, and per step the
    kernel launches and the host-device synchronizations (CUDA only)."""
    with torch.profiler.profile(activities=[torch.profiler.ProfilerActivity.CPU,
                                            torch.profiler.ProfilerActivity.CUDA]) as profile:
        _sync(run)
        start = time.perf_counter()
        for images, labels in batches(run, tiles, steps, epoch=98):
            step(images, labels)
        _sync(run)
        wall = time.perf_counter() - start
    events = profile.key_averages()
    kernel_us = sum(e.self_device_time_total for e in events if e.device_type.name == "CUDA")
    calls = {e.key: e.count for e in events}
    launches = sum(count for key, count in calls.items() if key.startswith("cudaLaunchKernel"))
    syncs = calls.get("cudaStreamSynchronize", 0) + calls.get("cudaDeviceSynchronize", 0)
    return {"busy": kernel_us * 1e-6 / wall, "launches": launches / steps, "syncs": syncs / steps}


def _lap(run, start: float) -> float:
    _sync(run)
    return time.perf_counter() - start


def _sync(run) -> None:
    if run.process.device.type == "cuda":
        torch.cuda.synchronize()


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--device", default="cpu", help="torch device (default: %(default)s)")
    parser.add_argument("--preset", default="upstream", help="training recipe (default: %(default)s)")
    parser.add_argument("--batch-size", type=int, default=8, help="tiles per step (default: %(default)s)")
    parser.add_argument("--tile-size", type=int, default=256, help="tile side, px (default: %(default)s)")
    parser.add_argument("--scnp", default="mask", help="SCNP target (default: %(default)s)")
    parser.add_argument("--precision", default="fp32", help="ours: autocast precision (default: %(default)s)")
    parser.add_argument("--workers", type=int, default=2, help="data-loading workers (default: %(default)s)")
    parser.add_argument("--steps", type=int, default=6, help="steps per timed round (default: %(default)s)")
    parser.add_argument("--rounds", type=int, default=3, help="rounds per loop (default: %(default)s)")
    parser.add_argument("--quick", action="store_true", help="64 px tiles, batch 2, 2 rounds of 2 steps")
    args = parser.parse_args(argv)
    if args.quick:
        args.tile_size, args.batch_size, args.steps, args.rounds = 64, 2, 2, 2

    with tempfile.TemporaryDirectory() as folder:
        run = build_run(args, Path(folder))
        ours, upstream = run.loss_fn, upstream_loss(run)
        tiles = Tiles(run.dataset["Train"], run.config.tile_size, train=True)
        initial = copy.deepcopy(run.model.state_dict())
        loops = {"upstream": upstream, "ours": ours}
        for name, loss_fn in loops.items():  # warm-up
            timed_round(run, name, loss_fn, tiles, 1, 0, initial)
        rates = {name: [] for name in loops}
        for round_ in range(args.rounds):
            for name in loops if round_ % 2 == 0 else reversed(loops):
                rates[name].append(timed_round(run, name, loops[name], tiles, args.steps, round_ + 1, initial))
        phases = {name: phase_times(run, loss_fn, tiles, args.steps, batched=name == "ours")
                  for name, loss_fn in loops.items()}
        val_tiles = Tiles(run.dataset["Validation"], run.config.tile_size, train=False)
        start = time.perf_counter()
        _validate(run, val_tiles)
        validation = time.perf_counter() - start
        gpu = {}
        if run.process.device.type == "cuda":
            optimizer = torch.optim.Adam(run.model.parameters(), lr=run.config.lr)
            gpu = {"upstream": gpu_profile(run, lambda x, y: upstream_step(run, upstream, optimizer, x, y), tiles,
                                           args.steps),
                   "ours": gpu_profile(run, lambda x, y: train_step(run, x, y), tiles, args.steps)}

    device = run.process.device
    name = torch.cuda.get_device_name(device) if device.type == "cuda" else platform.processor() or platform.machine()
    config = run.config
    print(f"device: {device} ({name}), torch {torch.__version__}, threads {torch.get_num_threads()}, "
          f"workers {config.workers}; preset {config.preset}: UNet {list(config.layers)}, batch {config.batch_size} x "
          f"{config.tile_size}^2, {config.seed_loss} seed + {config.mask_loss} mask, scnp={config.scnp} "
          f"w={config.scnp_window}, precision {config.precision}; {args.rounds} rounds x {args.steps} steps")
    print("| loop | tiles/s | vs upstream |" + (" GPU busy | launches/step | host syncs/step |" if gpu else ""))
    print("|---|---|---|" + ("---|---|---|" if gpu else ""))
    base = statistics.median(rates["upstream"])
    for loop in loops:
        rate = statistics.median(rates[loop])
        row = f"| {loop} | {rate:.1f} | {rate / base:.2f}x |"
        if gpu:
            row += f" {gpu[loop]['busy']:.0%} | {gpu[loop]['launches']:.0f} | {gpu[loop]['syncs']:.0f} |"
        print(row)
    print()
    keys = list(phases["ours"])
    print("| phase (ms per step) | " + " | ".join(loops) + " |")
    print("|---|" + "---|" * len(loops))
    for key in keys:
        print(f"| {key} | " + " | ".join(f"{phases[loop][key] * 1e3:.1f}" for loop in loops) + " |")
    print(f"\nvalidation pass ({len(val_tiles)} tiles, loss + upstream postprocessing + F1): {validation:.2f} s")


if __name__ == "__main__":
    main()
