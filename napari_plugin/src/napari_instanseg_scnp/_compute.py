r"""The inspector's computations: pure NumPy/torch, no napari or Qt (tested without a viewer).

- :class:`Penalty` holds fixed logits and a fixed target and returns the SCNP-penalized
  logits :math:`\tilde z` (:func:`instanseg_scnp.scnp`) for any window; :class:`WindowCache`
  keeps recent windows so moving the slider back costs nothing.
- :func:`shape_features`, :func:`shape_colors`: :func:`instanseg_scnp.metrics.cell_shapes`
  as a napari ``Labels.features`` table, and a colour per cell by a shape column;
  :func:`penalty_column`: each cell's SCNP penalty (:func:`instanseg_scnp.metrics.cell_penalty`)
  as a column of that table.
- :func:`error_map`: the split, merged, fragmented, missed and spurious cells that
  :func:`instanseg_scnp.metrics.classify_errors` names (the definitions, and the
  counts, of :func:`instanseg_scnp.metrics.topology_errors`), painted as one label image.
"""

from __future__ import annotations

from collections import OrderedDict
from dataclasses import dataclass

import numpy as np
import pandas as pd
import torch
from instanseg_scnp import scnp
from instanseg_scnp.metrics import CellErrors, cell_penalty, cell_shapes, check_labels, classify_errors
from scipy import ndimage

__all__ = [
    "ERROR_CLASSES",
    "PENALTY_COLUMN",
    "ERROR_COLORS",
    "SHAPE_RANGE",
    "Penalty",
    "WindowCache",
    "error_map",
    "histogram",
    "labels_from_logits",
    "map_penalty",
    "crop_penalty",
    "penalty_column",
    "shape_colors",
    "shape_features",
    "symmetric_limits",
]

ERROR_CLASSES = CellErrors.ERROR_CLASSES
"""Error classes (those of :func:`~instanseg_scnp.metrics.classify_errors`) in the order they are painted (a later
class wins a pixel); layer value = position + 1."""

ERROR_COLORS = {"split": "#e6194b", "merged": "#f58231", "fragmented": "#ffe119", "missed": "#4363d8",
                "spurious": "#911eb4"}

SHAPE_RANGE = (0.0, 1.0)
"""Roundness and circularity are in [0, 1]; colours and histograms use this whole range."""


@dataclass(frozen=True, eq=False)
class _Part:
    """Logits and target as :func:`instanseg_scnp.scnp` sees them, (B, 1, h, w), and where their values go.

    ``pixels`` are flat indices into the image and ``index`` the flat indices into
    ``logits`` that supply them; both None: the part is the whole map (B == 1).
    """

    logits: torch.Tensor
    target: torch.Tensor
    ignore: torch.Tensor | None = None
    pixels: np.ndarray | None = None
    index: torch.Tensor | None = None


@dataclass(frozen=True, eq=False)
class Penalty:
    r"""SCNP of fixed logits against a fixed binary target, for any window.

    ``shown`` is the (H, W) map of the logits :math:`z` on the image; the parts hold
    what the operator runs on (the map itself, or the instance-mask crops).
    """

    shown: np.ndarray
    parts: tuple[_Part, ...]

    def penalized(self, window: int) -> np.ndarray:
        r""":math:`\tilde z` on the image for an odd ``window``, (H, W) float32 (a new array)."""
        if len(self.parts) == 1 and self.parts[0].pixels is None:
            part = self.parts[0]
            with torch.no_grad():
                return scnp(part.logits, part.target, window, ignore=part.ignore)[0, 0].numpy()
        out = self.shown.reshape(-1).copy()
        for part in self.parts:
            with torch.no_grad():
                z_tilde = scnp(part.logits, part.target, window, ignore=part.ignore)
            out[part.pixels] = z_tilde.reshape(-1)[part.index].numpy()
        return out.reshape(self.shown.shape)

    def difference(self, z_tilde: np.ndarray) -> np.ndarray:
        r""":math:`z - \tilde z`: > 0 on the target's foreground, < 0 on its background, where the penalty bites."""
        return np.subtract(self.shown, z_tilde, dtype=np.float32)

    def compute(self, window: int) -> tuple[np.ndarray, np.ndarray]:
        r""":math:`\tilde z` and :math:`z - \tilde z` for ``window`` (what one slider position shows)."""
        z_tilde = self.penalized(window)
        return z_tilde, self.difference(z_tilde)


