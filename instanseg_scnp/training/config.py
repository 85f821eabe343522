"""The training configuration: one frozen dataclass, checked when it is made.

Every default is defined here or in :mod:`.presets`, once; the CLI reads its
defaults and help from these fields. A field whose default is ``None`` and
that a preset decides takes the preset's value.
"""

from __future__ import annotations

import dataclasses
import difflib
import json
import math
import numbers
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Literal

from instanseg_scnp._options import (
    DEPRECATED_MODES,
    DEPRECATED_TARGETS,
    EXPORT_FORMATS,
    MASK_LOSSES,
    MODES,
    SCNP_TARGETS,
    SEED_LOSSES,
    look_up_option,
    scnp_label,
    setting_label,
)
from instanseg_scnp.data.dataset import is_pixel_size
from instanseg_scnp.scnp import normalize_window
from instanseg_scnp.training.presets import PRESETS, default_preset, preset_values

DEVICES = ("auto", "cpu", "cuda")
PRECISIONS = ("fp32", "bf16", "fp16")
SCHEDULES = ("cosine", "constant")
NORMS = ("BATCH", "INSTANCE", "None")
LOGS = ("csv", "tensorboard")


@dataclass(frozen=True)
class TrainConfig:
    """Everything a training run depends on; saved to ``RUN_DIR/config.json``.

    Settings left at ``None`` come from ``preset`` (:mod:`.presets`): ``demo``
    on the built-in synthetic data (a few minutes on two CPU cores),
    ``upstream`` (upstream InstanSeg's recipe) on any other. Once made, every
    field holds its resolved value.

    Examples
    --------
    >>> TrainConfig(epochs=3).preset, TrainConfig(epochs=3).epochs
    ('demo', 3)
    >>> config = TrainConfig(data="IHC_TMA")
    >>> config.preset, config.mask_loss, config.lr_schedule
    ('upstream', 'lovasz_hinge', 'constant')
    >>> TrainConfig(data="IHC_TMA", preset="paper").mask_loss
    'cedice'
    """

    data: str = field(default="synthetic", metadata={
        "help": "'synthetic' (built in, the same for every seed), a dataset prepared by `instanseg-scnp prepare` "
                "(IHC_TMA, LyNSeC, NuInsSeg; see --data-root), or a path to an InstanSeg .pth dataset"})
    data_root: str | None = field(default=None, metadata={
        "help": "folder where `instanseg-scnp prepare` put the datasets --data IHC_TMA, LyNSeC or NuInsSeg names; "
                "None: $INSTANSEG_SCNP_DATA_DIR, else ~/.cache/instanseg-scnp"})
    out: Path = field(default=Path("runs/instanseg-scnp"), metadata={
        "help": "run directory to create; it must not exist unless --overwrite"})
    preset: Literal["demo", "upstream", "paper"] | None = field(default=None, metadata={
        "help": "recipe for the settings not given: 'demo' (minutes on a CPU), 'upstream' (upstream InstanSeg's "
                "scripts/train.py), 'paper' (upstream + the SCNP authors' CEDice with SCNP on the mask, w=3)"})
    epochs: int | None = field(default=None, metadata={"help": "training epochs, hotstart included"})
    epoch_length: int | None = field(default=None, metadata={
        "help": "training tiles per epoch (all processes together)"})
    batch_size: int | None = field(default=None, metadata={"help": "tiles per optimizer step and process"})
    tile_size: int | None = field(default=None, metadata={"help": "side of the square training tiles, px"})
    lr: float | None = field(default=None, metadata={"help": "Adam learning rate"})
    lr_schedule: Literal["cosine", "constant"] | None = field(default=None, metadata={
        "help": "learning-rate schedule over the epochs"})
    seed: int = field(default=0, metadata={"help": "seed of the weights, the tile draws and the augmentations"})
    device: Literal["auto", "cpu", "cuda"] = field(default="auto", metadata={
        "help": "'auto' picks CUDA when present"})
    precision: Literal["fp32", "bf16", "fp16"] = field(default="fp32", metadata={
        "help": "autocast precision of the network: bf16 (CUDA or CPU) or fp16 (CUDA only, with gradient "
                "scaling); the loss stays fp32"})
    seed_loss: str | None = field(default=None, metadata={
        "help": f"seed loss: {', '.join(SEED_LOSSES)} (upstream decodes the seed channel as a distance map, "
                "so binary_xloss models merge touching cells)"})
    mask_loss: str | None = field(default=None, metadata={
        "help": f"instance-mask loss: {', '.join(MASK_LOSSES)} (cedice: the SCNP authors' CE + Dice; tversky, "
                "focal, rwloss: the paper's baselines)"})
    scnp: Literal["off", "mask", "seed", "mask+seed"] | None = field(default=None, metadata={
        "help": "which losses get SCNP: off (the baseline), mask, seed or mask+seed"})
    scnp_window: int | None = field(default=None, metadata={
        "help": "odd SCNP window, px (the authors use 3 for InstanSeg)"})
    scnp_mode: Literal["penalized", "plain+penalized"] | None = field(default=None, metadata={
        "help": "'penalized': L(z~) only (the authors' InstanSeg setting); 'plain+penalized': L(z) + L(z~)"})
    hotstart: int | None = field(default=None, metadata={
        "help": "first epochs on upstream's plain binary_xloss seed and dice_loss mask losses (no SCNP)"})
    layers: tuple[int, ...] | None = field(default=None, metadata={"help": "UNet widths, shallow to deep"})
    norm: Literal["BATCH", "INSTANCE", "None"] | None = field(default=None, metadata={
        "help": "UNet normalization layer (INSTANCE leaves the output layer unnormalized)"})
    mlp_width: int | None = field(default=None, metadata={
        "help": "hidden width of upstream's pixel classifier, the small MLP that decides each pixel of a seed's "
                "crop (upstream's --mlp_width)"})
    window_size: int | None = field(default=None, metadata={
        "help": "side of the crop around each seed in the instance-mask loss, px"})
    pixel_size: float | None = field(default=None, metadata={
        "help": "rescale training images to this pixel size, µm; None keeps each dataset's own (with --init: the "
                "source model's)"})
    init: str | None = field(default=None, metadata={
        "help": "start from the weights of an exported InstanSeg model: an instanseg.pt, a run directory or a "
                "bioimage.io package (folder or .zip); --layers and --norm come from it"})
    workers: int = field(default=0, metadata={"help": "data-loading worker processes (2-8 help on GPU machines)"})
    deterministic: bool = field(default=False, metadata={
        "help": "use deterministic algorithms (bitwise-reproducible on CPU, slower on GPU)"})
    grad_clip: float = field(default=20.0, metadata={"help": "gradient-norm clipping, as upstream"})
    nonfinite_patience: int = field(default=5, metadata={
        "help": "consecutive training steps with a NaN or infinite loss (or gradient, outside fp16's loss "
                "scaling) after which the run stops with an error; such steps are skipped, and the last "
                "checkpoint stays resumable"})
    log: Literal["csv", "tensorboard"] = field(default="csv", metadata={
        "help": "csv: metrics.csv only; tensorboard: also RUN_DIR/tensorboard/ (losses, validation, learning "
                "rate, image panels; needs: pip install 'instanseg-scnp[tensorboard]')"})
    log_images_every: int = field(default=5, metadata={
        "help": "with --log tensorboard: an image panel of a validation tile every N epochs and after the last"})
    export: Literal["torchscript", "bioimageio"] = field(default="torchscript", metadata={
        "help": "torchscript: RUN_DIR/instanseg.pt; bioimageio: also the bioimage.io package RUN_DIR/bioimageio/ "
                "(for QuPath; needs: pip install 'instanseg-scnp[bioimageio]')"})

    def __post_init__(self) -> None:
        set_ = object.__setattr__
        set_(self, "preset", self.preset or default_preset(self.data))
        if self.init is not None:
            set_(self, "init", str(self.init))
            if None in (self.layers, self.norm, self.mlp_width, self.pixel_size):  # a saved config has them all
                _take_from_init(self)
        for name, value in preset_values(self.preset).items():
            if getattr(self, name) is None:
                set_(self, name, value)
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
        set_(self, "scnp", look_up_option(self.scnp, SCNP_TARGETS, name="scnp", aliases=DEPRECATED_TARGETS))
        set_(self, "scnp_mode", look_up_option(self.scnp_mode, MODES, name="scnp_mode", aliases=DEPRECATED_MODES))
        for name in ("epochs", "epoch_length", "batch_size", "tile_size", "window_size"):
            _check_int(name, getattr(self, name), minimum=1)
        _check_int("nonfinite_patience", self.nonfinite_patience, minimum=1)
        _check_int("log_images_every", self.log_images_every, minimum=1)
        look_up_option(self.log, LOGS, name="log")
        look_up_option(self.export, EXPORT_FORMATS, name="export")
        for name in ("hotstart", "workers", "seed"):
            _check_int(name, getattr(self, name), minimum=0)
        _check_int("mlp_width", self.mlp_width, minimum=1)
        if self.hotstart >= self.epochs:
            raise ValueError(f"hotstart must be fewer than epochs ({self.epochs}), got {self.hotstart}")
        if self.tile_size % 2 ** (len(self.layers) - 1):
            raise ValueError(f"tile_size must be a multiple of {2 ** (len(self.layers) - 1)} for "
                             f"{len(self.layers)} UNet levels, got {self.tile_size}")
        if not self.layers or any(not isinstance(n, numbers.Integral) or n < 1 for n in self.layers):
            raise ValueError(f"layers must be positive ints, got {self.layers!r}")
        deepest = self.tile_size // 2 ** (len(self.layers) - 1)
        if self.norm == "BATCH" and self.batch_size * deepest**2 < 2:
            raise ValueError(f"norm='BATCH' needs more than one value per channel at the deepest UNet level: "
                             f"batch_size {self.batch_size} x {deepest}x{deepest} px there; raise --batch-size or "
                             "--tile-size, or use --norm INSTANCE")
        _check_window(self.scnp_window)
        for name in ("lr", "grad_clip"):
            value = getattr(self, name)
            if not (isinstance(value, numbers.Real) and math.isfinite(value) and value > 0):
                raise ValueError(f"{name} must be a positive number, got {value!r}")
        if self.pixel_size is not None and not is_pixel_size(self.pixel_size):
            raise ValueError(f"pixel_size must be a positive number of µm, got {self.pixel_size!r}")

    @property
    def scnp_label(self) -> str:
        """The SCNP setting in words, for tables and plots: ``"no SCNP"``, ``"SCNP mask w3 penalized"``..."""
        return scnp_label(self.scnp, self.scnp_window, self.scnp_mode)

    @property
    def setting_label(self) -> str:
        """:attr:`scnp_label` and the two losses, as ``compare`` names a setting."""
        return setting_label(self.scnp, self.scnp_window, self.scnp_mode, self.seed_loss, self.mask_loss)

    def to_json(self) -> str:
        """The config as JSON (paths as strings)."""
        return json.dumps({**dataclasses.asdict(self), "out": str(self.out)}, indent=2)

    @classmethod
    def from_json(cls, text: str) -> TrainConfig:
        """Inverse of :meth:`to_json`; also reads the configs of older versions (:func:`upgrade_saved`)."""
        return cls(**upgrade_saved(json.loads(text)))

    @classmethod
    def from_file(cls, path: str | Path, **overrides: object) -> TrainConfig:
        """The config in a run's ``config.json`` (its ``"config"`` section) or a TOML file of the same keys,
        with ``overrides`` replacing its values: ``TrainConfig.from_file("runs/a/config.json", seed=1,
        out="runs/a-s1")`` repeats run ``a`` with another seed.

        Settings neither the file nor ``overrides`` give come from the preset, as in ``TrainConfig(...)``.
        A ``config.json`` holds every resolved setting, so only ``overrides`` change the run it describes.

        Raises
        ------
        ValueError
            If the file is not JSON or TOML, or has a key that is not a field (the message names it and the
            accepted keys), or a value is invalid.
        FileNotFoundError
            If there is no such file.
        """
        return cls(**{**read_config_file(path), **overrides})


