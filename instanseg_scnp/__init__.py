"""SCNP (Same-Class Neighbor Penalization) for training InstanSeg cell models.

Importing the package registers the SCNP loss names with upstream InstanSeg
(:func:`instanseg_scnp.losses.install`), so upstream tools can re-load runs
whose ``experiment_log.csv`` records them.
"""

from instanseg_scnp.losses import (
    SCNPTerm,
    install,
    is_installed,
    loss_name,
    make_loss,
    parse_loss_name,
    uninstall,
)
from instanseg_scnp.scnp import SCNP, normalize_window, same_class_max, scnp

__all__ = [
    "SCNP",
    "SCNPTerm",
    "install",
    "is_installed",
    "loss_name",
    "make_loss",
    "normalize_window",
    "parse_loss_name",
    "same_class_max",
    "scnp",
    "uninstall",
]
__version__ = "0.1.0"

install()
