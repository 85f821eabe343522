"""One converter per dataset: find the image/mask pairs of an extracted archive and read them as InstanSeg items.

Each converter returns :class:`Sample` s, which read their files only when asked
(so a dataset is converted one image at a time), and the files it left out with
the reason. Reading checks what InstanSeg's loader needs: an RGB image (an alpha
channel is dropped), integer instance ids of the image's height and width,
renumbered 1..N. A file that cannot be read, or a mask that does not fit its
image, raises :class:`ArchiveError` naming the archive and the file.

Dataset facts (licence, pixel size, stain, official splits) and where each came
from are in :data:`INFO` and docs/datasets.md.
"""

from __future__ import annotations

import functools
import re
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

import imageio.v3 as imageio
import numpy as np
import tifffile
from skimage.segmentation import relabel_sequential

from instanseg_scnp.data.dataset import channels_last
from instanseg_scnp.data.download import ArchiveError


@dataclass(frozen=True)
class DatasetInfo:
    """What every item of a dataset shares."""

    licence: str
    pixel_size: float
    """µm; 0.25 for all three is upstream InstanSeg's value, which their records do not state (see README)."""
    stain: str | None
    tissue_type: str | None
    official_split: str | None
    """Where the official split comes from, or None: then a seeded 80/10/10 split."""
    image_modality: str = "Brightfield"


INFO = {
    "IHC_TMA": DatasetInfo("CC BY 4.0", 0.25, "IHC", "lung",
                           "file name prefixes fold1/fold2/fold3 = train/validation/test (SRSA-Net's 195/36/35 "
                           "patches; torch-em's srsanet.py)"),
    "LyNSeC": DatasetInfo("CC BY 4.0", 0.25, None, "lymphoma", None),
    "NuInsSeg": DatasetInfo("CC BY 4.0", 0.25, "H&E", None, None),
}

IHC_TMA_FOLDS = {"1": "Train", "2": "Validation", "3": "Test"}
LYNSEC_STAINS = {"lynsec 1": "IHC", "lynsec 3": "H&E"}
LYNSEC_EXCLUDED = {"lynsec 2": "excluded: 'lynsec 2' is annotated incorrectly (upstream InstanSeg leaves it out)"}
NUINSSEG_IMAGES, NUINSSEG_MASKS = "tissue images", "label masks modify"


@dataclass(frozen=True)
class Sample:
    """One image/mask pair of an extracted archive, read on demand."""

    name: str
    """Unique within the dataset; the stem of the TIFF files written for it."""
    source: str
    """The image's path inside the archive."""
    split: str | None
    """The official split, or None."""
    metadata: dict
    read: Callable[[], tuple[np.ndarray, np.ndarray]] = field(repr=False, compare=False)
    """Returns ``(image, masks)``: (H, W, 3) and (H, W) int32, ids 1..N."""


@dataclass(frozen=True)
class Skipped:
    """A file of the archive that is not in the dataset, and why."""

    file: str
    reason: str


def find_samples(name: str, folder: str | Path, *, archive: str) -> tuple[list[Sample], list[Skipped]]:
    """The samples and the skipped files of dataset ``name`` extracted in ``folder`` (from ``archive``).

    Raises
    ------
    ArchiveError
        The folder is not laid out as the dataset's archive.
    """
    folder = Path(folder)
    return CONVERTERS[name](locate_dataset(name, folder, archive=archive), folder, archive)


def locate_dataset(name: str, folder: str | Path, *, archive: str) -> Path:
    """The folder of the extracted archive that holds dataset ``name``'s layout (it or a folder inside it).

    Raises
    ------
    ArchiveError
        Neither holds the layout; the message names the archive, what was expected and what is there.
    """
    folder = Path(folder)
    test, expected = LAYOUTS[name]
    for candidate in [folder, *_folders(folder)]:
        if test(candidate):
            return candidate
    found = sorted(p.name + ("/" if p.is_dir() else "") for p in folder.iterdir() if not _hidden(p))
    raise ArchiveError(f"{archive}: not laid out as {name}'s archive: expected {expected}; it holds {found[:12]}")


def merge_instance_channels(*channels: np.ndarray) -> np.ndarray:
    """One instance map from several, whose ids may collide: every (channel, id) pair is its own nucleus.

    IHC_TMA stores negative and positive nuclei in two channels, each numbered
    from 1, so the same id names two nuclei, which may touch. Taking the maximum
    of the channels, as upstream does before re-separating with a watershed,
    merges them; here each channel's ids are offset past the previous channels'
    instead, so no two nuclei share an id. Where channels overlap, the later one
    wins. The result is renumbered 1..N.

    Parameters
    ----------
    *channels : (H, W) integer arrays
        Instance ids, 0 (or below) for background.

    Returns
    -------
    (H, W) int32 ndarray

    Examples
    --------
    >>> negative = np.array([[1, 1, 0, 0]])
    >>> positive = np.array([[0, 0, 1, 1]])          # id 1 again, touching
    >>> merge_instance_channels(negative, positive)
    array([[1, 1, 2, 2]], dtype=int32)
    """
    if not channels:
        raise ValueError("expected at least one channel")
    merged = np.zeros(np.shape(channels[0]), np.int64)
    offset = 0
    for channel in channels:
        ids = np.asarray(channel).astype(np.int64)
        if ids.shape != merged.shape:
            raise ValueError(f"channels must share one shape, got {merged.shape} and {ids.shape}")
        foreground = ids > 0
        merged[foreground] = ids[foreground] + offset
        offset += int(ids.max(initial=0))
    return relabel_sequential(merged)[0].astype(np.int32)


