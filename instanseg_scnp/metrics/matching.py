r"""Instance matching: F1 over IoU thresholds and panoptic quality.

Cells are matched one to one by intersection over union (IoU). For a threshold
:math:`t \ge 0.5` a gt cell and a predicted cell match when
:math:`\mathrm{IoU} \ge t`; above 0.5 such a match is unique (each cell covers
more than half of the other); at exactly 0.5 a cell cut exactly in half matches
one of its halves (the first in raster order). Per threshold, with TP matched
pairs, FP unmatched predictions and FN unmatched gt cells:

.. math::

    \mathrm{F1} = \frac{2\,TP}{2\,TP + FP + FN}, \qquad
    \mathrm{PQ} = \underbrace{\frac{\sum_{\mathrm{TP}} \mathrm{IoU}}{TP}}_{SQ}
                  \cdot \underbrace{\mathrm{F1}}_{RQ} \quad (t = 0.5).

``mean_f1`` is the mean F1 over the thresholds given and ``f1_50`` the F1 at
0.5. The thresholds name the number: upstream InstanSeg's reported ``mean_f1``
(``compute_and_export_metrics``) pools TP/FP/FN over a dataset's images and
averages over :data:`UPSTREAM_THRESHOLDS` (0.5 to 0.9 by 0.1); its validation
F1 during training, and this module's default, use :data:`DEFAULT_THRESHOLDS`
(0.5 to 0.9 by 0.05). Zero division: an image with no gt and no
predicted cells scores 1 in F1, SQ and PQ (nothing to find, nothing found);
otherwise SQ with no match is 0.
For a dataset, add up ``tp``, ``fp``, ``fn`` and ``iou_sum`` over images and
divide once (:func:`f1_from_counts`).
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import pandas as pd

from instanseg_scnp.metrics._labels import Overlaps, check_label_pair, overlaps

__all__ = ["DEFAULT_THRESHOLDS", "UPSTREAM_THRESHOLDS", "f1_from_counts", "match", "matched_pairs"]

DEFAULT_THRESHOLDS = tuple(round(0.5 + 0.05 * i, 2) for i in range(9))
"""IoU thresholds 0.5, 0.55, ..., 0.9."""
UPSTREAM_THRESHOLDS = (0.5, 0.6, 0.7, 0.8, 0.9)
"""IoU thresholds of the ``mean_f1`` upstream InstanSeg reports for a dataset."""


def f1_from_counts(tp: float, fp: float, fn: float) -> float:
    """F1 from counts; 1.0 when there is nothing to find and nothing was found."""
    denominator = 2 * tp + fp + fn
    return 1.0 if denominator == 0 else 2 * tp / denominator


def _matched_pairs(iou: np.ndarray, gt_index: np.ndarray, pred_index: np.ndarray, threshold: float) -> np.ndarray:
    """Indices of the one-to-one matched pairs with IoU >= threshold."""
    candidates = np.flatnonzero(iou >= threshold)
    order = candidates[np.lexsort((pred_index[candidates], gt_index[candidates]))]
    order = order[np.unique(gt_index[order], return_index=True)[1]]
    return order[np.unique(pred_index[order], return_index=True)[1]]


def match(gt: np.ndarray, pred: np.ndarray, thresholds: Sequence[float] = DEFAULT_THRESHOLDS) -> dict:
    """Match predicted cells to ground-truth cells; F1 per IoU threshold and PQ.

    Parameters
    ----------
    gt, pred : (M, N[, P]) ndarray of int
        Label images, 0 background; ids need not be consecutive.
    thresholds : sequence of float
        IoU thresholds, each in [0.5, 1].

    Returns
    -------
    dict
        ``mean_f1``, ``f1_50``, ``pq``, ``sq``, ``rq`` (at IoU 0.5), ``n_gt``,
        ``n_pred`` and ``per_threshold``: a list of dicts with ``threshold, tp,
        fp, fn, precision, recall, f1, iou_sum``.

    Examples
    --------
    >>> gt = np.array([[1, 1, 0, 2, 2, 2]])
    >>> pred = np.array([[5, 5, 0, 0, 0, 7]])
    >>> result = match(gt, pred, thresholds=(0.5,))
    >>> result["f1_50"], result["pq"]
    (0.5, 0.5)
    """
    gt, pred = check_label_pair(gt, pred)
    thresholds = [round(float(t), 10) for t in thresholds]  # np.arange(0.5, 0.95, 0.05) has 0.6000000000000001
    if not thresholds or any(not 0.5 <= t <= 1 for t in thresholds):
        raise ValueError(f"thresholds must be in [0.5, 1] (one-to-one matching), got {thresholds}")
    table = overlaps(gt, pred)
    per_threshold = [_counts(table, threshold) for threshold in thresholds]
    at_50 = next((row for row in per_threshold if row["threshold"] == 0.5), None) or _counts(table, 0.5)
    nothing_to_find = not (len(table.gt_area) or len(table.pred_area))
    sq = at_50["iou_sum"] / at_50["tp"] if at_50["tp"] else float(nothing_to_find)
    return {
        "mean_f1": float(np.mean([row["f1"] for row in per_threshold])),
        "f1_50": at_50["f1"],
        "pq": sq * at_50["f1"],
        "sq": sq,
        "rq": at_50["f1"],
        "n_gt": len(table.gt_area),
        "n_pred": len(table.pred_area),
        "per_threshold": per_threshold,
    }


def matched_pairs(gt: np.ndarray, pred: np.ndarray, threshold: float = 0.5) -> pd.DataFrame:
    """The one-to-one matched cells at IoU >= ``threshold``: columns ``gt_label, pred_label, iou``.

    The same matching as :func:`match` (sorted by gt label).

    Examples
    --------
    >>> matched_pairs(np.array([[1, 1, 0, 2, 2, 2]]), np.array([[5, 5, 0, 0, 0, 7]]))
       gt_label  pred_label  iou
    0         1           5  1.0
    """
    gt, pred = check_label_pair(gt, pred)
    if not 0.5 <= threshold <= 1:
        raise ValueError(f"threshold must be in [0.5, 1] (one-to-one matching), got {threshold}")
    table = overlaps(gt, pred)
    pairs = _matched_pairs(table.iou, table.gt_index, table.pred_index, threshold)
    return pd.DataFrame({"gt_label": table.gt_ids[table.gt_index[pairs]],
                         "pred_label": table.pred_ids[table.pred_index[pairs]],
                         "iou": table.iou[pairs]}).sort_values("gt_label", ignore_index=True)


def _counts(table: Overlaps, threshold: float) -> dict:
    """TP, FP, FN, precision, recall, F1 and the matched IoU sum at one threshold."""
    iou = table.iou
    matched = _matched_pairs(iou, table.gt_index, table.pred_index, threshold)
    n_gt, n_pred, tp = len(table.gt_area), len(table.pred_area), len(matched)
    return {
        "threshold": threshold,
        "tp": tp,
        "fp": n_pred - tp,
        "fn": n_gt - tp,
        "precision": tp / n_pred if n_pred else float(n_gt == 0),
        "recall": tp / n_gt if n_gt else float(n_pred == 0),
        "f1": f1_from_counts(tp, n_pred - tp, n_gt - tp),
        "iou_sum": float(iou[matched].sum()),
    }
