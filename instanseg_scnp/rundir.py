"""The run directory: what a run writes, in upstream InstanSeg's layout where one exists.

::

    RUN_DIR/
        config.json          the resolved TrainConfig (+ what was derived: window, device, ...)
        experiment_log.csv   upstream's model arguments, so upstream's load_model can rebuild the model
        model_weights.pth    the best epoch by validation F1, upstream's checkpoint layout
        checkpoint.pth       the last finished epoch: model, optimizer, scheduler, RNG states (for --resume)
        metrics.csv          one row per epoch: losses, validation F1, learning rate, time
        curves.png           the curves of metrics.csv
        instanseg.pt         the exported TorchScript model (upstream's inference format)
        evaluation/          per_image.csv and summary.json on the test split

Every file is written through a temporary name and renamed when complete. ``--overwrite``
builds the new run beside the old one, in ``.NAME.overwrite``, and replaces the old one
only when the new one has finished: a failed or killed overwrite leaves the old run, and
``--resume`` finds the unfinished new one.
"""

from __future__ import annotations

import logging
import shutil
from pathlib import Path

from instanseg_scnp._files import atomic_path, foreign_entries, read_json

logger = logging.getLogger(__name__)

CONFIG = "config.json"
EXPERIMENT_LOG = "experiment_log.csv"
BEST_WEIGHTS = "model_weights.pth"
CHECKPOINT = "checkpoint.pth"
METRICS = "metrics.csv"
CURVES = "curves.png"
TORCHSCRIPT = "instanseg.pt"
BIOIMAGEIO = "bioimageio"
"""The bioimage.io package ``export --format bioimageio`` and ``train --export bioimageio`` write by default."""
EVALUATION = "evaluation"


class RunDirError(FileExistsError):
    """A run directory that may not be used as asked (exists without overwrite, or is not a run)."""


RUN_ENTRIES = (CONFIG, EXPERIMENT_LOG, BEST_WEIGHTS, CHECKPOINT, METRICS, CURVES, TORCHSCRIPT, EVALUATION,
               BIOIMAGEIO, "evaluation-*", ".*.tmp")
"""What a run directory may hold (``evaluate`` adds ``evaluation-<data>-<split>``; a killed write leaves
``.NAME.PID.tmp``): ``--overwrite`` replaces a folder of only these."""


def is_run_dir(path: Path) -> bool:
    """Whether ``path`` holds a run this project wrote: a ``config.json`` with the version that wrote it."""
    try:
        saved = read_json(Path(path) / CONFIG)
    except (FileNotFoundError, ValueError):
        return False
    return isinstance(saved, dict) and "instanseg_scnp" in (saved.get("derived") or {})


def check_new_run_dir(path: Path, *, overwrite: bool) -> bool:
    """Raise unless ``path`` may become a new run directory; True if it holds a run to replace.

    ``overwrite`` replaces only a run this project wrote (:func:`is_run_dir`) that
    holds nothing but :data:`RUN_ENTRIES`: a mistyped ``--out`` or a note kept
    beside a run is never deleted.
    """
    path = Path(path)
    if path.exists() and not path.is_dir():
        raise RunDirError(f"run directory {str(path)!r} exists and is not a directory")
    occupied = path.is_dir() and any(path.iterdir())
    if occupied and not overwrite:
        raise RunDirError(f"run directory {str(path)!r} already exists and is not empty; "
                          "pass --overwrite (overwrite=True) to replace it, or --resume to continue it")
    if occupied and not is_run_dir(path):
        raise RunDirError(f"{str(path)!r} is not empty and is not a run directory (no {CONFIG} written by "
                          "instanseg-scnp); --overwrite only replaces run directories: choose another --out")
    if occupied:
        unexpected = foreign_entries(path, RUN_ENTRIES)
        if unexpected:
            raise RunDirError(f"run directory {str(path)!r} also holds files instanseg-scnp did not write "
                              f"({', '.join(unexpected)}); --overwrite would delete them: move them first")
    return occupied


def overwrite_staging(path: Path) -> Path:
    """Where ``--overwrite`` builds the new run beside the old one, until it replaces it: ``.NAME.overwrite``."""
    path = Path(path)
    return path.with_name(f".{path.name}.overwrite")


def replace_run_dir(staging: Path, path: Path) -> None:
    """Put the finished run in ``staging`` where ``path`` is (two renames), then delete the run it replaced."""
    path = Path(path)
    old = path.with_name(f".{path.name}.replaced.tmp")
    shutil.rmtree(old, ignore_errors=True)
    if path.exists():
        path.rename(old)
    Path(staging).rename(path)
    shutil.rmtree(old, ignore_errors=True)


def create_run_dir(path: Path, *, overwrite: bool) -> Path:
    """Create an empty run directory; an existing non-empty one is replaced only with ``overwrite``."""
    path = Path(path)
    if check_new_run_dir(path, overwrite=overwrite):
        logger.warning("overwriting %s", path)
        shutil.rmtree(path)
    path.mkdir(parents=True, exist_ok=True)
    return path


def remove_stale_files(path: Path) -> None:
    """Remove the temporary files and folders (``.NAME.PID.tmp``) that a killed process left in ``path``."""
    for stale in Path(path).glob(".*.tmp"):
        shutil.rmtree(stale) if stale.is_dir() else stale.unlink()
        logger.info("removed %s, left by an interrupted run", stale)


def require_run_dir(path: Path, *names: str) -> Path:
    """``path`` as an existing run directory holding ``names``, or a clear error."""
    path = Path(path)
    if not path.is_dir():
        raise RunDirError(f"run directory {str(path)!r} does not exist")
    missing = [name for name in names if not (path / name).is_file()]
    if missing:
        raise RunDirError(f"{str(path)!r} is not a finished-enough run directory: missing {missing}")
    return path


def write_experiment_log(path: Path, arguments: dict) -> None:
    """Upstream's ``experiment_log.csv``: one ``key,value`` row per model argument, no header."""
    import pandas as pd  # as upstream writes and reads it; not imported by the CLI's --help

    with atomic_path(path / EXPERIMENT_LOG) as tmp:
        pd.DataFrame.from_dict(arguments, orient="index").to_csv(tmp, header=False)


def write_metrics(path: Path, rows: list[dict]) -> None:
    """``metrics.csv`` from all epochs so far (rewritten whole, so a resumed run stays consistent)."""
    import pandas as pd

    with atomic_path(path / METRICS) as tmp:
        pd.DataFrame(rows).to_csv(tmp, index=False)
