"""``prepare``: from nothing (or a hand-downloaded archive) to a checked InstanSeg dataset, in one call.

Download (or take ``from_archive``) -> verify size and checksums -> extract
(whole or not at all) -> convert each image/mask pair to TIFFs -> write
``NAME.pth`` referencing them by relative path -> load it back through
training's own loader for the report -> move the folder into place. Until that
last rename the dataset exists only as a staging folder, removed on any error;
a dataset already in place is not touched again.

The prepared folder ``ROOT/NAME/``::

    NAME.pth          {"Train": [...], "Validation": [...], "Test": [...]}, items with relative TIFF paths
    images/<item>.tif RGB, uint8 (zlib-compressed)
    masks/<item>.tif  instance ids, int32, 0 background
    prepare.json      source archive, split method and membership, skipped files, report
"""

from __future__ import annotations

import json
import logging
import os
from dataclasses import replace
from pathlib import Path

import numpy as np
import tifffile
import torch

from instanseg_scnp._files import atomic_directory, atomic_path, write_text_atomic
from instanseg_scnp._options import look_up_option
from instanseg_scnp.data.convert import INFO, Sample, find_samples, locate_dataset
from instanseg_scnp.data.dataset import SPLITS
from instanseg_scnp.data.download import ArchiveError, archive_url, extract_archive, fetch_archive, verify_archive
from instanseg_scnp.data.paths import DOWNLOADS, MANIFEST, RAW, data_root
from instanseg_scnp.data.registry import DATASETS, REGISTRY
from instanseg_scnp.data.report import DatasetReport, check_dataset

logger = logging.getLogger(__name__)

SPLIT_SEED = 0
"""Seed of the 80/10/10 split of datasets without an official one."""
SPLIT_FRACTIONS = (0.8, 0.1, 0.1)


def prepare_dataset(name: str, root: str | os.PathLike | None = None, *, from_archive: str | os.PathLike | None = None,
                    base_url: str | None = None, retries: int = 3, progress: bool = False) -> DatasetReport:
    """Download, verify and convert one dataset into ``ROOT/NAME/``, and report on it.

    Parameters
    ----------
    name : {'IHC_TMA', 'LyNSeC', 'NuInsSeg'}
    root : path, optional
        The data root (default: ``$INSTANSEG_SCNP_DATA_DIR``, else ``~/.cache/instanseg-scnp``).
    from_archive : path, optional
        The dataset's archive, downloaded by hand; verified like a download and
        used instead of downloading.
    base_url : str, optional
        A mirror holding ``<base_url>/<archive file name>`` (default:
        ``$INSTANSEG_SCNP_BASE_URL``, else Zenodo).
    retries : int
        Further download attempts after a failed one.
    progress : bool
        Show the download's progress bar.

    Returns
    -------
    DatasetReport
        Images per split, nuclei per image, image sizes, median nucleus
        diameter, skipped files. A dataset already
        prepared is not touched: its saved report is returned.

    Raises
    ------
    ArchiveError
        The archive is not the published file, or is corrupt, or not laid out
        as the dataset's; or one of its files cannot be read or its mask does
        not fit its image (the message names the file). Nothing is left of the
        dataset.
    DownloadError
        The download failed; nothing of it was kept.
    FileExistsError
        ``ROOT/NAME`` exists but is not a prepared dataset.
    """
    name = look_up_option(name, DATASETS, name="dataset")
    if from_archive is not None and base_url is not None:
        raise ValueError("pass from_archive (a file you downloaded) or base_url (a mirror to download from), not both")
    root = data_root(root)
    target, archive = root / name, REGISTRY[name]
    if (target / MANIFEST).is_file():
        logger.info("%s is already prepared in %s; nothing to do", name, target)
        saved = DatasetReport.from_dict(json.loads((target / MANIFEST).read_text())["report"])
        return replace(saved, path=str(target / f"{name}.pth"))  # where it is now, should the root have moved
    if target.exists():
        raise FileExistsError(f"{str(target)!r} exists but holds no prepared {name} dataset (no {MANIFEST}); "
                              "move it away or choose another root")
    if from_archive is not None:
        path = Path(from_archive).expanduser().absolute()
        source = str(path)
        verify_archive(archive, path)
    else:
        path = fetch_archive(archive, root / DOWNLOADS, base_url=base_url, retries=retries, progress=progress)
        source = archive_url(archive, base_url)
    verified = bool(archive.md5 or archive.sha256)
    try:
        raw = extract_archive(path, root / RAW / name, check=lambda folder: locate_dataset(name, folder,
                                                                                          archive=path.name))
        samples, skipped = find_samples(name, raw, archive=path.name)
    except ArchiveError:
        if from_archive is None and not verified:  # an unverified download may be a bad one: fetch it again
            path.unlink(missing_ok=True)
        raise
    with atomic_directory(target) as staging:
        splits, method = _assign_splits(name, samples)
        _write_dataset(name, samples, splits, staging)
        skipped_rows = [[s.file, s.reason] for s in skipped]
        manifest = {"dataset": name, "archive": archive.filename, "record": archive.record, "doi": archive.doi,
                    "source": source, "checksum_verified": verified, "split_method": method,
                    "splits": {split: [s.name for s in samples if splits[s.name] == split] for split in SPLITS},
                    "skipped": skipped_rows}
        write_text_atomic(staging / MANIFEST, json.dumps(manifest, indent=2))  # read back by check_dataset
        report = replace(check_dataset(staging / f"{name}.pth"), path=str(target / f"{name}.pth"))
        write_text_atomic(staging / MANIFEST, json.dumps({**manifest, "report": report.to_dict()}, indent=2))
    logger.info("prepared %s in %s", name, target)
    return report



