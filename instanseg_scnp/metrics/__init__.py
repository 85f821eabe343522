"""Topology-aware evaluation of instance segmentations (NumPy, SciPy, scikit-image only)."""

from instanseg_scnp.metrics._labels import check_labels
from instanseg_scnp.metrics.errors import CellErrors, classify_errors
from instanseg_scnp.metrics.matching import (
    DEFAULT_THRESHOLDS,
    UPSTREAM_THRESHOLDS,
    f1_from_counts,
    match,
    matched_pairs,
)
from instanseg_scnp.metrics.penalty import cell_penalty
from instanseg_scnp.metrics.shape import SHAPE_COLUMNS, cell_shapes
from instanseg_scnp.metrics.shape_errors import MIN_SHAPE_AREA, SHAPE_ERROR_COLUMNS, shape_differences
from instanseg_scnp.metrics.topology import betti_numbers, count_fragments, topology_errors

__all__ = [
    "CellErrors",
    "DEFAULT_THRESHOLDS",
    "MIN_SHAPE_AREA",
    "SHAPE_COLUMNS",
    "SHAPE_ERROR_COLUMNS",
    "UPSTREAM_THRESHOLDS",
    "betti_numbers",
    "cell_penalty",
    "cell_shapes",
    "check_labels",
    "classify_errors",
    "count_fragments",
    "f1_from_counts",
    "match",
    "matched_pairs",
    "shape_differences",
    "topology_errors",
]
