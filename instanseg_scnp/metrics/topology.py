r"""Topology errors: Betti numbers of the foreground, and split / merged / fragmented cells.

Conventions (as in :func:`skimage.measure.euler_number`):

- ``connectivity`` is the foreground's: ``ndim`` (full: 8 in 2-D, 26 in 3-D,
  the default) or 1 (4 in 2-D, 6 in 3-D). The background takes the
  complementary one (4/6 for a full foreground, 8/26 for a 1-connected one), so
  that a closed curve of foreground always encloses its inside.
- :math:`\beta_0` is the number of foreground components; an empty mask has
  :math:`\beta_0 = 0`.
- *holes* are background components that do not reach the image border: in
  2-D that is :math:`\beta_1`; in 3-D they are enclosed cavities
  (:math:`\beta_2`), and tunnels are not counted. The key is ``beta1`` in both.

β0 and β1 are those of the *binary foreground*: a merged pair of touching
cells and a cell split in two along a line both leave them unchanged. The
instance count sees both: ``count_error`` is :math:`|n_{gt} - n_{pred}|`, the
numbers of distinct labels (0 when both images are empty).

Instance-level counts, the numbers of cells
:func:`~instanseg_scnp.metrics.classify_errors` names (its module,
:mod:`instanseg_scnp.metrics.errors`, has the exact rules):

- ``fragmented``: predicted cells made of two or more connected pieces;
- ``splits``: gt cells holding two or more predicted cells, each with at least
  half of its area inside that gt cell;
- ``merges``: predicted cells holding two or more gt cells, each with at least
  half of its area inside that predicted cell;
- ``missed``: gt cells of which less than half is predicted foreground;
- ``spurious``: predicted cells of which less than half is gt foreground.
"""

from __future__ import annotations

import numpy as np
from scipy import ndimage

from instanseg_scnp.metrics._labels import (
    check_connectivity,
    check_label_pair,
    check_labels,
    overlaps,
    pieces_per_label,
)
from instanseg_scnp.metrics.errors import _classify

__all__ = ["betti_numbers", "count_fragments", "topology_errors"]


def betti_numbers(mask: np.ndarray, connectivity: int | None = None) -> tuple[int, int]:
    """β0 (foreground components) and holes (β1 in 2-D, cavities in 3-D) of a mask.

    Parameters
    ----------
    mask : (M, N[, P]) ndarray
        Foreground where non-zero.
    connectivity : {1, ndim}, optional
        The foreground's connectivity; default full (8 in 2-D, 26 in 3-D).

    Examples
    --------
    >>> ring = np.ones((5, 5), bool)
    >>> ring[2, 2] = False
    >>> betti_numbers(ring)
    (1, 1)
    """
    mask = np.asarray(mask) != 0
    connectivity = check_connectivity(connectivity, mask.ndim)
    structure = ndimage.generate_binary_structure(mask.ndim, connectivity)
    _, beta0 = ndimage.label(mask, structure)
    complement = ndimage.generate_binary_structure(mask.ndim, 1 if connectivity == mask.ndim else mask.ndim)
    _, background_components = ndimage.label(np.pad(~mask, 1, constant_values=True), complement)
    return int(beta0), int(background_components) - 1


def count_fragments(labels: np.ndarray, connectivity: int | None = None) -> tuple[np.ndarray, np.ndarray]:
    """The labels present (ascending, 0 excluded) and how many connected pieces each has.

    Examples
    --------
    >>> count_fragments(np.array([[7, 0, 7, 2, 2]]))
    (array([2, 7]), array([1, 2]))
    """
    return pieces_per_label(check_labels(labels, name="labels"), connectivity)


def topology_errors(gt: np.ndarray, pred: np.ndarray, connectivity: int | None = None) -> dict:
    """Betti-number errors and split / merge / fragment / missed / spurious counts.

    Parameters
    ----------
    gt, pred : (M, N[, P]) ndarray of int
        Label images, 0 background.
    connectivity : {1, ndim}, optional
        Foreground connectivity; default full. See the module notes.

    Returns
    -------
    dict
        ``count_error = |#labels(gt) - #labels(pred)|``; ``beta0_error =
        |β0(gt > 0) - β0(pred > 0)|``, ``beta1_error`` likewise for holes, the
        four Betti numbers themselves; and ``fragmented``, ``splits``,
        ``merges``, ``missed``, ``spurious``: the numbers of cells in the sets
        :func:`~instanseg_scnp.metrics.classify_errors` returns (``fragmented``,
        ``split``, ``merged``, ``missed``, ``spurious``).

    Examples
    --------
    >>> gt = np.array([[1, 1, 1, 1, 0, 2, 2]])
    >>> pred = np.array([[3, 3, 4, 4, 0, 0, 0]])
    >>> errors = topology_errors(gt, pred)
    >>> errors["beta0_error"], errors["splits"], errors["missed"]
    (1, 1, 1)
    """
    gt, pred = check_label_pair(gt, pred)
    beta0_gt, beta1_gt = betti_numbers(gt, connectivity)
    beta0_pred, beta1_pred = betti_numbers(pred, connectivity)
    table = overlaps(gt, pred)
    cells = _classify(gt, pred, table, connectivity)
    return {
        "count_error": abs(len(table.gt_area) - len(table.pred_area)),
        "beta0_error": abs(beta0_gt - beta0_pred),
        "beta1_error": abs(beta1_gt - beta1_pred),
        "beta0_gt": beta0_gt,
        "beta0_pred": beta0_pred,
        "beta1_gt": beta1_gt,
        "beta1_pred": beta1_pred,
        "fragmented": len(cells.fragmented),
        "splits": len(cells.split),
        "merges": len(cells.merged),
        "missed": len(cells.missed),
        "spurious": len(cells.spurious),
    }
