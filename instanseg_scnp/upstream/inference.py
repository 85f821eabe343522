r"""Run an exported InstanSeg model: its labels, and its outputs taken apart.

An exported model (``RUN_DIR/instanseg.pt``) is upstream InstanSeg's TorchScript
wrapper ``InstanSeg_Torchscript``: ``model.fcn`` is the network, returning
(B, 5, H, W) for 2 coordinate, 2 sigma and 1 seed channels, and ``model(x)``
returns the labels.

- :func:`prepare_image` turns an array into the network's input, one rule for
  every caller (evaluation, export checks, the napari plugin).
- :func:`segment` runs upstream's own inference class (``instanseg.InstanSeg``,
  ``eval_small_image``), exactly as a user of the exported file would, and
  returns the labels.
- :func:`model_outputs` returns what the model computes on the way:

  - the **seed map**: the network's last channel, the seed logits (upstream finds
    seeds as the peaks of ``seed / 15 + 0.5`` above the seed threshold, i.e. of
    the logit above ``15 * (seed_threshold - 0.5)``, 0 for the exports of
    ``instanseg-scnp``);
  - the **instance-mask logits** of every seed: upstream's pixel classifier over
    the crop of ``2 * window_size`` pixels around the seed, exactly as the
    wrapper's forward computes them, before its sigmoid (:class:`InstanceCrops`);
  - those crops **assembled into one map**: each pixel takes the largest logit of
    the crops that cover it, and so the crop that owns it. This is upstream's own
    rule: its ``convert`` gives each pixel to the crop with the highest
    probability (ties to the first seed), and the sigmoid is monotone. The map is
    the logits *before* upstream's cleanup (pieces of a crop not connected to its
    seed dropped, holes filled) and before overlapping instances are merged, so it
    shows what the pixel classifier said; pixels that no crop reaches take the
    map's lowest logit;
  - the **labels**: the wrapper's own forward on the same normalized image, at the
    image's own resolution (no rescaling to the model's pixel size).

**Tiled inference** (``tile_size=``) bounds the memory of the network by the tile,
not by the image, for real-size images:

- :func:`segment` hands the image to upstream's own tiling
  (``InstanSeg.eval_medium_image``: windows of ``tile_size`` overlapping by
  upstream's 2 * (80 + 20) px, each window's labels cut 80 px in from its inner
  sides, cells touching a cut dropped and the rest merged with the cells already
  placed, by IoU > 0.1);
- :func:`model_outputs` runs the network (``model.fcn``) window by window: the
  image is cut into cores, multiples of :data:`TILE_ALIGN` px a side and origin
  (so the UNet's pooling grid is the whole image's), each run with a halo of
  :data:`TILE_HALO` px of image around it, and only the cores are stitched into
  the (5, H, W) output. The halo covers the whole receptive field of upstream's
  default network (4 levels, 92 px), so the stitched output is the whole-image
  output up to float rounding. Seeds, crops and the assembled map then come from
  the stitched output as without tiles (their memory grows with the image: 5
  floats a pixel, and the crops of the seeds), and the labels from the tiled
  :func:`segment`.

Both take ``progress(done, total)``, called after each tile, and ``cancel()``,
asked before each tile, which stops the run with :class:`Cancelled`.
"""

from __future__ import annotations

import inspect
import io
import logging
import numbers
import warnings
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

from instanseg_scnp._logs import first_line
from instanseg_scnp.data.dataset import MIN_IMAGE_SIDE
from instanseg_scnp.rundir import TORCHSCRIPT
from instanseg_scnp.upstream._compat import upstream
from instanseg_scnp.upstream._quiet import quiet_upstream
from instanseg_scnp.upstream.package import RDF, PackageError, is_package_zip, package_folder_weights, package_zip_weights

logger = logging.getLogger(__name__)