def _ihc_tma(root: Path, top: Path, archive: str) -> tuple[list[Sample], list[Skipped]]:
    samples, skipped = [], []
    masks = {p.stem: p for p in _files(root / "masks")}
    for image in _files(root / "images"):
        where = _relative(image, top)
        mask = masks.pop(image.stem, None)
        fold = re.match(r"fold(\d+)_", image.stem)
        if image.suffix.lower() != ".png":
            skipped.append(Skipped(where, "not a .png image"))
        elif mask is None or mask.suffix != ".npy":
            skipped.append(Skipped(where, f"no mask masks/{image.stem}.npy"))
        elif fold is None or fold[1] not in IHC_TMA_FOLDS:
            skipped.append(Skipped(where, "no fold1_/fold2_/fold3_ prefix: in no official split"))
        else:
            read = functools.partial(_read_ihc_tma, image, mask, f"{archive}: {where}")
            samples.append(Sample(image.stem, where, IHC_TMA_FOLDS[fold[1]], {"stain": "IHC", "tissue_type": "lung"},
                                  read))
    skipped += [Skipped(_relative(mask, top), "no image with this name in images/") for mask in masks.values()]
    return samples, skipped


def _read_ihc_tma(image_path: Path, mask_path: Path, where: str) -> tuple[np.ndarray, np.ndarray]:
    image = _read(_imread, image_path, where)
    raw = _read(functools.partial(np.load, allow_pickle=False), mask_path, where)
    try:
        raw = channels_last(raw)
    except ValueError as error:
        raise ArchiveError(f"{where}: mask {mask_path.name}: {error}") from None
    if raw.ndim != 3 or raw.shape[-1] < 2:
        raise ArchiveError(f"{where}: mask {mask_path.name} has shape {raw.shape}; expected 2 or more channels "
                           "(negative ids, positive ids, ...)")
    channels = [_integer_ids(raw[..., c], where) for c in range(2)]
    return _pair(image, merge_instance_channels(*channels), where)


def _lynsec(root: Path, top: Path, archive: str) -> tuple[list[Sample], list[Skipped]]:
    samples, skipped = [], []
    for folder in _folders(root):
        files = [f for f in _files(folder) if f.suffix == ".npy"]
        if folder.name in LYNSEC_EXCLUDED:
            skipped += [Skipped(_relative(f, top), LYNSEC_EXCLUDED[folder.name]) for f in files]
        elif folder.name not in LYNSEC_STAINS:
            skipped.append(Skipped(_relative(folder, top) + "/", f"not one of {sorted(LYNSEC_STAINS)}"))
        else:
            stain = LYNSEC_STAINS[folder.name]
            for file in files:
                where = _relative(file, top)
                read = functools.partial(_read_lynsec, file, f"{archive}: {where}")
                samples.append(Sample(file.stem, where, None, {"stain": stain, "tissue_type": "lymphoma"}, read))
    return samples, skipped


def _read_lynsec(path: Path, where: str) -> tuple[np.ndarray, np.ndarray]:
    data = _read(functools.partial(np.load, allow_pickle=False), path, where)
    if data.ndim != 3 or data.shape[-1] < 4:
        raise ArchiveError(f"{where}: shape {data.shape}; expected (H, W, 4 or more): RGB, then instance ids")
    return _pair(data[..., :3], relabel_sequential(_integer_ids(data[..., 3], where))[0], where)


def _nuinsseg(root: Path, top: Path, archive: str) -> tuple[list[Sample], list[Skipped]]:
    samples, skipped = [], []
    for tissue in _folders(root):
        images, masks = tissue / NUINSSEG_IMAGES, tissue / NUINSSEG_MASKS
        if not images.is_dir():
            skipped.append(Skipped(_relative(tissue, top) + "/", f"no '{NUINSSEG_IMAGES}' folder"))
            continue
        if not masks.is_dir():
            raise ArchiveError(f"{archive}: folder '{tissue.name}/{NUINSSEG_MASKS}' is missing "
                               f"('{tissue.name}/{NUINSSEG_IMAGES}' has no masks)")
        for image in _files(images):
            where, mask = _relative(image, top), masks / f"{image.stem}.tif"
            if image.suffix.lower() != ".png":
                skipped.append(Skipped(where, "not a .png image"))
            elif not mask.is_file():
                skipped.append(Skipped(where, f"no mask '{tissue.name}/{NUINSSEG_MASKS}/{mask.name}'"))
            else:
                read = functools.partial(_read_nuinsseg, image, mask, f"{archive}: {where}")
                samples.append(Sample(f"{_slug(tissue.name)}__{_slug(image.stem)}", where, None,
                                      {"stain": "H&E", "tissue_type": tissue.name}, read))
    return samples, skipped


