"""Read .tif/.tiff images and label images (tifffile).

A TIFF is opened as a label image when it holds integers and its file name says
so (a word such as ``labels``, ``mask``, ``masks``, ``seg``, ``gt``,
``ground_truth``, ``instances`` or ``nuclei`` between separators); otherwise as an image,
RGB when its last axis has 3 or 4 samples of 8 bits. Negative labels (InstanSeg's
-1, unannotated) are kept: the inspector ignores them. The name decides because a
16-bit fluorescence image and a label image cannot be told apart by their pixels.
"""

from __future__ import annotations

import re
from collections.abc import Callable
from pathlib import Path

import numpy as np
import tifffile

__all__ = ["LABEL_NAME", "get_reader", "read_tiff"]

LABEL_NAME = re.compile(r"(^|[^a-z0-9])(labels?|masks?|seg|segmentation|gt|ground[-_ ]?truth|instances|nuclei)"
                        r"([^a-z0-9]|$)", re.IGNORECASE)
"""File names (without suffix) that mark a TIFF of integers as a label image."""

_SUFFIXES = (".tif", ".tiff")

LayerData = tuple[np.ndarray, dict, str]


def get_reader(path: str | list[str]) -> Callable[[str | list[str]], list[LayerData]] | None:
    """npe2 reader: :func:`read_tiff` for .tif/.tiff paths (one, or a list of them), else None."""
    paths = [path] if isinstance(path, str | Path) else list(path)
    if not paths or not all(str(p).lower().endswith(_SUFFIXES) for p in paths):
        return None
    return read_tiff


def is_label_image(path: str | Path, data: np.ndarray) -> bool:
    """True for integer data in a file whose name marks it as labels (module docstring)."""
    return np.issubdtype(data.dtype, np.integer) and bool(LABEL_NAME.search(Path(path).name.split(".")[0]))


def read_tiff(path: str | list[str]) -> list[LayerData]:
    """One layer per file: ``(data, {"name": stem, ...}, "labels" | "image")``."""
    layers = []
    for file in [path] if isinstance(path, str | Path) else path:
        data = tifffile.imread(file)
        name = Path(file).name.split(".")[0]
        if is_label_image(file, data):
            layers.append((data, {"name": name}, "labels"))
        else:
            rgb = data.ndim == 3 and data.shape[-1] in (3, 4) and data.dtype == np.uint8
            layers.append((data, {"name": name, "rgb": rgb}, "image"))
    return layers
