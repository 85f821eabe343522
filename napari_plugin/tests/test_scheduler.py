"""The window scheduler (no viewer) and its two worker functions, against oracles of their own."""

from __future__ import annotations

import itertools

import numpy as np
import pytest
import torch
from instanseg_scnp import scnp
from instanseg_scnp.data import synthetic_image
from instanseg_scnp.metrics import cell_penalty
from instanseg_scnp.upstream import InstanceCrops

from napari_instanseg_scnp import _compute
from napari_instanseg_scnp._analysis import Inputs, analyse
from napari_instanseg_scnp._compute import WindowCache, crop_penalty, map_penalty
from napari_instanseg_scnp._scheduler import (
    FEATURES,
    LAYERS,
    Job,
    WindowScheduler,
    run_job,
    window_features,
    window_layers,
)

WINDOWS = range(1, 16, 2)


def layers_of(key):
    """A stand-in stage-1 result, different per key."""
    value = float(key[1])
    return np.full((2, 2), value, np.float32), np.full((2, 2), -value, np.float32)


def features_of(key):
    return np.array([float(key[1])]), np.empty(0)


def fake_result(job):
    return features_of(job.key) if job.stage == FEATURES else layers_of(job.key)


def drain(scheduler, limit=100):
    """Run every job the scheduler hands out, in order; the (key, stage) of each."""
    done = []
    for _ in range(limit):
        job = scheduler.next_job()
        if job is None:
            return done
        done.append((job.key, job.stage))
        scheduler.finished(job, fake_result(job))
    raise AssertionError("the scheduler never ran out of jobs")


# ---------------------------------------------------------------------------------------------- the scheduler
def test_coalescing_starts_only_the_latest_key_requested_while_a_job_runs():
    scheduler = WindowScheduler(WINDOWS, prefetch=False)
    assert scheduler.request(("seed map", 3)) is None
    job = scheduler.next_job()
    assert (job.key, job.stage) == (("seed map", 3), LAYERS)
    for window in (5, 7, 9):
        assert scheduler.request(("seed map", window)) is None
        assert scheduler.next_job() is None  # one job at a time
    assert scheduler.finished(job, layers_of(job.key)) is False  # no longer wanted: cached, not shown
    assert scheduler.result(("seed map", 3)) is not None
    started = drain(scheduler)
    assert started == [(("seed map", 9), LAYERS), (("seed map", 9), FEATURES)]
    assert scheduler.result(("seed map", 5)) is None and scheduler.result(("seed map", 7)) is None


def test_a_result_of_an_older_generation_is_neither_shown_nor_cached():
    scheduler = WindowScheduler(WINDOWS, prefetch=False)
    scheduler.request(("seed map", 3))
    job = scheduler.next_job()
    scheduler.reset()  # a new analysis while the job runs
    assert scheduler.wanted is None
    scheduler.request(("seed map", 3))
    assert scheduler.next_job() is None  # the stale job still runs: one computation at a time
    assert scheduler.finished(job, layers_of(job.key)) is False
    assert scheduler.result(("seed map", 3)) is None and len(scheduler.cache) == 0
    fresh = scheduler.next_job()
    assert fresh.key == ("seed map", 3) and fresh.generation == scheduler.generation == job.generation + 1
    assert scheduler.finished(fresh, layers_of(fresh.key)) is True

    failing = scheduler.next_job()
    scheduler.reset()
    assert scheduler.failed(failing) is False  # an old generation's error is not the user's concern


def test_prefetch_takes_the_nearest_uncomputed_window_of_the_same_map_ties_to_the_smaller():
    scheduler = WindowScheduler(WINDOWS)
    scheduler.request(("instance masks", 7))
    scheduler.cache.put(("instance masks", 9), layers_of(("instance masks", 9)))  # computed already
    scheduler.cache.put(("seed map", 5), layers_of(("seed map", 5)))  # another map: not this one's
    order = drain(scheduler)
    assert order[:2] == [(("instance masks", 7), LAYERS), (("instance masks", 7), FEATURES)]
    prefetched = [5, 3, 11, 1, 13, 15]  # 9 is cached; 5 and 9 tie, 3 and 11 tie
    assert order[2:8] == [(("instance masks", w), LAYERS) for w in prefetched]
    assert order[8:] == [(("instance masks", w), FEATURES) for w in [5, 9, 3, 11, 1, 13, 15]]
    assert all(key[0] == "instance masks" for key, _ in order)
    assert drain(scheduler) == []


