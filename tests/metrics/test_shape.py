"""Per-cell shapes against analytic shapes and scikit-image's per-region measurements."""

from __future__ import annotations

import numpy as np
import pytest
from skimage.data import binary_blobs
from skimage.draw import disk, ellipse
from scipy.spatial import ConvexHull
from skimage.measure import label, perimeter_crofton, regionprops

from instanseg_scnp.metrics import SHAPE_COLUMNS, cell_shapes


def single(mask, value=1):
    return np.where(mask, value, 0).astype(np.int64)


@pytest.mark.parametrize("radius", [10, 20, 50])
def test_disc_is_round(radius):
    mask = np.zeros((2 * radius + 9, 2 * radius + 9), bool)
    mask[disk((radius + 4, radius + 4), radius)] = True
    row = cell_shapes(single(mask)).iloc[0]
    assert row.circularity == pytest.approx(1, abs=0.05)
    assert row.roundness == pytest.approx(1, abs=0.05)
    assert row.solidity > 0.9


def test_square_and_ellipse():
    square = np.zeros((50, 50), bool)
    square[5:45, 5:45] = True
    row = cell_shapes(single(square)).iloc[0]
    assert row.circularity == pytest.approx(0.887, abs=0.01)  # pi/4 read through Crofton-4 (see module notes)
    assert row.solidity == pytest.approx(1)
    oval = np.zeros((80, 80), bool)
    oval[ellipse(40, 40, 10, 30)] = True
    assert cell_shapes(single(oval)).roundness.iloc[0] == pytest.approx(10 / 30, abs=0.02)


def test_l_shape_solidity():
    k = 10
    shape = np.zeros((3 * k, 3 * k), bool)
    shape[: 2 * k, :k] = True
    shape[k : 2 * k, : 2 * k] = True
    assert cell_shapes(single(shape)).solidity.iloc[0] == pytest.approx(3 / 3.5, abs=1e-9)


def test_cell_shapes_match_scikit_image_per_region():
    labels = label(binary_blobs(128, blob_size_fraction=0.06, volume_fraction=0.35, rng=3))
    table = cell_shapes(labels).set_index("label")
    for region in regionprops(labels):
        row = table.loc[region.label]
        assert row.area == region.area
        assert row.perimeter == pytest.approx(perimeter_crofton(region.image, directions=4))
        major = 4 * np.sqrt(region.inertia_tensor_eigvals[0] + 1 / 12)
        assert row.roundness == pytest.approx(4 * region.area / (np.pi * major**2))
        assert -0.1 < row.solidity - region.solidity <= 1e-12  # hull of pixel squares >= hull of pixels
        assert row.fragments == 1


@pytest.mark.parametrize("seed", range(30))
def test_solidity_matches_convex_hull_of_pixel_squares(seed):
    """Random small label images: gaps inside rows, missing rows, pieces, border cells."""
    rng = np.random.default_rng(seed)
    labels = rng.integers(0, 4, size=tuple(rng.integers(1, 12, 2)))
    labels[rng.random(labels.shape) < 0.3] = 0
    table = cell_shapes(labels.astype(np.int64)).set_index("label")
    for value in table.index:
        rows, cols = np.nonzero(labels == value)
        corners = (np.stack([rows, cols], 1)[:, None, :] + [(0, 0), (0, 1), (1, 0), (1, 1)]).reshape(-1, 2)
        assert table.loc[value, "solidity"] == pytest.approx(len(rows) / ConvexHull(corners).volume, rel=1e-9)


def test_hull_with_one_very_tall_cell():
    """Cells are hulled in groups of similar height; a label reused far away is its own group."""
    labels = np.kron(np.arange(1, 101).reshape(10, 10), np.ones((5, 5), np.int64))
    labels = np.pad(labels, ((0, 950), (0, 0)))
    labels[-1, -1] = labels[0, 0]  # a label reused far away: one cell 1000 rows tall
    table = cell_shapes(labels)
    assert table.solidity.iloc[1:].tolist() == pytest.approx([1.0] * 99)


def test_cell_shapes_labels_fragments_spacing():
    labels = np.zeros((20, 20), np.int64)
    labels[2:6, 2:6] = 2**35
    labels[10:14, 10:14] = 2**35  # a second piece of the same cell
    labels[2:8, 12:18] = 4
    table = cell_shapes(labels)
    assert table.label.tolist() == [4, 2**35]
    assert table.fragments.tolist() == [1, 2]
    assert table.area.tolist() == [36, 32]
    scaled = cell_shapes(labels, spacing=0.5)
    assert scaled.area.tolist() == [9, 8]
    np.testing.assert_allclose(scaled.perimeter, table.perimeter * 0.5)
    np.testing.assert_allclose(scaled.circularity, table.circularity)


def test_cell_shapes_single_pixel_and_empty():
    dot = np.zeros((5, 5), int)
    dot[2, 2] = 1
    row = cell_shapes(dot).iloc[0]
    assert np.isfinite([row.circularity, row.roundness, row.solidity]).all()
    empty = cell_shapes(np.zeros((5, 5), int))
    assert list(empty.columns) == list(SHAPE_COLUMNS) and len(empty) == 0
    assert empty.dtypes.to_dict() == cell_shapes(dot).dtypes.to_dict()


@pytest.mark.parametrize(
    ("labels", "kwargs", "error", "message"),
    [
        (np.zeros((3, 3, 3), int), {}, ValueError, "labels must have 2 dims"),
        (np.zeros((3, 3), bool), {}, TypeError, "label it first"),
        (np.zeros((3, 3), int), {"spacing": -1.0}, ValueError, "spacing must be a positive number"),
        (np.zeros((3, 3), int), {"spacing": (1.0, 2.0)}, ValueError, "spacing must be a positive number"),
        (np.zeros((3, 3), int), {"spacing": True}, ValueError, "spacing must be a positive number"),
    ],
)
def test_cell_shapes_bad_input(labels, kwargs, error, message):
    with pytest.raises(error, match=message):
        cell_shapes(labels, **kwargs)
