"""Data: InstanSeg's dataset format and the built-in synthetic generator."""

from instanseg_scnp.data.dataset import (
    SPLITS,
    DatasetError,
    channels_last,
    common_pixel_size,
    is_pixel_size,
    load_dataset,
    median_diameter,
)
from instanseg_scnp.data.sources import BUILT_IN, open_dataset
from instanseg_scnp.data.synthetic import (
    MODALITIES,
    SYNTHETIC_PIXEL_SIZE,
    SyntheticImage,
    synthetic_dataset,
    synthetic_image,
)

__all__ = [
    "BUILT_IN",
    "MODALITIES",
    "SPLITS",
    "SYNTHETIC_PIXEL_SIZE",
    "DatasetError",
    "SyntheticImage",
    "channels_last",
    "common_pixel_size",
    "is_pixel_size",
    "load_dataset",
    "median_diameter",
    "open_dataset",
    "synthetic_dataset",
    "synthetic_image",
]