__all__ = [
    "CROP_CHUNK",
    "MIN_INFERENCE_SIZE",
    "MIN_TILE_SIZE",
    "SUPPORTED_LAYOUT",
    "TILE_ALIGN",
    "TILE_HALO",
    "Cancelled",
    "PER_INPUT_NORMS",
    "normalizes_per_tile",
    "InstanceCrops",
    "ModelError",
    "ModelOutputs",
    "load_model",
    "model_outputs",
    "pad_for_inference",
    "prepare_image",
    "resolve_model_path",
    "segment",
]

MIN_INFERENCE_SIZE = 64
"""Smallest image side upstream's exported model handles: below it (twice its 32 px crop
window) ``InstanSeg_Torchscript`` builds sparse tensors with negative indices, which
corrupts memory (torch does not check sparse invariants by default). :func:`segment`
pads smaller images; :func:`model_outputs` refuses them."""

SUPPORTED_LAYOUT = {"dim_coords": 2, "n_sigma": 2, "dim_seeds": 1, "cells_and_nuclei": False}
"""The output layout :func:`model_outputs` reads: nucleus models with one seed channel, as
``instanseg-scnp train`` exports them."""

CROP_CHUNK = 256
"""Seeds whose crops go through the pixel classifier at once (bounds the memory of big images)."""

NORMALIZED_RANGE = (-2.0, 3.0)
"""The wrapper's forward clamps its (normalized) input to this range, in place."""


class ModelError(ValueError):
    """A model path or file that is not an exported InstanSeg model; the message says what to choose instead."""


TILE_ALIGN = 32
"""Tiled :func:`model_outputs` puts its windows at multiples of this many pixels, so that the pooling grid of the
network (upstream pads its input to multiples of 16) is the whole image's."""

TILE_HALO = 96
"""Pixels of image around each core of tiled :func:`model_outputs`: at least the receptive-field radius of
upstream's default network (``InstanSeg_UNet``, layers (256, 128, 64, 32): 4 convolutions of 3 x 3 a block at 4
levels, 92 px), a multiple of :data:`TILE_ALIGN`. Beyond the radius an output pixel does not depend on the input,
so the cores match the whole-image output up to float rounding."""

MIN_TILE_SIZE = 256
"""Smallest ``tile_size``: upstream's tiling needs windows wider than its 2 * (80 + 20) px overlap, and tiled
:func:`model_outputs` a core of at least 2 * :data:`TILE_ALIGN` px inside the halo."""


class Cancelled(Exception):
    """Tiled inference stopped between tiles because its ``cancel`` callable returned True."""


ProgressCallback = Callable[[int, int], object]
CancelCallback = Callable[[], bool]


class _Tiles:
    """One run's tile count: asks ``cancel`` before each tile, tells ``progress`` after each."""

    def __init__(self, total: int, progress: ProgressCallback | None, cancel: CancelCallback | None):
        self.done, self.total, self.progress, self.cancel = 0, total, progress, cancel

    def before(self) -> None:
        if self.cancel is not None and self.cancel():
            raise Cancelled(f"inference cancelled after {self.done} of {self.total} tiles")

    def after(self) -> None:
        self.done += 1
        self.total = max(self.total, self.done)
        if self.progress is not None:
            self.progress(self.done, self.total)


class _TileCounter(torch.nn.Module):
    """The exported model as upstream's tiling calls it (``predictor(tile, **kwargs)``), counting its tiles.

    Everything else (``pixel_size``, ``cells_and_nuclei``, ``graph``, which upstream
    reads) is the wrapped model's.
    """

    def __init__(self, model: torch.jit.ScriptModule, tiles: _Tiles):
        super().__init__()
        self.model = model
        self.tiles = tiles

    def forward(self, x: torch.Tensor, **kwargs) -> torch.Tensor:
        self.tiles.before()
        labels = self.model(x, **kwargs)
        self.tiles.after()
        return labels

    def __getattr__(self, name: str):
        try:
            return super().__getattr__(name)
        except AttributeError:
            return getattr(self._modules["model"], name)


PER_INPUT_NORMS = ("InstanceNorm1d", "InstanceNorm2d", "InstanceNorm3d", "GroupNorm", "LayerNorm")
"""Normalization layers that normalize each input by its own statistics."""


