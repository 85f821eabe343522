"""Overhead of SCNP on one InstanSeg training step, side by side in one run.

Run: ``python benchmarks/bench_losses.py [--quick] [--device cpu|cuda]``

One step = InstanSeg_UNet at upstream's default size (layers 32-64-128-256, 5 output
channels) forward on a batch of 3 RGB 256x256 images of touching nuclei, the InstanSeg
loss from ``make_loss`` (l1_distance seed, lovasz_hinge mask, window_size 128 as in
upstream's train.py), backward and an Adam step. Every setting starts each step from the
same weights and RNG state, so all do the same work but SCNP's; settings are interleaved
and the median per setting is compared with ``scnp="off"``.

A whole step is ~100x longer than SCNP's share of it, so step-time differences sink in
the machine's noise. The benchmark therefore also attributes time exactly: it profiles
the loss alone (forward + backward from a fixed network output) and sums the time spent
in the SCNP operator's forward and backward (``SameClassMax``), reported against the
step time with ``scnp="off"``.
"""

from __future__ import annotations

import argparse
import copy
import platform
import statistics
import time

import numpy as np
import torch
from instanseg.utils.models.InstanSeg_UNet import InstanSeg_UNet

from instanseg_scnp import make_loss

SETTINGS = [("off", 3), ("mask", 3), ("seed", 3), ("mask+seed", 3), ("mask", 9), ("seed", 9), ("mask+seed", 9)]


def touching_nuclei(batch: int, size: int, rng: np.random.Generator) -> tuple[torch.Tensor, torch.Tensor]:
    """Images (B, 3, H, W) and instance labels (B, 1, H, W) of ~80 touching ellipses each."""
    yy, xx = np.mgrid[:size, :size]
    labels = np.zeros((batch, size, size), np.int64)
    for b in range(batch):
        for k in range(1, 81):
            cy, cx = rng.uniform(0, size, 2)
            ry, rx = rng.uniform(6, 14, 2)
            labels[b][((yy - cy) / ry) ** 2 + ((xx - cx) / rx) ** 2 < 1] = k
    images = (labels > 0)[:, None].repeat(3, axis=1) + rng.normal(0, 0.3, (batch, 3, size, size))
    return torch.from_numpy(images).float(), torch.from_numpy(labels)[:, None]


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--device", default="cpu", help="torch device (default: %(default)s)")
    parser.add_argument("--quick", action="store_true", help="2 rounds instead of 7")
    args = parser.parse_args(argv)
    device = torch.device(args.device)
    rounds = 2 if args.quick else 7

    torch.manual_seed(0)
    images, labels = touching_nuclei(3, 256, np.random.default_rng(0))
    images, labels = images.to(device), labels.to(device)
    model = InstanSeg_UNet(in_channels=3, out_channels=[[2, 2, 1]], layers=[256, 128, 64, 32]).to(device)
    losses = {s: make_loss(scnp=s[0], window=s[1], n_sigma=2, window_size=128, device=device) for s in SETTINGS}
    for loss in losses.values():
        loss.initialize_pixel_classifier(model)  # the first call creates the shared pixel classifier
    initial = copy.deepcopy(model.state_dict())

    def step(loss) -> float:
        model.load_state_dict(initial)
        optimizer = torch.optim.Adam(model.parameters(), lr=1e-3)
        torch.manual_seed(1)
        _sync(device)
        start = time.perf_counter()
        value = loss(model(images), labels.clone())
        optimizer.zero_grad()
        value.backward()
        optimizer.step()
        _sync(device)
        return time.perf_counter() - start

    with torch.no_grad():
        prediction = model(images)

    def scnp_time(loss) -> float:
        """Seconds spent in the SCNP operator during the loss's forward and backward."""
        output = prediction.clone().requires_grad_()
        torch.manual_seed(1)
        with torch.profiler.profile() as profile:
            loss(output, labels.clone()).backward()
            _sync(device)
        events = [e for e in profile.key_averages() if e.key in ("SameClassMax", "SameClassMaxBackward")]
        return sum(e.cpu_time_total + e.device_time_total for e in events) * 1e-6

    for loss in losses.values():  # warm-up
        step(loss)
    step_times = {s: [] for s in SETTINGS}
    scnp_times = {s: [] for s in SETTINGS}
    for round_ in range(rounds):  # rotate the order, so no setting always runs first
        for setting in SETTINGS[round_ % len(SETTINGS) :] + SETTINGS[: round_ % len(SETTINGS)]:
            step_times[setting].append(step(losses[setting]))
            scnp_times[setting].append(scnp_time(losses[setting]))

    name = torch.cuda.get_device_name(device) if device.type == "cuda" else platform.processor() or platform.machine()
    print(f"device: {device} ({name}), torch {torch.__version__}, threads {torch.get_num_threads()}, rounds {rounds}")
    step_off = statistics.median(step_times[("off", 3)])
    print("| scnp | w | step (ms) | step vs off | SCNP operator (ms) | SCNP operator / step |")
    print("|---|---|---|---|---|---|")
    for setting in SETTINGS:
        target, window = setting
        step_ms, scnp_ms = statistics.median(step_times[setting]), statistics.median(scnp_times[setting])
        print(
            f"| {target} | {'-' if target == 'off' else window} | {step_ms * 1e3:.0f} | {step_ms / step_off - 1:+.1%} "
            f"| {scnp_ms * 1e3:.1f} | {scnp_ms / step_off:.2%} |"
        )


def _sync(device):
    if device.type == "cuda":
        torch.cuda.synchronize()


if __name__ == "__main__":
    main()
