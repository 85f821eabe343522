"""Evaluation speed: all metrics on one 2048x2048 image with ~10,000 cells, vs regionprops.

Run: ``python benchmarks/bench_metrics.py [--quick]``

Times ``match``, ``topology_errors`` and ``cell_shapes`` (for gt and prediction) on a
synthetic image of touching cells and a perturbed prediction, and, side by side, the same
shape columns computed per cell with ``skimage.measure.regionprops`` (area, the
marching-squares outline of ``skimage.measure.find_contours`` that the perimeter and
circularity are measured on, major axis, solidity, and the connected pieces of each
cell). The ratio compares like with like: our ``cell_shapes`` against regionprops' columns.
"""

from __future__ import annotations

import argparse
import platform
import statistics
import time

import numpy as np
from scipy import ndimage
from skimage.measure import find_contours, regionprops
from skimage.segmentation import expand_labels

from instanseg_scnp.metrics import cell_shapes, match, topology_errors


def touching_cells(size: int, n_cells: int, rng: np.random.Generator) -> np.ndarray:
    """Voronoi-like cells: random seeds grown by up to 6 px, so most cells touch."""
    labels = np.zeros((size, size), np.int32)
    rows, cols = rng.integers(0, size, (2, n_cells))
    labels[rows, cols] = np.arange(1, n_cells + 1)
    return expand_labels(labels, distance=6)


def regionprops_columns(labels):
    """The shape columns, one region at a time."""
    structure = ndimage.generate_binary_structure(2, 2)
    for region in regionprops(labels):
        _ = (region.area, region.axis_major_length, region.solidity)
        find_contours(np.pad(region.image, 1), 0.5, fully_connected="high")
        ndimage.label(region.image, structure)


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="1024x1024 with ~2,500 cells instead")
    args = parser.parse_args(argv)
    size, n_cells = (1024, 2500) if args.quick else (2048, 10_000)
    rng = np.random.default_rng(0)
    gt = touching_cells(size, n_cells, rng)
    pred = np.roll(gt, 1, axis=1)
    pred[rng.random(pred.shape) < 0.01] = 0  # specks of missed pixels fragment some cells

    steps = {
        "match": lambda: match(gt, pred),
        "topology_errors": lambda: topology_errors(gt, pred),
        "cell_shapes(prediction)": lambda: cell_shapes(pred),
        "cell_shapes(gt)": lambda: cell_shapes(gt),
    }
    times = {name: statistics.median(_timed(step) for _ in range(3)) for name, step in steps.items()}
    one_image = sum(times.values()) - times["cell_shapes(gt)"]  # gt shapes are computed once per dataset
    ours = sum(times.values())
    baseline = _timed(regionprops_columns, gt) + _timed(regionprops_columns, pred)
    print(f"{platform.machine()}, {size}x{size}, {len(np.unique(gt)) - 1} cells")
    print("| what | time (s) |")
    print("|---|---|")
    for name, seconds in times.items():
        print(f"| {name} | {seconds:.2f} |")
    print(f"| evaluating one image (match, topology_errors, cell_shapes(prediction)) | {one_image:.2f} |")
    print(f"| all of the above, gt shapes included | {ours:.2f} |")
    print(f"| regionprops, shape columns only (gt and prediction) | {baseline:.2f} |")
    print(f"| ratio regionprops / ours (same shape columns, gt and prediction) | "
          f"{baseline / (times['cell_shapes(prediction)'] + times['cell_shapes(gt)']):.1f}x |")


def _timed(fn, *args) -> float:
    start = time.perf_counter()
    fn(*args)
    return time.perf_counter() - start


if __name__ == "__main__":
    main()
