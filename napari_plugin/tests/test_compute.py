"""The pure computations, without napari or Qt."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest
import torch
from instanseg_scnp import scnp
from instanseg_scnp.data import synthetic_image
from instanseg_scnp.metrics import cell_shapes, classify_errors, topology_errors
from instanseg_scnp.upstream import InstanceCrops
from matplotlib import colormaps

from napari_instanseg_scnp._compute import (
    ERROR_CLASSES,
    WindowCache,
    cell_crop,
    column_limits,
    crop_penalty,
    error_map,
    histograms,
    labels_from_logits,
    map_penalty,
    own_crop,
    penalty_column,
    shape_colors,
    shape_features,
    symmetric_limits,
)


@pytest.fixture(scope="module")
def sample():
    s = synthetic_image((96, 128), rng=5)
    logits = (np.random.default_rng(0).normal(size=s.labels.shape) + 2 * (s.labels > 0) - 1).astype(np.float32)
    return logits, s.labels.astype(np.int32)


@pytest.mark.parametrize("window", [1, 3, 5, 9])
def test_map_penalty_equals_the_operator(sample, window):
    logits, gt = sample
    penalty = map_penalty(logits, gt)
    z_tilde, difference = penalty.compute(window)
    expected = scnp(torch.from_numpy(logits)[None, None], torch.from_numpy(gt > 0)[None, None], window)[0, 0]
    np.testing.assert_array_equal(z_tilde, expected.numpy())
    np.testing.assert_array_equal(difference, logits - z_tilde)
    assert (difference[gt > 0] >= 0).all() and (difference[gt == 0] <= 0).all()
    if window == 1:
        assert not difference.any()


def test_map_penalty_ignores_unannotated(sample):
    logits, gt = sample
    gt = gt.copy()
    gt[:10] = -1
    z_tilde = map_penalty(logits, gt).penalized(5)
    np.testing.assert_array_equal(z_tilde[:10], logits[:10])


@pytest.mark.parametrize("window", [1, 3, 5, 9, 15])
@pytest.mark.parametrize("step", [1, 2, 3, 4])
def test_sampled_penalty_equals_the_operator_at_the_samples(sample, window, step):
    logits, gt = sample
    logits, gt = logits[:, :-3].copy(), gt[:, :-3].copy()  # 96 x 125: a side that the step does not divide
    gt[:7, :40] = -1  # unannotated: left as they are
    z_tilde, difference = map_penalty(logits, gt).sample(window, step)
    expected = scnp(torch.from_numpy(logits)[None, None], torch.from_numpy(gt > 0)[None, None], window,
                    ignore=torch.from_numpy(gt < 0)[None, None])[0, 0].numpy()
    np.testing.assert_array_equal(z_tilde, expected[::step, ::step])
    np.testing.assert_array_equal(difference, (logits - expected)[::step, ::step])


def test_sampling_is_for_maps_with_a_positive_integer_step(sample):
    logits, gt = sample
    with pytest.raises(ValueError, match="step must be a positive integer, got 0"):
        map_penalty(logits, gt).sample(3, 0)
    crops = random_crops()
    penalty = crop_penalty(crops, *crops.assemble(), np.zeros(crops.shape, np.int32))
    assert map_penalty(logits, gt).can_sample and not penalty.can_sample
    with pytest.raises(ValueError, match="sampling works on the penalty of one map"):
        penalty.sample(3, 2)


def test_map_penalty_rejects_mismatched_ground_truth(sample):
    logits, gt = sample
    with pytest.raises(ValueError, match=r"the ground truth must have the same shape as the logits, \(96, 128\)"):
        map_penalty(logits, gt[:50])
    with pytest.raises(TypeError, match="the ground truth must hold integer instance ids, got dtype float64"):
        map_penalty(logits, gt.astype(float))
    with pytest.raises(ValueError, match=r"the ground truth may only use -1 \(unannotated\), .* found -2"):
        map_penalty(logits, np.where(gt > 0, gt, -2))


def random_crops(shape=(40, 50), n=6, half=8, seed=0) -> InstanceCrops:
    generator = torch.Generator().manual_seed(seed)
    rows = torch.randint(0, shape[0], (n,), generator=generator)
    cols = torch.randint(0, shape[1], (n,), generator=generator)
    seeds = torch.stack((rows, cols), 1)
    centres = torch.stack((rows.clamp(half, shape[0] - half), cols.clamp(half, shape[1] - half)), 1)
    logits = torch.randn(n, 1, 2 * half, 2 * half, generator=generator).round(decimals=1)  # ties happen
    return InstanceCrops(logits, seeds, centres - half, shape)


def test_assemble_takes_the_max_over_crops_and_the_first_seed_on_ties():
    crops = random_crops()
    shown, pick = crops.assemble()
    best = np.full(crops.shape, -np.inf)
    owner = np.full(crops.shape, -1)
    rows, cols = crops.coordinates()
    for k in range(len(crops.logits)):
        for value, r, c in zip(crops.logits[k, 0].ravel().tolist(), rows[k].ravel().tolist(),
                               cols[k].ravel().tolist(), strict=True):
            if value > best[r, c]:
                best[r, c], owner[r, c] = value, k
    covered = owner >= 0
    np.testing.assert_array_equal(shown[covered], best[covered].astype(np.float32))
    assert (shown[~covered] == shown[covered].min()).all()
    np.testing.assert_array_equal(np.where(pick.numpy() >= 0, pick.numpy() // crops.size ** 2, -1).reshape(crops.shape),
                                  owner)


@pytest.mark.parametrize("window", [1, 3, 7])
def test_crop_penalty_penalizes_each_crop_against_the_cell_under_its_seed(window):
    crops = random_crops()
    gt = np.zeros(crops.shape, np.int32)
    gt[5:25, 5:30], gt[25:40, 30:50] = 1, 2
    shown, pick = crops.assemble()
    z_tilde, difference = crop_penalty(crops, shown, pick, gt).compute(window)
    rows, cols = crops.coordinates()
    for k in range(len(crops.logits)):  # one crop at a time, as in upstream's loss
        cell = gt[tuple(crops.seeds[k].tolist())]
        target = (gt[rows[k].numpy(), cols[k].numpy()] == cell) & (cell > 0)
        expected = scnp(crops.logits[k:k + 1], torch.from_numpy(target)[None, None], window)[0, 0]
        mine = (pick.numpy() >= 0) & (pick.numpy() // crops.size ** 2 == k)
        local = pick.numpy()[mine] % crops.size ** 2
        np.testing.assert_array_equal(z_tilde.reshape(-1)[mine], expected.reshape(-1).numpy()[local])
    np.testing.assert_array_equal(difference, shown - z_tilde)


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_error_map_counts_match_topology_errors_and_paints_the_named_cells(seed):
    gt = synthetic_image((128, 128), rng=seed).labels
    rng = np.random.default_rng(seed)
    pred = np.roll(gt, 2, axis=1)
    pred[pred == 3] = 0  # a missed cell
    pred[40:44, 40:48] = 999  # a spurious one
    pred[(gt == 5) & (np.arange(128)[None, :] % 16 < 8)] = 777  # a split / fragmented one
    pred[rng.random(gt.shape) < 0.01] = 0
    out, counts = error_map(gt, pred)
    expected = topology_errors(gt, pred)
    assert counts == {"split": expected["splits"], "merged": expected["merges"],
                      "fragmented": expected["fragmented"], "missed": expected["missed"],
                      "spurious": expected["spurious"]}
    errors, painted = classify_errors(gt, pred), np.zeros(gt.shape, np.uint8)
    for value, name in enumerate(ERROR_CLASSES, start=1):  # by hand: gt pixels for split and missed cells
        for cell in getattr(errors, name).tolist():
            painted[(gt if name in ("split", "missed") else pred) == cell] = value
    np.testing.assert_array_equal(out, painted)


def test_error_map_paints_each_class_from_its_side():
    gt = np.array([[1, 1, 1, 1, 0, 2, 2, 0, 3, 0, 4]])
    pred = np.array([[5, 5, 6, 6, 0, 0, 0, 0, 7, 7, 7]])
    out, counts = error_map(gt, pred)
    split, merged, missed = (ERROR_CLASSES.index(name) + 1 for name in ("split", "merged", "missed"))
    assert out.tolist() == [[split] * 4 + [0, missed, missed, 0, merged, merged, merged]]
    assert counts == {"split": 1, "merged": 1, "fragmented": 0, "missed": 1, "spurious": 0}


def test_error_map_paints_classes_in_order():
    gt = np.array([[1, 1, 1, 1, 0, 2, 2, 0, 0, 0]])
    pred = np.array([[5, 5, 6, 6, 0, 0, 0, 0, 9, 9]])
    out, counts = error_map(gt, pred)
    split, missed, spurious = (ERROR_CLASSES.index(name) + 1 for name in ("split", "missed", "spurious"))
    assert out.tolist() == [[split] * 4 + [0, missed, missed, 0, spurious, spurious]]
    assert counts == {"split": 1, "merged": 0, "fragmented": 0, "missed": 1, "spurious": 1}


def test_error_map_rejects_bad_labels():
    with pytest.raises(ValueError, match=r"pred must have the same shape as gt, \(2, 2\), got \(3, 2\)"):
        error_map(np.zeros((2, 2), int), np.zeros((3, 2), int))
    with pytest.raises(TypeError, match="gt must hold integer instance ids"):
        error_map(np.zeros((2, 2), float), np.zeros((2, 2), int))
    with pytest.raises(ValueError, match=r"pred may only use 0 \(background\) and positive ids, found -1"):
        error_map(np.zeros((2, 2), int), -np.ones((2, 2), int))


def test_shape_features_are_cell_shapes_indexed_by_label():
    labels = synthetic_image((64, 64), rng=1).labels
    features = shape_features(labels)
    assert list(features.columns) == ["index", *cell_shapes(labels).columns]
    np.testing.assert_array_equal(features["index"], np.unique(labels)[1:])
    pd.testing.assert_frame_equal(features.drop(columns="index"), cell_shapes(labels))


def test_shape_colors_map_the_column_through_the_colormap():
    features = pd.DataFrame({"index": [3, 8], "roundness": [0.0, 1.0]})
    colors = shape_colors(features, "roundness")
    np.testing.assert_allclose(colors[3], colormaps["viridis"](0.0))
    np.testing.assert_allclose(colors[8], colormaps["viridis"](1.0))
    assert colors[0][3] == 0 and None in colors
    with pytest.raises(ValueError, match="no column 'solidityy'"):
        shape_colors(features, "solidityy")


def test_histograms_give_fractions_per_bin():
    edges, fractions = histograms({"prediction": np.array([0.05, 0.95, 0.97, np.nan]), "ground truth": np.array([])},
                                  bins=10)
    pred, gt = fractions["prediction"], fractions["ground truth"]
    assert len(edges) == 11 and pred.sum() == pytest.approx(1) and pred[-1] == pytest.approx(2 / 3)
    assert not gt.any()
    edges, fractions = histograms({"penalty": np.array([0.5, 3.5, 4.0])}, bins=4, limits=(0.0, 4.0))
    assert edges.tolist() == [0, 1, 2, 3, 4] and fractions["penalty"].tolist() == [1 / 3, 0, 0, 2 / 3]


def test_window_cache_drops_the_least_recently_used():
    cache = WindowCache(max_bytes=3 * 800)
    for window in (1, 3, 5):
        cache.put(("seed", window), (np.zeros(100),))
    cache.get(("seed", 1))
    cache.put(("seed", 7), (np.zeros(100),))
    assert ("seed", 3) not in cache and ("seed", 1) in cache and len(cache) == 3 and cache.nbytes == 2400


def test_symmetric_limits_and_labels_from_logits():
    assert symmetric_limits(np.array([-1.0, 3.0, np.inf]), percentile=100) == (-3.0, 3.0)
    labels = labels_from_logits(np.array([[1.0, -1, 1], [-1, 1, -1], [-1, -1, -1]]))
    assert labels.max() == 1  # 8-connected


def test_penalty_column_follows_the_features_rows(sample):
    """One value per row, in the table's order, each the mean |z - z~| over the cell dilated by w // 2."""
    from scipy import ndimage

    logits, gt = sample
    _, difference = map_penalty(logits, gt).compute(5)
    features = shape_features(gt).iloc[::-1]  # any row order
    features = pd.concat([features, pd.DataFrame({"index": [gt.max() + 7]})], ignore_index=True)  # a label not drawn
    column = penalty_column(features, gt, difference, 5)
    expected = [np.abs(difference)[ndimage.binary_dilation(gt == cell, np.ones((3, 3), bool), iterations=2)].mean()
                for cell in features["index"][:-1]]
    np.testing.assert_allclose(column[:-1], expected, rtol=1e-6)
    assert np.isnan(column[-1]) and column[:-1].max() > 0


