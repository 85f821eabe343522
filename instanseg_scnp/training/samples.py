"""Training and validation tiles through upstream InstanSeg's augmentations, reproducibly.

Upstream's ``Augmentations`` draws from the global NumPy and torch generators.
Each tile here is made under its own seed, derived from (run seed, epoch,
position in the epoch), with the global generators saved and restored around
it. So a tile does not depend on the worker that makes it, on the number of
workers or processes, or on whether the run was resumed: the property the
resume guarantee rests on.
"""

from __future__ import annotations

import contextlib
import random
from collections.abc import Iterator

import numpy as np
import torch

from instanseg_scnp.data import is_pixel_size
from instanseg_scnp.upstream import augmenter

VALIDATION_EPOCH = -1
"""The 'epoch' of the validation tiles' seeds: the same tiles every epoch."""


def sample_seed(seed: int, epoch: int, position: int) -> int:
    """A 32-bit seed for one tile, independent for every (seed, epoch, position)."""
    return int(np.random.SeedSequence([seed, epoch + 1, position]).generate_state(1)[0])


def epoch_seed(seed: int, epoch: int, rank: int) -> int:
    """A 32-bit seed for one process's global generators during one epoch."""
    return int(np.random.SeedSequence([seed, epoch + 1, rank, 1]).generate_state(1)[0])


def epoch_plan(n_images: int, length: int, *, seed: int, epoch: int, rank: int = 0, world_size: int = 1
               ) -> list[tuple[int, int]]:
    """This rank's (image index, tile seed) pairs for one epoch.

    The epoch walks through shuffled passes over the images, so every image is
    drawn equally often; rank ``r`` of ``world_size`` takes positions ``r, r +
    world_size, ...`` of the same plan (DistributedSampler's split), so the ranks
    see disjoint tiles. ``length`` is rounded up to a multiple of ``world_size``
    so that every rank runs the same number of steps (DDP needs that).

    Examples
    --------
    >>> plan = epoch_plan(3, 6, seed=0, epoch=0)
    >>> sorted(index for index, _ in plan)
    [0, 0, 1, 1, 2, 2]
    >>> epoch_plan(3, 6, seed=0, epoch=0, rank=1, world_size=2) == plan[1::2]
    True
    """
    length = -(-length // world_size) * world_size
    generator = np.random.default_rng([seed, epoch])
    passes = -(-length // n_images)
    order = np.concatenate([generator.permutation(n_images) for _ in range(passes)])[:length]
    return [(int(order[p]), sample_seed(seed, epoch, p)) for p in range(rank, length, world_size)]


def validation_plan(n_images: int, *, seed: int) -> list[tuple[int, int]]:
    """One fixed tile per validation image, the same in every epoch."""
    return [(index, sample_seed(seed, VALIDATION_EPOCH, index)) for index in range(n_images)]


@contextlib.contextmanager
def seeded(seed: int) -> Iterator[None]:
    """Seed Python's, NumPy's and torch's CPU global generators, and restore them afterwards.

    Only torch's CPU generator: the augmentations run on the CPU, and ``torch.manual_seed`` would also
    reseed every GPU's generator, which this context does not restore (and, before CUDA starts, records
    a stack trace for each tile: a fifth of a tile's augmentation time).
    """
    python_state, numpy_state = random.getstate(), np.random.get_state()
    with torch.random.fork_rng(devices=[]):
        random.seed(seed)
        np.random.seed(seed)
        torch.random.default_generator.manual_seed(seed)
        try:
            yield
        finally:
            random.setstate(python_state)
            np.random.set_state(numpy_state)


class Tiles(torch.utils.data.Dataset):
    """Tiles of one split, keyed by (image index, tile seed).

    Parameters
    ----------
    items : list of dict
        Loaded InstanSeg items (``image`` (H, W, C), ``nucleus_masks`` (H, W) int32).
    tile_size : int
        Output tiles are (3, tile_size, tile_size); smaller images are padded by upstream.
    train : bool
        Upstream's "minimal" training augmentations (percentile normalization, random
        rescale, crop, flips, 90-degree rotations) or its test ones (no rotation).
    pixel_size : float, optional
        Rescale to this pixel size (µm), as upstream's ``requested_pixel_size``.
    """

    def __init__(self, items: list[dict], tile_size: int, *, train: bool, pixel_size: float | None = None) -> None:
        if pixel_size is not None:
            for index, item in enumerate(items):
                if not is_pixel_size(item.get("pixel_size")):
                    raise ValueError(f"pixel_size={pixel_size} asks to rescale, but item {index} "
                                     f"({item.get('name', 'unnamed')}) has no pixel_size: {item.get('pixel_size')!r}")
        self.items = items
        self.augmenter = augmenter(tile_size, train=train, pixel_size=pixel_size)

    def __len__(self) -> int:
        return len(self.items)

    def __getitem__(self, key: tuple[int, int]) -> tuple[torch.Tensor, torch.Tensor]:
        index, seed = key
        item = self.items[index]
        meta = {key: value for key, value in item.items() if key not in ("image", "nucleus_masks")}
        # upstream picks its augmentations by modality and warns on a non-float pixel size
        fluorescence = item.get("image_modality") == "Fluorescence" or item["image"].shape[-1] != 3
        meta["image_modality"] = "Fluorescence" if fluorescence else "Brightfield"
        meta["pixel_size"] = float(item["pixel_size"]) if is_pixel_size(item.get("pixel_size")) else float("nan")
        with seeded(seed):
            image, labels = self.augmenter(item["image"], item["nucleus_masks"], meta)
        return image.float(), labels.long().reshape(1, *image.shape[-2:])


def collate(batch: list[tuple[torch.Tensor, torch.Tensor]]) -> tuple[torch.Tensor, torch.Tensor]:
    """Stack (image, labels) pairs into (B, 3, H, W) and (B, 1, H, W)."""
    images, labels = zip(*batch, strict=True)
    return torch.stack(images), torch.stack(labels)