def normalizes_per_tile(model: torch.jit.ScriptModule | torch.nn.Module) -> bool:
    """True if the network normalizes each input by its own statistics (instance norm, as the demo preset trains).

    Tiled inference is then not the whole-image inference: each tile is normalized by
    its own statistics, so the outputs differ everywhere, not only near the seams
    (a demo model's seed logits by up to 1.9 on a range of ±8.5, its F1@0.5 by 0.001).
    Batch-norm models tile exactly, up to float rounding.
    """
    network = getattr(model, "fcn", model)
    return any(getattr(module, "original_name", type(module).__name__) in PER_INPUT_NORMS
               for _, module in network.named_modules())


def _check_tile_size(tile_size: object) -> int:
    if isinstance(tile_size, bool) or not isinstance(tile_size, numbers.Integral) or tile_size < MIN_TILE_SIZE:
        raise ValueError(f"tile_size must be None (the whole image at once) or an int of at least {MIN_TILE_SIZE} "
                         f"(pixels a side of a tile), got {tile_size!r}")
    return int(tile_size)


def resolve_model_path(path: str | Path) -> Path:
    """The model file for ``path``: a run directory's ``instanseg.pt``, a bioimage.io package folder's
    TorchScript file (the one its ``rdf.yaml`` names), or the file given (an exported ``.pt``, or a
    bioimage.io package ``.zip``, which :func:`load_model` reads the weights from).

    Examples
    --------
    >>> resolve_model_path("")  # doctest: +ELLIPSIS
    Traceback (most recent call last):
    ...
    instanseg_scnp.upstream.inference.ModelError: no model chosen: choose a run directory of ...
    """
    text = str(path).strip()
    if text in ("", "."):
        raise ModelError(f"no model chosen: choose a run directory of `instanseg-scnp train`, an exported "
                         f"{TORCHSCRIPT} or a bioimage.io package")
    file = Path(text).expanduser()
    if file.is_dir():
        if (file / RDF).is_file():
            try:
                return package_folder_weights(file)[0]
            except PackageError as error:
                raise ModelError(str(error)) from error
        if not (file / TORCHSCRIPT).is_file():
            raise ModelError(f"{str(file)!r} has no {TORCHSCRIPT} or {RDF}: choose a finished run directory of "
                             "`instanseg-scnp train`, an exported TorchScript file or a bioimage.io package")
        return file / TORCHSCRIPT
    if not file.is_file():
        raise ModelError(f"model {str(file)!r} does not exist: choose a run directory, an exported {TORCHSCRIPT} "
                         "or a bioimage.io package")
    return file


def load_model(path: str | Path, *, device: str | torch.device = "cpu") -> torch.jit.ScriptModule:
    """An exported InstanSeg model, in eval mode on ``device``, from any path :func:`resolve_model_path` takes.

    Raises
    ------
    ModelError
        No such file, a file torch cannot read (e.g. truncated), a bioimage.io
        package whose weights cannot be read, or a TorchScript file that is not
        an InstanSeg model (no ``fcn`` and ``pixel_classifier``).
    """
    file = resolve_model_path(path)
    name, source = str(file), str(file)
    if is_package_zip(file):
        try:
            name, data = package_zip_weights(file)
        except PackageError as error:
            raise ModelError(str(error)) from error
        source = io.BytesIO(data)
    try:
        with quiet_upstream():
            model = torch.jit.load(source, map_location=device)
    except (RuntimeError, ValueError, OSError, EOFError) as error:  # what torch raises on a truncated file
        raise ModelError(f"{name!r} is not a readable TorchScript model ({first_line(error)}); was it truncated? "
                         "Export it again: instanseg-scnp export RUN_DIR --overwrite") from error
    missing = [part for part in ("fcn", "pixel_classifier") if not hasattr(model, part)]
    if missing:
        raise ModelError(f"{name!r} is not an exported InstanSeg model (it has no {', '.join(missing)}); "
                         "export one with `instanseg-scnp export RUN_DIR`")
    return model.eval()


