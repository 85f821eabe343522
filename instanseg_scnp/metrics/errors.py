r"""Which cells are matched, split, merged, fragmented, missed or spurious: the one implementation.

For a ground-truth cell :math:`g` and a predicted cell :math:`p` (label images,
0 background) let :math:`|g|`, :math:`|p|` be their areas in pixels (voxels in
3-D) and :math:`|g \cap p|` the pixels they share. Then, with the side each id
set refers to:

- ``matched_gt``, ``matched_pred`` (both sides, aligned pairs): the one-to-one
  matching of :func:`~instanseg_scnp.metrics.matched_pairs` at
  :math:`\mathrm{IoU}(g, p) \ge 0.5`, sorted by gt id;
- ``split`` (gt ids): :math:`g` holds two or more predicted cells that each have
  at least half of their area inside it, :math:`2\,|g \cap p| \ge |p|`;
- ``merged`` (predicted ids): :math:`p` holds two or more gt cells that each have
  at least half of their area inside it, :math:`2\,|g \cap p| \ge |g|`;
- ``fragmented`` (predicted ids): the pixels of :math:`p` form two or more
  connected pieces (``connectivity`` as in
  :func:`~instanseg_scnp.metrics.betti_numbers`: full by default, 8 in 2-D and
  26 in 3-D);
- ``missed`` (gt ids): less than half of :math:`g` is predicted foreground,
  :math:`2\,|g \cap \{\mathrm{pred} > 0\}| < |g|`;
- ``spurious`` (predicted ids): less than half of :math:`p` is gt foreground,
  :math:`2\,|p \cap \{\mathrm{gt} > 0\}| < |p|`.

"At least half" is inclusive, "less than half" strict. The classes are not
exclusive: a cell can be both merged and fragmented, a gt cell cut exactly in
half is split and matched to one half, and a large gt cell holding two one-pixel
predictions is split and missed. :func:`~instanseg_scnp.metrics.topology_errors`
reports the lengths of these sets as ``splits``, ``merges``, ``fragmented``,
``missed`` and ``spurious``; the napari plugin paints them.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, fields
from types import MappingProxyType
from typing import ClassVar

import numpy as np

from instanseg_scnp.metrics._labels import Overlaps, check_label_pair, overlaps, pieces_per_label
from instanseg_scnp.metrics.matching import _matched_pairs


__all__ = ["CellErrors", "classify_errors"]


@dataclass(frozen=True, eq=False)
class CellErrors:
    """Cell ids per class, from :func:`classify_errors`; each array ascending except the matched pairs.

    Attributes
    ----------
    matched_gt, matched_pred : (K,) ndarray
        The one-to-one matched pairs at IoU >= 0.5, ``matched_gt[k]`` with
        ``matched_pred[k]``, sorted by gt id.
    split : ndarray
        Ground-truth ids of split cells.
    merged : ndarray
        Predicted ids of merged cells.
    fragmented : ndarray
        Predicted ids of cells in two or more connected pieces.
    missed : ndarray
        Ground-truth ids of missed cells.
    spurious : ndarray
        Predicted ids of spurious cells.

    Gt ids have the dtype of the gt image, predicted ids that of the prediction.
    """

    ERROR_CLASSES: ClassVar[tuple[str, ...]] = ("split", "merged", "fragmented", "missed", "spurious")
    """The error classes, the attributes :meth:`counts` reports."""
    SIDES: ClassVar[Mapping[str, str]] = MappingProxyType({
        "matched_gt": "gt", "matched_pred": "pred", "split": "gt", "merged": "pred", "fragmented": "pred",
        "missed": "gt", "spurious": "pred"})
    """Which label image each attribute's ids are ids of: ``"gt"`` or ``"pred"``."""

    matched_gt: np.ndarray
    matched_pred: np.ndarray
    split: np.ndarray
    merged: np.ndarray
    fragmented: np.ndarray
    missed: np.ndarray
    spurious: np.ndarray

    def counts(self) -> dict[str, int]:
        """The number of cells per class: ``matched`` (pairs), then the :attr:`ERROR_CLASSES`.

        Examples
        --------
        >>> classify_errors(np.array([[1, 1, 0, 2]]), np.array([[3, 3, 0, 0]])).counts()
        {'matched': 1, 'split': 0, 'merged': 0, 'fragmented': 0, 'missed': 1, 'spurious': 0}
        """
        return {"matched": len(self.matched_gt), **{name: len(getattr(self, name)) for name in self.ERROR_CLASSES}}

    def __repr__(self) -> str:
        return "CellErrors(" + ", ".join(f"{f.name}={getattr(self, f.name).tolist()}" for f in fields(self)) + ")"


