"""Run setup: the run directory, the settings derived from config and data, and the model, loss and optimizer.

Everything before the first epoch. Config and data are checked before anything
is written: a run that cannot train leaves no folder behind. A resumed run
takes its config from its ``config.json``, and refuses a dataset that changed
since it started.
"""

from __future__ import annotations

import json
import logging
import os
from dataclasses import dataclass
from pathlib import Path

import torch
from torch.nn.parallel import DistributedDataParallel

from instanseg_scnp import __version__
from instanseg_scnp._files import read_json, strict_json, write_text_atomic
from instanseg_scnp.data import DatasetError, common_pixel_size, data_fingerprint, open_dataset, resolve_data
from instanseg_scnp.rundir import (
    CONFIG,
    check_new_run_dir,
    create_run_dir,
    overwrite_staging,
    remove_stale_files,
    require_run_dir,
    write_experiment_log,
)
from instanseg_scnp.training import distributed
from instanseg_scnp.training.config import TrainConfig, upgrade_saved
from instanseg_scnp.upstream import (
    InitialModel,
    build_model,
    check_architecture,
    initialize_model,
    load_initial_weights,
    make_loss,
)

logger = logging.getLogger(__name__)

N_SIGMA = 2
RESUMABLE = ("device", "workers")
"""Settings a resumed run may change: they do not change the result."""


@dataclass(frozen=True)
class Run:
    """A run set up to train: what fitting and finishing work with.

    ``out`` is the folder the run is written in: ``config.out``, or the staging
    folder beside it while an ``--overwrite`` is unfinished. ``trained`` is
    ``model``, wrapped in DistributedDataParallel under torchrun. ``loss_fn`` is
    upstream's ``InstanSeg`` loss, and ``main_losses`` its seed and mask loss
    names after the hotstart.
    """

    config: TrainConfig
    process: distributed.Process
    out: Path
    dataset: dict[str, list[dict]]
    eval_split: str
    loss_fn: torch.nn.Module
    main_losses: tuple[str, str]
    model: torch.nn.Module
    trained: torch.nn.Module
    optimizer: torch.optim.Optimizer
    scheduler: torch.optim.lr_scheduler.LRScheduler
    scaler: torch.amp.GradScaler


def new_run_dir(out: Path, *, overwrite: bool) -> Path:
    """Where a new run is written: ``out``, or, when it replaces a run there, a sibling folder that replaces
    it only once the new run has finished (a failed or killed overwrite leaves the old run)."""
    replacing = check_new_run_dir(out, overwrite=overwrite)
    return overwrite_staging(out) if replacing else out


def config_to_resume(run_dir: Path, settings: dict, *, allow_changed_data: bool) -> tuple[TrainConfig, Path]:
    """The config ``run_dir`` was started with, ``settings`` (only :data:`RESUMABLE`) replaced, and the folder
    it is written in (its unfinished ``--overwrite``, if any); temporary files a killed run left are removed."""
    pending = overwrite_staging(run_dir)
    source = pending if (pending / CONFIG).is_file() else require_run_dir(run_dir, CONFIG)
    if source == pending:
        logger.info("resuming the unfinished --overwrite of %s in %s (the earlier run stays until it ends)",
                    run_dir, pending)
    changed = sorted(set(settings) - set(RESUMABLE))
    if changed:
        raise ValueError(f"a resumed run keeps its config; only {list(RESUMABLE)} may change, got {changed}")
    saved = read_json(source / CONFIG)
    world_size = int(os.environ.get("WORLD_SIZE", "1"))
    if saved["derived"]["world_size"] != world_size:
        raise ValueError(f"{run_dir} was trained by {saved['derived']['world_size']} process(es); resume it with "
                         f"as many (got {world_size}), or its tiles and batches would change")
    _check_same_data(run_dir, saved["derived"], allow_changed_data)
    remove_stale_files(source)
    config = TrainConfig(**{**upgrade_saved(saved["config"], saved["derived"]), "data": saved["derived"]["data"],
                            "out": run_dir, **settings})
    return config, source


def _check_same_data(run_dir: Path, derived: dict, allow_changed: bool) -> None:
    """Refuse to resume on a dataset file that changed since the run started (older runs recorded no fingerprint)."""
    recorded = derived.get("data_fingerprint")
    if recorded is None:
        return
    path = derived["data"]
    if not Path(path).is_file():
        raise DatasetError(f"cannot resume {run_dir}: its dataset {path!r} no longer exists")
    current = data_fingerprint(path)
    if current == recorded:
        return
    change = (f"size {recorded['size']} -> {current['size']} bytes" if current["size"] != recorded["size"]
              else "same size, different SHA-256")
    if not allow_changed:
        raise DatasetError(f"cannot resume {run_dir}: its dataset {path!r} changed since the run started ({change}); "
                           "its first epochs saw other data. Pass --allow-changed-data to resume anyway")
    logger.warning("resuming %s on a dataset that changed since the run started (%s): %s", run_dir, change, path)


