"""Validation and the overlap table shared by the metrics."""

from __future__ import annotations

from dataclasses import dataclass

import fastremap
import numpy as np


def check_labels(labels: object, *, name: str, ndims: tuple[int, ...] = (2, 3)) -> np.ndarray:
    """Return ``labels`` as a non-negative integer ndarray, or raise naming ``name``."""
    array = np.asarray(labels)
    if array.dtype == bool:
        raise TypeError(
            f"{name} must be an integer label image, got a bool mask: label it first "
            "(scipy.ndimage.label / skimage.measure.label) or cast it with .astype(int)"
        )
    if not np.issubdtype(array.dtype, np.integer):
        raise TypeError(f"{name} must be an integer label image, got dtype {array.dtype}")
    if array.ndim not in ndims:
        raise ValueError(f"{name} must have {' or '.join(map(str, ndims))} dims, got shape {array.shape}")
    if array.size and array.min() < 0:
        raise ValueError(f"{name} must not contain negative labels, got minimum {array.min()}")
    return array


def check_label_pair(gt: object, pred: object) -> tuple[np.ndarray, np.ndarray]:
    gt, pred = check_labels(gt, name="gt"), check_labels(pred, name="pred")
    if gt.shape != pred.shape:
        raise ValueError(f"gt and pred must have the same shape, got {gt.shape} and {pred.shape}")
    return gt, pred


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