def test_stage_one_is_shown_before_stage_two_exists_and_stage_two_joins_its_entry():
    scheduler = WindowScheduler(WINDOWS, prefetch=False)
    key = ("seed map", 5)
    scheduler.request(key)
    first = scheduler.next_job()
    z_tilde, difference = layers_of(key)
    assert scheduler.finished(first, (z_tilde, difference)) is True  # show the layers now
    shown = scheduler.result(key)
    assert len(shown) == 2 and shown[0] is z_tilde and shown[1] is difference
    second = scheduler.next_job()
    assert (second.key, second.stage) == (key, FEATURES)
    assert second.layers[0] is z_tilde and second.layers[1] is difference
    assert len(scheduler.request(key)) == 2  # still without features
    prediction, ground_truth = features_of(key)
    assert scheduler.finished(second, (prediction, ground_truth)) is True  # update the features
    entry = scheduler.result(key)
    assert len(entry) == 4 and entry[0] is z_tilde and entry[1] is difference and entry[2] is prediction
    assert scheduler.next_job() is None


def test_features_of_layers_the_cache_dropped_meanwhile_come_with_their_layers():
    scheduler = WindowScheduler(WINDOWS, cache=WindowCache(max_bytes=40), prefetch=False)  # one entry fits
    key = ("seed map", 3)
    scheduler.request(key)
    scheduler.finished(scheduler.next_job(), layers_of(key))
    features_job = scheduler.next_job()
    scheduler.cache.put(("seed map", 5), layers_of(("seed map", 5)))  # drops key
    assert key not in scheduler.cache
    scheduler.finished(features_job, features_of(key))
    entry = scheduler.result(key)
    assert len(entry) == 4 and entry[0] is features_job.layers[0]


def test_a_cached_window_returns_at_once_and_starts_no_job():
    scheduler = WindowScheduler(WINDOWS, prefetch=False)
    key = ("seed map", 3)
    scheduler.request(key)
    drain(scheduler)
    scheduler.request(("seed map", 5))
    drain(scheduler)
    cached = scheduler.request(key)
    assert cached is not None and len(cached) == 4
    assert scheduler.next_job() is None and not scheduler.pending()


def test_a_failed_stage_is_not_retried_until_its_key_is_requested_again():
    scheduler = WindowScheduler(WINDOWS)
    key = ("seed map", 3)
    scheduler.request(key)
    job = scheduler.next_job()
    assert scheduler.failed(job) is True
    following = [k for k, _ in drain(scheduler)]
    assert key not in following and following  # the prefetch goes on with the other windows
    scheduler.request(key)
    assert scheduler.next_job().key == key


def test_only_the_running_job_can_be_reported():
    scheduler = WindowScheduler(WINDOWS)
    scheduler.request(("seed map", 3))
    job = scheduler.next_job()
    with pytest.raises(ValueError, match="is not the running job"):
        scheduler.finished(Job(job.generation, job.key, job.stage), layers_of(job.key))
    assert scheduler.pending()


def test_a_cache_too_small_for_every_window_does_not_keep_the_prefetch_going():
    scheduler = WindowScheduler(WINDOWS, cache=WindowCache(max_bytes=40))  # one entry at a time
    scheduler.request(("seed map", 7))
    order = drain(scheduler)
    assert len([1 for _, stage in order if stage == LAYERS]) == len(WINDOWS)


