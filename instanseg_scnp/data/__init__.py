"""Data: InstanSeg's dataset format, the built-in synthetic generator and the public datasets' preparation."""

from instanseg_scnp.data.convert import merge_instance_channels
from instanseg_scnp.data.dataset import (
    SPLITS,
    DatasetError,
    channels_last,
    common_pixel_size,
    is_pixel_size,
    load_dataset,
    median_diameter,
)
from instanseg_scnp.data.download import ArchiveError, DownloadError, extract_archive, fetch_archive, verify_archive
from instanseg_scnp.data.paths import DATA_DIR_ENV, data_root, dataset_file
from instanseg_scnp.data.prepare import prepare_dataset
from instanseg_scnp.data.registry import DATASETS, REGISTRY, Archive
from instanseg_scnp.data.report import DatasetReport, check_dataset
from instanseg_scnp.data.sources import BUILT_IN, data_fingerprint, open_dataset, resolve_data
from instanseg_scnp.data.synthetic import (
    MODALITIES,
    SYNTHETIC_PIXEL_SIZE,
    SyntheticImage,
    synthetic_dataset,
    synthetic_image,
)

__all__ = [
    "BUILT_IN",
    "DATASETS",
    "DATA_DIR_ENV",
    "MODALITIES",
    "REGISTRY",
    "SPLITS",
    "SYNTHETIC_PIXEL_SIZE",
    "Archive",
    "ArchiveError",
    "DatasetError",
    "DatasetReport",
    "DownloadError",
    "SyntheticImage",
    "channels_last",
    "check_dataset",
    "common_pixel_size",
    "data_fingerprint",
    "data_root",
    "dataset_file",
    "extract_archive",
    "fetch_archive",
    "is_pixel_size",
    "load_dataset",
    "median_diameter",
    "merge_instance_channels",
    "open_dataset",
    "prepare_dataset",
    "resolve_data",
    "synthetic_dataset",
    "synthetic_image",
    "verify_archive",
]
