"""Where prepared datasets live: one root folder, moved by an argument or ``INSTANSEG_SCNP_DATA_DIR``.

The root holds ``downloads/`` (the archives, as pooch caches them), ``raw/NAME/``
(each archive extracted) and ``NAME/`` (the prepared dataset: ``NAME.pth``,
``images/``, ``masks/`` and ``prepare.json``).
"""

from __future__ import annotations

import os
from pathlib import Path

import pooch

DATA_DIR_ENV = "INSTANSEG_SCNP_DATA_DIR"
"""The environment variable that moves the data root."""
DOWNLOADS = "downloads"
RAW = "raw"
MANIFEST = "prepare.json"
"""Written last into a prepared dataset's folder: its source, splits, skipped files and report."""


def data_root(root: str | os.PathLike | None = None) -> Path:
    """The data root: ``root`` if given, else ``$INSTANSEG_SCNP_DATA_DIR``, else the user cache folder.

    The cache folder is pooch's ``os_cache("instanseg-scnp")`` (``~/.cache/instanseg-scnp``
    on Linux). The result is absolute; nothing is created.

    Examples
    --------
    >>> data_root("/data/cells")
    PosixPath('/data/cells')
    """
    if root is None:
        root = os.environ.get(DATA_DIR_ENV) or pooch.os_cache("instanseg-scnp")
    return Path(root).expanduser().absolute()


def dataset_file(name: str, root: str | os.PathLike | None = None) -> Path:
    """The ``.pth`` file of the prepared dataset ``name`` under the data root (which may not exist yet).

    Examples
    --------
    >>> dataset_file("NuInsSeg", "/data/cells")
    PosixPath('/data/cells/NuInsSeg/NuInsSeg.pth')
    """
    return data_root(root) / name / f"{name}.pth"