def _check_target(gt: np.ndarray, shape: tuple[int, ...]) -> np.ndarray:
    return check_labels(gt, name="the ground truth", ndims=(2,), shape=tuple(shape), shape_of="the logits",
                        allow_unannotated=True)


def map_penalty(logits: np.ndarray, gt: np.ndarray) -> Penalty:
    """Penalty of a (H, W) logit map against the foreground of ground-truth labels (-1: unannotated)."""
    logits = np.ascontiguousarray(logits, dtype=np.float32)
    if logits.ndim != 2:
        raise ValueError(f"logits must be a 2-D map (H, W), got shape {logits.shape}")
    gt = _check_target(gt, logits.shape)
    unannotated = gt < 0
    part = _Part(logits=torch.from_numpy(logits)[None, None], target=torch.from_numpy(gt > 0)[None, None],
                 ignore=torch.from_numpy(unannotated)[None, None] if unannotated.any() else None)
    return Penalty(shown=logits, parts=(part,))


def crop_penalty(crops, shown: np.ndarray, pick: torch.Tensor, gt: np.ndarray) -> Penalty:
    """Penalty of instance-mask crops, each against the ground-truth cell under its seed, as in training.

    Upstream's loss gives each crop the one-hot mask of the ground-truth instance
    at its seed; a seed on background gets an empty mask (all background). Each
    crop is penalized on its own, with the window clipped at the crop's border,
    and each pixel of the assembled map reads the penalized logit of the crop that
    owns it. ``crops`` is a :class:`instanseg_scnp.upstream.InstanceCrops`;
    ``shown`` and ``pick`` come from its ``assemble()``.
    """
    gt = _check_target(gt, crops.shape)
    labels = torch.from_numpy(np.where(gt > 0, gt, 0).astype(np.int64))
    n_crops = len(crops.logits)
    at_seed = labels[crops.seeds[:, 0], crops.seeds[:, 1]] if n_crops else torch.zeros(0, dtype=torch.long)
    rows, cols = crops.coordinates()
    target = (labels[rows, cols] == at_seed[:, None, None]) & (at_seed[:, None, None] > 0)
    pixels = torch.nonzero(pick >= 0).squeeze(1)
    part = _Part(logits=crops.logits, target=target[:, None], pixels=pixels.numpy(), index=pick[pixels])
    return Penalty(shown=shown, parts=(part,))


class WindowCache:
    """Recent results by key, e.g. ``(map, window) -> (z~, z - z~)``, within a byte budget.

    The least recently used entries go first; the newest one always stays.

    Examples
    --------
    >>> cache = WindowCache(max_bytes=100)
    >>> cache.put(3, (np.zeros(10),))  # 80 bytes
    >>> cache.put(5, (np.zeros(10),))
    >>> 3 in cache, 5 in cache
    (False, True)
    """

    def __init__(self, max_bytes: int = 512 * 2**20) -> None:
        self.max_bytes = max_bytes
        self._entries: OrderedDict = OrderedDict()

    def __contains__(self, key: object) -> bool:
        return key in self._entries

    def __len__(self) -> int:
        return len(self._entries)

    def get(self, key: object) -> tuple[np.ndarray, ...] | None:
        if key in self._entries:
            self._entries.move_to_end(key)
        return self._entries.get(key)

    def put(self, key: object, arrays: tuple[np.ndarray, ...]) -> None:
        self._entries[key] = tuple(arrays)
        self._entries.move_to_end(key)
        while len(self._entries) > 1 and self.nbytes > self.max_bytes:
            self._entries.popitem(last=False)

    @property
    def nbytes(self) -> int:
        return sum(array.nbytes for arrays in self._entries.values() for array in arrays)

    def clear(self) -> None:
        self._entries.clear()


def symmetric_limits(values: np.ndarray, percentile: float = 99.5) -> tuple[float, float]:
    """Contrast limits (-m, m) around 0 for a diverging colormap, m the ``percentile`` of |values| (> 0).

    Examples
    --------
    >>> symmetric_limits(np.array([-4.0, 1.0, 2.0]), percentile=100)
    (-4.0, 4.0)
    >>> symmetric_limits(np.zeros(3))
    (-1.0, 1.0)
    """
    finite = np.abs(values[np.isfinite(values)])
    m = float(np.percentile(finite, percentile)) if finite.size else 0.0
    m = m if m > 0 else 1.0
    return (-m, m)


