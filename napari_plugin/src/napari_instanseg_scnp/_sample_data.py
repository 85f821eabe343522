"""Sample data: a real immunohistochemistry image and synthetic cells with their ground truth.

The synthetic cells come twice: with a *threshold logit map*, and with a small trained
model (package data, made by ``napari_plugin/scripts/train_demo_model.py``) that
:func:`synthetic_cells_with_model` names in the image layer's metadata
(:data:`MODEL_METADATA_KEY`).

The threshold logit map, which the IHC image also has, is a stand-in pixel classifier
made from the image itself, so that the SCNP inspector can be tried without a trained
model: ``(x - t) / s`` with ``x`` the nuclear channel, ``t`` its Otsu threshold and
``s`` a tenth of its 1-99 % percentile range (logit 0 at the threshold, about ±5 over
the range). Weak nuclei and thin necks between touching nuclei sit near 0, which is
where SCNP bites.
"""

from __future__ import annotations

from importlib.resources import files
from pathlib import Path

import numpy as np
from skimage import data as skimage_data
from skimage.color import rgb2hed
from skimage.filters import gaussian, threshold_otsu
from skimage.measure import label
from skimage.segmentation import watershed
from scipy import ndimage

__all__ = [
    "MODEL_METADATA_KEY",
    "demo_model_path",
    "immunohistochemistry",
    "synthetic_cells",
    "synthetic_cells_with_model",
    "threshold_logits",
]

SYNTHETIC_SHAPE = (512, 512)
SYNTHETIC_SEED = 7
MIN_NUCLEUS_AREA = 30
"""Pixels; smaller foreground specks of the IHC threshold are dropped from its reference segmentation."""

DEMO_MODEL = "demo_model.pt"
"""The demo model's file name in the package's ``data/`` folder (``demo_model.json`` beside it says what it is)."""
MODEL_METADATA_KEY = "instanseg_scnp_model"
"""Key of an image layer's ``metadata`` that names the model (absolute path of an exported ``.pt``) to run on it."""

LayerData = tuple[np.ndarray, dict, str]


def threshold_logits(channel: np.ndarray) -> np.ndarray:
    """The module's stand-in logit map of a nuclear channel, (H, W) float32.

    Examples
    --------
    >>> z = threshold_logits(np.r_[np.zeros(50), np.ones(50)][None].repeat(2, 0))
    >>> bool(z[0, 0] < 0 < z[0, -1])
    True
    """
    channel = np.asarray(channel, np.float32)
    low, high = np.percentile(channel, [1, 99])
    scale = max(float(high - low), 1e-6) / 10
    return ((channel - threshold_otsu(channel)) / scale).astype(np.float32)


def _logit_layer(logits: np.ndarray, name: str) -> LayerData:
    m = float(np.percentile(np.abs(logits), 99.5)) or 1.0
    return logits, {"name": name, "colormap": "RdBu_r", "contrast_limits": (-m, m), "visible": False}, "image"


def immunohistochemistry() -> list[LayerData]:
    """scikit-image's IHC image (no download), its hematoxylin threshold logits and a classical segmentation.

    The segmentation (Otsu on the smoothed hematoxylin channel, split by a
    distance-transform watershed) is a reference to try the inspector with, not a
    ground truth.
    """
    rgb = skimage_data.immunohistochemistry()
    hematoxylin = gaussian(rgb2hed(rgb)[..., 0], sigma=1)
    logits = threshold_logits(hematoxylin)
    components = label(logits > 0)
    mask = (np.bincount(components.ravel()) >= MIN_NUCLEUS_AREA)[components] & (components > 0)
    distance = ndimage.distance_transform_edt(mask)
    peaks = label(distance > 0.6 * ndimage.maximum_filter(distance, size=9))
    nuclei = watershed(-distance, peaks, mask=mask).astype(np.int32)
    return [
        (rgb, {"name": "immunohistochemistry", "rgb": True}, "image"),
        _logit_layer(logits, "hematoxylin threshold (logits)"),
        (nuclei, {"name": "nuclei, classical (reference)", "opacity": 0.5}, "labels"),
    ]


def synthetic_cells() -> list[LayerData]:
    """A synthetic fluorescence image of 512 x 512 from :func:`instanseg_scnp.data.synthetic_image`.

    With its exact ground truth and its threshold logits.
    """
    from napari_instanseg_scnp import _torch_guard  # noqa: F401 (before the torch stack: see its docstring)
    from instanseg_scnp.data import synthetic_image

    sample = synthetic_image(SYNTHETIC_SHAPE, modality="fluorescence", rng=SYNTHETIC_SEED)
    image = sample.image[..., 0]
    return [
        (image, {"name": "synthetic cells", "colormap": "gray"}, "image"),
        _logit_layer(threshold_logits(image), "threshold (logits)"),
        (sample.labels.astype(np.int32), {"name": "ground truth", "opacity": 0.5}, "labels"),
    ]


def demo_model_path() -> Path:
    """Absolute path of the demo model shipped with the plugin (``data/demo_model.pt``).

    Raises
    ------
    FileNotFoundError
        The file is not installed (a checkout without it, or a broken install).

    Examples
    --------
    >>> demo_model_path().name
    'demo_model.pt'
    """
    resource = files("napari_instanseg_scnp") / "data" / DEMO_MODEL
    if not (isinstance(resource, Path) and resource.is_file()):
        raise FileNotFoundError(f"the demo model {DEMO_MODEL} is missing from napari_instanseg_scnp's package data "
                                f"({resource}): reinstall napari-instanseg-scnp, or run "
                                "napari_plugin/scripts/train_demo_model.py")
    return resource.resolve()


def synthetic_cells_with_model() -> list[LayerData]:
    """The synthetic cells of :func:`synthetic_cells` and their ground truth, with the demo model in the metadata.

    The image layer's ``metadata[MODEL_METADATA_KEY]`` is the absolute path of
    :func:`demo_model_path`, so the inspector can run the model on that image.
    No threshold logits: the model is the pixel classifier here.
    """
    model = str(demo_model_path())  # before any work: a missing model is the error to show
    (image, image_meta, image_kind), _, ground_truth = synthetic_cells()
    return [(image, {**image_meta, "metadata": {MODEL_METADATA_KEY: model}}, image_kind), ground_truth]
