"""Train an InstanSeg model with SCNP: upstream's network, augmentations, loss and F1 in a loop of ours.

Upstream's ``scripts/train.py`` parses ``sys.argv`` when called and keeps its
state in module globals, so it cannot be called from a script; this loop uses
the same building blocks (``build_model_from_dict``, ``Augmentations``, the
``InstanSeg`` loss from :func:`instanseg_scnp.make_loss`, its
``postprocessing`` and upstream's F1) and writes upstream's run layout, so the
result is an ordinary InstanSeg model.

Reproducibility: weights are seeded from ``seed``; every tile from (seed,
epoch, position) (see :mod:`.samples`); the global RNGs, which upstream's loss
also draws from, are reseeded from (seed, epoch, rank) at the start of every
epoch, so no RNG state needs saving; a checkpoint after every epoch holds the
model, optimizer, scheduler, gradient scaler and the best weights so far. A run
killed at any point and resumed on the same number of processes ends with the
same weights as one that never stopped (bitwise on CPU with ``deterministic=True``).
"""

from __future__ import annotations

import dataclasses
import json
import logging
import math
import os
import pickle
import random
import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
from instanseg.utils.metrics import _robust_average_precision
from instanseg.utils.model_loader import build_model_from_dict
from torch.nn.parallel import DistributedDataParallel
from torch.utils.data import DataLoader
from tqdm.auto import tqdm

from instanseg_scnp import __version__
from instanseg_scnp._files import atomic_path, read_json, strict_json, write_text_atomic
from instanseg_scnp._upstream import quiet_upstream
from instanseg_scnp.data import DatasetError, common_pixel_size, data_fingerprint, open_dataset, resolve_data
from instanseg_scnp.evaluation import evaluate_items, load_segmenter, summary_line, write_evaluation
from instanseg_scnp.export import export_run
from instanseg_scnp.losses import make_loss
from instanseg_scnp.metrics import DEFAULT_THRESHOLDS
from instanseg_scnp.plots import plot_training_curves
from instanseg_scnp.rundir import (
    BEST_WEIGHTS,
    CHECKPOINT,
    CONFIG,
    CURVES,
    EVALUATION,
    TORCHSCRIPT,
    RunDirError,
    check_new_run_dir,
    create_run_dir,
    overwrite_staging,
    remove_stale_files,
    replace_run_dir,
    require_run_dir,
    write_experiment_log,
    write_metrics,
)
from instanseg_scnp.training import distributed
from instanseg_scnp.training.config import TrainConfig, upgrade_saved
from instanseg_scnp.training.samples import Tiles, collate, epoch_plan, epoch_seed, validation_plan

logger = logging.getLogger(__name__)

N_SIGMA = 2
MLP_WIDTH = 5
HOTSTART_LOSSES = ("binary_xloss", "dice_loss")
"""Upstream's hotstart swaps the seed and mask losses to these (and SCNP off)."""
RESUMABLE = ("device", "workers")
"""Settings a resumed run may change: they do not change the result."""


