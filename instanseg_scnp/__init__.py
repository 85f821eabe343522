"""SCNP (Same-Class Neighbor Penalization) for training InstanSeg cell models."""

from instanseg_scnp.scnp import SCNP, normalize_window, same_class_max, scnp

__all__ = ["SCNP", "normalize_window", "same_class_max", "scnp"]
__version__ = "0.1.0"