def _read_nuinsseg(image_path: Path, mask_path: Path, where: str) -> tuple[np.ndarray, np.ndarray]:
    image = _read(_imread, image_path, where)
    masks = _read(tifffile.imread, mask_path, where)
    return _pair(image, relabel_sequential(_integer_ids(np.squeeze(masks), where))[0], where)


def _is_ihc_tma(folder: Path) -> bool:
    return (folder / "images").is_dir() and (folder / "masks").is_dir()


def _is_lynsec(folder: Path) -> bool:
    return any(child.name in LYNSEC_STAINS for child in _folders(folder))


def _is_nuinsseg(folder: Path) -> bool:
    return any((child / NUINSSEG_IMAGES).is_dir() for child in _folders(folder))


CONVERTERS = {"IHC_TMA": _ihc_tma, "LyNSeC": _lynsec, "NuInsSeg": _nuinsseg}
LAYOUTS = {
    "IHC_TMA": (_is_ihc_tma, "'IHC_TMA_dataset/images/*.png' and 'IHC_TMA_dataset/masks/*.npy'"),
    "LyNSeC": (_is_lynsec, "folders 'lynsec 1' (IHC) and 'lynsec 3' (H&E) of *.npy (RGB + instance ids)"),
    "NuInsSeg": (_is_nuinsseg, f"'<tissue>/{NUINSSEG_IMAGES}/*.png' and '<tissue>/{NUINSSEG_MASKS}/*.tif'"),
}


def _pair(image: np.ndarray, masks: np.ndarray, where: str) -> tuple[np.ndarray, np.ndarray]:
    """Check and normalize an image and its masks: (H, W, 3) and (H, W) int32."""
    image = np.asarray(image)
    if image.ndim != 3 or image.shape[-1] not in (3, 4):
        raise ArchiveError(f"{where}: image of shape {image.shape}; expected an RGB or RGBA image (H, W, 3 or 4)")
    image = image[..., :3]
    if image.dtype != np.uint8 and image.max(initial=0) > 1:  # e.g. 0..255 stored as float: upstream's uint8
        image = np.clip(np.round(image), 0, 255).astype(np.uint8)
    elif image.dtype != np.uint8:
        image = image.astype(np.float32)
    if masks.shape != image.shape[:2]:
        raise ArchiveError(f"{where}: the image is {image.shape[0]}x{image.shape[1]} but its mask is "
                           f"{'x'.join(map(str, masks.shape))}")
    return np.ascontiguousarray(image), masks.astype(np.int32)


def _integer_ids(array: np.ndarray, where: str) -> np.ndarray:
    """Instance ids as int64: integers, or floats that hold integers; no negative values."""
    array = np.asarray(array)
    if array.dtype == bool or not np.issubdtype(array.dtype, np.number):
        raise ArchiveError(f"{where}: mask of dtype {array.dtype}; expected integer instance ids")
    if not np.issubdtype(array.dtype, np.integer) and not np.array_equal(array, np.round(array)):
        raise ArchiveError(f"{where}: mask holds non-integer values; expected integer instance ids")
    if array.size and array.min() < 0:
        raise ArchiveError(f"{where}: mask holds negative ids ({array.min()}); expected 0 and positive ids")
    return array.astype(np.int64)


def _read(reader: Callable[[Path], np.ndarray], path: Path, where: str) -> np.ndarray:
    try:
        return np.asarray(reader(path))
    except Exception as error:  # any reader's failure: report the file
        raise ArchiveError(f"{where}: cannot read {path.name} ({type(error).__name__}: {error})") from error


def _imread(path: Path) -> np.ndarray:
    return imageio.imread(path.read_bytes())  # from bytes: imageio leaves no file open when it fails


def _hidden(path: Path) -> bool:
    return path.name.startswith((".", "__MACOSX"))


def _folders(folder: Path) -> list[Path]:
    return sorted(p for p in folder.iterdir() if p.is_dir() and not _hidden(p)) if folder.is_dir() else []


def _files(folder: Path) -> list[Path]:
    return sorted(p for p in folder.iterdir() if p.is_file() and not _hidden(p)) if folder.is_dir() else []


def _relative(path: Path, root: Path) -> str:
    return path.relative_to(root).as_posix()


def _slug(text: str) -> str:
    return re.sub(r"[^A-Za-z0-9.-]+", "_", text).strip("_")
