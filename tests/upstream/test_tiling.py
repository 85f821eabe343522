"""Tiled inference: upstream's tiling for the labels, the network window by window for the outputs.

The oracles are the whole-image runs of the same functions (tested against upstream in
test_inference.py), the window layout worked out by hand from upstream's constants, and
a model wrapper of the test's own that counts the windows run.
"""

from __future__ import annotations

import numpy as np
import pytest
import torch
from scipy import ndimage

from instanseg_scnp.upstream import (
    MIN_TILE_SIZE,
    Cancelled,
    load_model,
    model_outputs,
    normalizes_per_tile,
    segment,
)


@pytest.fixture(scope="module")
def batch_norm_model(tmp_path_factory):
    """A tiny exported model with batch norm, trained for seconds.

    The session's ``run_dir`` model has instance norm (the demo preset's): its statistics
    are taken over the whole input, so its output on a window differs from its output on
    the whole image everywhere, not only near the window's edges, and no tiling can
    reproduce it. With batch norm (upstream's default) the network is local: an output
    pixel depends on the input within its receptive field only.
    """
    import instanseg_scnp

    out = tmp_path_factory.mktemp("models") / "tiny-batch-norm"
    instanseg_scnp.train(out=out, epochs=4, hotstart=1, epoch_length=16, tile_size=64, layers=(8, 16),
                         mlp_width=5, window_size=32, device="cpu", norm="BATCH")
    return load_model(out)


@pytest.fixture(scope="module")
def image_1024():
    from instanseg_scnp.data import synthetic_image

    return synthetic_image((1024, 1024), modality="fluorescence", rng=3).image[..., 0]


COMPACT = {"window_size": 8}
"""Postprocessing for the cell comparison: the seconds-trained model's instance masks fill their whole
crop, so its cells are the crops; 16 px crops (not its 64) keep the cells nucleus-sized and apart."""

SEAMS_1024_512 = np.array([312, 392, 512, 592, 744, 824])
"""Where upstream's tiling of a 1024 px side into 512 px windows changes anything, worked out by hand:
windows every 512 - 2 * (80 + 20) = 312 px, the last flush with the edge, so at 0, 312 and 512 (internal
edges at 312, 512 and 824); each window's labels are kept from 80 px inside its edges that are not the
image's (first window [0, 512); middle [392, 744), or [392, 824) in the windows at the image's left or
right edge; last [592, 1024)), cells touching those cuts dropped."""


@pytest.fixture(scope="module")
def whole_and_tiled(batch_norm_model, image_1024):
    """Whole-image and tiled (512 px) labels of the 1024 x 1024 image, and the tiled run's progress calls."""
    calls = []
    whole = segment(batch_norm_model, image_1024, **COMPACT)
    tiled = segment(batch_norm_model, image_1024, tile_size=512, progress=lambda *args: calls.append(args),
                    **COMPACT)
    return whole, tiled, calls


def _away_from_seams(bbox: tuple[slice, slice], seams: np.ndarray, margin: int) -> bool:
    return not any(((seams >= s.start - margin) & (seams < s.stop + margin)).any() for s in bbox)


def test_tiled_segment_keeps_the_cells_away_from_the_seams(whole_and_tiled):
    """Each whole-image cell 48 px or more from every seam is a tiled cell, pixel for pixel (up to its id).

    48 px: the network's receptive field (17 px for these layers), the 8 px crop half-size, and the
    neighbours' crops that compete for the cell's pixels. One upstream quirk loosens "pixel for pixel":
    its coordinate map is ``linspace(0, W / 4, W)``, a step of W / (4 (W - 1)) px that depends on the
    width W of what the model runs on (512 px windows, the 1024 px image), so pixels that two crops
    contest almost equally can change hands. The network outputs themselves are equal (next test).
    """
    whole, tiled, _ = whole_and_tiled
    assert whole.shape == tiled.shape == (1024, 1024)
    tiled_boxes = ndimage.find_objects(tiled)
    identical, different = 0, []
    for label, bbox in enumerate(ndimage.find_objects(whole), 1):
        if bbox is None or not _away_from_seams(bbox, SEAMS_1024_512, 48):
            continue
        cell = whole[bbox] == label
        ids = np.unique(tiled[bbox][cell])
        twin = int(ids[0]) if len(ids) == 1 else 0
        if twin and tiled_boxes[twin - 1] == bbox and np.array_equal(tiled[bbox] == twin, cell):
            identical += 1
        else:
            whole_cell = whole == label
            twin_cell = tiled == np.bincount(tiled[whole_cell]).argmax()
            different.append(int((whole_cell != twin_cell).sum()))
    assert identical + len(different) > 300  # ~2,000 cells in all; about a fifth are this far from every seam
    assert identical >= 0.99 * (identical + len(different)), different
    assert max(different, default=0) <= 3  # pixels a near tie changed


def test_tiled_segment_reports_each_of_upstreams_windows(whole_and_tiled):
    _, _, calls = whole_and_tiled
    assert calls == [(k, 9) for k in range(1, 10)]  # 3 x 3 windows (starts 0, 312, 512)