def two_seed_crops():
    """Two 4 x 4 crops on a 6 x 8 image: seeds (2, 2) and (2, 5); crop 0 wins columns 0-3, crop 1 columns 4-7."""
    logits = torch.full((2, 1, 4, 4), -5.0)
    logits[0, 0, 1:3, 1:4] = 2.0  # crop 0 covers columns 0-3, foreground at columns 1-3
    logits[1, 0, 1:3, 0:3] = 3.0  # crop 1 covers columns 4-7, foreground at columns 4-6
    crops = InstanceCrops(logits, torch.tensor([[2, 2], [2, 5]]), torch.tensor([[0, 0], [0, 4]]), (6, 8))
    _, pick = crops.assemble()
    return crops, pick


def test_own_crop_is_the_seeded_crop_owning_most_of_the_cell():
    crops, pick = two_seed_crops()
    prediction = np.zeros((6, 8), np.int32)
    prediction[1:3, 1:7] = 7  # one cell (a merge): both seeds inside; crop 0 owns 3 columns of it, crop 1 owns 3
    prediction[1:3, 1] = 0  # now crop 1 owns more of it
    assert own_crop(crops, pick, prediction, 7) == 1
    prediction[1:3, 1] = 7
    prediction[1:3, 6] = 0  # and now crop 0
    assert own_crop(crops, pick, prediction, 7) == 0
    assert own_crop(crops, pick, prediction, 9) is None  # no such cell
    unseeded = np.zeros((6, 8), np.int32)
    unseeded[3, 5:7] = 3  # no seed inside: the crop owning its pixels
    assert own_crop(crops, pick, unseeded, 3) == 1


