r"""Per-cell shape table: area, perimeter, circularity, roundness, solidity, fragments.

Two roundness-like measures are reported because they see different errors
(both as ImageJ defines them):

- circularity ("Circ."), :math:`4\pi A / P^2`: 1 for a disc, lower for any
  ragged or wavy outline: it catches *boundary* errors (jagged edges, notches);
- roundness ("Round"), :math:`4A / (\pi\, \mathrm{major}^2)`: the ratio of the
  minor to the major axis of the best-fitting ellipse (minor/major exactly for an
  ellipse): it ignores the outline and catches *elongation* (two cells merged
  into a peanut, a cell cut in half).

``P`` is the length of the cell's smoothed outline and, in the circularity, ``A``
the area inside that same outline, so the circularity is the isoperimetric
quotient of one curve: at most 1 by the isoperimetric inequality, with no cap
(ImageJ caps its pixel count over a perimeter that reads short). The outline is
the marching-squares contour at level 0.5 of the cell's mask
(:func:`skimage.measure.find_contours` with ``fully_connected="high"``): its
vertices :math:`v_i` are the midpoints of the pixel sides between the cell and
the rest. Taken as is, it reads a straight edge at 22.5 degrees 8 % long (the
pixel staircase). A moving average straightens the staircase but rounds corners
(a square of side 20 then reads up to 0.08 high), so corners are found first and
kept sharp:

1. Corners. Each closed outline is simplified by Douglas-Peucker with tolerance
   0.8 px (anchored at its top-left vertex and the vertex farthest from it; sides
   split at the vertex farthest from the chord's line until all lie within 0.8 px).
   A line is fitted to each side's vertices (principal direction through their
   centroid; the two end vertices left out where three or more lie between).
   Where consecutive lines turn by more than 65 degrees, the outline vertex nearest
   their intersection :math:`c` (of the polygon vertex and its two neighbours) is
   moved to :math:`c` and *pinned* (to the polygon vertex instead where :math:`c`
   lies more than 1 px from it). A staircase stays within the tolerance of its
   edge, and the polygon of a disc of radius 10 turns by about 45 degrees at each
   vertex, so curves are not pinned.
2. Smoothing. Three passes of the moving average (1, 2, 1) / 4 around the closed
   outline, which leave pinned vertices where they are:

.. math::

    s_i \leftarrow \frac{s_{i-1} + 2 s_i + s_{i+1}}{4} \ (i \text{ not pinned}), \qquad
    P = \sum_i |s_{i+1} - s_i|, \qquad A = \frac12 \Big|\sum_i s_i \times s_{i+1}\Big|.

On digitized shapes (rasterized by pixel centres; angles 0 to 45 degrees, several
sub-pixel positions) the worst errors are: discs of radius 10 to 50, 1 within 0.016
(they read slightly low); squares of side 20 to 60, :math:`\pi/4` within 0.026;
2:1 rectangles :math:`2\pi/9` within 0.013; ellipses :math:`4\pi \cdot \pi ab / P^2`
(Ramanujan's perimeter) within 0.026 and their perimeters within 1.6 %; long
straight edges within 1 % at any angle. A cell of several pieces sums its
pieces' areas and perimeters, :math:`4\pi \sum A_k / (\sum P_k)^2`, so it scores
lower than its roundest piece (two equal pieces: half of one); holes are left out,
as ImageJ traces only the outer outline (holes are topology errors, see
:mod:`~instanseg_scnp.metrics.topology`).
Cells a few pixels across are read as polygons, with finite circularities: one
pixel's outline is a diamond (perimeter 0.35, circularity :math:`\pi/4`), a 2 x 2
block scores 0.81 (its corners are kept), discs of radius 3 score 0.79 to 0.99
(by how they digitize) and of radius 5, 0.99.

The ``area`` column is the pixel count. The major axis is that of the ellipse with
the same second moments as the cell's pixel *squares* (``4 * sqrt(largest
eigenvalue + 1/12)``, as ImageJ's ellipse fit; :func:`skimage.measure.regionprops`
uses pixel centres, without the 1/12, so a one-pixel cell has roundness 0.95 here
instead of a division by zero). Solidity is the area over the area of the convex
hull of the cell's pixel squares. ``fragments`` counts connected pieces (full
connectivity).
"""

