"""Per-cell shapes against analytic shapes and scikit-image's per-region measurements."""

from __future__ import annotations

import numpy as np
import pytest
from scipy import ndimage
from scipy.spatial import ConvexHull
from skimage.data import binary_blobs
from skimage.measure import find_contours, label, regionprops

from instanseg_scnp.metrics import SHAPE_COLUMNS, cell_shapes

CENTRE_OFFSETS = [(0.0, 0.0), (0.5, 0.5), (0.3, 0.7)]  # sub-pixel positions: each digitizes differently


def single(mask, value=1):
    return np.where(mask, value, 0).astype(np.int64)


def rotated_pixels(half_extent, degrees, offset):
    """Pixel-centre coordinates ``(u, v)`` along a frame rotated by ``degrees``, centred near the image centre."""
    size = 2 * int(np.ceil(half_extent)) + 8
    rows, cols = np.mgrid[:size, :size] - (size / 2 + np.asarray(offset))[:, None, None]
    angle = np.deg2rad(degrees)
    return cols * np.cos(angle) + rows * np.sin(angle), rows * np.cos(angle) - cols * np.sin(angle)


def rectangle(width, height, degrees=0.0, offset=(0.0, 0.0)):
    """The pixels whose centres pass the rectangle's four half-planes ``|u| < width / 2``, ``|v| < height / 2``."""
    u, v = rotated_pixels(np.hypot(width, height) / 2, degrees, offset)
    return single((np.abs(u) < width / 2) & (np.abs(v) < height / 2))


def ellipse(a, b, degrees=0.0, offset=(0.0, 0.0)):
    """The pixels whose centres lie inside the ellipse with semi-axes ``a`` (along u) and ``b``."""
    u, v = rotated_pixels(max(a, b), degrees, offset)
    return single((u / a) ** 2 + (v / b) ** 2 < 1)


def ramanujan_perimeter(a, b):
    h = ((a - b) / (a + b)) ** 2
    return np.pi * (a + b) * (1 + 3 * h / (10 + np.sqrt(4 - 3 * h)))


@pytest.mark.parametrize("offset", CENTRE_OFFSETS)
@pytest.mark.parametrize("radius", [10, 12.5, 20, 50])
def test_disc_is_round(radius, offset):
    row = cell_shapes(ellipse(radius, radius, offset=offset)).iloc[0]
    assert row.circularity == pytest.approx(1, abs=0.03)
    assert row.perimeter == pytest.approx(2 * np.pi * radius, rel=0.02)
    assert row.roundness == pytest.approx(1, abs=0.05)
    assert row.solidity > 0.9


@pytest.mark.parametrize("degrees", [0, 10, 22.5, 30, 45])
@pytest.mark.parametrize("side", [20, 30, 40, 60, 80])
def test_square_circularity_is_pi_over_4(side, degrees):
    """4 pi s^2 / (4 s)^2: corners are kept sharp, so small squares read it too."""
    for offset in CENTRE_OFFSETS:
        circularity = cell_shapes(rectangle(side, side, degrees, offset)).circularity.iloc[0]
        assert circularity == pytest.approx(np.pi / 4, abs=0.03)


def test_small_cells_are_polygons():
    """A 2 x 2 block reads as a square (pi / 4 = 0.785): its corners are kept."""
    block = np.zeros((6, 6), np.int64)
    block[2:4, 2:4] = 1
    assert cell_shapes(block).circularity.iloc[0] == pytest.approx(0.81, abs=0.01)


@pytest.mark.parametrize("degrees", [0, 5, 10, 15, 22.5, 30, 35, 40, 45])
def test_straight_edges_at_any_angle(degrees):
    """Marching squares alone read a 22.5-degree edge 8 % long; smoothed, long edges are within 1 %."""
    assert cell_shapes(rectangle(200, 200, degrees, (0.3, 0.7))).perimeter.iloc[0] == pytest.approx(800, rel=0.015)


@pytest.mark.parametrize("degrees", [0, 10, 22.5, 30, 45, 60, 90])
@pytest.mark.parametrize("short_side", [30, 40])
def test_two_to_one_rectangle_circularity(short_side, degrees):
    """4 pi 2s^2 / (6s)^2 = 2 pi / 9."""
    for offset in CENTRE_OFFSETS:
        circularity = cell_shapes(rectangle(2 * short_side, short_side, degrees, offset)).circularity.iloc[0]
        assert circularity == pytest.approx(2 * np.pi / 9, abs=0.03)


@pytest.mark.parametrize("degrees", [0, 30, 45])
@pytest.mark.parametrize(("a", "b"), [(20, 10), (30, 15), (40, 10), (30, 20)])
def test_ellipse_perimeter_and_circularity(a, b, degrees):
    """Ramanujan's perimeter P (error < 1e-4 % for these), circularity 4 pi (pi a b) / P^2; roundness b / a."""
    perimeter = ramanujan_perimeter(a, b)
    for offset in CENTRE_OFFSETS:
        row = cell_shapes(ellipse(a, b, degrees, offset)).iloc[0]
        assert row.perimeter == pytest.approx(perimeter, rel=0.015)
        assert row.circularity == pytest.approx(4 * np.pi**2 * a * b / perimeter**2, abs=0.03)
        assert row.roundness == pytest.approx(b / a, abs=0.02)


