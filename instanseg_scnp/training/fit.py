"""Fitting: the epochs, each validated and checkpointed, from the first or from the last checkpoint.

Reproducibility: weights are seeded from ``seed`` (:mod:`.setup`); every tile
from (seed, epoch, position) (see :mod:`.samples`); the global RNGs, which
upstream's loss also draws from, are reseeded from (seed, epoch, rank) at the
start of every epoch, so no RNG state needs saving; a checkpoint after every
epoch holds the model, optimizer, scheduler, gradient scaler and the best
weights so far. A run killed at any point and resumed on the same number of
processes ends with the same weights as one that never stopped (bitwise on CPU
with ``deterministic=True``).
"""

from __future__ import annotations

import contextlib
import dataclasses
import logging
import math
import pickle
import random
import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
from torch.utils.data import DataLoader
from tqdm.auto import tqdm

from instanseg_scnp._files import atomic_path
from instanseg_scnp.metrics import DEFAULT_THRESHOLDS
from instanseg_scnp.rundir import BEST_WEIGHTS, CHECKPOINT, RunDirError, write_metrics
from instanseg_scnp.training import distributed
from instanseg_scnp.training.config import TrainConfig
from instanseg_scnp.training.samples import Tiles, collate, epoch_plan, epoch_seed, validation_plan
from instanseg_scnp.training.setup import Run
from instanseg_scnp.training.tensorboard import TENSORBOARD, Board
from instanseg_scnp.upstream import quiet_upstream, validation_f1

logger = logging.getLogger(__name__)

HOTSTART_LOSSES = ("binary_xloss", "dice_loss")
"""Upstream's hotstart swaps the seed and mask losses to these (and SCNP off)."""


class TrainingDiverged(RuntimeError):
    """Training produced non-finite losses or gradients ``nonfinite_patience`` steps in a row."""


@dataclass
class FitState:
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


def fit(run: Run, *, resuming: bool, progress: bool) -> FitState:
    """Train the epochs not done yet, validate each and keep the best after the hotstart; rank 0 checkpoints
    every epoch, logs it, and at the end writes the best weights as upstream's ``model_weights.pth``."""
    config, process, model, loss_fn, out = run.config, run.process, run.model, run.loss_fn, run.out
    state, best_weights = FitState(), None
    if resuming:
        state, best_weights = _load_checkpoint(out / CHECKPOINT, run)

    train_tiles = Tiles(run.dataset["Train"], config.tile_size, train=True, pixel_size=config.pixel_size)
    val_tiles = Tiles(run.dataset["Validation"], config.tile_size, train=False, pixel_size=config.pixel_size)
    with _open_board(run, start_epoch=state.epoch) as board:  # None but on rank 0 with --log tensorboard
        for epoch in range(state.epoch, config.epochs):
            hot = epoch < config.hotstart
            _seed_globals(epoch_seed(config.seed, epoch, process.rank))
            for update, name in zip((loss_fn.update_seed_loss, loss_fn.update_binary_loss),
                                    HOTSTART_LOSSES if hot else run.main_losses, strict=True):
                update(name)
            start = time.perf_counter()
            train_loss = _train_epoch(run, train_tiles, epoch, progress=progress, board=board)
            train_time = time.perf_counter() - start
            run.scheduler.step()
            if process.is_main:
                val_loss, val_f1 = _validate(run, val_tiles)
                row = {"epoch": epoch, "phase": "hotstart" if hot else "main", "seed_loss": loss_fn.scnp_seed_loss_name,
                       "mask_loss": loss_fn.scnp_mask_loss_name, "train_loss": train_loss, "val_loss": val_loss,
                       "val_f1": val_f1, "lr": run.optimizer.param_groups[0]["lr"], "train_time_s": train_time,
                       "tiles_per_s": config.epoch_length / train_time,
                       "val_time_s": time.perf_counter() - start - train_time}
                state.history.append(row)
                state.epoch = epoch + 1
                best = not hot and state.improves(val_f1, val_loss)
                if best:
                    state.best_epoch, state.best_f1, state.best_val_loss = epoch, val_f1, val_loss
                    best_weights = _cpu_copy(model.state_dict())
                _save_checkpoint(out / CHECKPOINT, state, run, best_weights)
                write_metrics(out, state.history)
                if best:  # after the checkpoint, which holds them too: a kill in between loses nothing
                    _save_best(out / BEST_WEIGHTS, best_weights, state)
                logger.info("epoch %d/%d %-8s train loss %.4f | val loss %.4f | val F1 %.3f%s | %.1f s, %.1f tiles/s",
                            epoch + 1, config.epochs, row["phase"], train_loss, val_loss, val_f1,
                            " (best)" if best else "", train_time, row["tiles_per_s"])
                if board is not None:
                    board.end_epoch(epoch, row)
                    if board.wants_panel(epoch):
                        board.panel(epoch, *_predict_tile(run, val_tiles))
            if process.distributed:
                torch.distributed.barrier()

    distributed.check_replicas(process, model)
    if process.is_main:
        _save_best(out / BEST_WEIGHTS, best_weights, state)
    return state