def prepare_image(image: np.ndarray, *, channel_axis: int | None = None, dim_in: int = 3,
                  normalize: bool = True) -> torch.Tensor:
    """(1, dim_in, H, W) float32 input of an InstanSeg model, from a 2-D image with or without channels.

    Parameters
    ----------
    image : (H, W) or (H, W, C) ndarray (any axis for C)
        A grayscale image (repeated to ``dim_in`` channels), or channels along
        ``channel_axis``: ``dim_in`` of them, one (repeated), or RGBA when
        ``dim_in`` is 3 (alpha dropped).
    channel_axis : int, optional
        Where the channels are; required for a 3-D array, None for a 2-D one.
    dim_in : int
        The channels the model takes.
    normalize : bool
        Percentile-normalize each channel (0.1 and 99.9 percentiles, upstream's
        ``percentile_normalize``, as its ``eval_small_image`` does) and clamp to
        :data:`NORMALIZED_RANGE` as the model's forward does. False leaves the
        values, for upstream's inference class, which normalizes by itself.

    Examples
    --------
    >>> prepare_image(np.zeros((32, 40))).shape
    torch.Size([1, 3, 32, 40])
    >>> prepare_image(np.zeros((32, 40, 4), np.uint8), channel_axis=-1).shape
    torch.Size([1, 3, 32, 40])
    """
    array = np.asarray(image)
    if not np.issubdtype(array.dtype, np.number) or np.issubdtype(array.dtype, np.complexfloating):
        raise TypeError(f"image must hold real numbers, got dtype {array.dtype}")
    if array.ndim == 2 and channel_axis is None:
        channels = array[None]
    elif array.ndim == 3 and isinstance(channel_axis, numbers.Integral) and -3 <= channel_axis < 3:
        channels = np.moveaxis(array, channel_axis, 0)
    else:
        raise ValueError(f"image must be 2-D (H, W) with channel_axis=None, or 3-D with channel_axis naming its "
                         f"channel axis; got shape {array.shape} and channel_axis={channel_axis!r}")
    if len(channels) == 1:
        channels = np.repeat(channels, dim_in, axis=0)
    elif len(channels) == 4 and dim_in == 3:
        channels = channels[:3]  # RGBA
    if len(channels) != dim_in:
        raise ValueError(f"the model takes {dim_in} channels (or 1, repeated), got {len(channels)} along "
                         f"channel_axis={channel_axis} of an image of shape {array.shape}")
    if min(channels.shape[1:]) < MIN_IMAGE_SIDE:
        raise ValueError(f"image is too small for the model: {channels.shape[1:]}, need at least "
                         f"{MIN_IMAGE_SIDE} x {MIN_IMAGE_SIDE} pixels")
    tensor = torch.from_numpy(np.ascontiguousarray(channels, dtype=np.float32))
    if not torch.isfinite(tensor).all():
        raise ValueError("image has NaN or infinite values")
    if normalize:
        tensor = upstream().percentile_normalize(tensor).clamp(*NORMALIZED_RANGE)
    return tensor[None]


