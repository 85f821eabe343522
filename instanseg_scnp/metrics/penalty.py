r"""Where SCNP bites, per cell: the mean penalty over each cell and a one-window ring around it.

SCNP moves a logit :math:`z_i` to :math:`\tilde z_i`, the worst same-class value
in its :math:`w \times w` window. A weak pixel changes its neighbours within
:math:`r = \lfloor w/2 \rfloor` px, on both sides of a cell's border, so the
penalty a cell carries is read over the cell dilated by :math:`r` (Chebyshev
distance, the window's own shape):

.. math::

    \mathrm{penalty}(c) = \frac{1}{|D_r(c)|} \sum_{i \in D_r(c)} |z_i - \tilde z_i|,
    \qquad D_r(c) = \{ i : \min_{j \in c} \|i - j\|_\infty \le r \},

clipped at the image border. Neighbouring cells' rings overlap: a weak pixel
between two cells counts for both, as it threatens both.
"""

from __future__ import annotations

import numpy as np
from scipy import ndimage

from instanseg_scnp.metrics._labels import check_labels

__all__ = ["cell_penalty"]


def cell_penalty(penalty: np.ndarray, labels: np.ndarray, window: int) -> dict[int, float]:
    """Mean of ``|penalty|`` over each cell of ``labels`` and a ring of ``window // 2`` px around it.

    Parameters
    ----------
    penalty : (H, W) or (D, H, W) float ndarray
        Per-pixel penalty, e.g. :math:`z - \\tilde z` from :func:`instanseg_scnp.scnp`.
    labels : ndarray of int, same shape
        Instance labels, 0 background (negative values, unannotated, are no cell).
    window : int
        The odd SCNP window :math:`w` the penalty was computed with.

    Returns
    -------
    dict of int to float
        Cell id -> mean absolute penalty over the cell and its ring.

    Examples
    --------
    >>> penalty = np.zeros((5, 7)); penalty[2, 3] = 4.0
    >>> labels = np.zeros((5, 7), int); labels[1:4, 0:2] = 1; labels[1:4, 5:7] = 2
    >>> cell_penalty(penalty, labels, window=1)
    {1: 0.0, 2: 0.0}
    >>> {cell: round(value, 3) for cell, value in cell_penalty(penalty, labels, window=5).items()}
    {1: 0.2, 2: 0.2}
    """
    penalty = np.asarray(penalty)
    labels = check_labels(labels, name="labels", shape=penalty.shape, shape_of="the penalty", allow_unannotated=True)
    if not np.issubdtype(penalty.dtype, np.floating):
        raise TypeError(f"penalty must be a float array, got dtype {penalty.dtype}")
    if isinstance(window, bool) or not isinstance(window, int | np.integer) or window < 1 or window % 2 == 0:
        raise ValueError(f"window must be a positive odd int, got {window!r}")
    radius = window // 2
    magnitude = np.abs(penalty)
    means = {}
    for cell, box in enumerate(ndimage.find_objects(np.maximum(labels, 0)), start=1):
        if box is None:
            continue
        grown = tuple(slice(max(s.start - radius, 0), min(s.stop + radius, n)) for s, n in zip(box, labels.shape))
        mask = labels[grown] == cell
        if radius:
            mask = ndimage.binary_dilation(mask, np.ones((3,) * labels.ndim, bool), iterations=radius)
        means[cell] = float(magnitude[grown][mask].mean())
    return means
