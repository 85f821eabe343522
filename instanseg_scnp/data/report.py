"""The validation report of a prepared dataset: what training will see, read through training's own loader.

:func:`check_dataset` loads every split with :func:`~instanseg_scnp.data.load_dataset`
(so every item is checked exactly as ``train`` checks it), one split at a time,
and counts images, nuclei per image, image sizes and the median nucleus
diameter of the training split.
The skipped files come from the dataset's ``prepare.json``.
"""

from __future__ import annotations

import json
import os
from collections import Counter
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np

from instanseg_scnp.data.dataset import SPLITS, DatasetError, common_pixel_size, load_dataset, median_diameter
from instanseg_scnp.data.paths import MANIFEST, data_root
from instanseg_scnp.data.registry import DATASETS


@dataclass(frozen=True)
class SplitSummary:
    """One split: images, nuclei, nuclei per image (min, median, max) and image sizes ("HxW": count)."""

    images: int
    nuclei: int
    nuclei_per_image: tuple[int, float, int]
    sizes: dict[str, int]


@dataclass(frozen=True)
class DatasetReport:
    """What a prepared dataset holds."""

    name: str
    path: str
    """The ``.pth`` file."""
    splits: dict[str, SplitSummary]
    pixel_size: float | None
    """µm, shared by the training images (None if missing or mixed)."""
    median_diameter_px: float | None
    """Median equivalent diameter of the training split's nuclei, px; None without nuclei."""
    skipped: tuple[tuple[str, str], ...] = ()
    """(file in the archive, reason) for every file left out."""
    split_method: str | None = None

    def to_dict(self) -> dict:
        """JSON-ready."""
        return asdict(self)

    @classmethod
    def from_dict(cls, data: dict) -> DatasetReport:
        """Inverse of :meth:`to_dict`."""
        splits = {split: SplitSummary(s["images"], s["nuclei"], tuple(s["nuclei_per_image"]), dict(s["sizes"]))
                  for split, s in data["splits"].items()}
        data = {key: value for key, value in data.items() if key != "suggested_window"}  # older versions' key
        return cls(**{**data, "splits": splits, "skipped": tuple(map(tuple, data.get("skipped", ())))})

    def to_text(self, *, max_skipped: int = 20) -> str:
        """The report as the ``prepare`` command prints it."""
        lines = [f"{self.name}: {self.path}",
                 f"{'split':<11}{'images':>7}{'nuclei':>8}  {'nuclei/image: min / median / max':<34}"
                 "image sizes (count)"]
        for split, s in self.splits.items():
            low, median, high = s.nuclei_per_image
            sizes = ", ".join(f"{size} ({count})" for size, count in s.sizes.items())
            lines.append(f"{split:<11}{s.images:>7}{s.nuclei:>8}  {f'{low} / {median:g} / {high}':<34}{sizes}")
        if self.split_method:
            lines.append(f"splits: {self.split_method}")
        pixel = f"{self.pixel_size:g} µm/px" if self.pixel_size else "no common pixel size"
        if self.median_diameter_px is None:
            lines.append(f"pixel size: {pixel}; no annotated nuclei in the training split")
        else:
            lines.append(f"pixel size: {pixel}; median nucleus diameter (Train) {self.median_diameter_px:.1f} px")
        if self.skipped:
            lines.append(f"skipped {len(self.skipped)} file(s):")
            lines += [f"  {file}: {reason}" for file, reason in self.skipped[:max_skipped]]
            if len(self.skipped) > max_skipped:
                lines.append(f"  ... and {len(self.skipped) - max_skipped} more (all in prepare.json)")
        else:
            lines.append("skipped: none")
        return "\n".join(lines)

    def __str__(self) -> str:
        return self.to_text()


def check_dataset(path: str | os.PathLike, *, root: str | os.PathLike | None = None) -> DatasetReport:
    """Validate a prepared dataset and report on it.

    Parameters
    ----------
    path : path or str
        A ``.pth`` dataset, a folder holding one, or a dataset name (IHC_TMA,
        LyNSeC, NuInsSeg) prepared under ``root``.
    root : path, optional
        The data root for a name (default: ``$INSTANSEG_SCNP_DATA_DIR`` or the cache).

    Raises
    ------
    DatasetError
        No dataset there, or an item training would refuse (the message names it).
    """
    file = _dataset_file(path, root)
    manifest = file.parent / MANIFEST
    saved = json.loads(manifest.read_text()) if manifest.is_file() else {}
    splits, diameter, pixel_size = {}, None, None
    for split in SPLITS:
        items = load_dataset(file, splits=(), optional=(split,)).get(split)
        if not items:
            continue
        counts = [int(np.count_nonzero(np.bincount(item["nucleus_masks"][item["nucleus_masks"] > 0])))
                  for item in items]
        sizes = Counter("x".join(map(str, item["nucleus_masks"].shape)) for item in items)
        splits[split] = SplitSummary(len(items), sum(counts), (min(counts), float(np.median(counts)), max(counts)),
                                     dict(sorted(sizes.items())))
        if split == "Train":
            pixel_size = common_pixel_size({"Train": items})
            if sum(counts):
                diameter = median_diameter({"Train": items})
        del items
    if not splits:
        raise DatasetError(f"{file}: no split holds any image")
    return DatasetReport(name=str(saved.get("dataset", file.stem)), path=str(file), splits=splits,
                         pixel_size=pixel_size, median_diameter_px=diameter,
                         skipped=tuple(map(tuple, saved.get("skipped", ()))), split_method=saved.get("split_method"))


def _dataset_file(path: str | os.PathLike, root: str | os.PathLike | None) -> Path:
    candidate = Path(path)
    if not candidate.exists() and str(path) in DATASETS:
        candidate = data_root(root) / str(path)
    if candidate.is_file():
        return candidate
    if candidate.is_dir():
        named = candidate / f"{candidate.name}.pth"
        found = [named] if named.is_file() else sorted(candidate.glob("*.pth"))
        if len(found) == 1:
            return found[0]
        raise DatasetError(f"{str(candidate)!r} holds {len(found)} .pth datasets; name the file to check")
    raise DatasetError(f"{str(path)!r} is neither a prepared dataset (folder or .pth file) nor one of "
                       f"{list(DATASETS)} prepared under {data_root(root)}")
