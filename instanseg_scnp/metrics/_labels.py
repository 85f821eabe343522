"""Validation, the overlap table and the connected pieces of cells, shared by the metrics."""

from __future__ import annotations

from dataclasses import dataclass

import fastremap
import numpy as np
from skimage.measure import label as label_regions


def check_labels(labels: object, *, name: str = "labels", ndims: tuple[int, ...] = (2, 3),
                 shape: tuple[int, ...] | None = None, shape_of: str | None = None,
                 allow_unannotated: bool = False) -> np.ndarray:
    """Check an instance label image and return it as an ndarray (not copied when it is one).

    The one validator of label images in this package: the metrics, the dataset
    loader and the napari plugin call it at their public boundary.

    Parameters
    ----------
    labels : (M, N[, P]) array_like of int
        Instance ids: 0 background, positive ids cells (need not be
        consecutive), and, when ``allow_unannotated``, -1 for unannotated pixels
        (upstream InstanSeg's convention).
    name : str
        What the caller calls the argument, e.g. ``"gt"``; every message starts with it.
    ndims : tuple of int
        The numbers of dimensions accepted.
    shape : tuple of int, optional
        The shape ``labels`` must have, e.g. that of the image it labels.
    shape_of : str, optional
        What ``shape`` is the shape of, for the message (e.g. ``"gt"``, ``"the logits"``).
    allow_unannotated : bool
        Accept -1 (unannotated) besides 0 and positive ids.

    Returns
    -------
    ndarray
        ``np.asarray(labels)``.

    Raises
    ------
    TypeError
        A bool mask (label it or cast it first), or a dtype that is not an integer.
    ValueError
        The wrong number of dimensions, a shape other than ``shape``, or an id
        below 0 (below -1 with ``allow_unannotated``). Each message names
        ``name``, what was expected and what was found.

    Examples
    --------
    >>> check_labels([[0, 1], [2, 2]], name="gt")
    array([[0, 1],
           [2, 2]])
    >>> check_labels(np.array([[0.0, 1.0]]), name="gt")
    Traceback (most recent call last):
    ...
    TypeError: gt must hold integer instance ids, got dtype float64
    >>> check_labels(np.zeros((2, 3), int), name="pred", shape=(2, 2), shape_of="gt")
    Traceback (most recent call last):
    ...
    ValueError: pred must have the same shape as gt, (2, 2), got (2, 3)
    >>> check_labels(np.array([[-1, 0, 4]]), name="masks", allow_unannotated=True)
    array([[-1,  0,  4]])
    """
    array = np.asarray(labels)
    if array.dtype == bool:
        raise TypeError(
            f"{name} is a boolean foreground mask; expected integer instance ids: label it first "
            "(scipy.ndimage.label / skimage.measure.label) or cast it with .astype(int)"
        )
    if not np.issubdtype(array.dtype, np.integer):
        raise TypeError(f"{name} must hold integer instance ids, got dtype {array.dtype}")
    if array.ndim not in ndims:
        raise ValueError(f"{name} must have {' or '.join(map(str, ndims))} dims, got shape {array.shape}")
    if shape is not None and array.shape != tuple(shape):
        expected = f"the same shape as {shape_of}, {tuple(shape)}" if shape_of else f"shape {tuple(shape)}"
        raise ValueError(f"{name} must have {expected}, got {array.shape}")
    lowest = -1 if allow_unannotated else 0
    if array.size and np.issubdtype(array.dtype, np.signedinteger) and array.min() < lowest:
        allowed = "-1 (unannotated), 0 (background)" if allow_unannotated else "0 (background)"
        raise ValueError(f"{name} may only use {allowed} and positive ids, found {array.min()}")
    return array


def check_label_pair(gt: object, pred: object) -> tuple[np.ndarray, np.ndarray]:
    """``gt`` and ``pred`` checked by :func:`check_labels`, ``pred`` against ``gt``'s shape."""
    gt = check_labels(gt, name="gt")
    return gt, check_labels(pred, name="pred", shape=gt.shape, shape_of="gt")


def check_connectivity(connectivity: int | None, ndim: int) -> int:
    """The foreground connectivity for ``ndim`` dims: 1 or ``ndim`` (full, the default for None)."""
    if connectivity is None:
        return ndim
    if connectivity not in (1, ndim):
        raise ValueError(f"connectivity must be 1 or {ndim} (full) for {ndim}-D images, got {connectivity!r}")
    return connectivity


def pieces_per_label(labels: np.ndarray, connectivity: int | None) -> tuple[np.ndarray, np.ndarray]:
    """``count_fragments`` without the checks: one pass of connected-component labelling."""
    pieces = label_regions(labels, background=0, connectivity=check_connectivity(connectivity, labels.ndim))
    owner = np.zeros(int(pieces.max(initial=0)) + 1, labels.dtype)
    owner[pieces.ravel()] = labels.ravel()  # every pixel of a piece has the piece's label
    return np.unique(owner[1:], return_counts=True)


@dataclass(frozen=True)
class Overlaps:
    """Sparse overlap table of two label images, labels renumbered 1..n.

    ``gt_area[i]`` / ``pred_area[j]`` are the areas of gt cell ``i + 1`` / predicted
    cell ``j + 1``, whose original labels are ``gt_ids[i]`` / ``pred_ids[j]``;
    each pair ``(gt_index[k], pred_index[k])`` (0-based) shares ``overlap[k]``
    pixels, ``iou[k]`` their intersection over union.
    """

    gt_ids: np.ndarray
    pred_ids: np.ndarray
    gt_area: np.ndarray
    pred_area: np.ndarray
    gt_index: np.ndarray
    pred_index: np.ndarray
    overlap: np.ndarray
    iou: np.ndarray


def renumber(labels: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Labels renumbered 1..n (0 stays background), and the original id of each new one.

    Returns ``(index, ids)`` with ``labels == ids[index - 1]`` wherever ``index > 0``.
    """
    index, mapping = fastremap.renumber(labels, preserve_zero=True, in_place=False)
    old = np.fromiter(mapping.keys(), labels.dtype, len(mapping))
    new = np.fromiter(mapping.values(), np.int64, len(mapping))
    ids = np.empty(int(new.max(initial=0)), labels.dtype)
    ids[new[new > 0] - 1] = old[new > 0]
    return index, ids


def overlaps(gt: np.ndarray, pred: np.ndarray) -> Overlaps:
    """Count the pixels each (gt cell, predicted cell) pair shares, in one pass."""
    gt_renumbered, gt_ids = renumber(gt)
    pred_renumbered, pred_ids = renumber(pred)
    n_gt, n_pred = len(gt_ids), len(pred_ids)
    gt_flat, pred_flat = gt_renumbered.ravel(), pred_renumbered.ravel()
    both = (gt_flat > 0) & (pred_flat > 0)
    pairs = gt_flat[both].astype(np.int64) * (n_pred + 1) + pred_flat[both]
    keys, counts = np.unique(pairs, return_counts=True)
    gt_area = np.bincount(gt_flat, minlength=n_gt + 1)[1:]
    pred_area = np.bincount(pred_flat, minlength=n_pred + 1)[1:]
    gt_index, pred_index = keys // (n_pred + 1) - 1, keys % (n_pred + 1) - 1
    return Overlaps(
        gt_ids=gt_ids,
        pred_ids=pred_ids,
        gt_area=gt_area,
        pred_area=pred_area,
        gt_index=gt_index,
        pred_index=pred_index,
        overlap=counts,
        iou=counts / (gt_area[gt_index] + pred_area[pred_index] - counts),
    )
