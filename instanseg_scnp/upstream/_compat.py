"""The one place that imports upstream InstanSeg (``instanseg-torch``), checked on first use.

Every upstream name this package uses is listed in :data:`REQUIRED`, with the
parameters we pass it. :func:`upstream` imports them once, checks the installed
release against :data:`SUPPORTED` and each name's signature against the table,
and returns them as attributes; any mismatch raises :class:`UpstreamError`
naming the installed version and what is missing, instead of a ``TypeError``
deep inside a training step. Names starting with ``_`` are upstream-private:
they may change in any release, which is why they are listed here and nowhere
else.
"""

from __future__ import annotations

import functools
import importlib
import importlib.metadata
import inspect
import re
import types
import warnings

__all__ = ["DISTRIBUTION", "REQUIRED", "SUPPORTED", "UpstreamError", "upstream", "upstream_version"]

DISTRIBUTION = "instanseg-torch"
SUPPORTED = ((0, 1, 2), (0, 2, 0))
"""Releases of upstream this package is tested with: at least the first, below the second."""

REQUIRED: dict[str, dict[str, tuple[str, ...]]] = {
    "instanseg": {"InstanSeg": ("model_type", "device", "verbosity")},
    "instanseg.inference_class": {
        "InstanSeg.eval_small_image": ("image", "pixel_size", "return_image_tensor"),
        "InstanSeg.eval_medium_image": ("image", "pixel_size", "tile_size", "return_image_tensor"),
        "_rescale_to_pixel_size": ("image", "requested_pixel_size", "model_pixel_size"),
    },
    "instanseg.utils.loss.instanseg_loss": {
        "InstanSeg": ("device", "binary_loss_fn_str", "seed_loss_fn", "window_size", "n_sigma", "bg_weight"),
        "InstanSeg.update_binary_loss": ("binary_loss_fn_str",),
        "InstanSeg.update_seed_loss": ("seed_loss_fn",),
        "InstanSeg_Torchscript": ("model", "pixel_size", "n_sigma", "backbone_dim_in",
                                  "feature_engineering_function", "params"),
        "centre_crop": ("centroids", "window_size", "h", "w"),
        "feature_engineering_slow": ("x", "c", "sigma", "window_size", "mesh_grid_flat"),
        "generate_coordinate_map": ("mode", "spatial_dim", "height", "width", "device"),
        "torch_peak_local_max": ("image", "neighbourhood_size", "minimum_value", "dtype"),
    },
    "instanseg.utils.pytorch_utils": {"instance_wise_edt": ("x", "edt_type")},
    "instanseg.utils.model_loader": {
        "build_model_from_dict": ("build_model_dictionary",),
        "load_model": ("folder", "path", "device"),
    },
    "instanseg.utils.metrics": {"_robust_average_precision": ("labels", "predicted", "threshold")},
    "instanseg.utils.augmentation_config": {
        "get_augmentation_dict": ("dim_in", "nuclei_channel", "amount", "pixel_size", "augmentation_type"),
    },
    "instanseg.utils.augmentations": {"Augmentations": ("augmentation_dict", "shape", "dim_in")},
    "instanseg.utils.utils": {"percentile_normalize": ("img",)},
    "instanseg.utils.tiling": {
        "_instanseg_padding": ("img", "extra_pad"),
        "_recover_padding": ("x", "pad"),
        "_chops": ("img_shape", "shape", "overlap"),
        "_sliding_window_inference": ("input_tensor", "predictor", "window_size", "overlap", "max_cell_size"),
    },
}
"""Upstream module -> {name (``Class.method`` for a method) -> parameters we pass by name or position}."""


class UpstreamError(ImportError):
    """The installed upstream InstanSeg lacks something this package uses."""


def upstream_version() -> str:
    """The installed ``instanseg-torch`` version, or raise :class:`UpstreamError` if it is not installed."""
    try:
        return importlib.metadata.version(DISTRIBUTION)
    except importlib.metadata.PackageNotFoundError as error:
        raise UpstreamError(f"upstream InstanSeg is not installed: pip install '{DISTRIBUTION}"
                            f"{_range()}'") from error


def _range() -> str:
    low, high = (".".join(map(str, v)) for v in SUPPORTED)
    return f">={low},<{high}"


def _release(version: str) -> tuple[int, ...]:
    return tuple(int(part) for part in re.findall(r"\d+", version.split("+")[0])[:3])


def _parameters(obj: object) -> set[str] | None:
    """The parameter names of a callable (of a class: of its ``__init__``), None where torch hides them."""
    try:
        return set(inspect.signature(obj).parameters)
    except (TypeError, ValueError):  # scripted functions, builtins
        return None


def _problems(module_name: str, names: dict[str, tuple[str, ...]]) -> tuple[dict[str, object], list[str]]:
    found, problems = {}, []
    try:
        module = importlib.import_module(module_name)
    except ImportError as error:
        return found, [f"module {module_name} cannot be imported ({error})"]
    for dotted, wanted in names.items():
        obj: object = module
        for part in dotted.split("."):
            obj = getattr(obj, part, None)
            if obj is None:
                problems.append(f"{module_name}.{dotted} is missing")
                break
        else:
            parameters = _parameters(obj)
            missing = [] if parameters is None else [name for name in wanted if name not in parameters]
            if missing:
                problems.append(f"{module_name}.{dotted} takes no {', '.join(missing)}")
            found[dotted] = obj
    return found, problems


@functools.cache
def upstream() -> types.SimpleNamespace:
    """Upstream's names of :data:`REQUIRED` as attributes (``upstream().InstanSeg``), imported and checked once.

    Where one name exists in two modules (``InstanSeg``: the inference class and
    the loss class) the loss class is ``InstanSegLoss``; upstream-private names
    lose their leading underscore.

    Raises
    ------
    UpstreamError
        Upstream is not installed, its release is outside :data:`SUPPORTED`, or a
        name or parameter of :data:`REQUIRED` is missing.
    """
    version = upstream_version()
    if not SUPPORTED[0] <= _release(version) < SUPPORTED[1]:
        raise UpstreamError(f"{DISTRIBUTION} {version} is installed; instanseg-scnp supports {_range()}: "
                            f"pip install '{DISTRIBUTION}{_range()}'")
    names: dict[str, object] = {}
    problems: list[str] = []
    with warnings.catch_warnings():  # upstream scripts functions at import; torch >= 2.10 deprecates that
        warnings.filterwarnings("ignore", category=FutureWarning, message=r"`torch\.jit\.script` is deprecated")
        for module_name, wanted in REQUIRED.items():
            found, missing = _problems(module_name, wanted)
            problems += missing
            if module_name == "instanseg.utils.loss.instanseg_loss" and "InstanSeg" in found:
                found["InstanSegLoss"] = found.pop("InstanSeg")
            names.update({name.lstrip("_"): obj for name, obj in found.items() if "." not in name})
    if problems:
        raise UpstreamError(f"{DISTRIBUTION} {version} is not compatible with instanseg-scnp: "
                            + "; ".join(problems))
    return types.SimpleNamespace(version=version, **names)
