"""SCNP (Same-Class Neighbor Penalization) for training InstanSeg cell models.

Importing the package is light: it loads the operator (torch) and nothing of
upstream InstanSeg, MONAI or matplotlib, and patches nothing. The loss hook is
installed into upstream on first use (:func:`make_loss`, :func:`train`), or by
:func:`register` for users who re-load runs with upstream's own tools. The other
names load on first access.
"""

from instanseg_scnp._lazy import lazy_exports
from instanseg_scnp.scnp import SCNP, normalize_window, same_class_max, scnp

__version__ = "0.1.0"

_UPSTREAM = ("SCNPTerm", "loss_name", "parse_loss_name", "install", "is_installed", "make_loss", "register",
             "uninstall", "ModelOutputs", "load_model", "model_outputs", "prepare_image", "segment")
_TRAINING = ("TrainConfig", "resume", "train")

__all__, __getattr__, __dir__ = lazy_exports(
    __name__,
    {**dict.fromkeys(_UPSTREAM, "instanseg_scnp.upstream"), **dict.fromkeys(_TRAINING, "instanseg_scnp.training")},
    eager={"SCNP": SCNP, "normalize_window": normalize_window, "same_class_max": same_class_max, "scnp": scnp},
)
