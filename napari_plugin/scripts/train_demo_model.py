"""Train the demo model that the "Synthetic cells + demo model (SCNP)" sample ships.

Run from the repository root (8 minutes on one thread of a busy 2-core Intel Xeon)::

    python napari_plugin/scripts/train_demo_model.py [--overwrite]

It trains with the library's ``demo`` preset on the built-in synthetic cells, exactly
the README's main CPU recipe (``instanseg-scnp train`` with no flags: SCNP on the mask
loss, window 3), with the seed fixed, ``device="cpu"``, deterministic algorithms and one
CPU thread (float sums depend on the thread count, so one thread gives the same model
on any machine with the same software; it is also the setting that keeps its speed on a
busy machine, where two threads wait on each other). Nothing of the recipe is changed: the demo
preset's export is about 1.3 MB, under the 5 MB this package data may take (the script
refuses to install a bigger file).

It writes, into ``napari_plugin/src/napari_instanseg_scnp/data/`` (``--out-dir``):

- ``demo_model.pt``: the run's exported ``instanseg.pt`` (upstream InstanSeg's
  TorchScript format, seed threshold 0.5);
- ``demo_model.json``: what the model is: preset, seed, the resolved training settings,
  the best epoch, F1@0.5 on the synthetic test split and on the sample image, training
  time, library versions, the model's size and SHA-256, and the command that made it.

Each file is written to a temporary name and renamed when complete; existing files are
refused unless ``--overwrite``, before any training. The run directory itself goes to a
temporary folder that is deleted afterwards, unless ``--run-dir`` keeps it.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import os
import platform
import shlex
import shutil
import sys
import tempfile
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent
PLUGIN_ROOT = HERE.parent
REPO_ROOT = PLUGIN_ROOT.parent
DATA_DIR = PLUGIN_ROOT / "src" / "napari_instanseg_scnp" / "data"
MODEL_NAME = "demo_model.pt"
INFO_NAME = "demo_model.json"
MAX_BYTES = 5_000_000
"""The largest model file the plugin ships (5 MB)."""
PRESET = "demo"
SEED = 0
THREADS = 1


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        description=__doc__.splitlines()[0],
        formatter_class=argparse.ArgumentDefaultsHelpFormatter,
    )
    parser.add_argument("--out-dir", type=Path, default=DATA_DIR,
                        help=f"where {MODEL_NAME} and {INFO_NAME} go (the plugin's package data)")
    parser.add_argument("--seed", type=int, default=SEED, help="training seed (weights, tiles, augmentations)")
    parser.add_argument("--threads", type=int, default=THREADS,
                        help="torch CPU threads (the shipped model used the default; other counts give slightly "
                             "different weights)")
    parser.add_argument("--run-dir", type=Path, default=None,
                        help="keep the training run in this folder (must not exist); None: a temporary one, deleted")
    parser.add_argument("--overwrite", action="store_true", help=f"replace an existing {MODEL_NAME} / {INFO_NAME}")
    args = parser.parse_args(argv)
    if args.threads < 1:
        parser.error(f"--threads must be at least 1, got {args.threads}")
    try:
        check_outputs(args.out_dir, overwrite=args.overwrite)
    except FileExistsError as error:
        parser.error(str(error))
    return args


def check_outputs(out_dir: Path, *, overwrite: bool) -> tuple[Path, Path]:
    """The model and JSON paths in ``out_dir``; FileExistsError if either exists and not ``overwrite``."""
    paths = (Path(out_dir) / MODEL_NAME, Path(out_dir) / INFO_NAME)
    existing = [str(path) for path in paths if path.exists()]
    if existing and not overwrite:
        raise FileExistsError(f"{' and '.join(existing)} already exist(s); pass --overwrite to replace")
    return paths


def _sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as file:
        for block in iter(lambda: file.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def _command(argv: list[str] | None) -> str:
    script = Path(__file__).resolve()
    try:
        script = script.relative_to(REPO_ROOT)
    except ValueError:
        pass
    return shlex.join(["python", str(script), *(sys.argv[1:] if argv is None else argv)])


def sample_f1(model_path: Path) -> float:
    """F1@0.5 of the model's labels on the plugin's synthetic sample image against its ground truth."""
    from instanseg_scnp.metrics import match
    from instanseg_scnp.upstream import load_model, segment

    from napari_instanseg_scnp._sample_data import synthetic_cells

    (image, _, _), _, (truth, _, _) = synthetic_cells()
    return float(match(truth, segment(load_model(model_path), image), thresholds=(0.5,))["f1_50"])


def _replace_all(files: dict[Path, Path]) -> None:
    """Rename each finished temporary file onto its target."""
    for temporary, target in files.items():
        os.replace(temporary, target)


def main(argv: list[str] | None = None) -> dict:
    args = parse_args(argv)
    model_path, info_path = check_outputs(args.out_dir, overwrite=args.overwrite)

    import torch

    import instanseg_scnp

    torch.set_num_threads(args.threads)
    with tempfile.TemporaryDirectory(prefix="scnp-demo-model-") as scratch:
        run_dir = args.run_dir or Path(scratch) / "run"
        start = time.perf_counter()
        result = instanseg_scnp.train(out=run_dir, preset=PRESET, seed=args.seed, device="cpu", deterministic=True,
                                      progress=True)
        seconds = time.perf_counter() - start
        exported = Path(result.model_path)
        size = exported.stat().st_size
        print(f"exported {exported}: {size / 1e6:.2f} MB in {seconds:.0f} s", flush=True)
        if size > MAX_BYTES:
            raise SystemExit(f"the export is {size / 1e6:.2f} MB, over the {MAX_BYTES / 1e6:.0f} MB the plugin ships; "
                             "train a smaller model (layers=...) and record the choice in this script")

        config = json.loads(result.run_dir.joinpath("config.json").read_text())["config"]
        config.pop("out", None)
        info = {
            "model": MODEL_NAME,
            "what": "InstanSeg nucleus model trained with SCNP on instanseg-scnp's synthetic cells (demo preset)",
            "preset": config["preset"],
            "seed": config["seed"],
            "epochs": config["epochs"],
            "best_epoch": result.best_epoch,
            "validation_f1_50to90": result.best_f1,
            "test_images": result.evaluation["images"],
            "test_f1_50": result.evaluation["pooled_f1_50"],
            "test_f1_50_mean_over_images": result.evaluation["mean_f1_50"],
            "sample_image_f1_50": sample_f1(exported),
            "training_seconds": round(seconds, 1),
            "threads": args.threads,
            "size_bytes": size,
            "sha256": _sha256(exported),
            "instanseg_scnp_version": instanseg_scnp.__version__,
            "versions": {"torch": torch.__version__, "python": platform.python_version(),
                         "instanseg-torch": _version("instanseg-torch")},
            "command": _command(argv),
            "config": config,
        }
        args.out_dir.mkdir(parents=True, exist_ok=True)
        temporary_model = model_path.with_name(model_path.name + ".part")
        temporary_info = info_path.with_name(info_path.name + ".part")
        try:
            shutil.copyfile(exported, temporary_model)
            temporary_info.write_text(json.dumps(info, indent=2) + "\n")
            _replace_all({temporary_model: model_path, temporary_info: info_path})
        finally:
            for leftover in (temporary_model, temporary_info):
                leftover.unlink(missing_ok=True)
    print(json.dumps({k: v for k, v in info.items() if k != "config"}, indent=2))
    return info


def _version(distribution: str) -> str | None:
    from importlib.metadata import PackageNotFoundError, version

    try:
        return version(distribution)
    except PackageNotFoundError:
        return None


if __name__ == "__main__":
    main()
