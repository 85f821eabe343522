"""Baseline vs SCNP on the mask loss, the seed loss and mask+seed, over several seeds, then ``compare``.

Each (setting, seed) is one ``instanseg_scnp.train`` run in ``OUT/<setting>-s<seed>``; a
finished run is kept, an interrupted one resumed, so the script can be stopped and
started again. At the end the runs are compared into ``OUT/comparison`` (Markdown
table, per-run CSV, figure), as ``instanseg-scnp compare`` does.

    python benchmarks/experiment.py                                   # synthetic, 3 seeds: about an hour on 2 CPU cores
    python benchmarks/experiment.py --data NuInsSeg --seeds 5 --device cuda   # upstream's recipe on a GPU
"""

from __future__ import annotations

import argparse
import logging
import platform
import time
from pathlib import Path

import torch

from instanseg_scnp.comparison import compare_runs
from instanseg_scnp.rundir import CHECKPOINT, EVALUATION
from instanseg_scnp.training import PRESETS, TrainConfig, resume, train

SETTINGS = {"baseline": "off", "scnp-mask": "mask", "scnp-seed": "seed", "scnp-mask+seed": "mask+seed"}
"""Run-name prefix -> ``scnp`` target."""

logger = logging.getLogger("experiment")


def run_one(out: Path, scnp: str, seed: int, settings: dict) -> Path:
    """Train (or finish, or skip) one run; returns its directory."""
    if (out / EVALUATION / "summary.json").is_file():
        logger.info("%s: finished earlier, kept", out)
    elif (out / CHECKPOINT).is_file():
        logger.info("%s: resuming", out)
        resume(out, device=settings.get("device", "auto"))
    else:
        train(TrainConfig(out=out, scnp=scnp, seed=seed, **settings), overwrite=out.exists())
    return out


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--out", type=Path, default=Path("runs/experiment"), help="(default: runs/experiment)")
    parser.add_argument("--seeds", type=int, default=3, help="seeds per setting (default: 3)")
    parser.add_argument("--settings", nargs="+", choices=list(SETTINGS), default=list(SETTINGS),
                        help=f"which settings (default: {' '.join(SETTINGS)})")
    parser.add_argument("--data", default="synthetic", help="as for instanseg-scnp train (default: synthetic)")
    parser.add_argument("--preset", choices=list(PRESETS), default=None,
                        help="as for instanseg-scnp train (default: demo on synthetic data, else upstream)")
    for name, value in PRESETS["demo"].items():
        if name not in ("scnp", "scnp_mode", "layers"):
            parser.add_argument("--" + name.replace("_", "-"), type=type(value), default=None,
                                help="as for instanseg-scnp train (default: the preset's)")
    parser.add_argument("--layers", type=int, nargs="+", default=None, help="as for instanseg-scnp train "
                                                                              "(default: the preset's)")
    parser.add_argument("--device", default="auto", help="as for instanseg-scnp train (default: auto)")
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s %(message)s", datefmt="%H:%M:%S")
    given = {name: value for name, value in vars(args).items()
             if value is not None and name not in ("out", "seeds", "settings")}
    settings = {**given, "layers": tuple(args.layers)} if args.layers else given
    logger.info("machine: %s, %d CPU threads for torch, CUDA: %s", platform.processor() or platform.machine(),
                torch.get_num_threads(), torch.cuda.get_device_name() if torch.cuda.is_available() else "none")
    start, runs = time.perf_counter(), []
    for seed in range(args.seeds):  # seed-major: a stopped experiment has every setting equally far
        for name in args.settings:
            runs.append(run_one(args.out / f"{name}-s{seed}", SETTINGS[name], seed, settings))
            logger.info("%d runs done, %.1f min so far", len(runs), (time.perf_counter() - start) / 60)
    folder, markdown = compare_runs(runs, args.out / "comparison", overwrite=True)
    print(markdown, end="")
    logger.info("wrote %s in %.1f min", folder, (time.perf_counter() - start) / 60)


if __name__ == "__main__":
    main()
