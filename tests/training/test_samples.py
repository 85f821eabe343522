import random
from collections import Counter

import numpy as np
import pytest
import torch
from torch.utils.data import DataLoader

from instanseg_scnp.data import synthetic_dataset
from instanseg_scnp.training.samples import Tiles, collate, epoch_plan, validation_plan


@pytest.fixture(scope="module")
def items():
    return synthetic_dataset(n_train=5, n_validation=1, n_test=1, shape=(96, 96), rng=0)["Train"]


@pytest.mark.parametrize(("n_images", "length"), [(5, 12), (3, 3), (7, 2)])
def test_epoch_plan_draws_images_evenly(n_images, length):
    counts = Counter(index for index, _ in epoch_plan(n_images, length, seed=1, epoch=2))
    assert sum(counts.values()) == length
    assert max(counts.values()) - min(counts.get(i, 0) for i in range(n_images)) <= 1 or length < n_images


def test_epoch_plan_splits_disjointly_across_ranks():
    full = epoch_plan(5, 12, seed=1, epoch=3)
    shards = [epoch_plan(5, 12, seed=1, epoch=3, rank=r, world_size=3) for r in range(3)]
    assert sorted(key for shard in shards for key in shard) == sorted(full)
    assert len({seed for shard in shards for _, seed in shard}) == 12  # no tile twice
    assert epoch_plan(5, 12, seed=1, epoch=3) == full
    assert epoch_plan(5, 12, seed=1, epoch=4) != full
    assert epoch_plan(5, 12, seed=2, epoch=3) != full


def test_tiles_are_set_by_their_key_alone_and_leave_global_rngs_alone(items):
    tiles = Tiles(items, 64, train=True)
    key = epoch_plan(len(items), 4, seed=0, epoch=0)[0]
    first = tiles[key]
    torch.manual_seed(123)
    np.random.seed(123)  # upstream's augmentations draw from it
    again = tiles[key]
    assert torch.equal(first[0], again[0]) and torch.equal(first[1], again[1])
    other = tiles[(key[0], key[1] + 1)]
    assert not torch.equal(first[0], other[0])
    assert first[0].shape == (3, 64, 64) and first[1].shape == (1, 64, 64) and first[1].dtype == torch.int64


def test_tiles_do_not_change_the_callers_random_state(items):
    tiles = Tiles(items, 64, train=True)
    torch.manual_seed(5)
    np.random.seed(5)
    before = torch.get_rng_state(), np.random.get_state()[1].copy(), random.getstate()
    tiles[(0, 99)]
    assert torch.equal(torch.get_rng_state(), before[0])
    np.testing.assert_array_equal(np.random.get_state()[1], before[1])
    assert random.getstate() == before[2]


def test_batches_do_not_depend_on_worker_count(items):
    tiles = Tiles(items, 64, train=True)
    plan = epoch_plan(len(items), 4, seed=0, epoch=1)
    batches = [next(iter(DataLoader(tiles, batch_size=4, sampler=plan, collate_fn=collate, num_workers=w)))
               for w in (0, 2)]
    assert torch.equal(batches[0][0], batches[1][0]) and torch.equal(batches[0][1], batches[1][1])


def test_tiles_keep_labels_on_the_cells_they_cover(items):
    """Labels and image move together: brightfield nuclei are darker than their surroundings."""
    tiles = Tiles(items, 64, train=False)
    for index, seed in validation_plan(len(items), seed=0):
        image, labels = tiles[(index, seed)]
        if items[index]["image_modality"] == "Brightfield" and (labels > 0).any():
            brightness = image.mean(0)
            assert brightness[labels[0] > 0].mean() < brightness[labels[0] == 0].mean()


def test_tiles_refuse_rescaling_without_pixel_size(items):
    unknown = [{**items[0], "pixel_size": None}]
    with pytest.raises(ValueError, match=r"pixel_size=0.25 asks to rescale, but item 0 .* has no pixel_size"):
        Tiles(unknown, 64, train=True, pixel_size=0.25)
