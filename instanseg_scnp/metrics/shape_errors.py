r"""Shape errors of matched cells: how far each predicted cell's shape is from its own ground truth's.

The mean roundness or circularity over all predicted cells moves with the number
of spurious specks (a one-pixel cell is as round as a disc) and compares two
different populations of cells. The error of a *matched pair* compares like with
like: for every ground-truth cell :math:`g` matched one to one to a predicted
cell :math:`p` at IoU :math:`\ge 0.5` (:func:`~instanseg_scnp.metrics.matched_pairs`)

.. math::

    e_\mathrm{roundness} = |\mathrm{roundness}(p) - \mathrm{roundness}(g)|, \qquad
    e_\mathrm{circularity} = |\mathrm{circularity}(p) - \mathrm{circularity}(g)|.

Only ground-truth cells of at least :data:`MIN_SHAPE_AREA` pixels count: below
that the pixel grid, not the cell, decides the shape (a 2 x 2 square and a
4-pixel "disc" are the same set of pixels).
"""

from __future__ import annotations

import pandas as pd

__all__ = ["MIN_SHAPE_AREA", "SHAPE_ERROR_COLUMNS", "shape_differences"]

MIN_SHAPE_AREA = 20
"""Smallest ground-truth cell, in pixels, whose shape is compared (a disc of radius 2.5 px)."""

SHAPE_ERROR_COLUMNS = ("roundness_error", "circularity_error")


def shape_differences(pairs: pd.DataFrame, gt_shapes: pd.DataFrame, pred_shapes: pd.DataFrame, *,
                      min_area: float = MIN_SHAPE_AREA) -> pd.DataFrame:
    """One row per matched pair whose ground-truth cell has ``area >= min_area``.

    Parameters
    ----------
    pairs : pandas.DataFrame
        :func:`~instanseg_scnp.metrics.matched_pairs` of the two images.
    gt_shapes, pred_shapes : pandas.DataFrame
        :func:`~instanseg_scnp.metrics.cell_shapes` of the ground truth and the prediction.
    min_area : float
        In the unit of ``gt_shapes["area"]`` (pixels unless a ``spacing`` was given).

    Returns
    -------
    pandas.DataFrame
        ``gt_label, pred_label, iou, gt_area``, then for roundness and circularity
        the ground truth's, the prediction's and the absolute difference
        (``roundness_error``, ``circularity_error``).

    Examples
    --------
    >>> import numpy as np
    >>> from instanseg_scnp.metrics import cell_shapes, matched_pairs
    >>> gt = np.zeros((30, 60), int); gt[5:25, 5:25] = 1; gt[5:25, 35:55] = 2
    >>> pred = gt.copy(); pred[5:25, 35:45] = 0  # the second cell predicted half as wide
    >>> table = shape_differences(matched_pairs(gt, pred), cell_shapes(gt), cell_shapes(pred))
    >>> table["roundness_error"].round(2).tolist()
    [0.0, 0.48]
    """
    if min_area < 0:
        raise ValueError(f"min_area must be >= 0, got {min_area!r}")
    columns = ["label", "area", "roundness", "circularity"]
    table = (pairs.merge(gt_shapes[columns].add_suffix("_gt"), left_on="gt_label", right_on="label_gt")
             .merge(pred_shapes[columns].add_suffix("_pred"), left_on="pred_label", right_on="label_pred")
             .rename(columns={"area_gt": "gt_area"}))
    table = table[table["gt_area"] >= min_area]
    for shape in ("roundness", "circularity"):
        table[f"{shape}_error"] = (table[f"{shape}_pred"] - table[f"{shape}_gt"]).abs()
    order = ["gt_label", "pred_label", "iou", "gt_area"]
    for shape in ("roundness", "circularity"):
        order += [f"{shape}_gt", f"{shape}_pred", f"{shape}_error"]
    return table[order].reset_index(drop=True)
