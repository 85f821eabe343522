"""TensorBoard logging of a run (``--log tensorboard``): rank 0 writes ``RUN_DIR/tensorboard/``.

What is written, on an axis of optimizer steps (``S`` steps per epoch; step
``k`` is the ``k``-th step, counted from 1):

- ``train/loss``: every healthy training step's loss (rank 0's batch under torchrun);
- ``val/loss``, ``val/f1`` and ``lr`` (the learning rate from then on), once per epoch, at its last step: the
  numbers of ``metrics.csv``;
- ``val/panel``, every ``log_images_every`` epochs and after the last: the input, the seed map (upstream's
  decoding, ``seed / 15 + 0.5`` clipped to [0, 1]) and the predicted labels of the first validation tile,
  side by side.

A resumed run appends to the same folder and tells TensorBoard to hide what the
interrupted run wrote after its last checkpoint. The ``tensorboard`` package is an
optional extra; nothing imports it before a run asks for it.
"""

from __future__ import annotations

import numpy as np
import torch

from instanseg_scnp.training.config import TrainConfig

TENSORBOARD = "tensorboard"
"""The folder, in the run directory."""
INSTALL = "pip install 'instanseg-scnp[tensorboard]'"
GAP = 2
"""Pixels of white between the images of a panel."""


def require_tensorboard() -> None:
    """Raise an ImportError that says how to install the extra unless ``tensorboard`` can be imported."""
    try:
        import tensorboard  # noqa: F401
    except ImportError as error:
        raise ImportError(f"--log tensorboard needs the tensorboard package: {INSTALL}") from error


class Board:
    """The run's TensorBoard writer; see the module's docstring for what it writes where.

    Parameters
    ----------
    log_dir : path
        ``RUN_DIR/tensorboard``.
    config : TrainConfig
    steps_per_epoch : int
        Optimizer steps per epoch on this process.
    start_epoch : int
        The first epoch to train (after a resume, the epochs done): events written after it by an earlier,
        interrupted process are purged.
    """

    def __init__(self, log_dir, config: TrainConfig, *, steps_per_epoch: int, start_epoch: int = 0) -> None:
        require_tensorboard()
        from torch.utils.tensorboard import SummaryWriter

        self.config, self.steps_per_epoch = config, steps_per_epoch
        self.writer = SummaryWriter(str(log_dir), purge_step=start_epoch * steps_per_epoch + 1 if start_epoch else None)

    def __enter__(self) -> Board:
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.close()

    def close(self) -> None:
        self.writer.close()

    def train_step(self, epoch: int, position: int, loss: float) -> None:
        """The loss of the ``position``-th step (from 0) of ``epoch``."""
        self.writer.add_scalar("train/loss", loss, epoch * self.steps_per_epoch + position + 1)

    def end_epoch(self, epoch: int, row: dict) -> None:
        """An epoch's row of ``metrics.csv``: validation loss and F1, and the learning rate."""
        step = (epoch + 1) * self.steps_per_epoch
        self.writer.add_scalar("val/loss", row["val_loss"], step)
        self.writer.add_scalar("val/f1", row["val_f1"], step)
        self.writer.add_scalar("lr", row["lr"], step)
        self.writer.flush()

    def wants_panel(self, epoch: int) -> bool:
        """Whether ``epoch`` (from 0) ends with an image panel: every ``log_images_every``-th, and the last."""
        return (epoch + 1) % self.config.log_images_every == 0 or epoch + 1 == self.config.epochs

    def panel(self, epoch: int, image: torch.Tensor, output: torch.Tensor, labels: torch.Tensor) -> None:
        """Add ``image`` (C, H, W), the seed channel of the network's ``output`` (D, H, W) and the predicted
        ``labels`` (H, W) side by side, at the epoch's last step."""
        self.writer.add_image("val/panel", panel(image, output, labels), (epoch + 1) * self.steps_per_epoch,
                              dataformats="HWC")
        self.writer.flush()


def panel(image: torch.Tensor, output: torch.Tensor, labels: torch.Tensor) -> np.ndarray:
    """Input, seed map and labels side by side, as one (H, 3 W + 2 GAP, 3) float image in [0, 1].

    Examples
    --------
    >>> panel(torch.rand(3, 8, 8), torch.zeros(5, 8, 8), torch.zeros(8, 8, dtype=torch.long)).shape
    (8, 28, 3)
    """
    picture = image.detach().float().cpu().numpy()[:3]
    if picture.shape[0] < 3:  # one or two channels: shown in grey
        picture = np.repeat(picture.mean(0, keepdims=True), 3, axis=0)
    low, high = picture.min(), picture.max()
    picture = ((picture - low) / (high - low) if high > low else np.zeros_like(picture)).transpose(1, 2, 0)
    seeds = np.clip(output[-1].detach().float().cpu().numpy() / 15 + 0.5, 0, 1)
    seeds = np.repeat(seeds[..., None], 3, axis=-1)
    labels = labels.detach().cpu().numpy().reshape(picture.shape[:2]).astype(np.int64)
    palette = np.random.default_rng(0).uniform(0.25, 1.0, (int(labels.max(initial=0)) + 1, 3))
    palette[0] = 0
    gap = np.ones((picture.shape[0], GAP, 3))
    return np.concatenate([picture, gap, seeds, gap, palette[labels]], axis=1).astype(np.float32)
