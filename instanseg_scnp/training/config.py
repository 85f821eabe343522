"""The training configuration: one frozen dataclass, checked when it is made.

Every default is defined here, once; the CLI reads its defaults and help from
these fields.
"""

from __future__ import annotations

import dataclasses
import json
import math
import numbers
from dataclasses import dataclass, field
from pathlib import Path
from typing import Literal

from instanseg_scnp._options import look_up_option
from instanseg_scnp.data.dataset import is_pixel_size
from instanseg_scnp.losses import MASK_LOSSES, MODES, SCNP_TARGETS, SEED_LOSSES
from instanseg_scnp.scnp import normalize_window

DEVICES = ("auto", "cpu", "cuda")
PRECISIONS = ("fp32", "bf16", "fp16")
SCHEDULES = ("cosine", "constant")
NORMS = ("BATCH", "INSTANCE", "None")
AUTO_WINDOW_RANGE = (3, 9)


@dataclass(frozen=True)
class TrainConfig:
    """Everything a training run depends on; saved to ``RUN_DIR/config.json``.

    The defaults train on the built-in synthetic data in a few minutes on two CPU
    cores. For real datasets raise ``epochs``, ``epoch_length`` and ``tile_size``
    (upstream InstanSeg trains 500 epochs of 1,000 256x256 tiles).
    """

    data: str = field(default="synthetic", metadata={
        "help": "'synthetic' (built in, the same for every seed), a dataset prepared by `instanseg-scnp prepare` "
                "(IHC_TMA, LyNSeC, NuInsSeg; see --data-root), or a path to an InstanSeg .pth dataset"})
    data_root: str | None = field(default=None, metadata={
        "help": "folder where `instanseg-scnp prepare` put the datasets --data IHC_TMA, LyNSeC or NuInsSeg names; "
                "None: $INSTANSEG_SCNP_DATA_DIR, else ~/.cache/instanseg-scnp"})
    out: Path = field(default=Path("runs/instanseg-scnp"), metadata={
        "help": "run directory to create; it must not exist unless --overwrite"})
    epochs: int = field(default=12, metadata={"help": "training epochs, hotstart included"})
    epoch_length: int = field(default=64, metadata={"help": "training tiles per epoch (all processes together)"})
    batch_size: int = field(default=4, metadata={"help": "tiles per optimizer step and process"})
    tile_size: int = field(default=128, metadata={"help": "side of the square training tiles, px"})
    lr: float = field(default=3e-3, metadata={"help": "Adam learning rate"})
    lr_schedule: Literal["cosine", "constant"] = field(default="cosine", metadata={
        "help": "learning-rate schedule over the epochs"})
    seed: int = field(default=0, metadata={"help": "seed of the weights, the tile draws and the augmentations"})
    device: Literal["auto", "cpu", "cuda"] = field(default="auto", metadata={
        "help": "'auto' picks CUDA when present"})
    precision: Literal["fp32", "bf16", "fp16"] = field(default="fp32", metadata={
        "help": "autocast precision of the network: bf16 (CUDA or CPU) or fp16 (CUDA only, with gradient "
                "scaling); the loss stays fp32"})
    seed_loss: str = field(default="binary_xloss", metadata={
        "help": f"seed loss: {', '.join(SEED_LOSSES)} (upstream's default l1_distance converges more slowly)"})
    mask_loss: str = field(default="dice_loss", metadata={
        "help": f"instance-mask loss: {', '.join(MASK_LOSSES)} "
                "(upstream's default lovasz_hinge converges more slowly)"})
    scnp: Literal["off", "mask", "seed", "both"] = field(default="mask", metadata={
        "help": "which losses get SCNP: off, mask, seed or both"})
    scnp_window: int | str = field(default=3, metadata={
        "help": "odd SCNP window, or 'auto': about a quarter of the median nucleus diameter, odd, "
                f"clipped to {AUTO_WINDOW_RANGE[0]}..{AUTO_WINDOW_RANGE[1]}"})
    scnp_mode: Literal["penalized", "both"] = field(default="penalized", metadata={
        "help": "'penalized': L(z~); 'both': L(z) + L(z~)"})
    hotstart: int = field(default=2, metadata={
        "help": "first epochs on upstream's plain binary_xloss seed and dice_loss mask losses (no SCNP)"})
    layers: tuple[int, ...] = field(default=(16, 32, 64, 128), metadata={
        "help": "UNet widths, shallow to deep (upstream: 32 64 128 256)"})
    norm: Literal["BATCH", "INSTANCE", "None"] = field(default="BATCH", metadata={"help": "UNet normalization layer"})
    window_size: int = field(default=64, metadata={
        "help": "side of the crop around each seed in the instance-mask loss, px (upstream: 128)"})
    pixel_size: float | None = field(default=None, metadata={
        "help": "rescale training images to this pixel size, µm; None keeps each dataset's own"})
    workers: int = field(default=0, metadata={"help": "data-loading worker processes (2-8 help on GPU machines)"})
    deterministic: bool = field(default=False, metadata={
        "help": "use deterministic algorithms (bitwise-reproducible on CPU, slower on GPU)"})
    grad_clip: float = field(default=20.0, metadata={"help": "gradient-norm clipping, as upstream"})

    def __post_init__(self) -> None:
        set_ = object.__setattr__
        set_(self, "out", Path(self.out))
        set_(self, "layers", tuple(self.layers))
        if self.data_root is not None:
            set_(self, "data_root", str(self.data_root))
        look_up_option(self.device, DEVICES, name="device")
        look_up_option(self.precision, PRECISIONS, name="precision")
        look_up_option(self.lr_schedule, SCHEDULES, name="lr_schedule")
        look_up_option(self.norm, NORMS, name="norm")
        look_up_option(self.seed_loss, SEED_LOSSES, name="seed_loss")
        look_up_option(self.mask_loss, MASK_LOSSES, name="mask_loss")
        look_up_option(self.scnp, SCNP_TARGETS, name="scnp")
        look_up_option(self.scnp_mode, MODES, name="scnp_mode")
        for name in ("epochs", "epoch_length", "batch_size", "tile_size", "window_size"):
            _check_int(name, getattr(self, name), minimum=1)
        for name in ("hotstart", "workers", "seed"):
            _check_int(name, getattr(self, name), minimum=0)
        if self.hotstart >= self.epochs:
            raise ValueError(f"hotstart must be fewer than epochs ({self.epochs}), got {self.hotstart}")
        if self.tile_size % 2 ** (len(self.layers) - 1):
            raise ValueError(f"tile_size must be a multiple of {2 ** (len(self.layers) - 1)} for "
                             f"{len(self.layers)} UNet levels, got {self.tile_size}")
        if not self.layers or any(not isinstance(n, numbers.Integral) or n < 1 for n in self.layers):
            raise ValueError(f"layers must be positive ints, got {self.layers!r}")
        if self.scnp_window != "auto":
            _check_window(self.scnp_window)
        for name in ("lr", "grad_clip"):
            value = getattr(self, name)
            if not (isinstance(value, numbers.Real) and math.isfinite(value) and value > 0):
                raise ValueError(f"{name} must be a positive number, got {value!r}")
        if self.pixel_size is not None and not is_pixel_size(self.pixel_size):
            raise ValueError(f"pixel_size must be a positive number of µm, got {self.pixel_size!r}")

    def to_json(self) -> str:
        """The config as JSON (paths as strings)."""
        return json.dumps({**dataclasses.asdict(self), "out": str(self.out)}, indent=2)

    @classmethod
    def from_json(cls, text: str) -> TrainConfig:
        """Inverse of :meth:`to_json`."""
        return cls(**json.loads(text))


def _check_int(name: str, value: object, *, minimum: int) -> None:
    if isinstance(value, bool) or not isinstance(value, numbers.Integral) or value < minimum:
        raise ValueError(f"{name} must be an int >= {minimum}, got {value!r}")


def _check_window(window: object) -> None:
    try:
        normalize_window(window, 2)
    except (TypeError, ValueError) as error:
        raise ValueError(f"scnp_window must be a positive odd int or 'auto', got {window!r} ({error})") from None


def auto_window(median_diameter: float) -> int:
    """SCNP window from the median nucleus diameter (px): ``d / 4`` to the nearest odd int, in 3..9.

    The paper found that the best window tracks the thickness of the structures;
    a quarter of the diameter lets a pixel's window reach halfway to the centre of
    a nucleus without spanning a whole one. This rule is ours, not the paper's.

    Examples
    --------
    >>> [auto_window(d) for d in (8, 14, 20, 28, 60)]
    [3, 3, 5, 7, 9]
    """
    low, high = AUTO_WINDOW_RANGE
    return int(min(max(2 * round((median_diameter / 4 - 1) / 2) + 1, low), high))