from __future__ import annotations

import numpy as np
import pandas as pd
from scipy import ndimage
from scipy.sparse import coo_array
from scipy.sparse.csgraph import connected_components

from instanseg_scnp.metrics._labels import check_labels, pieces_per_label, renumber

__all__ = ["SHAPE_COLUMNS", "cell_shapes"]

SHAPE_COLUMNS = ("label", "area", "perimeter", "circularity", "roundness", "solidity", "fragments")

_NORMALS = np.array([(-1, 0), (0, 1), (1, 0), (0, -1)])  # up, right, down, left: each turns right into the next
_SMOOTHING_PASSES = 3  # of the weights (1, 2, 1) / 4, which make (1, 6, 15, 20, 15, 6, 1) / 64
_CORNER_TOLERANCE = 0.8  # pixels: Douglas-Peucker tolerance of the polygon whose corners are kept
_CORNER_TURN = np.deg2rad(65)  # its turns sharper than this are corners: kept sharp, not smoothed
_CORNER_SHIFT = 1.0  # a corner is moved at most this far (pixels) from its polygon vertex


def _runs(index: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """Horizontal runs of one label in row-major order: rows, starts, stops (exclusive), cells.

    Runs pair up in order: in each row, every run's start comes before its stop,
    and both before the next run's start.
    """
    padded = np.pad(index, ((0, 0), (1, 1)))
    foreground = index > 0
    rows, starts = np.nonzero((index != padded[:, :-2]) & foreground)
    _, ends = np.nonzero((index != padded[:, 2:]) & foreground)
    return rows, starts, ends + 1, index[rows, starts]


def _outlines(index: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Every cell's marching-squares outline: each vertex's cell, point (row + i column) and next vertex.

    A vertex is the midpoint of a pixel side between a cell pixel ``p`` and a pixel
    ``p + n`` of another label. Walking along that side with the cell on the right,
    the outline turns left onto the pixel ahead-left if it is the cell's (cells are
    8-connected), else goes straight on if the pixel ahead is, else turns right
    around ``p``. Outer outlines run clockwise on screen (negative signed area in
    (row, column)), those of holes counter-clockwise.
    """
    padded = np.pad(index, 1)  # cell pixels keep all eight neighbours
    height, width = index.shape
    on_outline = np.zeros((4, *padded.shape), bool)
    for differs, (dy, dx) in zip(on_outline, _NORMALS, strict=True):
        differs[1:-1, 1:-1] = (index != 0) & (index != padded[1 + dy : 1 + dy + height, 1 + dx : 1 + dx + width])
    normal, pixel = np.divmod(np.flatnonzero(on_outline), padded.size)  # sorted by normal * size + pixel
    flat, padded_width = padded.ravel(), padded.shape[1]
    offsets = _NORMALS @ (padded_width, 1)
    cell = flat[pixel]
    ahead = pixel + offsets[(normal + 1) % 4]  # the walking direction: the normal turned right
    turn_left = flat[ahead + offsets[normal]] == cell
    straight = ~turn_left & (flat[ahead] == cell)
    next_pixel = np.where(turn_left, ahead + offsets[normal], np.where(straight, ahead, pixel))
    next_normal = np.where(turn_left, normal + 3, np.where(straight, normal, normal + 1)) % 4
    successor = np.searchsorted(normal * padded.size + pixel, next_normal * padded.size + next_pixel)
    row, column = np.divmod(pixel, padded_width)
    points = row + 1j * column + (_NORMALS[:, 0] + 1j * _NORMALS[:, 1])[normal] / 2
    return cell, points, successor


def _perimeters_and_areas(index: np.ndarray, n_cells: int) -> tuple[np.ndarray, np.ndarray]:
    """Per cell, ``P`` and ``A`` of the module notes: length of, and area inside, its smoothed outer outlines."""
    cell, points, successor = _outlines(index)
    n_vertices = len(cell)
    predecessor = np.empty_like(successor)
    predecessor[successor] = np.arange(n_vertices)
    _, loop = connected_components(  # one successor and one predecessor each: components are closed outlines
        coo_array((np.ones(n_vertices), (np.arange(n_vertices), successor)), shape=(n_vertices, n_vertices)),
        directed=False,
    )
    outer = np.bincount(loop, weights=_cross(points, points[successor]))[loop] < 0  # clockwise
    vertex, corner = _corners(points, successor, predecessor, loop)
    pinned = np.zeros(n_vertices, bool)
    pinned[vertex] = True
    points = points.copy()
    points[vertex] = corner
    for _ in range(_SMOOTHING_PASSES):
        points = np.where(pinned, points, (points[predecessor] + 2 * points + points[successor]) / 4)
    cell, start, end = cell[outer], points[outer], points[successor[outer]]  # the sides of the outer outlines
    perimeter = np.bincount(cell, weights=np.abs(end - start), minlength=n_cells + 1)[1:]
    twice_area = -np.bincount(cell, weights=_cross(start, end), minlength=n_cells + 1)[1:]
    return perimeter, twice_area / 2


def _first_of_max(values: np.ndarray, group: np.ndarray, n_groups: int) -> np.ndarray:
    """Per group, the index of its largest value (the first of equal ones); groups must be non-empty."""
    largest = np.full(n_groups, -np.inf)
    np.maximum.at(largest, group, values)
    index = np.flatnonzero(values == largest[group])
    first = np.full(n_groups, len(values))
    np.minimum.at(first, group[index], index)
    return first


def _corners(points, successor, predecessor, loop) -> tuple[np.ndarray, np.ndarray]:
    """Outline vertices to keep sharp, and where: the corners of each outline's Douglas-Peucker polygon.

    Each closed outline is laid out in order from its top-left vertex (ranked by pointer
    jumping), closed by a copy of that vertex, split there and at the vertex farthest from it, and
    simplified by Douglas-Peucker with tolerance ``_CORNER_TOLERANCE``: every side is split
    at its farthest vertex until all vertices lie within the tolerance of their side's
    chord; all sides of all outlines advance together. Each side's line is fitted to its
    vertices (their principal direction through their centroid; the end vertices are left
    out where three or more lie between). Where consecutive lines turn by more than
    ``_CORNER_TURN``, the outline vertex nearest their intersection (of the kept vertex
    and its two neighbours) moves there, or stays at the kept vertex where the lines meet
    more than ``_CORNER_SHIFT`` from it.
    """
    n = len(points)
    n_loops = int(loop.max()) + 1
    length = np.bincount(loop, minlength=n_loops)
    start = _first_of_max(-(points.real * (points.imag.max() + 1) + points.imag), loop, n_loops)  # top, then left
    # rank along the outline from its start: pointer jumping over predecessors
    rank = np.ones(n, np.int64)
    rank[start] = 0
    jump = predecessor.copy()
    jump[start] = start
    for _ in range(int(np.ceil(np.log2(max(length.max(), 2))))):
        rank += rank[jump]
        jump = jump[jump]
    offset = np.concatenate([[0], np.cumsum(length + 1)])
    vertex = np.empty(offset[-1], np.int64)  # the outline vertex at each position; each outline closed
    vertex[offset[loop] + rank] = np.arange(n)
    vertex[offset[1:] - 1] = start
    z = points[vertex]
    kept = np.zeros(len(z), bool)
    kept[offset[:-1]] = kept[offset[1:] - 1] = True
    positions = np.arange(len(z))
    outline = np.repeat(np.arange(n_loops), length + 1)
    kept[_first_of_max(np.abs(z - z[offset[outline]]), outline, n_loops)] = True  # farthest from the start
    active = positions[~kept]  # vertices inside sides not yet within tolerance
    while len(active):
        before = np.maximum.accumulate(np.where(kept, positions, 0))[active]
        after = np.minimum.accumulate(np.where(kept, positions, len(z))[::-1])[::-1][active]
        chord = z[after] - z[before]
        offset_from = z[active] - z[before]
        length_of = np.abs(chord)
        to_line = np.abs(_cross(chord, offset_from)) / np.where(length_of > 0, length_of, 1)
        distance = np.where(length_of > 0, to_line, np.abs(offset_from))
        side_start = np.r_[True, before[1:] != before[:-1]]
        side = np.cumsum(side_start) - 1
        split = _first_of_max(distance, side, int(side[-1]) + 1)
        split = split[distance[split] > _CORNER_TOLERANCE]
        if not len(split):
            break
        kept[active[split]] = True
        open_side = np.zeros(int(side[-1]) + 1, bool)
        open_side[side[split]] = True
        active = active[open_side[side] & ~kept[active]]
    # the sides: from each kept position to the next, except from an outline's closing copy
    kept_at = np.flatnonzero(kept)
    closing = np.zeros(len(z), bool)
    closing[offset[1:] - 1] = True
    first, last = kept_at[:-1][~closing[kept_at[:-1]]], kept_at[1:][~closing[kept_at[:-1]]]
    n_sides = len(first)
    side_of = np.cumsum(kept) - 1  # the side a position opens, or lies inside
    side_index = np.full(len(z), -1)
    side_index[first] = np.arange(n_sides)
    side_of = side_index[kept_at][side_of]
    inside = ~kept

    def side_sums(values):
        group = side_of[inside]
        return np.bincount(group, values.real, n_sides) + 1j * np.bincount(group, values.imag, n_sides)

    count = np.bincount(side_of[inside], minlength=n_sides).astype(float)
    total, square = side_sums(z[inside]), side_sums(z[inside] ** 2)
    few = count < 3
    count = np.where(few, count + 2, count)
    total = np.where(few, total + z[first] + z[last], total)
    square = np.where(few, square + z[first] ** 2 + z[last] ** 2, square)
    mean = total / count
    spread = square - count * mean**2  # complex: its argument is twice the principal direction's
    direction = np.sqrt(spread / np.where(spread == 0, 1, np.abs(spread)))
    direction = np.where(spread == 0, 1, direction)
    chord = z[last] - z[first]
    direction = np.where((direction.conj() * chord).real < 0, -direction, direction)
    # each side's predecessor on its outline
    outline_of_side = np.searchsorted(offset, first, side="right") - 1
    previous = np.arange(n_sides) - 1
    opens = np.r_[True, outline_of_side[1:] != outline_of_side[:-1]]
    closes = np.r_[opens[1:], True]
    previous[opens] = np.flatnonzero(closes)
    sides_per_outline = np.bincount(outline_of_side, minlength=n_loops)
    turn = np.abs(np.angle(direction * direction[previous].conj()))
    is_corner = (turn > _CORNER_TURN) & (sides_per_outline[outline_of_side] >= 3)
    d0, d1, m0, m1 = direction[previous], direction, mean[previous], mean
    denominator = _cross(d0, d1)
    safe = np.abs(denominator) > 1e-3
    meet = m0 + d0 * _cross(m1 - m0, d1) / np.where(safe, denominator, 1)
    at = z[first]
    meet = np.where(safe & (np.abs(meet - at) <= _CORNER_SHIFT), meet, at)
    corner_vertex, meet = vertex[first][is_corner], meet[is_corner]
    candidates = np.stack([predecessor[corner_vertex], corner_vertex, successor[corner_vertex]])
    nearest = candidates[np.argmin(np.abs(points[candidates] - meet), axis=0), np.arange(len(meet))]
    return nearest, meet


def _cross(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """Cross products of points ``row + i column``; over a closed polygon's sides they sum to twice its signed area."""
    return (a.conj() * b).imag


def _major_axes(runs, n_cells: int, area: np.ndarray) -> np.ndarray:
    """Length of the major axis of each cell's equal-moment ellipse, from its runs in closed form."""
    rows, starts, stops, cells = runs
    r, a, b = rows.astype(float), starts.astype(float), stops - 1.0
    n = b - a + 1
    sum_c = n * (a + b) / 2
    sum_c2 = (b * (b + 1) * (2 * b + 1) - (a - 1) * a * (2 * a - 1)) / 6
    sums = [np.bincount(cells, weights=w, minlength=n_cells + 1)[1:] for w in (n * r, sum_c, n * r * r, sum_c2, r * sum_c)]
    mean_r, mean_c = sums[0] / area, sums[1] / area
    var_r = sums[2] / area - mean_r**2
    var_c = sums[3] / area - mean_c**2
    cov = sums[4] / area - mean_r * mean_c
    largest = (var_r + var_c) / 2 + np.sqrt(((var_r - var_c) / 2) ** 2 + cov**2)
    return 4 * np.sqrt(np.maximum(largest, 0) + 1 / 12)  # + 1/12: the spread of a pixel square


def _lower_envelope_integral(y: np.ndarray, x: np.ndarray, valid: np.ndarray) -> np.ndarray:
    """Per row of ``(y, x)``, the integral over y of the lower convex envelope of x(y).

    ``y`` increases along each row; invalid points are skipped. All rows advance in
    lockstep through Andrew's monotone chain, so the work is vectorized across cells.
    """
    n, length = y.shape
    stack = np.zeros((n, length), np.int64)
    size = np.zeros(n, np.int64)
    rows = np.arange(n)
    for i in range(length):
        active = valid[:, i]
        while True:
            can_pop = active & (size >= 2)
            a = stack[rows, np.maximum(size - 2, 0)]
            b = stack[rows, np.maximum(size - 1, 0)]
            ya, xa, yb, xb = y[rows, a], x[rows, a], y[rows, b], x[rows, b]
            # b is not strictly left of the segment a -> point i: it leaves the envelope
            pop = can_pop & ((xb - xa) * (y[:, i] - ya) >= (x[:, i] - xa) * (yb - ya))
            if not pop.any():
                break
            size -= pop
        stack[active, size[active]] = i
        size += active
    ys, xs = np.take_along_axis(y, stack, 1), np.take_along_axis(x, stack, 1)
    segment = np.arange(length - 1) < (size - 1)[:, None]
    return (np.diff(ys, axis=1) * (xs[:, 1:] + xs[:, :-1]) / 2 * segment).sum(axis=1)


def _hull_areas(index: np.ndarray, n_cells: int, runs) -> np.ndarray:
    """Area of the convex hull of each cell's pixel squares.

    The hull of a set of unit squares is the hull of its row extents' corners; its
    area is the integral between the right envelope and the left envelope over y.
    """
    rows, starts, stops, cells = runs
    boxes = ndimage.find_objects(index, max_label=n_cells)
    top = np.array([box[0].start for box in boxes])
    height = np.array([box[0].stop - box[0].start for box in boxes])
    offset = np.concatenate([[0], np.cumsum(height)])
    key = offset[cells - 1] + rows - top[cells - 1]
    first = np.full(offset[-1], np.inf)
    last = np.full(offset[-1], -np.inf)
    np.minimum.at(first, key, starts)
    np.maximum.at(last, key, stops)

    # Cells of similar height share a lockstep pass, so one tall cell costs only its own rows.
    areas = np.empty(n_cells)
    bucket = np.ceil(np.log2(height + 1)).astype(int)
    for value in np.unique(bucket):
        members = np.flatnonzero(bucket == value)
        areas[members] = _envelope_areas(first, last, top[members], height[members], offset[members])
    return areas


def _envelope_areas(first, last, top, height, start) -> np.ndarray:
    """Hull areas of the cells whose pixel rows' extents are ``first/last[start + k]``, k < height."""

    def pixel_row(values, k, fill):
        """``values`` of each cell's pixel row ``k`` (0 = top), ``fill`` where it has none."""
        inside = (k >= 0) & (k < height[:, None])
        return np.where(inside, values[start[:, None] + np.clip(k, 0, height[:, None] - 1)], fill)

    # corner rows y = top .. top + height; each takes the extremes of the pixel rows it bounds
    k = np.arange(int(height.max()) + 1)[None, :]
    left = np.minimum(pixel_row(first, k, np.inf), pixel_row(first, k - 1, np.inf))
    right = np.maximum(pixel_row(last, k, -np.inf), pixel_row(last, k - 1, -np.inf))
    valid = np.isfinite(left)
    y = (top[:, None] + k).astype(float)
    left, right = np.where(valid, left, 0.0), np.where(valid, right, 0.0)
    return -_lower_envelope_integral(y, -right, valid) - _lower_envelope_integral(y, left, valid)


def cell_shapes(labels: np.ndarray, spacing: float | None = None) -> pd.DataFrame:
    """One row per cell: ``label, area, perimeter, circularity, roundness, solidity, fragments``.

    Parameters
    ----------
    labels : (M, N) ndarray of int
        2-D label image, 0 background; ids need not be consecutive.
    spacing : float, optional
        Pixel size (isotropic); scales ``area`` (by its square) and ``perimeter``.
        Circularity, roundness and solidity have no unit.

    Returns
    -------
    pandas.DataFrame
        Sorted by label; an image with no cells gives 0 rows with the same columns.

    Examples
    --------
    >>> yy, xx = np.mgrid[:41, :41]
    >>> disc = ((yy - 20) ** 2 + (xx - 20) ** 2 < 15**2).astype(int)
    >>> row = cell_shapes(disc).iloc[0]
    >>> round(float(row.circularity), 1), round(float(row.roundness), 1)
    (1.0, 1.0)
    """
    labels = check_labels(labels, name="labels", ndims=(2,))
    if spacing is not None and (
        isinstance(spacing, bool) or np.ndim(spacing) != 0 or not (np.isfinite(spacing) and spacing > 0)
    ):
        raise ValueError(f"spacing must be a positive number (isotropic pixel size), got {spacing!r}")
    index, ids = renumber(labels)
    n_cells = len(ids)
    if n_cells == 0:
        dtypes = {"label": labels.dtype, "fragments": np.int64}
        return pd.DataFrame({column: np.zeros(0, dtypes.get(column, float)) for column in SHAPE_COLUMNS})
    runs = _runs(index)
    area = np.bincount(runs[3], weights=runs[2] - runs[1], minlength=n_cells + 1)[1:]
    perimeter, outline_area = _perimeters_and_areas(index, n_cells)
    major = _major_axes(runs, n_cells, area)
    hull = _hull_areas(index, n_cells, runs)
    _, fragments = pieces_per_label(index, None)  # index holds every id 1..n_cells
    scale = 1.0 if spacing is None else float(spacing)
    return pd.DataFrame(
        {
            "label": ids,
            "area": area * scale**2,
            "perimeter": perimeter * scale,
            "circularity": 4 * np.pi * outline_area / perimeter**2,
            "roundness": 4 * area / (np.pi * major**2),
            "solidity": area / hull,
            "fragments": fragments,
        },
        columns=list(SHAPE_COLUMNS),
    ).sort_values("label", ignore_index=True)