def _open_board(run: Run, *, start_epoch: int) -> contextlib.AbstractContextManager[Board | None]:
    """The run's TensorBoard writer on rank 0 with ``log="tensorboard"``; otherwise None."""
    config, process = run.config, run.process
    if config.log != "tensorboard" or not process.is_main:
        return contextlib.nullcontext()
    steps = math.ceil(len(range(process.rank, config.epoch_length, process.world_size)) / config.batch_size)
    return Board(run.out / TENSORBOARD, config, steps_per_epoch=steps, start_epoch=start_epoch)


def _train_epoch(run: Run, tiles: Tiles, epoch: int, *, progress: bool, board: Board | None = None) -> float:
    """One epoch of optimizer steps on this rank's tiles; the mean loss over all ranks' healthy steps.

    A step with a non-finite loss or gradient is skipped on every rank; ``nonfinite_patience`` of them in a row
    raise :class:`TrainingDiverged`.
    """
    config, process = run.config, run.process
    plan = epoch_plan(len(tiles), config.epoch_length, seed=config.seed, epoch=epoch, rank=process.rank,
                      world_size=process.world_size)
    loader = DataLoader(tiles, batch_size=config.batch_size, sampler=plan, collate_fn=collate,
                        num_workers=config.workers, pin_memory=process.device.type == "cuda")
    losses, unhealthy = [], 0
    run.trained.train()
    bar = tqdm(loader, desc=f"epoch {epoch + 1}/{config.epochs}", unit="batch", disable=not progress, leave=False)
    for position, (images, labels) in enumerate(bar):
        loss, stepped = train_step(run, images, labels)
        unhealthy = 0 if stepped else unhealthy + 1
        if unhealthy >= config.nonfinite_patience:
            raise TrainingDiverged(
                f"{config.out}: {unhealthy} training steps in a row had a NaN or infinite loss or gradient "
                f"(epoch {epoch + 1}); the run stopped before its weights became NaN. Its last checkpoint, if "
                "any, is resumable; check the images and labels, or lower --lr")
        if loss is not None:
            losses.append(loss)
            bar.set_postfix(loss=f"{loss:.4f}", refresh=False)
            if board is not None:
                board.train_step(epoch, position, loss)
    return distributed.average(process, float(np.mean(losses)) if losses else float("nan"))


def train_step(run: Run, images: torch.Tensor, labels: torch.Tensor) -> tuple[float | None, bool]:
    """One optimizer step on a batch: its loss (None where the loss or the gradient was not finite here) and
    whether the update was applied (on every rank only where every rank's step was finite).

    One host-device synchronization per step: the loss and the health flag come back together, after the
    backward, as the step needs to know whether to apply the update.
    """
    config, process, trained, optimizer, scaler = run.config, run.process, run.trained, run.optimizer, run.scaler
    device = process.device
    images, labels = images.to(device, non_blocking=True), labels.to(device, non_blocking=True)
    with torch.autocast(device.type, dtype=_autocast_dtype(config), enabled=config.precision != "fp32"):
        output = trained(images)
    loss = run.loss_fn.forward(output.float(), labels).mean()
    if process.distributed:  # a batch without seeds leaves the pixel classifier out; DDP needs every grad
        loss = loss + 0.0 * sum(parameter.sum() for parameter in trained.parameters())
    optimizer.zero_grad(set_to_none=True)
    scaler.scale(loss).backward()
    scaler.unscale_(optimizer)
    norm = torch.nn.utils.clip_grad_norm_(trained.parameters(), config.grad_clip)
    # fp16's scaler skips its own overflowing steps; anywhere else a non-finite value would poison the weights
    finite = torch.isfinite(loss) if config.precision == "fp16" else torch.isfinite(loss) & torch.isfinite(norm)
    value, healthy = torch.stack([loss.detach(), finite.to(loss.dtype)]).tolist()
    healthy = healthy == 1.0
    stepped = distributed.all_ranks(process, healthy)
    if stepped:
        scaler.step(optimizer)
    scaler.update()
    return (value if healthy else None), stepped


