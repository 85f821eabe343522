"""Where training and evaluation data come from: a name or a path, resolved to a loaded dataset."""

from __future__ import annotations

from pathlib import Path

from instanseg_scnp.data.dataset import SPLITS, Dataset, DatasetError, load_dataset
from instanseg_scnp.data.synthetic import synthetic_dataset

BUILT_IN = ("synthetic",)


def open_dataset(data: str | Path, *, required: tuple[str, ...] = SPLITS[:2]) -> Dataset:
    """Load the dataset a ``--data`` value names, with its ``required`` splits and any others it has.

    ``"synthetic"`` is the built-in synthetic dataset, the same every time
    (:func:`~instanseg_scnp.data.synthetic_dataset` with seed 0); anything else is a
    path to an InstanSeg ``.pth`` dataset. The other splits are loaded too when
    present and non-empty.
    """
    if str(data) in BUILT_IN:
        return synthetic_dataset(rng=0)
    path = Path(data)
    if not path.exists():
        raise DatasetError(f"data={str(data)!r} is neither one of {list(BUILT_IN)} nor an existing "
                           "InstanSeg .pth dataset file")
    return load_dataset(path, splits=required, optional=SPLITS)