def pad_for_inference(tensor: torch.Tensor) -> tuple[torch.Tensor, tuple[slice, slice]]:
    """Mirror-pad (numpy's "symmetric") a (1, C, H, W) input to at least :data:`MIN_INFERENCE_SIZE` a side.

    Returns the padded input and the slices that cut its outputs back to the
    input's extent.
    """
    pad = [max(MIN_INFERENCE_SIZE - n, 0) for n in tensor.shape[-2:]]
    before = [p // 2 for p in pad]
    crop = tuple(slice(b, b + n) for b, n in zip(before, tensor.shape[-2:], strict=True))
    if not any(pad):
        return tensor, crop
    widths = [(0, 0), (0, 0)] + [(b, p - b) for b, p in zip(before, pad, strict=True)]
    return torch.from_numpy(np.pad(tensor.numpy(), widths, mode="symmetric")), crop


def _device(model: torch.nn.Module) -> torch.device:
    return next(model.parameters()).device


def segment(model: torch.jit.ScriptModule, image: np.ndarray, *, channel_axis: int | None = None,
            pixel_size: float | None = None, tile_size: int | None = None, progress: ProgressCallback | None = None,
            cancel: CancelCallback | None = None, **postprocessing: float) -> np.ndarray:
    """Labels of ``model`` on ``image`` through upstream's inference class, (H, W) int32.

    ``image`` is as for :func:`prepare_image`; under :data:`MIN_INFERENCE_SIZE`
    a side it is mirror-padded, and the labels cut back. ``pixel_size`` (µm) lets
    upstream rescale the image to the model's and the labels back; None runs at
    the image's own scale. ``postprocessing`` overrides the exported defaults
    (``seed_threshold=``, ``mask_threshold=``, ``peak_distance=``, ...).

    ``tile_size`` (pixels, at least :data:`MIN_TILE_SIZE`) runs upstream's tiled
    inference (``eval_medium_image``, see the module docstring) on windows of
    that size (of the rescaled image where ``pixel_size`` rescales); None runs
    the whole image at once (``eval_small_image``), as one tile.
    ``progress(done, total)`` is called after each tile; ``cancel()`` is asked
    before each, and True raises :class:`Cancelled`.
    """
    size = None if tile_size is None else _check_tile_size(tile_size)
    tensor, crop = pad_for_inference(prepare_image(image, channel_axis=channel_axis, normalize=False))
    if size is None:
        tiles = _Tiles(1, progress, cancel)
        tiles.before()
        device = _device(model)
        with quiet_upstream():
            instanseg = upstream().InstanSeg(model, device=str(device), verbosity=0)
            labels = instanseg.eval_small_image(tensor[0], pixel_size, return_image_tensor=False, **postprocessing)
        tiles.after()
    else:
        tiles = _Tiles(_label_tiles(model, tensor.shape[-2:], size, pixel_size), progress, cancel)
        labels = _tiled_labels(model, tensor, size, tiles, pixel_size=pixel_size, **postprocessing)
    return labels.squeeze().cpu().numpy().astype(np.int32)[crop]


def _label_tiles(model: torch.jit.ScriptModule, shape: tuple[int, int], tile_size: int,
                 pixel_size: float | None) -> int:
    """How many windows upstream's tiled inference runs on an image of ``shape`` (before rescaling)."""
    parts = upstream()
    if pixel_size is not None:  # the rescaled shape, by upstream's own rule, on no data
        shape = parts.rescale_to_pixel_size(torch.empty((1, 1, *shape), device="meta"), pixel_size,
                                            float(model.pixel_size)).shape[-2:]
    height, width = shape
    defaults = inspect.signature(parts.sliding_window_inference).parameters  # what eval_medium_image leaves
    overlap = 2 * (defaults["overlap"].default + defaults["max_cell_size"].default)
    if overlap >= min(height, width):  # as upstream's sliding window: no overlap on images this small
        overlap = 0
    rows, cols = parts.chops((1, height, width), shape=(min(tile_size, height), min(tile_size, width)),
                             overlap=overlap)
    return len(rows) * len(cols)


def _tiled_labels(model: torch.jit.ScriptModule, tensor: torch.Tensor, tile_size: int, tiles: _Tiles, *,
                  pixel_size: float | None = None, normalise: bool = True, **postprocessing: float) -> torch.Tensor:
    """Upstream's ``eval_medium_image`` on ``tensor`` (1, C, H, W; normalized by upstream unless ``normalise`` is
    False), (1, 1, H, W) labels on the CPU, counting tiles in ``tiles``."""
    device = _device(model)
    with quiet_upstream(), warnings.catch_warnings():
        # None is this package's "the image's own scale", not a pixel size forgotten
        warnings.filterwarnings("ignore", category=UserWarning, message="Pixel size not provided")
        instanseg = upstream().InstanSeg(_TileCounter(model, tiles), device=str(device), verbosity=0)
        return instanseg.eval_medium_image(tensor[0], pixel_size, tile_size=tile_size, return_image_tensor=False,
                                           normalise=normalise, **postprocessing)


@dataclass(frozen=True, eq=False)
class InstanceCrops:
    """The pixel classifier's logits over the crop around each seed.

    Attributes
    ----------
    logits : (C, 1, S, S) torch.Tensor
        Crop logits (before the sigmoid), S = 2 * half-size.
    seeds : (C, 2) torch.Tensor of int64
        Seed (row, column) in the image.
    top_left : (C, 2) torch.Tensor of int64
        Image coordinates of each crop's first pixel.
    shape : (int, int)
        The image's (H, W).
    """

    logits: torch.Tensor
    seeds: torch.Tensor
    top_left: torch.Tensor
    shape: tuple[int, int]

    @property
    def size(self) -> int:
        return int(self.logits.shape[-1])

    def coordinates(self, start: int = 0, stop: int | None = None) -> tuple[torch.Tensor, torch.Tensor]:
        """Image rows and columns, each (c, S, S), of the crops ``start:stop``."""
        offsets = torch.arange(self.size)
        corner = self.top_left[start:stop]
        rows = (corner[:, 0, None, None] + offsets[None, :, None]).expand(-1, self.size, self.size)
        cols = (corner[:, 1, None, None] + offsets[None, None, :]).expand(-1, self.size, self.size)
        return rows, cols

    def assemble(self) -> tuple[np.ndarray, torch.Tensor]:
        """The max over crops of the crop logits at every pixel, and which crop element gave it.

        Returns the (H, W) float32 map (pixels no crop covers: the lowest logit of
        the map, 0 without crops) and ``pick``, (H * W,) int64: the flat index into
        ``logits`` of the winning element, -1 where no crop covers the pixel. Ties
        go to the first seed, as in upstream's ``convert``.
        """
        height, width = self.shape
        best = torch.full((height * width,), -torch.inf)
        pick = torch.full((height * width,), -1, dtype=torch.long)
        per_crop = self.size * self.size
        for start in range(0, len(self.logits), CROP_CHUNK):
            values = self.logits[start:start + CROP_CHUNK].reshape(-1)
            rows, cols = self.coordinates(start, start + CROP_CHUNK)
            where = (rows * width + cols).reshape(-1)
            chunk_best = torch.full_like(best, -torch.inf).scatter_reduce_(0, where, values, "amax")
            winners = torch.nonzero(values == chunk_best[where]).squeeze(1)
            chunk_pick = torch.full_like(pick, torch.iinfo(torch.long).max)
            chunk_pick.scatter_reduce_(0, where[winners], winners + start * per_crop, "amin")
            better = chunk_best > best  # strictly: an earlier seed keeps a tie
            best = torch.where(better, chunk_best, best)
            pick = torch.where(better, chunk_pick, pick)
        covered = pick >= 0
        fill = float(best[covered].min()) if covered.any() else 0.0
        return torch.where(covered, best, fill).reshape(height, width).numpy(), pick


@dataclass(frozen=True, eq=False)
class ModelOutputs:
    """What :func:`model_outputs` takes out of a model (see the module docstring).

    Attributes
    ----------
    seed_logits : (H, W) float32 ndarray
    mask_logits : (H, W) float32 ndarray
        The assembled instance-mask logits (:meth:`InstanceCrops.assemble`).
    labels : (H, W) int32 ndarray
    crops : InstanceCrops
        The per-seed instance-mask logits with their coordinates.
    pick : (H * W,) int64 torch.Tensor
        Which crop element gave each pixel of ``mask_logits`` (-1: none).
    seed_threshold, mask_threshold : float
        The thresholds on the two logit maps, as logits.
    """

    seed_logits: np.ndarray
    mask_logits: np.ndarray
    labels: np.ndarray
    crops: InstanceCrops
    pick: torch.Tensor
    seed_threshold: float
    mask_threshold: float


def _seed_threshold(model: torch.jit.ScriptModule, seed_threshold: float | None) -> float:
    return float(model.default_seed_threshold if seed_threshold is None else seed_threshold)


def _instance_crops(model: torch.jit.ScriptModule, raw: torch.Tensor, seed_threshold: float) -> InstanceCrops:
    """The per-seed crop logits of the network output ``raw`` (5, H, W), as the wrapper's forward makes them."""
    parts = upstream()
    height, width = raw.shape[-2:]
    xxyy = parts.generate_coordinate_map(mode="linear", spatial_dim=2, height=height, width=width, device=raw.device)
    fields = (torch.sigmoid(raw[0:2]) - 0.5) * 8 + xxyy
    sigma = raw[2:4]
    seeds = parts.torch_peak_local_max(raw[-1] / 15 + 0.5, neighbourhood_size=int(model.default_peak_distance),
                                       minimum_value=seed_threshold, dtype=torch.long)
    # upstream: min(window_size, H, W), crops of twice that; we also keep them inside small images
    half = min(int(model.default_window_size), height // 2, width // 2)
    centres = seeds.clone()
    centres[:, 0].clamp_(min=half, max=height - half)
    centres[:, 1].clamp_(min=half, max=width - half)
    crops = InstanceCrops(torch.empty(0, 1, 2 * half, 2 * half), seeds.cpu(), (centres - half).cpu(),
                          (height, width))
    embeddings = fields[:, seeds[:, 0], seeds[:, 1]].T
    pieces = []
    for start in range(0, len(seeds), CROP_CHUNK):
        rows, cols = crops.coordinates(start, start + CROP_CHUNK)
        mesh = torch.stack((rows.reshape(-1), cols.reshape(-1))).to(raw.device)
        features = parts.feature_engineering_slow(fields, embeddings[start:start + CROP_CHUNK], sigma, half, mesh)
        pieces.append(model.pixel_classifier(features).reshape(-1, 1, 2 * half, 2 * half).cpu())
    logits = torch.cat(pieces) if pieces else crops.logits
    return InstanceCrops(logits, crops.seeds, crops.top_left, (height, width))


def _cores(height: int, width: int, tile_size: int) -> list[tuple[slice, slice]]:
    """The cores of tiled :func:`model_outputs`: squares of side ``tile_size - 2 * TILE_HALO`` rounded down to
    :data:`TILE_ALIGN`, from the top left corner, cut by the image's bottom and right edges."""
    core = (tile_size - 2 * TILE_HALO) // TILE_ALIGN * TILE_ALIGN
    return [(slice(top, min(top + core, height)), slice(left, min(left + core, width)))
            for top in range(0, height, core) for left in range(0, width, core)]


def _tiled_network(model: torch.jit.ScriptModule, x: torch.Tensor, tile_size: int, tiles: _Tiles) -> torch.Tensor:
    """``model.fcn`` on ``x`` (1, C, H, W, normalized), core by core with a :data:`TILE_HALO` halo, (5, H, W) on the
    model's device. Each window is padded as upstream pads the whole image (reflected at the bottom and right to
    multiples of 16, which only the windows at those edges need: the others are multiples of TILE_ALIGN)."""
    parts = upstream()
    device = _device(model)
    height, width = x.shape[-2:]
    raw = None
    for rows, cols in _cores(height, width, tile_size):
        tiles.before()
        top, left = max(rows.start - TILE_HALO, 0), max(cols.start - TILE_HALO, 0)
        window = x[..., top:min(rows.stop + TILE_HALO, height), left:min(cols.stop + TILE_HALO, width)].to(device)
        padded, pad = parts.instanseg_padding(window, extra_pad=0)
        out = parts.recover_padding(model.fcn(padded), pad)[0].float()
        if raw is None:
            raw = torch.empty((out.shape[0], height, width), device=device)
        raw[:, rows, cols] = out[:, rows.start - top:rows.stop - top, cols.start - left:cols.stop - left]
        del window, padded, out
        tiles.after()
    return raw


def model_outputs(model: torch.jit.ScriptModule, image: np.ndarray, *, channel_axis: int | None = None,
                  seed_threshold: float | None = None, tile_size: int | None = None,
                  progress: ProgressCallback | None = None, cancel: CancelCallback | None = None) -> ModelOutputs:
    """Seed logits, per-seed and assembled instance-mask logits, and labels of ``model`` on ``image``.

    ``image`` is as for :func:`prepare_image`, at least :data:`MIN_INFERENCE_SIZE`
    a side; the model must have :data:`SUPPORTED_LAYOUT`. ``seed_threshold`` is
    passed to the model (upstream's keyword, on ``seed / 15 + 0.5``; None: the
    model's own, 0.5 in the exports of ``instanseg-scnp``).

    ``tile_size`` (pixels, at least :data:`MIN_TILE_SIZE`) runs the network on
    windows of at most that side (cores with a :data:`TILE_HALO` halo), and the
    labels through the tiled :func:`segment` (upstream's tiling, on windows of
    that size); None runs the whole image at once, as one tile.
    ``progress(done, total)`` is called after each tile, the network's then the
    labels' (one total); ``cancel()`` is asked before each, and True raises
    :class:`Cancelled`.
    """
    size = None if tile_size is None else _check_tile_size(tile_size)
    layout = {name: getattr(model, name, None) for name in SUPPORTED_LAYOUT}
    if layout != SUPPORTED_LAYOUT:
        raise ModelError(f"the model has output layout {layout}; model_outputs reads nucleus models with one "
                         f"seed channel, {SUPPORTED_LAYOUT}, as `instanseg-scnp train` exports")
    x = prepare_image(image, channel_axis=channel_axis)
    if min(x.shape[-2:]) < MIN_INFERENCE_SIZE:
        raise ValueError(f"image is too small for upstream's model: {tuple(x.shape[-2:])}, need at least "
                         f"{MIN_INFERENCE_SIZE} x {MIN_INFERENCE_SIZE} pixels")
    threshold = _seed_threshold(model, seed_threshold)
    if size is not None:
        height, width = x.shape[-2:]
        tiles = _Tiles(len(_cores(height, width, size)) + _label_tiles(model, (height, width), size, None),
                       progress, cancel)
        with torch.no_grad(), quiet_upstream():
            raw = _tiled_network(model, x, size, tiles)
        # x is what eval_medium_image would make of the image (the same percentile_normalize; the model clamps)
        labels = _tiled_labels(model, x, size, tiles, normalise=False, seed_threshold=threshold)[0, 0]
        del x
        with torch.no_grad(), quiet_upstream():
            crops = _instance_crops(model, raw, threshold)
        return _outputs(model, raw, labels, crops, threshold)
    tiles = _Tiles(1, progress, cancel)
    tiles.before()
    x = x.to(_device(model))
    parts = upstream()
    with torch.no_grad(), quiet_upstream():
        labels = model(x.clone(), seed_threshold=threshold)[0, 0]
        padded, pad = parts.instanseg_padding(x, extra_pad=0)
        raw = parts.recover_padding(model.fcn(padded), pad)[0].float()
        crops = _instance_crops(model, raw, threshold)
    tiles.after()
    return _outputs(model, raw, labels, crops, threshold)


def _outputs(model: torch.jit.ScriptModule, raw: torch.Tensor, labels: torch.Tensor, crops: InstanceCrops,
             threshold: float) -> ModelOutputs:
    mask_logits, pick = crops.assemble()
    return ModelOutputs(
        seed_logits=raw[-1].cpu().numpy(),
        mask_logits=mask_logits,
        labels=labels.cpu().numpy().astype(np.int32),
        crops=crops,
        pick=pick,
        seed_threshold=15 * (threshold - 0.5),
        mask_threshold=float(np.log(model.default_mask_threshold / (1 - model.default_mask_threshold))),
    )
