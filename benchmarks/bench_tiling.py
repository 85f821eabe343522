"""Tiled vs whole-image inference: wall time and peak memory (RSS), side by side in one run.

Run: ``python benchmarks/bench_tiling.py [--quick] [--model RUN_DIR] [--tile-size 512]``

On synthetic fluorescence images (``instanseg_scnp.data.synthetic_image``) it runs
:func:`instanseg_scnp.upstream.segment` and :func:`~instanseg_scnp.upstream.model_outputs`
whole-image at the smaller size (2048 px) and tiled at both (2048 and 4096 px; the whole
4096 px image is left out: upstream's postprocessing of it, with the crops of ~16,000
seeds, is what tiling is for). Each run is a fresh process, so its peak RSS
(``ru_maxrss``) is its own; the image is made once and read from disk. It reports the
peak RSS and its rise over the process's RSS just before inference (model and image
loaded), and, where a size runs both ways, how far the tiled output is from the
whole-image one.

Without ``--model`` it trains a tiny batch-norm model for seconds, as the tests do
(``tests/upstream/test_tiling.py``): a smoke test. Its instance masks fill their whole
crop, so upstream's postprocessing (merging overlapping masks) dominates its times; pass
a trained run for representative figures (docs/evaluation.md's came from
``instanseg-scnp train --preset demo --norm BATCH``).
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import resource
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import torch

MODES = ("segment", "model_outputs")


def child(args) -> None:
    """One measured run; prints a JSON line."""
    from instanseg_scnp.upstream import load_model, model_outputs, segment

    model = load_model(args.model)
    image = np.load(args.image)
    rss_before = _rss_mib()
    tile = None if args.child_tile == 0 else args.child_tile
    kwargs = {} if args.seed_threshold is None else {"seed_threshold": args.seed_threshold}
    calls = []
    start = time.perf_counter()
    if args.child == "segment":
        labels = segment(model, image, tile_size=tile, progress=lambda *a: calls.append(a), **kwargs)
        seeds = None
    else:
        out = model_outputs(model, image, tile_size=tile, progress=lambda *a: calls.append(a), **kwargs)
        labels, seeds = out.labels, out.seed_logits
    seconds = time.perf_counter() - start
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024  # KiB on Linux
    np.save(args.save + "_labels.npy", labels)
    if seeds is not None:
        np.save(args.save + "_seeds.npy", seeds)
    print(json.dumps({"seconds": seconds, "peak_mib": peak, "before_mib": rss_before, "tiles": len(calls),
                      "cells": int(len(np.unique(labels)) - 1)}))


def _rss_mib() -> float:
    with open("/proc/self/statm") as statm:
        return int(statm.read().split()[1]) * os.sysconf("SC_PAGE_SIZE") / 2**20


def run(args, mode: str, image: Path, tile: int | None, save: str) -> dict:
    command = [sys.executable, __file__, "--child", mode, "--child-tile", str(tile or 0), "--image", str(image),
               "--model", str(args.model), "--save", save]
    if args.seed_threshold is not None:
        command += ["--seed-threshold", str(args.seed_threshold)]
    result = subprocess.run(command, capture_output=True, text=True, check=False)
    if result.returncode != 0:
        raise RuntimeError(f"{mode} tile={tile} failed:\n{result.stderr[-3000:]}")
    return json.loads(result.stdout.strip().splitlines()[-1])


def tiny_model(folder: Path) -> Path:
    import warnings

    import instanseg_scnp

    out = folder / "tiny-batch-norm"
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        instanseg_scnp.train(out=out, epochs=4, hotstart=1, epoch_length=16, tile_size=64, layers=(8, 16),
                             window_size=32, device="cpu", norm="BATCH")
    return out


def compare(folder: Path, mode: str, size: int) -> str:
    """How far the tiled output is from the whole-image one (same size)."""
    whole = np.load(folder / f"{mode}_{size}_whole_labels.npy")
    tiled = np.load(folder / f"{mode}_{size}_tiled_labels.npy")
    text = f"foreground agrees on {np.mean((whole > 0) == (tiled > 0)):.4f} of pixels"
    if mode == "model_outputs":
        whole_seeds, tiled_seeds = (np.load(folder / f"{mode}_{size}_{run}_seeds.npy") for run in ("whole", "tiled"))
        diff = np.abs(whole_seeds - tiled_seeds)
        text = f"max |Δ seed logit| {diff.max():.1e}; " + text
    return text


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", help="run directory or instanseg.pt (default: train a tiny model)")
    parser.add_argument("--tile-size", type=int, default=512, help="tile_size of the tiled runs (default: %(default)s)")
    parser.add_argument("--whole-sizes", default="2048", help="image sides run whole (default: %(default)s)")
    parser.add_argument("--tiled-sizes", default="2048,4096", help="image sides run tiled (default: %(default)s)")
    parser.add_argument("--modes", default=",".join(MODES), help="segment, model_outputs or both")
    parser.add_argument("--seed-threshold", type=float, help="upstream's seed_threshold (default: the model's)")
    parser.add_argument("--quick", action="store_true", help="512 whole, 512 and 1024 tiled, tile 256")
    parser.add_argument("--child", choices=MODES, help=argparse.SUPPRESS)
    parser.add_argument("--child-tile", type=int, help=argparse.SUPPRESS)
    parser.add_argument("--image", help=argparse.SUPPRESS)
    parser.add_argument("--save", help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.child:
        child(args)
        return
    if args.quick:
        args.whole_sizes, args.tiled_sizes, args.tile_size = "512", "512,1024", 256
    whole_sizes = [int(s) for s in args.whole_sizes.split(",") if s]
    tiled_sizes = [int(s) for s in args.tiled_sizes.split(",") if s]
    modes = [m for m in args.modes.split(",") if m]
    with tempfile.TemporaryDirectory() as temp:
        folder = Path(temp)
        if args.model is None:
            start = time.perf_counter()
            args.model = tiny_model(folder)
            print(f"tiny model trained in {time.perf_counter() - start:.0f} s")
        cpu = platform.processor() or platform.machine()
        try:
            cpu = next(line.split(":", 1)[1].strip() for line in Path("/proc/cpuinfo").read_text().splitlines()
                       if line.startswith("model name"))
        except (OSError, StopIteration):
            pass
        memory = os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES") / 2**30
        print(f"machine: {cpu}, {os.cpu_count()} cores, {memory:.0f} GiB; CPU only; torch {torch.__version__}, "
              f"threads {torch.get_num_threads()}; tile_size {args.tile_size}")
        from instanseg_scnp.data import synthetic_image

        images = {}
        for size in sorted(set(whole_sizes) | set(tiled_sizes)):
            images[size] = folder / f"image_{size}.npy"
            np.save(images[size], synthetic_image((size, size), modality="fluorescence", rng=0).image[..., 0])
        print("| function | image | run | tiles | wall (s) | peak RSS (MiB) | rise over load (MiB) | cells |")
        print("|---|---|---|---|---|---|---|---|")
        notes = []
        for mode in modes:
            for size in sorted(set(whole_sizes) | set(tiled_sizes)):
                for tile in ([None] if size in whole_sizes else []) + ([args.tile_size] if size in tiled_sizes else []):
                    name = "whole" if tile is None else "tiled"
                    r = run(args, mode, images[size], tile, str(folder / f"{mode}_{size}_{name}"))
                    print(f"| {mode} | {size}² | {name if tile is None else f'tiled {tile}'} | {r['tiles']} | "
                          f"{r['seconds']:.1f} | {r['peak_mib']:.0f} | {r['peak_mib'] - r['before_mib']:.0f} | "
                          f"{r['cells']} |", flush=True)
                if size in whole_sizes and size in tiled_sizes:
                    notes.append(f"{mode} {size}², tiled vs whole: {compare(folder, mode, size)}")
        for note in notes:
            print(f"- {note}")


if __name__ == "__main__":
    main()