def split_names(names: list[str], *, seed: int = SPLIT_SEED) -> dict[str, str]:
    """A seeded 80/10/10 split of ``names`` (at least one in Validation and Test), independent of their order.

    Examples
    --------
    >>> from collections import Counter
    >>> Counter(split_names([f"image{i}" for i in range(20)]).values())
    Counter({'Train': 16, 'Validation': 2, 'Test': 2})
    """
    if len(names) < 3:
        raise ValueError(f"need at least 3 images for a train/validation/test split, got {len(names)}")
    order = np.random.default_rng(seed).permutation(sorted(names))
    n_validation = max(1, round(SPLIT_FRACTIONS[1] * len(names)))
    n_test = max(1, round(SPLIT_FRACTIONS[2] * len(names)))
    n_train = len(names) - n_validation - n_test
    return {str(n): "Train" if i < n_train else "Validation" if i < n_train + n_validation else "Test"
            for i, n in enumerate(order)}


def _assign_splits(name: str, samples: list[Sample]) -> tuple[dict[str, str], str]:
    names = [s.name for s in samples]
    duplicates = sorted({n for n in names if names.count(n) > 1})
    if duplicates:
        raise ArchiveError(f"{REGISTRY[name].filename}: several files give the item names {duplicates[:5]}")
    if INFO[name].official_split:
        return {s.name: s.split for s in samples}, f"official: {INFO[name].official_split}"
    fractions = "/".join(str(round(100 * f)) for f in SPLIT_FRACTIONS)
    return split_names(names), f"seeded {fractions} (numpy default_rng({SPLIT_SEED}) permutation of the sorted names)"


def _write_dataset(name: str, samples: list[Sample], splits: dict[str, str], folder: Path) -> None:
    info = INFO[name]
    (folder / "images").mkdir()
    (folder / "masks").mkdir()
    dataset: dict[str, list[dict]] = {split: [] for split in SPLITS}
    for index, sample in enumerate(samples):
        if index % 50 == 0:
            logger.info("%s: converting %d/%d", name, index + 1, len(samples))
        image, masks = sample.read()
        image_file, mask_file = f"images/{sample.name}.tif", f"masks/{sample.name}.tif"
        tifffile.imwrite(folder / image_file, image, photometric="rgb", compression="zlib")
        tifffile.imwrite(folder / mask_file, masks, photometric="minisblack", compression="zlib")
        item = {"image": image_file, "nucleus_masks": mask_file, "name": sample.name, "parent_dataset": name,
                "licence": info.licence, "pixel_size": info.pixel_size, "image_modality": info.image_modality,
                "stain": info.stain, "tissue_type": info.tissue_type, **sample.metadata, "source_file": sample.source}
        dataset[splits[sample.name]].append({key: value for key, value in item.items() if value is not None})
    with atomic_path(folder / f"{name}.pth") as tmp:
        torch.save(dataset, tmp)

