"""classify_errors against a brute-force oracle that loops over ids and counts pixels by hand."""

from __future__ import annotations

import numpy as np
import pytest
from scipy import ndimage
from skimage.data import binary_blobs
from skimage.measure import label

from instanseg_scnp.metrics import CellErrors, classify_errors, topology_errors

CLASSES = ("matched_gt", "matched_pred", "split", "merged", "fragmented", "missed", "spurious")


def first_pixel(labels: np.ndarray, value: int) -> int:
    return int(np.flatnonzero(labels.ravel() == value)[0])


def oracle(gt: np.ndarray, pred: np.ndarray, connectivity: int | None = None) -> dict[str, list[int]]:
    """The rules of instanseg_scnp.metrics.errors, one id (and one pair) at a time."""
    gt_ids = [int(g) for g in np.unique(gt) if g != 0]
    pred_ids = [int(p) for p in np.unique(pred) if p != 0]
    gt_area = {g: int((gt == g).sum()) for g in gt_ids}
    pred_area = {p: int((pred == p).sum()) for p in pred_ids}
    overlap = {(g, p): int(((gt == g) & (pred == p)).sum()) for g in gt_ids for p in pred_ids}
    iou = {(g, p): overlap[g, p] / (gt_area[g] + pred_area[p] - overlap[g, p]) for g, p in overlap}
    structure = ndimage.generate_binary_structure(gt.ndim, connectivity or gt.ndim)
    # matching: gts in raster order of their first pixel, each takes the first free candidate in raster order
    taken, pairs = set(), []
    for g in sorted(gt_ids, key=lambda g: first_pixel(gt, g)):
        candidates = sorted((p for p in pred_ids if iou[g, p] >= 0.5 and p not in taken),
                            key=lambda p: first_pixel(pred, p))
        if candidates:
            taken.add(candidates[0])
            pairs.append((g, candidates[0]))
    pairs.sort()
    return {
        "matched_gt": [g for g, _ in pairs],
        "matched_pred": [p for _, p in pairs],
        "split": [g for g in gt_ids if sum(2 * overlap[g, p] >= pred_area[p] for p in pred_ids) >= 2],
        "merged": [p for p in pred_ids if sum(2 * overlap[g, p] >= gt_area[g] for g in gt_ids) >= 2],
        "fragmented": [p for p in pred_ids if ndimage.label(pred == p, structure)[1] >= 2],
        "missed": [g for g in gt_ids if 2 * int(((gt == g) & (pred > 0)).sum()) < gt_area[g]],
        "spurious": [p for p in pred_ids if 2 * int(((pred == p) & (gt > 0)).sum()) < pred_area[p]],
    }


def as_lists(errors: CellErrors) -> dict[str, list[int]]:
    return {name: getattr(errors, name).tolist() for name in CLASSES}


def cells(*boxes, shape=(20, 20)):
    """Label image with one rectangle per (label, rows, cols)."""
    image = np.zeros(shape, np.int64)
    for value, rows, cols in boxes:
        image[rows, cols] = value
    return image


A, B, C = (slice(2, 8), slice(2, 8)), (slice(2, 8), slice(12, 18)), (slice(12, 18), slice(2, 8))
GT = cells((1, *A), (2, *B), (3, *C))
NONE = {name: [] for name in CLASSES}
ALL_MATCHED = {**NONE, "matched_gt": [1, 2, 3], "matched_pred": [1, 2, 3]}

