"""F1 / PQ against hand-computed examples and upstream InstanSeg's own F1."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from instanseg.utils.metrics import matching_torch
from skimage.data import binary_blobs
from skimage.measure import label

from instanseg_scnp.metrics import DEFAULT_THRESHOLDS, match


def blobs(seed, shape=(128, 128)):
    return label(binary_blobs(shape[0], blob_size_fraction=0.08, volume_fraction=0.3, rng=seed, n_dim=len(shape)))


def test_match_hand_computed():
    gt = np.zeros((10, 10), int)
    gt[0:4, 0:4] = 1  # found exactly
    gt[0:4, 6:10] = 2  # found at IoU 12/16 = 0.75
    gt[6:10, 0:4] = 3  # missed
    pred = np.zeros((10, 10), int)
    pred[0:4, 0:4] = 10
    pred[0:4, 7:10] = 20
    pred[6:8, 6:8] = 30  # spurious
    result = match(gt, pred, thresholds=(0.5, 0.8))
    at_50, at_80 = result["per_threshold"]
    assert (at_50["tp"], at_50["fp"], at_50["fn"]) == (2, 1, 1)
    assert (at_80["tp"], at_80["fp"], at_80["fn"]) == (1, 2, 2)
    assert at_50["f1"] == pytest.approx(2 * 2 / (2 * 2 + 1 + 1))
    assert at_80["f1"] == pytest.approx(2 / (2 + 2 + 2))
    assert result["mean_f1"] == pytest.approx((4 / 6 + 2 / 6) / 2)
    assert result["sq"] == pytest.approx((1 + 0.75) / 2)
    assert result["pq"] == pytest.approx((1 + 0.75) / 2 * 4 / 6)


def test_match_ties_at_half_are_one_to_one():
    whole, halves = np.array([[1, 1, 1, 1]]), np.array([[1, 1, 2, 2]])  # each half: IoU exactly 0.5
    at_50 = match(whole, halves, thresholds=(0.5,))["per_threshold"][0]
    assert (at_50["tp"], at_50["fp"], at_50["fn"]) == (1, 1, 0)
    at_50 = match(halves, whole, thresholds=(0.5,))["per_threshold"][0]
    assert (at_50["tp"], at_50["fp"], at_50["fn"]) == (1, 0, 1)


def test_match_thresholds_from_arange():
    gt, pred = np.array([[1, 1, 1, 1, 1]]), np.array([[1, 1, 1, 0, 0]])  # IoU exactly 3/5
    rows = match(gt, pred, thresholds=np.arange(0.5, 0.95, 0.05))["per_threshold"]
    assert [row["tp"] for row in rows] == [1, 1, 1, 0, 0, 0, 0, 0, 0]


@pytest.mark.filterwarnings("ignore:Sparse:UserWarning")  # raised inside upstream's sparse IoU
@pytest.mark.parametrize("seed", [0, 1, 2])
def test_match_f1_equals_upstream_instanseg(seed):
    gt = blobs(seed)
    pred = np.roll(blobs(seed), (seed + 1, 2), axis=(0, 1))  # shifted: a mix of IoUs
    pred[pred == 3] = 0
    ours = match(gt, pred)
    upstream = matching_torch(torch.from_numpy(gt), torch.from_numpy(pred), list(DEFAULT_THRESHOLDS))
    assert [row["f1"] for row in ours["per_threshold"]] == pytest.approx([s.f1 for s in upstream], abs=1e-9)
    assert [row["tp"] for row in ours["per_threshold"]] == [s.tp for s in upstream]


def test_match_ignores_label_values():
    gt, pred = blobs(4), np.roll(blobs(4), 3, axis=0)
    relabelled_gt = np.where(gt > 0, gt.astype(np.int64) * 7919 + 2**40, 0)  # huge, non-consecutive
    relabelled_pred = np.where(pred > 0, 10**12 - pred.astype(np.int64), 0).astype(np.uint64)
    assert match(relabelled_gt, relabelled_pred) == match(gt, pred)


def test_match_empty_and_disjoint():
    empty = np.zeros((8, 8), int)
    cells = np.zeros((8, 8), int)
    cells[:3, :3] = 1
    other = np.zeros((8, 8), int)
    other[5:, 5:] = 4
    nothing = match(empty, empty)
    assert (nothing["mean_f1"], nothing["pq"]) == (1.0, 1.0)
    assert match(cells, empty)["mean_f1"] == 0.0
    assert match(empty, cells)["mean_f1"] == 0.0
    disjoint = match(cells, other)
    assert (disjoint["mean_f1"], disjoint["pq"], disjoint["per_threshold"][0]["fp"]) == (0.0, 0.0, 1)


def test_match_3d():
    gt = blobs(5, shape=(32, 32, 32))
    assert match(gt, gt)["mean_f1"] == 1.0
    assert match(gt, np.roll(gt, 1, axis=0))["mean_f1"] < 1.0


@pytest.mark.parametrize(
    ("gt", "pred", "kwargs", "error", "message"),
    [
        (np.zeros((4, 4), int), np.zeros((4, 5), int), {}, ValueError,
         r"pred must have the same shape as gt, \(4, 4\), got \(4, 5\)"),
        (np.zeros((4, 4)), np.zeros((4, 4), int), {}, TypeError,
         "gt must hold integer instance ids, got dtype float64"),
        (np.zeros((4, 4), int), -np.ones((4, 4), int), {}, ValueError,
         r"pred may only use 0 \(background\) and positive ids, found -1"),
        (np.zeros((4, 4), bool), np.zeros((4, 4), int), {}, TypeError,
         "gt is a boolean foreground mask.*label it first"),
        (np.zeros(4, int), np.zeros(4, int), {}, ValueError, "must have 2 or 3 dims"),
        (np.zeros((4, 4), int), np.zeros((4, 4), int), {"thresholds": (0.3,)}, ValueError, r"in \[0.5, 1\]"),
    ],
)
def test_match_bad_input(gt, pred, kwargs, error, message):
    with pytest.raises(error, match=message):
        match(gt, pred, **kwargs)