def test_tiled_model_outputs_match_the_whole_image(batch_norm_model):
    """The stitched network output is the whole image's to 1e-5 (float rounding), everywhere.

    The cores' halo (96 px) exceeds the network's receptive field (17 px here) and the windows sit on
    the 32 px grid, so the cores see what they see in the whole image, the image's edges included
    (windows at the bottom and right are padded as upstream pads the image). Labels: upstream's tiling.
    """
    from instanseg_scnp.data import synthetic_image
    from instanseg_scnp.upstream import prepare_image

    image = synthetic_image((640, 640), modality="fluorescence", rng=5).image[..., 0]
    with torch.no_grad():
        seed_map = batch_norm_model.fcn(prepare_image(image))[0, -1]
    # the top 0.05 % of the seed map (a few dozen seeds: quick; the seed map itself does not depend on it)
    seed_threshold = 0.5 + float(torch.quantile(seed_map, 0.9995)) / 15
    calls = []
    whole = model_outputs(batch_norm_model, image, seed_threshold=seed_threshold)
    tiled = model_outputs(batch_norm_model, image, seed_threshold=seed_threshold, tile_size=384,
                          progress=lambda *args: calls.append(args))
    np.testing.assert_allclose(tiled.seed_logits, whole.seed_logits, rtol=0, atol=1e-5)
    np.testing.assert_allclose(tiled.mask_logits, whole.mask_logits, rtol=0, atol=1e-4)
    torch.testing.assert_close(tiled.crops.seeds, whole.crops.seeds, rtol=0, atol=0)
    assert len(whole.crops.seeds) > 0
    np.testing.assert_array_equal(tiled.labels, segment(batch_norm_model, image, tile_size=384,
                                                        seed_threshold=seed_threshold))
    # one total: 4 x 4 network windows (cores of 384 - 2 * 96 = 192 px) then 3 x 3 of upstream's
    # (384 px every 384 - 200 = 184 px: starts 0, 184, 256)
    assert calls == [(k, 25) for k in range(1, 26)]


class CountingModel(torch.nn.Module):
    """The exported model, counting the calls of its forward (each a window of upstream's tiling)."""

    def __init__(self, model):
        super().__init__()
        self.model = model
        self.calls = 0

    def forward(self, x, **kwargs):
        self.calls += 1
        return self.model(x, **kwargs)

    def __getattr__(self, name):
        try:
            return super().__getattr__(name)
        except AttributeError:
            return getattr(self._modules["model"], name)


def test_cancel_stops_between_tiles(run_dir, cells):
    image = np.tile(cells[0], (2, 2))  # 512 x 512: 36 windows of 256 px (every 56 px: 0, 56, ..., 224, 256)
    model = CountingModel(load_model(run_dir))
    calls = []
    with pytest.raises(Cancelled, match="after 2 of 36 tiles"):
        segment(model, image, tile_size=256, progress=lambda *args: calls.append(args),
                cancel=lambda: len(calls) >= 2)
    assert calls == [(1, 36), (2, 36)] and model.calls == 2
    calls.clear()
    with pytest.raises(Cancelled, match="after 2 of"):
        model_outputs(model, image, tile_size=256, progress=lambda *args: calls.append(args),
                      cancel=lambda: len(calls) >= 2)
    assert [done for done, _ in calls] == [1, 2]


def test_whole_image_runs_are_one_tile(run_dir, cells):
    image, _ = cells
    model = load_model(run_dir)
    calls = []
    segment(model, image, progress=lambda *args: calls.append(args))
    model_outputs(model, image, progress=lambda *args: calls.append(args))
    assert calls == [(1, 1), (1, 1)]
    with pytest.raises(Cancelled):
        segment(model, image, cancel=lambda: True)


@pytest.mark.parametrize("tile_size", [0, -512, MIN_TILE_SIZE - 1, 512.0, "512", True])
@pytest.mark.parametrize("run", [segment, model_outputs])
def test_bad_tile_size_is_named(run_dir, cells, run, tile_size):
    with pytest.raises(ValueError, match=rf"tile_size must be None .* at least {MIN_TILE_SIZE} .* got "
                                         rf"{tile_size!r}"):
        run(load_model(run_dir), cells[0], tile_size=tile_size)


def test_instance_norm_models_are_told_apart(batch_norm_model, run_dir):
    """The tiny fixtures: instance norm (the demo preset's) normalizes per tile, batch norm does not."""
    instance_norm = load_model(run_dir)
    assert any(type(module).__name__ == "RecursiveScriptModule" and module.original_name == "InstanceNorm2d"
               for _, module in instance_norm.fcn.named_modules())  # what the check reads, seen directly
    assert normalizes_per_tile(instance_norm)
    assert not normalizes_per_tile(batch_norm_model)
    assert normalizes_per_tile(torch.nn.Sequential(torch.nn.Conv2d(1, 1, 3), torch.nn.GroupNorm(1, 1)))
    assert not normalizes_per_tile(torch.nn.Sequential(torch.nn.Conv2d(1, 1, 3), torch.nn.BatchNorm2d(1)))
