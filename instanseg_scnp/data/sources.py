"""Where training and evaluation data come from: a name or a path, resolved to a loaded dataset."""

from __future__ import annotations

import os
from pathlib import Path

from instanseg_scnp._files import sha256_of
from instanseg_scnp.data.dataset import SPLITS, Dataset, DatasetError, load_dataset
from instanseg_scnp.data.paths import DATA_DIR_ENV, data_root, dataset_file
from instanseg_scnp.data.registry import DATASETS
from instanseg_scnp.data.synthetic import synthetic_dataset

BUILT_IN = ("synthetic",)


def resolve_data(data: str | os.PathLike, *, root: str | os.PathLike | None = None) -> str:
    """What a ``--data`` value names: ``'synthetic'``, or the absolute path of an InstanSeg ``.pth`` file.

    A prepared dataset's name (IHC_TMA, LyNSeC, NuInsSeg) resolves to its file
    under the data root: ``root``, else ``$INSTANSEG_SCNP_DATA_DIR``, else
    ``~/.cache/instanseg-scnp``. A name wins over a file of the same name in the
    working directory.

    Raises
    ------
    DatasetError
        Neither built in, nor a prepared dataset, nor an existing file.

    Examples
    --------
    >>> resolve_data("synthetic")
    'synthetic'
    """
    if str(data) in BUILT_IN:
        return str(data)
    if str(data) in DATASETS:
        path = dataset_file(str(data), root)
        if not path.is_file():
            raise DatasetError(f"dataset {str(data)!r} is not prepared under {data_root(root)}: run "
                               f"`instanseg-scnp prepare {data} --root DIR` and pass the same --data-root "
                               f"(or set {DATA_DIR_ENV})")
        return str(path)
    path = Path(data)
    if not path.exists():
        raise DatasetError(f"data={str(data)!r} is neither one of {list(BUILT_IN)} nor an existing InstanSeg .pth "
                           f"dataset file, nor one of the datasets `instanseg-scnp prepare` makes {list(DATASETS)}")
    return str(path.resolve())


def open_dataset(data: str | os.PathLike, *, required: tuple[str, ...] = SPLITS[:2],
                 root: str | os.PathLike | None = None) -> Dataset:
    """Load the dataset a ``--data`` value names, with its ``required`` splits and any others it has.

    ``"synthetic"`` is the built-in synthetic dataset, the same every time
    (:func:`~instanseg_scnp.data.synthetic_dataset` with seed 0); a prepared
    dataset's name is looked up under ``root`` (see :func:`resolve_data`);
    anything else is a path to an InstanSeg ``.pth`` dataset. The other splits
    are loaded too when present and non-empty.
    """
    resolved = resolve_data(data, root=root)
    if resolved in BUILT_IN:
        return synthetic_dataset(rng=0)
    return load_dataset(resolved, splits=required, optional=SPLITS)


def data_fingerprint(resolved: str) -> dict | None:
    """Size and SHA-256 of a resolved dataset file (None for built-in data), to tell whether it changed.

    A dataset whose items name TIFF files is fingerprinted by its ``.pth`` only.
    """
    if resolved in BUILT_IN:
        return None
    return {"size": os.path.getsize(resolved), "sha256": sha256_of(resolved)}
