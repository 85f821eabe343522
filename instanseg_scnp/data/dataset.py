"""InstanSeg's dataset format: load a ``.pth`` dataset, check every item, summarize it.

The format is upstream InstanSeg's (``instanseg/utils/data_loader.py``): a dict
``{"Train": [...], "Validation": [...], "Test": [...]}`` whose items are dicts
with an ``image`` ((H, W), (H, W, C) or (C, H, W)), its instance labels
``nucleus_masks`` ((H, W) integers, 0 background, -1 unannotated) and metadata
(``parent_dataset``, ``pixel_size`` in µm, ``image_modality``, ``licence``, ...).
``image`` and ``nucleus_masks`` may be arrays or paths to TIFF files, relative to
the folder of the ``.pth`` file.
"""

from __future__ import annotations

import logging
import numbers
import os
from collections.abc import Mapping, Sequence
from pathlib import Path

import numpy as np
import tifffile
import torch

logger = logging.getLogger(__name__)

SPLITS = ("Train", "Validation", "Test")
ARRAY_KEYS = ("image", "nucleus_masks")
CHANNELS = (1, 3)

Dataset = dict[str, list[dict]]


class DatasetError(ValueError):
    """A dataset that cannot be trained on; the message names the file, split and item."""


def load_dataset(source: str | os.PathLike | Mapping, *, splits: Sequence[str] = SPLITS,
                 optional: Sequence[str] = ()) -> Dataset:
    """Load an InstanSeg dataset, read its arrays and check every item.

    Parameters
    ----------
    source : path or dict
        A ``.pth`` file written by ``torch.save`` (a pickle: load only files you
        trust), or the dict itself.
    splits : sequence of str
        The splits to load; each must be present and non-empty.
    optional : sequence of str
        Splits to load too when present and non-empty (their items are checked
        all the same).

    Returns
    -------
    dict
        ``{split: [item, ...]}`` with ``image`` as an (H, W, C) array and
        ``nucleus_masks`` as an (H, W) int32 array in every item.

    Raises
    ------
    DatasetError
        Missing or unreadable file, wrong format, missing or empty split, an item
        without an image or masks, image/mask shape mismatch, non-integer masks.
    """
    if isinstance(source, Mapping):
        name, folder, raw = "dataset", Path.cwd(), source
    else:
        path = Path(source)
        name, folder = str(path), path.parent
        if not path.is_file():
            raise DatasetError(f"dataset file {name!r} does not exist")
        try:
            raw = torch.load(path, weights_only=False, map_location="cpu")
        except Exception as error:
            raise DatasetError(f"{name}: cannot read it as a torch-saved InstanSeg dataset ({error})") from error
    if not isinstance(raw, Mapping):
        raise DatasetError(f"{name}: expected a dict with splits {list(SPLITS)}, got {type(raw).__name__}")
    dataset = {}
    for split in [*splits, *(s for s in optional if s not in splits)]:
        items = raw.get(split)
        if split not in splits and not items:
            continue
        if items is None:
            raise DatasetError(f"{name}: no {split!r} split (has {sorted(map(str, raw))})")
        if len(items) == 0:
            raise DatasetError(f"{name}: the {split!r} split is empty")
        dataset[split] = [_load_item(item, f"{name}: {split}[{i}]", folder) for i, item in enumerate(items)]
    return dataset


MIN_IMAGE_SIDE = 16
"""Smallest image side, px, an item may have."""


