"""SCNP (Same-Class Neighbor Penalization) for training InstanSeg cell models.

Importing the package registers the SCNP loss names with upstream InstanSeg
(:func:`instanseg_scnp.losses.install`), so upstream tools can re-load runs
whose ``experiment_log.csv`` records them. ``train``, ``resume`` and
``TrainConfig`` load the training stack on first use.
"""

import importlib

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

_LAZY = {"TrainConfig": "instanseg_scnp.training", "train": "instanseg_scnp.training",
         "resume": "instanseg_scnp.training"}

__all__ = [
    "SCNP",
    "SCNPTerm",
    "TrainConfig",
    "install",
    "is_installed",
    "loss_name",
    "make_loss",
    "normalize_window",
    "parse_loss_name",
    "resume",
    "same_class_max",
    "scnp",
    "train",
    "uninstall",
]
__version__ = "0.1.0"

install()


def __getattr__(name: str) -> object:
    if name in _LAZY:
        return getattr(importlib.import_module(_LAZY[name]), name)
    raise AttributeError(f"module 'instanseg_scnp' has no attribute {name!r}")