def classify_errors(gt: np.ndarray, pred: np.ndarray, *, connectivity: int | None = None) -> CellErrors:
    """The matched, split, merged, fragmented, missed and spurious cells of a prediction.

    Parameters
    ----------
    gt, pred : (M, N[, P]) ndarray of int
        Ground-truth and predicted label images of one shape, 0 background;
        ids need not be consecutive (see :func:`~instanseg_scnp.metrics.check_labels`).
    connectivity : {1, ndim}, optional
        Connectivity of a predicted cell's pieces for ``fragmented``; default
        full (8 in 2-D, 26 in 3-D).

    Returns
    -------
    CellErrors
        Gt ids for ``split`` and ``missed``, predicted ids for ``merged``,
        ``fragmented`` and ``spurious``, aligned pairs ``matched_gt`` /
        ``matched_pred``; the rules are in the module notes
        (:mod:`instanseg_scnp.metrics.errors`).

    Raises
    ------
    TypeError
        A label image is a bool mask or not of an integer dtype.
    ValueError
        Negative ids, not 2-D or 3-D, shapes that differ, or a bad ``connectivity``.

    Examples
    --------
    Gt cell 1 predicted as two cells (3 and 4), gt cell 2 missed, and predicted
    cell 5 covering nothing:

    >>> gt = np.array([[1, 1, 1, 1, 0, 2, 2, 0, 0]])
    >>> pred = np.array([[3, 3, 4, 4, 0, 0, 0, 5, 5]])
    >>> classify_errors(gt, pred)
    CellErrors(matched_gt=[1], matched_pred=[3], split=[1], merged=[], fragmented=[], missed=[2], spurious=[5])
    """
    gt, pred = check_label_pair(gt, pred)
    return _classify(gt, pred, overlaps(gt, pred), connectivity)


def _classify(gt: np.ndarray, pred: np.ndarray, table: Overlaps, connectivity: int | None) -> CellErrors:
    """:func:`classify_errors` on checked labels and their overlap table (cells renumbered 1..n)."""
    n_gt, n_pred = len(table.gt_area), len(table.pred_area)
    pred_mostly_in_gt = table.overlap * 2 >= table.pred_area[table.pred_index]
    gt_mostly_in_pred = table.overlap * 2 >= table.gt_area[table.gt_index]
    held = np.bincount(table.gt_index[pred_mostly_in_gt], minlength=n_gt)  # per gt cell
    holds = np.bincount(table.pred_index[gt_mostly_in_pred], minlength=n_pred)  # per predicted cell
    covered = np.bincount(table.gt_index, table.overlap, minlength=n_gt)
    on_gt = np.bincount(table.pred_index, table.overlap, minlength=n_pred)
    pairs = _matched_pairs(table.iou, table.gt_index, table.pred_index, 0.5)
    matched_gt, matched_pred = table.gt_ids[table.gt_index[pairs]], table.pred_ids[table.pred_index[pairs]]
    order = np.argsort(matched_gt, kind="stable")
    fragment_ids, pieces = pieces_per_label(pred, connectivity)
    return CellErrors(
        matched_gt=matched_gt[order],
        matched_pred=matched_pred[order],
        split=np.sort(table.gt_ids[held > 1]),
        merged=np.sort(table.pred_ids[holds > 1]),
        fragmented=fragment_ids[pieces > 1],
        missed=np.sort(table.gt_ids[covered * 2 < table.gt_area]),
        spurious=np.sort(table.pred_ids[on_gt * 2 < table.pred_area]),
    )