class TrainingDiverged(RuntimeError):
    """Training produced non-finite losses or gradients ``nonfinite_patience`` steps in a row."""


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
    """
    # settings on a config replace its resolved values; on none, they pick the preset like TrainConfig(...)
    config = dataclasses.replace(config, **settings) if config is not None else TrainConfig(**settings)
    return _run(config, overwrite=overwrite, progress=progress)


def resume(run_dir: str | Path, *, progress: bool = False, allow_changed_data: bool = False,
           **settings: object) -> TrainResult:
    """Continue a run from its last checkpoint, with the config it was started with.

    Only ``device`` and ``workers`` may change; the run then finishes exactly as
    an uninterrupted one (export and evaluation included). A dataset file that
    changed since the run started (size or SHA-256) is refused unless
    ``allow_changed_data``. Temporary files that a killed run left behind are
    removed.
    """
    run_dir = Path(run_dir)
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
    return _run(config, overwrite=False, progress=progress, resuming=True, workdir=source)


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


@dataclass
class _State:
    """What changes from epoch to epoch, saved in the checkpoint."""

    epoch: int = 0
    best_epoch: int = -1
    best_f1: float = math.nan
    best_val_loss: float = math.inf
    history: list[dict] = dataclasses.field(default_factory=list)

    def improves(self, f1: float, val_loss: float) -> bool:
        """A higher validation F1; a defined F1 beats an undefined one (no cells to find); between equal or
        undefined ones the lower validation loss wins (ours: a run whose F1 stays 0 would otherwise keep its
        first candidate epoch, however much it trained after)."""
        if self.best_epoch < 0:
            return True
        if math.isnan(f1) or f1 == self.best_f1:
            return (math.isnan(self.best_f1) or f1 == self.best_f1) and val_loss < self.best_val_loss
        return math.isnan(self.best_f1) or f1 > self.best_f1


def _run(config: TrainConfig, *, overwrite: bool, progress: bool, resuming: bool = False,
         workdir: Path | None = None) -> TrainResult:
    """Train in ``workdir``: ``config.out``, or, when an existing run is overwritten, a sibling folder that
    replaces it only once the new run has finished (a failed or killed overwrite leaves the old run)."""
    if not resuming:
        replacing = check_new_run_dir(config.out, overwrite=overwrite)  # before any work
        workdir = overwrite_staging(config.out) if replacing else config.out
    process = distributed.start(config.device)
    try:
        return _train(config, process, workdir=Path(workdir), overwrite=overwrite or workdir != config.out,
                      progress=progress and process.is_main, resuming=resuming)
    finally:
        distributed.stop(process)


def _train(config: TrainConfig, process: distributed.Process, *, workdir: Path, overwrite: bool, progress: bool,
           resuming: bool) -> TrainResult:
    device = process.device
    if config.precision == "fp16" and device.type != "cuda":
        raise ValueError(f"precision='fp16' needs CUDA (gradient scaling); on {device.type} use fp32 or bf16")
    if config.deterministic:
        torch.use_deterministic_algorithms(True, warn_only=True)
        torch.backends.cudnn.benchmark = False

    dataset = open_dataset(config.data, root=config.data_root)
    eval_split = "Test" if "Test" in dataset else "Validation"
    pixel_size = config.pixel_size or common_pixel_size(dataset)
    if pixel_size is None:
        raise DatasetError(f"{config.data}: the training images' pixel sizes are missing or differ; pass "
                           "--pixel-size to train at one (the exported model needs it to rescale new images)")
    loss_fn = make_loss(seed_loss=config.seed_loss, mask_loss=config.mask_loss, scnp=config.scnp,
                        window=config.scnp_window, mode=config.scnp_mode, device=device, n_sigma=N_SIGMA,
                        window_size=config.window_size)
    main_losses = (loss_fn.scnp_seed_loss_name, loss_fn.scnp_mask_loss_name)
    arguments = _model_arguments(config, main_losses, pixel_size)
    torch.manual_seed(config.seed)
    with quiet_upstream():
        model = build_model_from_dict({**arguments, "layers": config.layers})
    model = loss_fn.initialize_pixel_classifier(model, MLP_width=MLP_WIDTH).to(device)
    trained = DistributedDataParallel(model, device_ids=[device] if device.type == "cuda" else None) \
        if process.distributed else model
    optimizer = torch.optim.Adam(model.parameters(), lr=config.lr)
    scheduler = (torch.optim.lr_scheduler.CosineAnnealingLR(optimizer, T_max=config.epochs, eta_min=config.lr / 100)
                 if config.lr_schedule == "cosine" else torch.optim.lr_scheduler.ConstantLR(optimizer, 1.0, 0))
    scaler = torch.amp.GradScaler("cuda", enabled=config.precision == "fp16")

    out, state, best_weights = workdir, _State(), None
    if resuming:
        state, best_weights = _load_checkpoint(out / CHECKPOINT, model, optimizer, scheduler, scaler, device)
    elif process.is_main:
        create_run_dir(out, overwrite=overwrite)
        resolved = resolve_data(config.data, root=config.data_root)
        derived = {"data": resolved, "data_fingerprint": data_fingerprint(resolved),
                   "pixel_size": pixel_size,
                   "seed_loss": main_losses[0], "mask_loss": main_losses[1], "eval_split": eval_split,
                   "device": str(device), "world_size": process.world_size, "instanseg_scnp": __version__,
                   "torch": torch.__version__}
        write_text_atomic(out / CONFIG, strict_json({"config": json.loads(config.to_json()), "derived": derived}))
        write_experiment_log(out, arguments)

    train_tiles = Tiles(dataset["Train"], config.tile_size, train=True, pixel_size=config.pixel_size)
    val_tiles = Tiles(dataset["Validation"], config.tile_size, train=False, pixel_size=config.pixel_size)
    for epoch in range(state.epoch, config.epochs):
        hot = epoch < config.hotstart
        _seed_globals(epoch_seed(config.seed, epoch, process.rank))
        for update, name in zip((loss_fn.update_seed_loss, loss_fn.update_binary_loss),
                                HOTSTART_LOSSES if hot else main_losses, strict=True):
            update(name)
        start = time.perf_counter()
        train_loss = _train_epoch(config, process, trained, loss_fn, optimizer, scaler, train_tiles, epoch,
                                  progress=progress)
        train_time = time.perf_counter() - start
        scheduler.step()
        if process.is_main:
            val_loss, val_f1 = _validate(config, model, loss_fn, val_tiles, device)
            row = {"epoch": epoch, "phase": "hotstart" if hot else "main", "seed_loss": loss_fn.scnp_seed_loss_name,
                   "mask_loss": loss_fn.scnp_mask_loss_name, "train_loss": train_loss, "val_loss": val_loss,
                   "val_f1": val_f1, "lr": optimizer.param_groups[0]["lr"], "train_time_s": train_time,
                   "tiles_per_s": config.epoch_length / train_time,
                   "val_time_s": time.perf_counter() - start - train_time}
            state.history.append(row)
            state.epoch = epoch + 1
            best = not hot and state.improves(val_f1, val_loss)
            if best:
                state.best_epoch, state.best_f1, state.best_val_loss = epoch, val_f1, val_loss
                best_weights = _cpu_copy(model.state_dict())
            _save_checkpoint(out / CHECKPOINT, state, model, optimizer, scheduler, scaler, best_weights)
            write_metrics(out, state.history)
            if best:  # after the checkpoint, which holds them too: a kill in between loses nothing
                _save_best(out / BEST_WEIGHTS, best_weights, state)
            logger.info("epoch %d/%d %-8s train loss %.4f | val loss %.4f | val F1 %.3f%s | %.1f s, %.1f tiles/s",
                        epoch + 1, config.epochs, row["phase"], train_loss, val_loss, val_f1,
                        " (best)" if best else "", train_time, row["tiles_per_s"])
        if process.distributed:
            torch.distributed.barrier()

    distributed.check_replicas(process, model)
    if not process.is_main:  # rank 0 alone exports and evaluates; the others are done
        return TrainResult(config.out, state.best_epoch, state.best_f1, state.history, config.out / TORCHSCRIPT,
                           {})
    _save_best(out / BEST_WEIGHTS, best_weights, state)
    return _finish(config, out, state, dataset[eval_split], eval_split, device, progress=progress)


def _model_arguments(config: TrainConfig, losses: tuple[str, str], pixel_size: float | None) -> dict:
    """Upstream's model arguments, as its train.py logs them to experiment_log.csv."""
    return {
        "model_str": "InstanSeg_UNet", "dim_in": 3, "n_sigma": N_SIGMA, "dim_out": 2 + N_SIGMA + 1,
        "dim_coords": 2, "dim_seeds": 1, "layers": str(list(config.layers)), "norm": config.norm,
        "dropprob": 0.0, "multihead": False, "cells_and_nuclei": False, "target_segmentation": "N",
        "feature_engineering": "0", "mlp_width": MLP_WIDTH, "channel_invariant": False,
        "requested_pixel_size": pixel_size if pixel_size is not None else float("nan"),
        "seed_loss_fn": losses[0], "binary_loss_fn": losses[1], "window_size": config.window_size,
        "loss_function": "instanseg_loss", "rng_seed": config.seed, "tile_size": config.tile_size,
    }


