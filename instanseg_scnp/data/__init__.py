"""Data: InstanSeg's dataset format, the built-in synthetic generator and the public datasets' preparation.

Names load their module on first access, so the CLI's ``--help`` does not pay
for image codecs and downloads.
"""

from instanseg_scnp._lazy import lazy_exports

_MODULES = {
    ".convert": ("merge_instance_channels",),
    ".dataset": ("SPLITS", "DatasetError", "channels_last", "common_pixel_size", "is_pixel_size", "load_dataset",
                 "median_diameter"),
    ".download": ("ArchiveError", "DownloadError", "extract_archive", "fetch_archive", "verify_archive"),
    ".paths": ("DATA_DIR_ENV", "data_root", "dataset_file"),
    ".prepare": ("prepare_dataset",),
    ".registry": ("DATASETS", "REGISTRY", "Archive"),
    ".report": ("DatasetReport", "check_dataset"),
    ".sources": ("BUILT_IN", "data_fingerprint", "open_dataset", "resolve_data"),
    ".synthetic": ("MODALITIES", "SYNTHETIC_PIXEL_SIZE", "SyntheticImage", "synthetic_dataset", "synthetic_image"),
}

__all__, __getattr__, __dir__ = lazy_exports(__name__, {name: module for module, names in _MODULES.items()
                                                        for name in names})