LITERAL_CASES = {
    "perfect": (GT, ALL_MATCHED),
    "split": (  # gt 1 cut into predicted 5 (top half) and 6 (bottom half): IoU 0.5 each, 5 comes first
        cells((5, slice(2, 5), slice(2, 8)), (6, slice(5, 8), slice(2, 8)), (2, *B), (3, *C)),
        {**NONE, "matched_gt": [1, 2, 3], "matched_pred": [5, 2, 3], "split": [1]},
    ),
    "merge": (  # gts 1 and 2 in one predicted cell bridging them
        cells((7, slice(2, 8), slice(2, 18)), (3, *C)),
        {**NONE, "matched_gt": [3], "matched_pred": [3], "merged": [7]},
    ),
    "fragment": (  # gt 3 predicted as two pieces with one id
        cells((1, *A), (2, *B), (3, slice(12, 14), slice(2, 8)), (3, slice(16, 18), slice(2, 8))),
        {**ALL_MATCHED, "fragmented": [3]},
    ),
    "miss": (  # gt 3 not predicted at all, and gt 2 only by a sliver
        cells((1, *A), (2, slice(2, 4), slice(12, 18))),
        {**NONE, "matched_gt": [1], "matched_pred": [1], "missed": [2, 3]},
    ),
    "spurious": (  # a predicted cell on background, and one mostly off its gt cell
        cells((1, *A), (2, *B), (3, *C), (9, slice(14, 16), slice(14, 16)), (8, slice(7, 10), slice(2, 8))),
        {**NONE, "matched_gt": [1, 2, 3], "matched_pred": [1, 2, 3], "spurious": [8, 9]},
    ),
}


@pytest.mark.parametrize(("pred", "expected"), LITERAL_CASES.values(), ids=LITERAL_CASES.keys())
def test_classify_errors_literal_cases(pred, expected):
    assert oracle(GT, pred) == expected  # the oracle agrees with the hand-derived answer
    assert as_lists(classify_errors(GT, pred)) == expected


def test_classify_errors_classes_overlap_and_sides():
    gt = np.array([[1, 1, 1, 1, 1, 1, 1, 1, 0, 2, 2, 0, 3]])
    pred = np.array([[5, 0, 6, 0, 0, 0, 0, 0, 0, 7, 7, 7, 7]])
    errors = classify_errors(gt, pred)
    assert errors.split.tolist() == [1] and errors.missed.tolist() == [1]  # two specks in a big cell
    assert errors.merged.tolist() == [7] and errors.fragmented.tolist() == []
    assert as_lists(errors) == oracle(gt, pred)
    assert {CellErrors.SIDES[name] for name in ("split", "missed", "matched_gt")} == {"gt"}
    assert {CellErrors.SIDES[name] for name in ("merged", "fragmented", "spurious", "matched_pred")} == {"pred"}
    assert set(CellErrors.SIDES) == set(CLASSES)


def test_classify_errors_connectivity_decides_fragments():
    gt = np.zeros((4, 4), int)
    pred = np.eye(4, dtype=int) * 3
    assert classify_errors(gt, pred).fragmented.tolist() == []
    assert classify_errors(gt, pred, connectivity=1).fragmented.tolist() == [3]
    with pytest.raises(ValueError, match="connectivity must be 1 or 2"):
        classify_errors(gt, pred, connectivity=3)