def _train_epoch(config, process, trained, loss_fn, optimizer, scaler, tiles, epoch, *, progress) -> float:
    plan = epoch_plan(len(tiles), config.epoch_length, seed=config.seed, epoch=epoch, rank=process.rank,
                      world_size=process.world_size)
    loader = DataLoader(tiles, batch_size=config.batch_size, sampler=plan, collate_fn=collate,
                        num_workers=config.workers)
    device, losses, unhealthy = process.device, [], 0
    trained.train()
    bar = tqdm(loader, desc=f"epoch {epoch + 1}/{config.epochs}", unit="batch", disable=not progress, leave=False)
    for images, labels in bar:
        images, labels = images.to(device, non_blocking=True), labels.to(device, non_blocking=True)
        with torch.autocast(device.type, dtype=_autocast_dtype(config), enabled=config.precision != "fp32"):
            output = trained(images)
        loss = loss_fn.forward(output.float(), labels).mean()
        if process.distributed:  # a batch without seeds leaves the pixel classifier out; DDP needs every grad
            loss = loss + 0.0 * sum(parameter.sum() for parameter in trained.parameters())
        optimizer.zero_grad(set_to_none=True)
        scaler.scale(loss).backward()
        scaler.unscale_(optimizer)
        norm = torch.nn.utils.clip_grad_norm_(trained.parameters(), config.grad_clip)
        # fp16's scaler skips its own overflowing steps; anywhere else a non-finite value would poison the weights
        healthy = bool(torch.isfinite(loss)) and (config.precision == "fp16" or bool(torch.isfinite(norm)))
        if distributed.all_ranks(process, healthy):
            scaler.step(optimizer)
            unhealthy = 0
        else:
            unhealthy += 1
            if unhealthy >= config.nonfinite_patience:
                raise TrainingDiverged(
                    f"{config.out}: {unhealthy} training steps in a row had a NaN or infinite loss or gradient "
                    f"(epoch {epoch + 1}); the run stopped before its weights became NaN. Its last checkpoint, if "
                    "any, is resumable; check the images and labels, or lower --lr")
        scaler.update()
        if healthy:
            losses.append(loss.item())
            bar.set_postfix(loss=f"{loss.item():.4f}")
    return distributed.average(process, float(np.mean(losses)) if losses else float("nan"))