def _take_from_init(config: TrainConfig) -> None:
    """Set the ``layers``, ``norm``, ``mlp_width`` and ``pixel_size`` that ``config`` leaves out to its ``init``
    model's; an explicit ``layers``, ``norm`` or ``mlp_width`` that differs from the model's is an error naming
    both."""
    from instanseg_scnp.upstream.finetune import check_architecture, load_initial_weights

    initial = load_initial_weights(config.init)
    check_architecture(initial, layers=config.layers, norm=config.norm, mlp_width=config.mlp_width)
    for name in ("layers", "norm", "mlp_width"):
        object.__setattr__(config, name, initial.architecture[name])
    if config.pixel_size is None:
        object.__setattr__(config, "pixel_size", initial.pixel_size)


def _check_int(name: str, value: object, *, minimum: int) -> None:
    if isinstance(value, bool) or not isinstance(value, numbers.Integral) or value < minimum:
        raise ValueError(f"{name} must be an int >= {minimum}, got {value!r}")


def _check_window(window: object) -> None:
    if window == "auto":
        raise ValueError("scnp_window='auto' was removed (no experiment backed it): give an odd int; the SCNP "
                         "authors use 3 for InstanSeg, the default")
    try:
        normalize_window(window, 2)
    except (TypeError, ValueError) as error:
        raise ValueError(f"scnp_window must be a positive odd int, got {window!r} ({error})") from None


