"""Upstream InstanSeg's per-image loss forward vs the batched one, forward + backward, side by side.

Run: ``python benchmarks/bench_batched_loss.py [--quick] [--device cpu|cuda] [--rounds N]``

The inputs are upstream's training size: a batch of 8 RGB 256x256 images of ~80 touching
nuclei each (``touching_nuclei`` of ``bench_losses.py``), the output of InstanSeg_UNet at
upstream's default size (layers 32-64-128-256, 5 channels) on them, computed once; the loss
is ``make_loss`` with the l1_distance seed loss, the lovasz_hinge mask loss and window_size 128
(upstream's train.py), without SCNP and with SCNP on both terms. Each timed call is the loss
forward from that fixed output plus the backward into it and into the pixel classifier, with
the same RNG seed; the two implementations alternate, and the medians are compared.

With ~80 nuclei per image every image exceeds upstream's cap of 50 instances, so the two
draw different random subsets of nuclei and the printed values differ a little; the work is
the same (50 instances and at most 50 crops per image).
"""

from __future__ import annotations

import argparse
import platform
import statistics
import time
from pathlib import Path

import numpy as np
import torch
from bench_losses import touching_nuclei
from instanseg.utils.models.InstanSeg_UNet import InstanSeg_UNet

from instanseg_scnp import make_loss

BATCH, SIZE, WINDOW_SIZE = 8, 256, 128
SETTINGS = ("off", "mask+seed")


def cpu_model() -> str:
    """The CPU's model name from /proc/cpuinfo (Linux), else what platform knows."""
    cpuinfo = Path("/proc/cpuinfo")
    if cpuinfo.exists():
        for line in cpuinfo.read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    return platform.processor() or platform.machine()


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--device", default="cpu", help="torch device (default: %(default)s)")
    parser.add_argument("--quick", action="store_true", help="2 rounds and one setting")
    parser.add_argument("--rounds", type=int, default=5, help="timed rounds per setting (default: %(default)s)")
    args = parser.parse_args(argv)
    device = torch.device(args.device)
    rounds = 2 if args.quick else args.rounds
    settings = SETTINGS[:1] if args.quick else SETTINGS

    torch.manual_seed(0)
    images, labels = touching_nuclei(BATCH, SIZE, np.random.default_rng(0))
    images, labels = images.to(device), labels.to(device)
    model = InstanSeg_UNet(in_channels=3, out_channels=[[2, 2, 1]], layers=[256, 128, 64, 32]).to(device)
    losses = {}
    for setting in settings:
        for batched in (False, True):
            loss = make_loss(scnp=setting, n_sigma=2, window_size=WINDOW_SIZE, device=device, batched=batched)
            loss.initialize_pixel_classifier(model)  # the first call creates the shared pixel classifier
            losses[setting, batched] = loss
    with torch.no_grad():
        prediction = model(images)

    def run(loss) -> tuple[float, float]:
        output = prediction.clone().requires_grad_()
        model.zero_grad(set_to_none=True)
        torch.manual_seed(1)
        _sync(device)
        start = time.perf_counter()
        value = loss(output, labels.clone())
        value.backward()
        _sync(device)
        return time.perf_counter() - start, value.item()

    for loss in losses.values():  # warm-up
        run(loss)
    times = {key: [] for key in losses}
    values = {}
    for round_ in range(rounds):
        keys = list(losses) if round_ % 2 == 0 else list(losses)[::-1]  # alternate which runs first
        for key in keys:
            times[key].append(run(losses[key])[0])
    for key, loss in losses.items():
        values[key] = run(loss)[1]

    name = torch.cuda.get_device_name(device) if device.type == "cuda" else cpu_model()
    print(f"device: {device} ({name}), torch {torch.__version__}, threads {torch.get_num_threads()}, "
          f"rounds {rounds}, batch {BATCH} x {SIZE}^2, window_size {WINDOW_SIZE}")
    print("| scnp | upstream forward+backward (ms) | batched (ms) | speed-up | loss upstream / batched |")
    print("|---|---|---|---|---|")
    for setting in settings:
        upstream_ms = statistics.median(times[setting, False]) * 1e3
        batched_ms = statistics.median(times[setting, True]) * 1e3
        print(f"| {setting} | {upstream_ms:.0f} | {batched_ms:.0f} | {upstream_ms / batched_ms:.2f}x "
              f"| {values[setting, False]:.4f} / {values[setting, True]:.4f} |")


def _sync(device):
    if device.type == "cuda":
        torch.cuda.synchronize()


if __name__ == "__main__":
    main()