def _autocast_dtype(config: TrainConfig) -> torch.dtype:
    return torch.bfloat16 if config.precision == "bf16" else torch.float16


@torch.no_grad()
def _validate(run: Run, tiles: Tiles) -> tuple[float, float]:
    """Loss and upstream's F1 (IoU 0.5-0.9) on one fixed tile per validation image."""
    config, model, loss_fn, device = run.config, run.model, run.loss_fn, run.process.device
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
    return float(np.mean(losses)), validation_f1(truth, predicted, DEFAULT_THRESHOLDS)


@torch.no_grad()
def _predict_tile(run: Run, tiles: Tiles) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """The first validation tile, the network's output on it and the labels upstream decodes from that."""
    config, model, device = run.config, run.model, run.process.device
    image, _ = tiles[validation_plan(len(tiles), seed=config.seed)[0]]
    model.eval()
    with torch.autocast(device.type, dtype=_autocast_dtype(config), enabled=config.precision != "fp32"):
        output = model(image[None].to(device))[0].float()
    with quiet_upstream():
        labels = run.loss_fn.postprocessing(output)
    return image, output, labels


def _seed_globals(seed: int) -> None:
    """Seed the global generators that upstream's loss and torch draw from."""
    random.seed(seed)
    np.random.seed(seed)
    torch.manual_seed(seed)


def _cpu_copy(state_dict: dict) -> dict:
    return {name: tensor.detach().to("cpu", copy=True) for name, tensor in state_dict.items()}


def _save_best(path: Path, weights: dict | None, state: FitState) -> None:
    """Upstream's ``model_weights.pth`` layout, which its ``load_model`` reads."""
    if weights is None:
        return
    with atomic_path(path) as tmp:
        torch.save({"f1_score": state.best_f1, "epoch": state.best_epoch, "model_state_dict": weights}, tmp)


def _save_checkpoint(path: Path, state: FitState, run: Run, best_weights: dict | None) -> None:
    """The checkpoint, written aside then renamed: a failed write (a full disk) leaves the previous one."""
    try:
        with atomic_path(path) as tmp:
            torch.save({
                "state": dataclasses.asdict(state), "model": run.model.state_dict(),
                "optimizer": run.optimizer.state_dict(), "scheduler": run.scheduler.state_dict(),
                "scaler": run.scaler.state_dict(), "best_model": best_weights,
            }, tmp)
    except (OSError, RuntimeError) as error:  # torch reports a failed write as either
        raise OSError(f"cannot write the checkpoint {str(path)!r} ({error}); the previous checkpoint is intact: "
                      "free some space, then --resume") from error


def _load_checkpoint(path: Path, run: Run) -> tuple[FitState, dict | None]:
    """Restore model, optimizer, scheduler and scaler from ``path``; the epoch state and the best weights so far."""
    if not path.is_file():
        raise RunDirError(f"cannot resume: {str(path)!r} does not exist (the run stopped before its first epoch "
                          "ended; start it again with --overwrite)")
    try:
        checkpoint = torch.load(path, map_location=run.process.device, weights_only=False)
    except (RuntimeError, OSError, EOFError, ValueError, pickle.UnpicklingError) as error:  # truncated, corrupt
        raise ValueError(f"cannot resume: {str(path)!r} is not a readable checkpoint ({type(error).__name__}: "
                         f"{error}); start the run again with --overwrite") from error
    run.model.load_state_dict(checkpoint["model"])
    run.optimizer.load_state_dict(checkpoint["optimizer"])
    run.scheduler.load_state_dict(checkpoint["scheduler"])
    run.scaler.load_state_dict(checkpoint["scaler"])
    state = FitState(**checkpoint["state"])
    best = (f"best so far: epoch {state.best_epoch + 1}, F1 {state.best_f1:.3f}" if state.best_epoch >= 0
            else "no best epoch yet: the hotstart epochs are not candidates")
    logger.info("resuming %s after epoch %d (%s)", path.parent, state.epoch, best)
    best = checkpoint["best_model"]
    return state, None if best is None else _cpu_copy(best)