def set_up(config: TrainConfig, process: distributed.Process, *, out: Path, overwrite: bool,
           resuming: bool) -> Run:
    """Check the numerics and data, build loss, model and optimizer; for a new run, create ``out`` and write
    its ``config.json`` (config and derived settings) and upstream's ``experiment_log.csv`` (rank 0)."""
    device = process.device
    if config.precision == "fp16" and device.type != "cuda":
        raise ValueError(f"precision='fp16' needs CUDA (gradient scaling); on {device.type} use fp32 or bf16")
    if config.deterministic:
        torch.use_deterministic_algorithms(True, warn_only=True)
        torch.backends.cudnn.benchmark = False

    # a resumed run takes its weights from its checkpoint, not from --init
    initial = load_initial_weights(config.init) if config.init is not None and not resuming else None
    if initial is not None:
        check_architecture(initial, layers=config.layers, norm=config.norm, mlp_width=config.mlp_width)
    dataset = open_dataset(config.data, root=config.data_root)
    eval_split = "Test" if "Test" in dataset else "Validation"
    pixel_size = config.pixel_size or common_pixel_size(dataset)
    if pixel_size is None:
        raise DatasetError(f"{config.data}: the training images' pixel sizes are missing or differ; pass "
                           "--pixel-size to train at one (the exported model needs it to rescale new images)")
    loss_fn = make_loss(seed_loss=config.seed_loss, mask_loss=config.mask_loss, scnp=config.scnp,
                        window=config.scnp_window, mode=config.scnp_mode, device=device, n_sigma=N_SIGMA,
                        window_size=config.window_size, batched=True)
    main_losses = (loss_fn.scnp_seed_loss_name, loss_fn.scnp_mask_loss_name)
    arguments = _model_arguments(config, main_losses, pixel_size)
    model = _build_model(config, arguments, loss_fn, device, initial)
    trained = DistributedDataParallel(model, device_ids=[device] if device.type == "cuda" else None) \
        if process.distributed else model
    # fused on CPU and CUDA: one kernel for all parameters, the same update (a small model's per-parameter loop
    # costs more than its maths); None elsewhere keeps torch's default there (False would force that loop)
    optimizer = torch.optim.Adam(model.parameters(), lr=config.lr, fused=device.type in ("cpu", "cuda") or None)
    scheduler = (torch.optim.lr_scheduler.CosineAnnealingLR(optimizer, T_max=config.epochs, eta_min=config.lr / 100)
                 if config.lr_schedule == "cosine" else torch.optim.lr_scheduler.ConstantLR(optimizer, 1.0, 0))
    scaler = torch.amp.GradScaler("cuda", enabled=config.precision == "fp16")

    if not resuming and process.is_main:
        create_run_dir(out, overwrite=overwrite)
        resolved = resolve_data(config.data, root=config.data_root)
        derived = {"data": resolved, "data_fingerprint": data_fingerprint(resolved),
                   "pixel_size": pixel_size,
                   "seed_loss": main_losses[0], "mask_loss": main_losses[1], "eval_split": eval_split,
                   "device": str(device), "world_size": process.world_size, "instanseg_scnp": __version__,
                   "torch": torch.__version__}
        if initial is not None:
            derived["init"] = initial.record()
        write_text_atomic(out / CONFIG, strict_json({"config": json.loads(config.to_json()), "derived": derived}))
        write_experiment_log(out, arguments)
    return Run(config, process, out, dataset, eval_split, loss_fn, main_losses, model, trained, optimizer,
               scheduler, scaler)


def _build_model(config: TrainConfig, arguments: dict, loss_fn: torch.nn.Module, device: torch.device,
                 initial: InitialModel | None = None) -> torch.nn.Module:
    """Upstream's network and the loss's pixel classifier, with weights seeded from ``config.seed``, or those of
    the ``--init`` model (the loss shares the pixel classifier, so it gets the source's too)."""
    torch.manual_seed(config.seed)
    model = build_model({**arguments, "layers": config.layers})
    model = loss_fn.initialize_pixel_classifier(model, MLP_width=config.mlp_width)
    if initial is not None:
        initialize_model(model, initial)
    return model.to(device)


def _model_arguments(config: TrainConfig, losses: tuple[str, str], pixel_size: float | None) -> dict:
    """Upstream's model arguments, as its train.py logs them to experiment_log.csv."""
    return {
        "model_str": "InstanSeg_UNet", "dim_in": 3, "n_sigma": N_SIGMA, "dim_out": 2 + N_SIGMA + 1,
        "dim_coords": 2, "dim_seeds": 1, "layers": str(list(config.layers)), "norm": config.norm,
        "dropprob": 0.0, "multihead": False, "cells_and_nuclei": False, "target_segmentation": "N",
        "feature_engineering": "0", "mlp_width": config.mlp_width, "channel_invariant": False,
        "requested_pixel_size": pixel_size if pixel_size is not None else float("nan"),
        "seed_loss_fn": losses[0], "binary_loss_fn": losses[1], "window_size": config.window_size,
        "loss_function": "instanseg_loss", "rng_seed": config.seed, "tile_size": config.tile_size,
    }