def perturbed(gt: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    """A prediction with shifted, merged, split, dropped, holed and added cells, ids shuffled."""
    pred = np.roll(gt, 1, axis=-1)
    ids = np.unique(gt)[1:]
    if len(ids) > 3:
        pred[pred == ids[1]] = ids[0]  # a merge (and a fragment, when they do not touch)
        pred[pred == ids[2]] = 0  # a miss
        cut = (pred == ids[3]) & (np.indices(gt.shape)[-1] % 6 < 3)
        pred[cut] = ids.max() + 1  # a split into stripes (and fragments)
    pred[rng.random(gt.shape) < 0.05] = 0  # holes, and some cells cut into pieces
    pred[tuple(slice(0, 3) for _ in gt.shape)] = ids.max(initial=0) + 2  # a spurious corner (unless on a cell)
    lookup = rng.permutation(int(pred.max()) + 1) + 1
    return np.where(pred > 0, lookup[pred], 0)


@pytest.mark.parametrize("ndim", [2, 3])
@pytest.mark.parametrize("seed", range(3))
def test_classify_errors_matches_oracle_on_blobs(ndim, seed):
    rng = np.random.default_rng(seed)
    gt = label(binary_blobs(32 if ndim == 2 else 16, blob_size_fraction=0.2, n_dim=ndim, volume_fraction=0.3,
                            rng=seed))
    pred = perturbed(gt, rng)
    for connectivity in (None, 1):
        assert as_lists(classify_errors(gt, pred, connectivity=connectivity)) == oracle(gt, pred, connectivity)


@pytest.mark.parametrize("seed", range(40))
def test_classify_errors_matches_oracle_on_random_labels(seed):
    rng = np.random.default_rng(seed)
    shape = tuple(rng.integers(1, 9, 2 if seed % 4 else 3))
    gt = rng.integers(0, rng.integers(1, 6), shape)
    pred = rng.permutation(30)[rng.integers(0, rng.integers(1, 6), shape)]  # ids not consecutive, 0 somewhere
    assert as_lists(classify_errors(gt, pred)) == oracle(gt, pred)
    assert as_lists(classify_errors(gt, pred, connectivity=1)) == oracle(gt, pred, connectivity=1)


@pytest.mark.parametrize("seed", range(6))
def test_topology_errors_counts_are_the_lengths_of_the_sets(seed):
    rng = np.random.default_rng(seed)
    gt = label(binary_blobs(48, blob_size_fraction=0.15, volume_fraction=0.4, rng=seed))
    pred = perturbed(gt, rng)
    for connectivity in (None, 1):
        errors = topology_errors(gt, pred, connectivity)
        counts = classify_errors(gt, pred, connectivity=connectivity).counts()
        assert {key: errors[key] for key in ("splits", "merges", "fragmented", "missed", "spurious")} == {
            "splits": counts["split"], "merges": counts["merged"], "fragmented": counts["fragmented"],
            "missed": counts["missed"], "spurious": counts["spurious"]}
        assert counts["matched"] == len(classify_errors(gt, pred).matched_pred)


def test_classify_errors_keeps_ids_and_dtypes():
    gt = np.zeros((4, 6), np.uint64)
    gt[:, :3] = 2**40
    pred = np.zeros((4, 6), np.int16)
    pred[:, :3], pred[0, 5] = 300, 7
    errors = classify_errors(gt, pred)
    assert errors.matched_gt.tolist() == [2**40] and errors.matched_gt.dtype == np.uint64
    assert errors.matched_pred.tolist() == [300] and errors.spurious.dtype == np.int16
    assert errors.spurious.tolist() == [7]


def test_classify_errors_empty_images():
    empty = np.zeros((5, 5), int)
    errors = classify_errors(empty, empty)
    assert as_lists(errors) == NONE
    assert errors.counts() == {"matched": 0, "split": 0, "merged": 0, "fragmented": 0, "missed": 0, "spurious": 0}
    assert classify_errors(empty, GT[:5, :5]).spurious.tolist() == [1]
    assert classify_errors(GT[:5, :5], empty).missed.tolist() == [1]


def test_cell_errors_is_frozen():
    errors = classify_errors(GT, GT)
    with pytest.raises(AttributeError):
        errors.split = np.array([1])


@pytest.mark.parametrize(
    ("gt", "pred", "error", "message"),
    [
        (np.zeros((3, 3), int), np.zeros((3, 4), int), ValueError, r"pred must have the same shape as gt, \(3, 3\)"),
        (np.zeros((3, 3)), np.zeros((3, 3), int), TypeError, "gt must hold integer instance ids, got dtype float64"),
        (np.zeros((3, 3), int), np.ones((3, 3), bool), TypeError, "pred is a boolean foreground mask"),
        (-np.ones((3, 3), int), np.zeros((3, 3), int), ValueError, r"gt may only use 0 \(background\)"),
    ],
)
def test_classify_errors_bad_input(gt, pred, error, message):
    with pytest.raises(error, match=message):
        classify_errors(gt, pred)