# ---------------------------------------------------------------------------------------------- the workers
def brute_force_scnp(z, target, window, ignore=None):
    """z~ by loops over the definition: the worst logit of the pixel's own class in its clipped window."""
    ignore = np.zeros(z.shape, bool) if ignore is None else ignore
    rows, cols = (window, window) if np.isscalar(window) else window
    out = z.copy()
    height, width = z.shape
    for i, j in itertools.product(range(height), range(width)):
        if ignore[i, j]:
            continue
        box = (slice(max(0, i - rows // 2), i + rows // 2 + 1), slice(max(0, j - cols // 2), j + cols // 2 + 1))
        same = (target[box] == target[i, j]) & ~ignore[box]
        out[i, j] = z[box][same].min() if target[i, j] else z[box][same].max()
    return out


@pytest.fixture
def small_blocks(monkeypatch):
    """Blocks of a few rows (or crops) each, so that the block edges and the threads are exercised."""
    monkeypatch.setattr(_compute, "BLOCK_ELEMENTS", 64)
    torch_threads = torch.get_num_threads()
    torch.set_num_threads(2)
    yield
    torch.set_num_threads(torch_threads)


@pytest.mark.parametrize("window", [1, 3, 5, 9, 15, (3, 7)])
@pytest.mark.parametrize("unannotated", [False, True])
def test_window_layers_equal_a_brute_force_loop(window, unannotated, small_blocks):
    rng = np.random.default_rng(3)
    z = rng.normal(size=(23, 19)).astype(np.float32)  # tie-free
    gt = (rng.random(z.shape) < 0.4).astype(np.int32) * rng.integers(1, 4, z.shape).astype(np.int32)
    if unannotated:
        gt[rng.random(z.shape) < 0.15] = -1
    z_tilde, difference = window_layers(map_penalty(z, gt), window)
    expected = brute_force_scnp(z, gt > 0, window, gt < 0)
    np.testing.assert_array_equal(z_tilde, expected)
    np.testing.assert_array_equal(difference, z - expected)
    assert z_tilde.dtype == difference.dtype == np.float32


@pytest.mark.parametrize("window", [3, 9, (5, 11)])
@pytest.mark.parametrize("step", [2, 3])
def test_penalty_samples_equal_a_brute_force_loop_at_the_samples(window, step, small_blocks):
    rng = np.random.default_rng(4)
    z = rng.normal(size=(23, 19)).astype(np.float32)
    gt = (rng.random(z.shape) < 0.4).astype(np.int32) * rng.integers(1, 4, z.shape).astype(np.int32)
    gt[rng.random(z.shape) < 0.15] = -1
    z_tilde, difference = map_penalty(z, gt).sample(window, step)
    expected = brute_force_scnp(z, gt > 0, window, gt < 0)
    np.testing.assert_array_equal(z_tilde, expected[::step, ::step])
    np.testing.assert_array_equal(difference, (z - expected)[::step, ::step])
    assert z_tilde.dtype == difference.dtype == np.float32


def test_window_layers_of_instance_mask_crops_equal_a_brute_force_loop_per_crop(small_blocks):
    generator = torch.Generator().manual_seed(1)
    shape, half, n = (40, 44), 6, 9
    seeds = torch.stack((torch.randint(0, shape[0], (n,), generator=generator),
                         torch.randint(0, shape[1], (n,), generator=generator)), 1)
    top_left = torch.stack((seeds[:, 0].clamp(half, shape[0] - half), seeds[:, 1].clamp(half, shape[1] - half)), 1)
    logits = torch.randn(n, 1, 2 * half, 2 * half, generator=generator)
    crops = InstanceCrops(logits, seeds, top_left - half, shape)
    gt = np.zeros(shape, np.int32)
    gt[4:20, 3:25], gt[22:38, 20:42] = 1, 2
    shown, pick = crops.assemble()
    z_tilde, difference = window_layers(crop_penalty(crops, shown, pick, gt), 5)
    rows, cols = crops.coordinates()
    expected = shown.copy().reshape(-1)
    owner = pick.numpy()
    for k in range(n):
        cell = gt[tuple(seeds[k].tolist())]
        target = (gt[rows[k].numpy(), cols[k].numpy()] == cell) & (cell > 0)
        penalized = brute_force_scnp(logits[k, 0].numpy(), target, 5).reshape(-1)
        mine = (owner >= 0) & (owner // (2 * half) ** 2 == k)
        expected[mine] = penalized[owner[mine] % (2 * half) ** 2]
    np.testing.assert_array_equal(z_tilde.reshape(-1), expected)
    np.testing.assert_array_equal(difference, shown - z_tilde)


@pytest.mark.parametrize("window", [3, 9])
def test_window_layers_equal_the_operator_bit_for_bit_on_a_larger_map(window, small_blocks, monkeypatch):
    monkeypatch.setattr(_compute, "BLOCK_ELEMENTS", 2**12)
    rng = np.random.default_rng(window)
    z = rng.normal(size=(150, 333)).astype(np.float32)
    z[rng.random(z.shape) < 0.01] = np.inf
    z[rng.random(z.shape) < 0.01] = -np.inf
    z[rng.random(z.shape) < 0.01] = 0.0
    gt = synthetic_image(z.shape, rng=window).labels.astype(np.int32)
    gt[:7, :40] = -1
    z_tilde, _ = window_layers(map_penalty(z, gt), window)
    with torch.no_grad():
        expected = scnp(torch.from_numpy(z)[None, None], torch.from_numpy(gt > 0)[None, None], window,
                        ignore=torch.from_numpy(gt < 0)[None, None])[0, 0].numpy()
    np.testing.assert_array_equal(z_tilde.view(np.int32), expected.view(np.int32))


def test_window_layers_propagate_nan_to_same_class_neighbours_only():
    z = np.zeros((7, 9), np.float32)
    gt = np.zeros((7, 9), np.int32)
    gt[:, 5:] = 1
    z[3, 4] = np.nan  # background, next to the foreground
    z_tilde, _ = window_layers(map_penalty(z, gt), 3)
    expected = np.zeros(z.shape, bool)
    expected[2:5, 3:5] = True
    np.testing.assert_array_equal(np.isnan(z_tilde), expected)


def brute_force_cell_penalty(difference, labels, window):
    """Mean |difference| over each cell and every pixel within a Chebyshev distance window // 2 of it."""
    radius = window // 2
    ii, jj = np.indices(labels.shape)
    means = {}
    for cell in np.unique(labels[labels > 0]).tolist():
        ci, cj = np.nonzero(labels == cell)
        distance = np.maximum(np.abs(ii[..., None] - ci), np.abs(jj[..., None] - cj)).min(-1)
        means[cell] = float(np.abs(difference[distance <= radius]).mean())
    return means


@pytest.mark.parametrize("window", [1, 3, 7])
def test_window_features_equal_a_brute_force_mean_around_each_cell(window):
    sample = synthetic_image((48, 56), rng=2)
    gt = sample.labels.astype(np.int32)
    rng = np.random.default_rng(window)
    z = (rng.normal(size=gt.shape) + 2 * (gt > 0) - 1).astype(np.float32)
    analysis = analyse(Inputs(image=z, ground_truth=gt))  # no model: cells of z > 0
    difference = rng.normal(size=gt.shape).astype(np.float32)  # any map: the features only measure it
    prediction, ground_truth = window_features(analysis, difference, window, gt)
    for labels, features, column in ((analysis.prediction, analysis.prediction_features, prediction),
                                     (gt, analysis.ground_truth_features, ground_truth)):
        expected = brute_force_cell_penalty(difference, labels, window)
        assert column.shape == (len(features),)
        np.testing.assert_allclose(column, [expected[int(label)] for label in features["index"]], rtol=1e-6)
        direct = cell_penalty(difference, labels, window)
        np.testing.assert_allclose(column, [direct[int(label)] for label in features["index"]], rtol=0)


def test_run_job_runs_each_stage_on_the_analysis():
    sample = synthetic_image((40, 40), rng=4)
    gt = sample.labels.astype(np.int32)
    z = (np.random.default_rng(0).normal(size=gt.shape) + 2 * (gt > 0) - 1).astype(np.float32)
    analysis = analyse(Inputs(image=z, ground_truth=gt))
    scheduler = WindowScheduler(WINDOWS, prefetch=False)
    scheduler.request(("logits", 5))
    layers = scheduler.next_job()
    result = run_job(layers, analysis, gt)
    with torch.no_grad():
        expected = scnp(torch.from_numpy(z)[None, None], torch.from_numpy(gt > 0)[None, None], 5)[0, 0].numpy()
    np.testing.assert_array_equal(result[0], expected)
    assert scheduler.finished(layers, result)
    features = scheduler.next_job()
    prediction, ground_truth = run_job(features, analysis, gt)
    assert len(prediction) == len(analysis.prediction_features) and len(ground_truth) == len(np.unique(gt)) - 1
    scheduler.finished(features, (prediction, ground_truth))
    assert len(scheduler.result(("logits", 5))) == 4
    without = analyse(Inputs(image=z))  # no ground truth: no ground-truth column
    prediction, ground_truth = window_features(without, result[1], 5)
    assert len(prediction) == len(without.prediction_features) and ground_truth.shape == (0,)
