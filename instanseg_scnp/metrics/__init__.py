"""Topology-aware evaluation of instance segmentations (NumPy, SciPy, scikit-image only)."""

from instanseg_scnp.metrics.matching import DEFAULT_THRESHOLDS, f1_from_counts, match
from instanseg_scnp.metrics.shape import SHAPE_COLUMNS, cell_shapes
from instanseg_scnp.metrics.topology import betti_numbers, count_fragments, topology_errors

__all__ = [
    "DEFAULT_THRESHOLDS",
    "SHAPE_COLUMNS",
    "betti_numbers",
    "cell_shapes",
    "count_fragments",
    "f1_from_counts",
    "match",
    "topology_errors",
]