def _load_item(item: object, where: str, folder: Path) -> dict:
    if not isinstance(item, Mapping):
        raise DatasetError(f"{where}: expected an item dict, got {type(item).__name__}")
    missing = [key for key in ARRAY_KEYS if key not in item]
    if missing:
        raise DatasetError(f"{where}: missing {missing} (has {sorted(item)})")
    image = _read_array(item["image"], f"{where} image", folder)
    try:
        image = channels_last(image)
    except ValueError as error:
        raise DatasetError(f"{where} image: {error}") from None
    if not (np.issubdtype(image.dtype, np.number) and not np.issubdtype(image.dtype, np.complexfloating)):
        raise DatasetError(f"{where}: image must hold real numbers, got dtype {image.dtype}")
    if min(image.shape[:2]) < MIN_IMAGE_SIDE:
        raise DatasetError(f"{where}: image is {image.shape[0]} x {image.shape[1]} px; expected at least "
                           f"{MIN_IMAGE_SIDE} px a side (upstream's augmentations fail on thinner images)")
    if np.issubdtype(image.dtype, np.floating) and not np.isfinite(image).all():
        bad = int(np.size(image) - np.isfinite(image).sum())
        raise DatasetError(f"{where}: image has {bad} NaN or infinite pixel value(s); the network would learn "
                           "NaN weights from it: fix or drop this image")
    if image.shape[-1] not in CHANNELS:
        raise DatasetError(f"{where}: image has {image.shape[-1]} channels; expected 1 (fluorescence) or 3 (RGB "
                           "brightfield), the inputs InstanSeg's 3-channel network takes (drop an alpha channel)")
    masks = np.asarray(_read_array(item["nucleus_masks"], f"{where} nucleus_masks", folder))
    if masks.ndim == 3 and 1 in (masks.shape[0], masks.shape[-1]):
        masks = masks.squeeze(0 if masks.shape[0] == 1 else -1)
    if masks.shape != image.shape[:2]:
        raise DatasetError(f"{where}: image has shape {image.shape} (H, W, C) but nucleus_masks has shape "
                           f"{masks.shape}; expected masks of shape {image.shape[:2]}")
    from instanseg_scnp.metrics import check_labels  # here, not at the top: the CLI's --help imports this module

    try:
        masks = check_labels(masks, name="nucleus_masks", ndims=(2,), allow_unannotated=True)
    except (TypeError, ValueError) as error:
        raise DatasetError(f"{where}: {error}") from None
    if masks.size and masks.max() > np.iinfo(np.int32).max:
        raise DatasetError(f"{where}: nucleus_masks ids must fit in int32, found {int(masks.max())}")
    return {**item, "image": image, "nucleus_masks": masks.astype(np.int32)}


def _read_array(value: object, where: str, folder: Path) -> np.ndarray:
    if isinstance(value, str | os.PathLike):
        path = folder / value
        try:
            return tifffile.imread(path)
        except Exception as error:
            raise DatasetError(f"{where}: cannot read {str(path)!r} as a TIFF ({error})") from error
    array = value.numpy() if isinstance(value, torch.Tensor) else np.asarray(value)
    if array.dtype == object:
        raise DatasetError(f"{where}: expected an array or a TIFF path, got {type(value).__name__}")
    return array


def channels_last(image: np.ndarray) -> np.ndarray:
    """An (H, W), (H, W, C) or (C, H, W) image as (H, W, C); C is the shortest axis, at most 4."""
    image = np.asarray(image)
    if image.ndim == 2:
        return image[..., None]
    if image.ndim == 3 and min(image.shape) <= 4:
        return image if image.shape[-1] <= image.shape[0] else np.moveaxis(image, 0, -1)
    raise ValueError(f"expected an image of shape (H, W), (H, W, C) or (C, H, W) with C <= 4, got {image.shape}")


def median_diameter(dataset: Dataset, split: str = "Train") -> float:
    """Median equivalent diameter (px) of the annotated nuclei of one split: d = 2 sqrt(A / pi)."""
    areas = [np.bincount(item["nucleus_masks"][item["nucleus_masks"] > 0].ravel())
             for item in dataset[split]]
    areas = np.concatenate([a[a > 0] for a in areas]) if areas else np.empty(0)
    if areas.size == 0:
        raise DatasetError(f"the {split!r} split has no annotated nuclei")
    return float(2 * np.sqrt(np.median(areas) / np.pi))


def is_pixel_size(value: object) -> bool:
    """Whether ``value`` is a usable pixel size: a finite positive real number (µm)."""
    return isinstance(value, numbers.Real) and not isinstance(value, bool) and 0 < float(value) < float("inf")


def common_pixel_size(dataset: Dataset, split: str = "Train") -> float | None:
    """The pixel size (µm) shared by every item of a split, or None if absent or mixed."""
    sizes = {float(item["pixel_size"]) if is_pixel_size(item.get("pixel_size")) else None for item in dataset[split]}
    return sizes.pop() if len(sizes) == 1 else None
