"""The one room that knows upstream InstanSeg (``instanseg-torch``).

Everything this package takes from upstream goes through here: the loss hook
(:mod:`~instanseg_scnp.upstream.hook`, with the loss names of
:mod:`~instanseg_scnp.upstream.names` and the added mask losses of
:mod:`~instanseg_scnp.upstream.mask_losses`, and its batched forward in
:mod:`~instanseg_scnp.upstream.batched_loss`), the network, augmentations and
validation score training borrows (:mod:`~instanseg_scnp.upstream.training`),
TorchScript export (:mod:`~instanseg_scnp.upstream.export`), bioimage.io packages
(written by :mod:`~instanseg_scnp.upstream.bioimageio`, their weights read by
:mod:`~instanseg_scnp.upstream.package`), the weights a fine-tuned run starts from
(:mod:`~instanseg_scnp.upstream.finetune`) and inference
(:mod:`~instanseg_scnp.upstream.inference`). Upstream itself is imported in
:mod:`~instanseg_scnp.upstream._compat` only, on first use, with a check that the
names and signatures used here exist in the installed release.

Importing this package imports neither upstream nor MONAI: names load on first
access.
"""

from instanseg_scnp._lazy import lazy_exports

_MODULES = {
    ".names": ("SCNPTerm", "loss_name", "parse_loss_name"),
    ".hook": ("install", "is_installed", "make_loss", "register", "uninstall"),
    ".batched_loss": ("batched_loss_class", "lovasz_hinge_per_crop"),
    ".training": ("augmenter", "build_model", "validation_f1"),
    ".export": ("export_run", "export_torchscript"),
    ".finetune": ("InitError", "InitialModel", "check_architecture", "initialize_model", "load_initial_weights"),
    ".bioimageio": ("export_bioimageio", "load_bioimageio", "require_bioimageio"),
    ".inference": ("MIN_INFERENCE_SIZE", "MIN_TILE_SIZE", "TILE_ALIGN", "TILE_HALO", "Cancelled", "InstanceCrops",
                   "normalizes_per_tile", "ModelError", "ModelOutputs", "load_model", "model_outputs", "prepare_image", "resolve_model_path",
                   "segment"),
    "._quiet": ("quiet_upstream",),
    "._compat": ("UpstreamError", "upstream_version"),
}

__all__, __getattr__, __dir__ = lazy_exports(__name__, {name: module for module, names in _MODULES.items()
                                                        for name in names})