def upgrade_saved(config: dict, derived: dict | None = None) -> dict:
    """A saved config in this version's spellings, without warnings.

    Older runs wrote ``scnp="both"``/``scnp_mode="both"`` (now ``"mask+seed"``/
    ``"plain+penalized"``) and could use ``scnp_window="auto"`` (now the window
    they resolved to, from ``derived``).
    """
    config = dict(config)
    config["scnp"] = DEPRECATED_TARGETS.get(config.get("scnp"), config.get("scnp"))
    config["scnp_mode"] = DEPRECATED_MODES.get(config.get("scnp_mode"), config.get("scnp_mode"))
    if config.get("scnp_window") == "auto" and derived and "scnp_window" in derived:
        config["scnp_window"] = derived["scnp_window"]
    return {key: value for key, value in config.items() if value is not None}


def read_config_file(path: str | Path) -> dict:
    """The settings in a ``config.json`` that a run wrote (``{"config": ..., "derived": ...}``; only
    ``"config"`` is read, in this version's spellings) or in a JSON or TOML (``.toml``) file of
    :class:`TrainConfig`'s fields, as ``{field: value}``; an unknown key is a ValueError naming it."""
    path = Path(path)
    text = path.read_text(encoding="utf-8")
    toml = path.suffix.lower() == ".toml"
    try:
        if toml:
            try:
                import tomllib
            except ModuleNotFoundError:  # Python 3.10
                import tomli as tomllib
            values = tomllib.loads(text)
        else:
            values = json.loads(text)
    except ValueError as error:  # JSONDecodeError and TOMLDecodeError are ValueErrors
        raise ValueError(f"{str(path)!r} is not valid {'TOML' if toml else 'JSON'} ({error}); a config file is a "
                         "run's config.json or a .toml file of the same keys") from None
    if not isinstance(values, dict):
        raise ValueError(f"{str(path)!r} holds a {type(values).__name__}, not a table of settings")
    accepted = [item.name for item in dataclasses.fields(TrainConfig)]
    if isinstance(values.get("config"), dict):  # a run's config.json: its derived settings are not settings
        _check_keys(path, values, ("config", "derived"))
        values = upgrade_saved(values["config"], values.get("derived"))
    else:
        values = upgrade_saved(values)
    _check_keys(path, values, accepted)
    return values


def _check_keys(path: Path, values: dict, accepted: Sequence[str]) -> None:
    for key in values:
        if key not in accepted:
            close = difflib.get_close_matches(str(key), accepted, n=1)
            hint = f" (did you mean {close[0]!r}?)" if close else ""
            raise ValueError(f"{str(path)!r}: unknown setting {key!r}{hint}; the settings are "
                             f"{', '.join(accepted)}")