def _autocast_dtype(config: TrainConfig) -> torch.dtype:
    return torch.bfloat16 if config.precision == "bf16" else torch.float16


@torch.no_grad()
def _validate(config, model, loss_fn, tiles, device) -> tuple[float, float]:
    """Loss and upstream's F1 (IoU 0.5-0.9) on one fixed tile per validation image."""
    model.eval()
    loader = DataLoader(tiles, batch_size=config.batch_size, sampler=validation_plan(len(tiles), seed=config.seed),
                        collate_fn=collate, num_workers=config.workers)
    losses, truth, predicted = [], [], []
    for images, labels in loader:
        images, labels = images.to(device), labels.to(device)
        with torch.autocast(device.type, dtype=_autocast_dtype(config), enabled=config.precision != "fp32"):
            output = model(images)
        output = output.float()
        losses.append(loss_fn.forward(output, labels.clone()).mean().item())
        with quiet_upstream():
            predicted += [loss_fn.postprocessing(single) for single in output]
        truth += list(labels)
    f1 = _robust_average_precision(truth, predicted, threshold=np.array(DEFAULT_THRESHOLDS))
    return float(np.mean(losses)), float(f1)


def _seed_globals(seed: int) -> None:
    """Seed the global generators that upstream's loss and torch draw from."""
    random.seed(seed)
    np.random.seed(seed)
    torch.manual_seed(seed)


