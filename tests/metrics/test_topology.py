"""Betti numbers and instance-level topology errors against scikit-image and hand-built cases."""

from __future__ import annotations

import numpy as np
import pytest
from skimage.data import binary_blobs
from skimage.measure import euler_number, label

from instanseg_scnp.metrics import betti_numbers, count_fragments, topology_errors


@pytest.mark.parametrize("seed", range(4))
@pytest.mark.parametrize("connectivity", [1, 2])
def test_betti_numbers_2d_match_scikit_image(seed, connectivity):
    mask = binary_blobs(96, blob_size_fraction=0.1, volume_fraction=0.5, rng=seed)
    beta0, beta1 = betti_numbers(mask, connectivity)
    assert beta0 == label(mask, connectivity=connectivity).max()
    assert beta0 - beta1 == euler_number(mask, connectivity=connectivity)  # chi = b0 - b1 in 2-D


def test_betti_numbers_3d_cavities_and_tunnels():
    hollow = np.zeros((9, 9, 9), bool)
    hollow[1:8, 1:8, 1:8] = True
    hollow[3:6, 3:6, 3:6] = False
    assert betti_numbers(hollow) == (1, 1)  # one cavity
    assert euler_number(hollow, connectivity=3) == 2  # b0 - b1 + b2 with b1 = 0
    ring = np.zeros((9, 9, 3), bool)
    ring[1:8, 1:8, 1] = True
    ring[3:6, 3:6, 1] = False
    assert betti_numbers(ring) == (1, 0)  # a tunnel is not a cavity


def test_betti_numbers_connectivity_and_empty():
    diagonal = np.eye(3, dtype=bool)
    assert betti_numbers(diagonal) == (1, 0)
    assert betti_numbers(diagonal, connectivity=1) == (3, 0)
    assert betti_numbers(np.zeros((4, 4), bool)) == (0, 0)
    with pytest.raises(ValueError, match="connectivity must be 1 or 2"):
        betti_numbers(diagonal, connectivity=3)


def cells(*boxes, shape=(20, 20)):
    """Label image with one rectangle per (label, rows, cols)."""
    image = np.zeros(shape, np.int64)
    for value, rows, cols in boxes:
        image[rows, cols] = value
    return image


GT = cells((1, slice(2, 8), slice(2, 8)), (2, slice(2, 8), slice(12, 18)), (3, slice(12, 18), slice(2, 8)))


@pytest.mark.parametrize(
    ("pred", "expected"),
    [
        (GT.copy(), {"splits": 0, "merges": 0, "fragmented": 0, "missed": 0, "spurious": 0, "beta0_error": 0,
                       "count_error": 0}),
        (  # cell 1 split in two
            cells((5, slice(2, 5), slice(2, 8)), (6, slice(5, 8), slice(2, 8)), (2, slice(2, 8), slice(12, 18)),
                  (3, slice(12, 18), slice(2, 8))),
            {"splits": 1, "merges": 0, "fragmented": 0, "missed": 0, "spurious": 0, "beta0_error": 0,
             "count_error": 1},
        ),
        (  # cells 1 and 2 merged through a bridge
            cells((1, slice(2, 8), slice(2, 18)), (3, slice(12, 18), slice(2, 8))),
            {"splits": 0, "merges": 1, "fragmented": 0, "missed": 0, "spurious": 0, "beta0_error": 1,
             "count_error": 1},
        ),
        (  # cell 3 predicted as two disjoint pieces with one label
            cells((1, slice(2, 8), slice(2, 8)), (2, slice(2, 8), slice(12, 18)), (3, slice(12, 14), slice(2, 8)),
                  (3, slice(16, 18), slice(2, 8))),
            {"splits": 0, "merges": 0, "fragmented": 1, "missed": 0, "spurious": 0, "beta0_error": 1,
             "count_error": 0},
        ),
        (  # cell 3 missed, a speck of false positive
            cells((1, slice(2, 8), slice(2, 8)), (2, slice(2, 8), slice(12, 18)), (9, slice(14, 16), slice(14, 16))),
            {"splits": 0, "merges": 0, "fragmented": 0, "missed": 1, "spurious": 1, "beta0_error": 0,
             "count_error": 0},
        ),
    ],
    ids=["perfect", "split", "merge", "fragment", "missed-and-spurious"],
)
def test_topology_errors_hand_built(pred, expected):
    errors = topology_errors(GT, pred)
    assert {key: errors[key] for key in expected} == expected


def test_count_error_sees_merges_and_splits_of_touching_cells_that_betti_0_misses():
    touching = cells((1, slice(2, 8), slice(2, 8)), (2, slice(2, 8), slice(8, 14)))
    merged = (touching > 0).astype(int)
    split = touching.copy()
    split[2:5, 2:8] = 5
    for pred in (merged, split):
        errors = topology_errors(touching, pred)
        assert errors["beta0_error"] == 0  # one foreground component in each
        assert errors["count_error"] == abs(len(np.unique(touching)) - len(np.unique(pred)))
        assert errors["count_error"] == 1


def test_topology_errors_holes():
    ring = cells((1, slice(2, 9), slice(2, 9)))
    ring[4:7, 4:7] = 0
    errors = topology_errors(cells((1, slice(2, 9), slice(2, 9))), ring)
    assert (errors["beta1_gt"], errors["beta1_pred"], errors["beta1_error"]) == (0, 1, 1)


def test_count_fragments_with_huge_ids():
    labels = np.zeros((5, 7), np.uint64)
    labels[0, 0] = labels[4, 6] = 2**40
    labels[2, 2:4] = 7
    ids, pieces = count_fragments(labels)
    assert ids.tolist() == [7, 2**40]
    assert pieces.tolist() == [1, 2]


def test_topology_errors_3d_and_empty():
    volume = label(binary_blobs(24, blob_size_fraction=0.2, volume_fraction=0.3, rng=0, n_dim=3))
    assert topology_errors(volume, volume)["beta0_error"] == 0
    empty = np.zeros((6, 6), int)
    assert topology_errors(empty, empty) == {
        "count_error": 0, "beta0_error": 0, "beta1_error": 0,
        "beta0_gt": 0, "beta0_pred": 0, "beta1_gt": 0, "beta1_pred": 0,
        "fragmented": 0, "splits": 0, "merges": 0, "missed": 0, "spurious": 0,
    }


def test_topology_errors_bad_input():
    with pytest.raises(ValueError, match=r"pred must have the same shape as gt, \(3, 3\), got \(3, 4\)"):
        topology_errors(np.zeros((3, 3), int), np.zeros((3, 4), int))
    with pytest.raises(TypeError, match="pred must hold integer instance ids, got dtype float64"):
        topology_errors(np.zeros((3, 3), int), np.zeros((3, 3)))
