"""Train an InstanSeg model with SCNP: upstream's network, augmentations, loss and F1 in a loop of ours.

Upstream's ``scripts/train.py`` parses ``sys.argv`` when called and keeps its
state in module globals, so it cannot be called from a script; this package uses
the same building blocks (``build_model_from_dict``, ``Augmentations``, the
``InstanSeg`` loss from :func:`instanseg_scnp.make_loss`, its
``postprocessing`` and upstream's F1) and writes upstream's run layout, so the
result is an ordinary InstanSeg model.

A run is three steps: :func:`.setup.set_up` (the run directory, the settings
derived from config and data, loss, model and optimizer), :func:`.fit.fit`
(the epochs, checkpoints and resuming; reproducibility is explained there)
and :func:`.finish.finish` (curves, export and evaluation).
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from pathlib import Path

from instanseg_scnp.rundir import TORCHSCRIPT
from instanseg_scnp.training import distributed
from instanseg_scnp.training.config import TrainConfig
from instanseg_scnp.training.finish import finish
from instanseg_scnp.training.fit import fit
from instanseg_scnp.training.setup import config_to_resume, new_run_dir, set_up
from instanseg_scnp.training.tensorboard import require_tensorboard
from instanseg_scnp.upstream import require_bioimageio


@dataclass(frozen=True)
class TrainResult:
    """What a finished run produced.

    Attributes
    ----------
    run_dir : Path
    best_epoch : int
        The epoch of ``model_weights.pth`` (0-based), chosen by validation F1 (ties: validation loss) among
        the epochs after the hotstart.
    best_f1 : float
        Its validation F1 (upstream's, averaged over IoU 0.5-0.9).
    history : list of dict
        The rows of ``metrics.csv``.
    model_path : Path
        The exported TorchScript model.
    evaluation : dict
        The summary of :func:`instanseg_scnp.evaluation.evaluate_items` on the test split.
    """

    run_dir: Path
    best_epoch: int
    best_f1: float
    history: list[dict]
    model_path: Path
    evaluation: dict


def train(config: TrainConfig | None = None, *, overwrite: bool = False, progress: bool = False,
          **settings: object) -> TrainResult:
    """Train, validate every epoch, then export the best model and evaluate it on the test split.

    Parameters
    ----------
    config : TrainConfig, optional
        Default ``TrainConfig(**settings)`` (the preset fills the rest); with a
        config, ``**settings`` replace its fields.
    overwrite : bool
        Replace an existing run directory ``config.out``.
    progress : bool
        Show tqdm bars (rank 0 only).

    Returns
    -------
    TrainResult

    Raises
    ------
    ImportError
        With ``log="tensorboard"`` when the ``tensorboard`` package is missing (before any work).
    TrainingDiverged
        After ``nonfinite_patience`` training steps in a row with a non-finite loss or gradient.
    """
    # settings on a config replace its resolved values; on none, they pick the preset like TrainConfig(...)
    config = dataclasses.replace(config, **settings) if config is not None else TrainConfig(**settings)
    _check_extras(config)
    workdir = new_run_dir(config.out, overwrite=overwrite)  # refused before any work
    return _run(config, workdir, overwrite=overwrite, progress=progress, resuming=False)


def resume(run_dir: str | Path, *, progress: bool = False, allow_changed_data: bool = False,
           **settings: object) -> TrainResult:
    """Continue a run from its last checkpoint, with the config it was started with.

    Only ``device`` and ``workers`` may change; the run then finishes exactly as
    an uninterrupted one (export and evaluation included). A dataset file that
    changed since the run started (size or SHA-256) is refused unless
    ``allow_changed_data``. Temporary files that a killed run left behind are
    removed.
    """
    config, workdir = config_to_resume(Path(run_dir), settings, allow_changed_data=allow_changed_data)
    _check_extras(config)
    return _run(config, workdir, overwrite=False, progress=progress, resuming=True)


def _check_extras(config: TrainConfig) -> None:
    """Refuse, before any work, a run that needs an optional package that is missing."""
    if config.log == "tensorboard":
        require_tensorboard()
    if config.export == "bioimageio":
        require_bioimageio()


def _run(config: TrainConfig, workdir: Path, *, overwrite: bool, progress: bool, resuming: bool) -> TrainResult:
    """Set up, fit and finish in ``workdir`` (see :func:`.setup.new_run_dir`), in this process's place among
    the torchrun processes; rank 0 alone writes, exports and evaluates."""
    process = distributed.start(config.device)
    try:
        progress = progress and process.is_main
        run = set_up(config, process, out=workdir, overwrite=overwrite, resuming=resuming)
        state = fit(run, resuming=resuming, progress=progress)
        evaluation = finish(run, state, progress=progress) if process.is_main else {}
        return TrainResult(config.out, state.best_epoch, state.best_f1, state.history, config.out / TORCHSCRIPT,
                           evaluation)
    finally:
        distributed.stop(process)