def _cpu_copy(state_dict: dict) -> dict:
    return {name: tensor.detach().to("cpu", copy=True) for name, tensor in state_dict.items()}


def _save_best(path: Path, weights: dict | None, state: _State) -> None:
    """Upstream's ``model_weights.pth`` layout, which its ``load_model`` reads."""
    if weights is None:
        return
    with atomic_path(path) as tmp:
        torch.save({"f1_score": state.best_f1, "epoch": state.best_epoch, "model_state_dict": weights}, tmp)


def _save_checkpoint(path: Path, state: _State, model, optimizer, scheduler, scaler, best_weights) -> None:
    """The checkpoint, written aside then renamed: a failed write (a full disk) leaves the previous one."""
    try:
        with atomic_path(path) as tmp:
            torch.save({
                "state": dataclasses.asdict(state), "model": model.state_dict(), "optimizer": optimizer.state_dict(),
                "scheduler": scheduler.state_dict(), "scaler": scaler.state_dict(), "best_model": best_weights,
            }, tmp)
    except (OSError, RuntimeError) as error:  # torch reports a failed write as either
        raise OSError(f"cannot write the checkpoint {str(path)!r} ({error}); the previous checkpoint is intact: "
                      "free some space, then --resume") from error


def _load_checkpoint(path: Path, model, optimizer, scheduler, scaler, device) -> tuple[_State, dict | None]:
    if not path.is_file():
        raise RunDirError(f"cannot resume: {str(path)!r} does not exist (the run stopped before its first epoch "
                          "ended; start it again with --overwrite)")
    try:
        checkpoint = torch.load(path, map_location=device, weights_only=False)
    except (RuntimeError, OSError, EOFError, ValueError, pickle.UnpicklingError) as error:  # truncated, corrupt
        raise ValueError(f"cannot resume: {str(path)!r} is not a readable checkpoint ({type(error).__name__}: "
                         f"{error}); start the run again with --overwrite") from error
    model.load_state_dict(checkpoint["model"])
    optimizer.load_state_dict(checkpoint["optimizer"])
    scheduler.load_state_dict(checkpoint["scheduler"])
    scaler.load_state_dict(checkpoint["scaler"])
    state = _State(**checkpoint["state"])
    best = (f"best so far: epoch {state.best_epoch + 1}, F1 {state.best_f1:.3f}" if state.best_epoch >= 0
            else "no best epoch yet: the hotstart epochs are not candidates")
    logger.info("resuming %s after epoch %d (%s)", path.parent, state.epoch, best)
    best = checkpoint["best_model"]
    return state, None if best is None else _cpu_copy(best)


def _finish(config: TrainConfig, out: Path, state: _State, items: list[dict], split: str, device: torch.device, *,
            progress: bool) -> TrainResult:
    """Curves, TorchScript export of the best epoch, its evaluation on the held-out split; then the run in
    ``out`` replaces the one in ``config.out`` if it was built beside it."""
    write_metrics(out, state.history)
    plot_training_curves(state.history, out / CURVES, title=f"{config.preset} preset, {config.setting_label}")
    model_path = export_run(out, example=items[0]["image"], overwrite=True)
    evaluation = evaluate_items(load_segmenter(model_path, device=str(device)), items, progress=progress)
    best_f1 = state.best_f1 if math.isfinite(state.best_f1) else None
    write_evaluation(evaluation, out / EVALUATION, overwrite=True,
                     extra={"split": split, "best_epoch": state.best_epoch, "best_val_f1": best_f1})
    summary = evaluation.summary
    if out != config.out:
        replace_run_dir(out, config.out)
        logger.info("replaced the earlier run in %s", config.out)
    logger.info("best epoch %d (val F1 %.3f); held out, %s -> %s", state.best_epoch + 1, state.best_f1,
                summary_line(summary), config.out / TORCHSCRIPT)
    return TrainResult(config.out, state.best_epoch, state.best_f1, state.history, config.out / TORCHSCRIPT,
                       summary)