def test_axis_aligned_square_solidity():
    assert cell_shapes(rectangle(40, 40)).solidity.iloc[0] == pytest.approx(1)


def test_fragments_and_holes_of_the_outline():
    """Two equal pieces: twice the area over twice the perimeter squared, half the circularity; holes are left out."""
    disc = ellipse(12, 12, offset=(0.3, 0.7))
    one = cell_shapes(disc).iloc[0]
    two = cell_shapes(np.hstack([disc, disc])).iloc[0]
    assert two.perimeter == pytest.approx(2 * one.perimeter)
    assert two.circularity == pytest.approx(one.circularity / 2)
    holed = disc.copy()
    holed[ndimage.binary_erosion(disc, iterations=8)] = 0
    assert cell_shapes(holed).circularity.iloc[0] == pytest.approx(one.circularity)
    assert cell_shapes(holed).perimeter.iloc[0] == pytest.approx(one.perimeter)


def test_l_shape_solidity():
    k = 10
    shape = np.zeros((3 * k, 3 * k), bool)
    shape[: 2 * k, :k] = True
    shape[k : 2 * k, : 2 * k] = True
    assert cell_shapes(single(shape)).solidity.iloc[0] == pytest.approx(3 / 3.5, abs=1e-9)


def douglas_peucker(points, first, last, tolerance, kept):
    """Recursive Douglas-Peucker on ``points[first..last]``: distances to the chord's line."""
    chord = points[last] - points[first]
    offsets = points[first + 1 : last] - points[first]
    if len(offsets) == 0:
        return
    if abs(chord) > 0:
        distance = np.abs((chord.conj() * offsets).imag) / abs(chord)
    else:
        distance = np.abs(offsets)
    split = first + 1 + int(np.argmax(distance))
    if distance.max() > tolerance:
        kept.append(split)
        douglas_peucker(points, first, split, tolerance, kept)
        douglas_peucker(points, split, last, tolerance, kept)


def corner_kept_outline(points, tolerance=0.8, min_turn=np.deg2rad(65), max_shift=1.0, passes=3):
    """The module notes' outline, one closed marching-squares outline at a time (points: row + i column)."""
    n = len(points)
    start = int(np.lexsort((points.imag, points.real))[0])  # top, then left
    ring = np.roll(points, -start)
    closed = np.append(ring, ring[0])
    far = int(np.argmax(np.abs(ring - ring[0])))
    kept = [0, far, n]
    douglas_peucker(closed, 0, far, tolerance, kept)
    douglas_peucker(closed, far, n, tolerance, kept)
    kept = sorted(set(kept))
    lines = []
    for a, b in zip(kept[:-1], kept[1:]):
        side = closed[a + 1 : b] if b - a - 1 >= 3 else closed[a : b + 1]
        mean = side.mean()
        principal = np.linalg.eigh(np.cov(side.real, side.imag, bias=True))[1][:, -1]
        direction = principal[0] + 1j * principal[1]
        if (direction.conj() * (closed[b] - closed[a])).real < 0:
            direction = -direction
        lines.append((mean, direction))
    pinned = np.zeros(n, bool)
    ring = ring.copy()
    for k, a in enumerate(kept[:-1]):
        (m0, d0), (m1, d1) = lines[k - 1], lines[k]
        if len(lines) < 3 or abs(np.angle(d1 / d0)) <= min_turn:
            continue
        cross = (d0.conj() * d1).imag
        meet = m0 + d0 * ((m1 - m0).conj() * d1).imag / cross if abs(cross) > 1e-3 else closed[a]
        if abs(meet - closed[a]) > max_shift:
            meet = closed[a]
        nearest = min([(a - 1) % n, a, (a + 1) % n], key=lambda i: abs(ring[i] - meet))
        ring[nearest], pinned[nearest] = meet, True
    for _ in range(passes):
        ring = np.where(pinned, ring, (np.roll(ring, 1) + 2 * ring + np.roll(ring, -1)) / 4)
    return ring


def outline_by_scikit_image(mask):
    """Perimeter and circularity of the module notes, from scikit-image's marching-squares contours."""
    perimeter = twice_area = 0.0
    for contour in find_contours(np.pad(mask, 1).astype(float), 0.5, fully_connected="high"):
        points = contour[:-1, 0] + 1j * contour[:-1, 1]  # closed: the last point repeats the first
        if np.sum((points.conj() * np.roll(points, -1)).imag) >= 0:
            continue  # a hole: they run the other way
        points = corner_kept_outline(points)
        perimeter += np.abs(np.roll(points, -1) - points).sum()
        twice_area -= np.sum((points.conj() * np.roll(points, -1)).imag)
    return perimeter, 2 * np.pi * twice_area / perimeter**2


def test_cell_shapes_match_scikit_image_per_region():
    labels = label(binary_blobs(128, blob_size_fraction=0.06, volume_fraction=0.35, rng=3))
    table = cell_shapes(labels).set_index("label")
    for region in regionprops(labels):
        row = table.loc[region.label]
        assert row.area == region.area
        assert (row.perimeter, row.circularity) == pytest.approx(outline_by_scikit_image(region.image))
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
    assert ((table.circularity > 0) & (table.circularity <= 1)).all()  # isoperimetric: no cap needed
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
    assert row.circularity == pytest.approx(np.pi / 4)  # its outline is a diamond
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