def test_cell_crop_penalizes_against_the_ground_truth_cell_under_its_seed():
    crops, pick = two_seed_crops()
    prediction = np.zeros((6, 8), np.int32)
    prediction[1:3, 4:7] = 2
    gt = np.zeros((6, 8), np.int32)
    gt[1:3, 4:6] = 5
    gt[0, 4:8] = -1  # unannotated: background for the crop, as upstream's mask loss sees it
    crop = cell_crop(crops, pick, prediction, 2, 3, gt)
    assert (crop.label, crop.seed, crop.top_left) == (2, (2, 5), (0, 4))
    target = np.zeros((4, 4), bool)
    target[1:3, 0:2] = True
    z = crops.logits[1, 0].numpy()
    expected = np.empty_like(z)  # brute force: the worst logit of the pixel's class in its clipped 3 x 3
    for r in range(4):
        for c in range(4):
            window = (slice(max(r - 1, 0), r + 2), slice(max(c - 1, 0), c + 2))
            same = target[window] == target[r, c]
            expected[r, c] = z[window][same].min() if target[r, c] else z[window][same].max()
    np.testing.assert_array_equal(crop.logits, z)
    np.testing.assert_array_equal(crop.penalized, expected)
    np.testing.assert_array_equal(crop.difference, z - expected)
    assert cell_crop(crops, pick, prediction, 2, 3).penalized is None


def test_column_limits_and_colours_of_the_penalty():
    features = pd.DataFrame({"index": [1, 2, 3], "scnp_penalty": [0.5, 2.0, np.nan]})
    assert column_limits("scnp_penalty", features, None) == (0.0, 2.0)
    assert column_limits("roundness", features) == (0.0, 1.0)
    colors = shape_colors(features, "scnp_penalty", "magma", (0.0, 2.0))
    np.testing.assert_allclose(colors[1], colormaps["magma"](0.25))
    np.testing.assert_allclose(colors[3], colors[None])  # no value: grey