def labels_from_logits(logits: np.ndarray, threshold: float = 0.0) -> np.ndarray:
    """Cells of a logit map with no model: connected components (8-connected) of ``logits > threshold``.

    Examples
    --------
    >>> labels_from_logits(np.array([[1.0, -1.0, 2.0], [1.0, -1.0, -1.0]]))
    array([[1, 0, 2],
           [1, 0, 0]], dtype=int32)
    """
    labels, _ = ndimage.label(np.asarray(logits) > threshold, structure=np.ones((3, 3), bool))
    return labels.astype(np.int32)


def shape_features(labels: np.ndarray) -> pd.DataFrame:
    """:func:`instanseg_scnp.metrics.cell_shapes` with napari's ``index`` column (the label value) first."""
    table = cell_shapes(np.asarray(labels))
    table.insert(0, "index", table["label"].to_numpy())
    return table


PENALTY_COLUMN = "scnp_penalty"
"""The features column of each cell's mean |z - z~| over the cell and a one-window ring around it."""


def penalty_column(features: pd.DataFrame, labels: np.ndarray, difference: np.ndarray, window: int) -> np.ndarray:
    """Each row's :func:`instanseg_scnp.metrics.cell_penalty` of ``difference`` (z - z~ at ``window``), in the
    order of ``features["index"]`` (NaN for a label not in ``labels``)."""
    penalties = cell_penalty(difference, labels, window)
    return np.array([penalties.get(int(label), np.nan) for label in features["index"]], dtype=float)


def shape_colors(features: pd.DataFrame, column: str, cmap: str = "viridis") -> dict:
    """RGBA per label from ``features[column]`` over :data:`SHAPE_RANGE` (a ``DirectLabelColormap`` dict).

    Background (0) is transparent; labels without a row get grey (key ``None``).
    """
    from matplotlib import colormaps

    if column not in features:
        raise ValueError(f"no column {column!r} in the features; have {list(features.columns)}")
    low, high = SHAPE_RANGE
    values = np.clip((features[column].to_numpy(float) - low) / (high - low), 0, 1)
    colors = colormaps[cmap](values)
    mapping = {int(label): color for label, color in zip(features["index"], colors, strict=True)}
    return {None: np.array([0.5, 0.5, 0.5, 1.0]), 0: np.zeros(4), **mapping}


def histogram(prediction: np.ndarray, ground_truth: np.ndarray, bins: int = 20) -> tuple[np.ndarray, ...]:
    """Bin edges on :data:`SHAPE_RANGE` and the fraction of cells per bin, prediction and ground truth.

    Examples
    --------
    >>> edges, pred, gt = histogram(np.array([0.1, 0.9]), np.array([0.9]), bins=2)
    >>> edges.tolist(), pred.tolist(), gt.tolist()
    ([0.0, 0.5, 1.0], [0.5, 0.5], [0.0, 1.0])
    """
    edges = np.linspace(*SHAPE_RANGE, bins + 1)

    def fractions(values):
        values = np.asarray(values, float)
        counts = np.histogram(values[np.isfinite(values)], edges)[0].astype(float)
        return counts / counts.sum() if counts.sum() else counts

    return edges, fractions(prediction), fractions(ground_truth)


def error_map(gt: np.ndarray, pred: np.ndarray) -> tuple[np.ndarray, dict[str, int]]:
    """A label image of the error cells (value = position in :data:`ERROR_CLASSES` + 1) and the counts.

    The cells are those :func:`instanseg_scnp.metrics.classify_errors` names. Split
    and missed cells are painted with their gt pixels, the others with their
    predicted pixels (:attr:`instanseg_scnp.metrics.CellErrors.SIDES`), in the
    order of :data:`ERROR_CLASSES` (a later class wins).

    Examples
    --------
    >>> out, counts = error_map(np.array([[1, 1, 1, 1, 0, 2]]), np.array([[3, 3, 4, 4, 0, 0]]))
    >>> out.tolist(), counts["split"], counts["missed"]
    ([[1, 1, 1, 1, 0, 4]], 1, 1)
    """
    errors = classify_errors(gt, pred)
    images = {"gt": np.asarray(gt), "pred": np.asarray(pred)}
    out = np.zeros(np.shape(gt), np.uint8)
    for value, name in enumerate(ERROR_CLASSES, start=1):
        ids = getattr(errors, name)
        if len(ids):
            out[np.isin(images[CellErrors.SIDES[name]], ids)] = value
    return out, {name: len(getattr(errors, name)) for name in ERROR_CLASSES}
