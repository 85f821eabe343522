r"""Run an exported InstanSeg model and take its output apart (NumPy/torch, no napari).

An exported model (``RUN_DIR/instanseg.pt``) is upstream InstanSeg's TorchScript
wrapper ``InstanSeg_Torchscript``: ``model.fcn`` is the traced network, returning
(B, 5, H, W) for 2 coordinate, 2 sigma and 1 seed channels, and ``model(x)``
returns the labels. :func:`run_model` returns

- the **seed map**: the network's last channel, the seed logits (upstream finds
  seeds as the peaks of ``seed / 15 + 0.5`` above the seed threshold, i.e. of the
  logit above ``15 * (seed_threshold - 0.5)``, 0 for the exports of
  ``instanseg-scnp``);
- the **instance-mask logits** of every seed: upstream's pixel classifier over the
  crop of ``2 * window_size`` pixels around the seed, exactly as the wrapper's
  forward computes them, before its sigmoid (:func:`instance_crops`);
- those crops **assembled into one map**: each pixel takes the largest logit of
  the crops that cover it, and so the crop that owns it. This is upstream's own
  rule: its ``convert`` gives each pixel to the crop with the highest probability
  (ties to the first seed), and the sigmoid is monotone. The map is the logits
  *before* upstream's cleanup (pieces of a crop not connected to its seed dropped,
  holes filled) and before overlapping instances are merged, so it shows what the
  pixel classifier said; pixels that no crop reaches take the map's lowest logit;
- the **labels**: the wrapper's own forward on the same normalized image.

The image is normalized as ``instanseg.InstanSeg.eval_small_image`` does
(percentiles 0.1 and 99.9 per channel; a one-channel image repeated to three
channels, as :func:`instanseg_scnp.evaluation.load_segmenter` does) and run at its
own resolution (no rescaling to the model's pixel size).
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
from instanseg_scnp._upstream import quiet_upstream
from instanseg_scnp.rundir import TORCHSCRIPT

logger = logging.getLogger(__name__)

__all__ = [
    "CROP_CHUNK",
    "SUPPORTED_LAYOUT",
    "InputError",
    "InstanceCrops",
    "ModelError",
    "ModelOutput",
    "instance_crops",
    "load_model",
    "prepare_image",
    "resolve_model_path",
    "run_model",
]

SUPPORTED_LAYOUT = {"dim_coords": 2, "n_sigma": 2, "dim_seeds": 1, "cells_and_nuclei": False}
"""The output layout of the models ``instanseg-scnp train`` exports (nuclei, one seed channel)."""

CROP_CHUNK = 256
"""Seeds whose crops go through the pixel classifier at once (bounds the memory of big images)."""


class InputError(ValueError):
    """Inputs the inspector cannot use; the message says why and what to choose instead."""


class ModelError(InputError):
    """A model path or model that the inspector cannot use."""


def resolve_model_path(path: str | Path) -> Path:
    """The TorchScript file for ``path``: a run directory (its ``instanseg.pt``) or a file.

    Examples
    --------
    >>> resolve_model_path("")  # doctest: +ELLIPSIS
    Traceback (most recent call last):
    ...
    napari_instanseg_scnp._model.ModelError: no model chosen: choose a run directory of ... as logits
    """
    text = str(path).strip()
    if text in ("", "."):
        raise ModelError("no model chosen: choose a run directory of `instanseg-scnp train` or an exported "
                         f"{TORCHSCRIPT}, or leave it empty to take the image layer as logits")
    file = Path(text).expanduser()
    if file.is_dir():
        if not (file / TORCHSCRIPT).is_file():
            raise ModelError(f"{str(file)!r} has no {TORCHSCRIPT}: choose a finished run directory of "
                             "`instanseg-scnp train` or an exported TorchScript file")
        return file / TORCHSCRIPT
    if not file.is_file():
        raise ModelError(f"model {str(file)!r} does not exist: choose a run directory or an exported {TORCHSCRIPT}")
    return file


def load_model(path: str | Path, *, device: str = "cpu") -> torch.jit.ScriptModule:
    """Load an exported InstanSeg model from a run directory or a ``.pt`` file, or raise :class:`ModelError`."""
    file = resolve_model_path(path)
    try:
        with quiet_upstream():
            model = torch.jit.load(str(file), map_location=device)
    except (RuntimeError, ValueError, OSError) as error:
        first_line = str(error).strip().splitlines()[0] if str(error).strip() else type(error).__name__
        raise ModelError(f"{str(file)!r} is not a TorchScript model ({first_line})") from error
    missing = [name for name in ("fcn", "pixel_classifier") if not hasattr(model, name)]
    if missing:
        raise ModelError(f"{str(file)!r} is not an exported InstanSeg model (it has no {', '.join(missing)}); "
                         "export one with `instanseg-scnp export RUN_DIR`")
    layout = {name: getattr(model, name, None) for name in SUPPORTED_LAYOUT}
    if layout != SUPPORTED_LAYOUT:
        raise ModelError(f"{str(file)!r} has output layout {layout}; the inspector reads nucleus models with "
                         f"one seed channel, {SUPPORTED_LAYOUT}, as `instanseg-scnp train` exports")
    return model.eval()


def prepare_image(image: np.ndarray, *, rgb: bool) -> torch.Tensor:
    """(1, 3, H, W) float32 input, normalized and clamped as upstream's inference does.

    ``image`` is (H, W) grayscale or, with ``rgb``, (H, W, 3 or 4) (alpha dropped).
    """
    from instanseg.utils.utils import percentile_normalize

    array = np.asarray(image)
    if rgb and array.ndim == 3 and array.shape[-1] in (3, 4):
        channels = np.moveaxis(array[..., :3], -1, 0)
    elif not rgb and array.ndim == 2:
        channels = np.repeat(array[None], 3, axis=0)
    else:
        raise InputError(f"the model needs a 2-D grayscale or RGB image, got shape {array.shape}"
                         f"{' (RGB)' if rgb else ''}: choose one plane or channel")
    if min(channels.shape[1:]) < 16:
        raise InputError(f"the image is too small for the model: {channels.shape[1:]}, need at least 16 x 16 pixels")
    tensor = torch.from_numpy(np.ascontiguousarray(channels, dtype=np.float32))
    tensor = percentile_normalize(tensor)  # per channel, percentiles 0.1 / 99.9, as eval_small_image
    return tensor.clamp(-2, 3)[None]  # the wrapper's forward clamps its input in place to [-2, 3]


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
class ModelOutput:
    """What :func:`run_model` takes out of a model: see the module docstring."""

    seed_logits: np.ndarray
    mask_logits: np.ndarray
    labels: np.ndarray
    crops: InstanceCrops
    pick: torch.Tensor
    seed_threshold: float
    mask_threshold: float


def instance_crops(model: torch.jit.ScriptModule, raw: torch.Tensor, *,
                   seed_threshold: float | None = None) -> InstanceCrops:
    """The per-seed crop logits of the network output ``raw`` (5, H, W), as the wrapper's forward makes them.

    ``seed_threshold`` (upstream's, on ``seed / 15 + 0.5``) defaults to the model's.
    """
    from instanseg.utils.loss.instanseg_loss import (
        feature_engineering_slow,
        generate_coordinate_map,
        torch_peak_local_max,
    )

    height, width = raw.shape[-2:]
    xxyy = generate_coordinate_map(mode="linear", spatial_dim=2, height=height, width=width, device=raw.device)
    fields = (torch.sigmoid(raw[0:2]) - 0.5) * 8 + xxyy
    sigma = raw[2:4]
    seeds = torch_peak_local_max(raw[-1] / 15 + 0.5, neighbourhood_size=int(model.default_peak_distance),
                                 minimum_value=_seed_threshold(model, seed_threshold), dtype=torch.long)
    # upstream: min(window_size, H, W), crops of twice that; we also keep them inside small images
    half = min(int(model.default_window_size), height // 2, width // 2)
    centres = seeds.clone()
    centres[:, 0].clamp_(min=half, max=height - half)
    centres[:, 1].clamp_(min=half, max=width - half)
    crops = InstanceCrops(torch.empty(0, 1, 2 * half, 2 * half), seeds, centres - half, (height, width))
    embeddings = fields[:, seeds[:, 0], seeds[:, 1]].T
    pieces = []
    for start in range(0, len(seeds), CROP_CHUNK):
        rows, cols = crops.coordinates(start, start + CROP_CHUNK)
        mesh = torch.stack((rows.reshape(-1), cols.reshape(-1)))
        features = feature_engineering_slow(fields, embeddings[start:start + CROP_CHUNK], sigma, half, mesh)
        pieces.append(model.pixel_classifier(features).reshape(-1, 1, 2 * half, 2 * half))
    logits = torch.cat(pieces) if pieces else crops.logits
    return InstanceCrops(logits, seeds, crops.top_left, (height, width))


def _seed_threshold(model: torch.jit.ScriptModule, seed_threshold: float | None) -> float:
    return float(model.default_seed_threshold if seed_threshold is None else seed_threshold)


def run_model(model: torch.jit.ScriptModule, image: np.ndarray, *, rgb: bool,
              seed_threshold: float | None = None) -> ModelOutput:
    """Seed logits, assembled instance-mask logits, crops and labels of ``model`` on ``image``.

    ``seed_threshold`` is passed to the model (upstream's keyword, on ``seed / 15 + 0.5``;
    None: the model's own, 0.5 in the exports of ``instanseg-scnp``).
    """
    from instanseg.utils.tiling import _instanseg_padding, _recover_padding

    x = prepare_image(image, rgb=rgb)
    with torch.no_grad(), quiet_upstream():
        labels = model(x.clone(), seed_threshold=_seed_threshold(model, seed_threshold))[0, 0]
        padded, pad = _instanseg_padding(x, extra_pad=0)
        raw = _recover_padding(model.fcn(padded), pad)[0].float()
        crops = instance_crops(model, raw, seed_threshold=seed_threshold)
    mask_logits, pick = crops.assemble()
    return ModelOutput(
        seed_logits=raw[-1].numpy(),
        mask_logits=mask_logits,
        labels=labels.numpy().astype(np.int32),
        crops=crops,
        pick=pick,
        seed_threshold=15 * (_seed_threshold(model, seed_threshold) - 0.5),
        mask_threshold=float(np.log(model.default_mask_threshold / (1 - model.default_mask_threshold))),
    )
