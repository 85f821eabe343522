"""Inference on exported models: paths, image preparation, labels through upstream, outputs taken apart."""

from __future__ import annotations

import warnings

import numpy as np
import pytest
import torch
from instanseg import InstanSeg
from instanseg.utils.utils import percentile_normalize

from instanseg_scnp.upstream import (
    MIN_INFERENCE_SIZE,
    ModelError,
    load_model,
    model_outputs,
    prepare_image,
    quiet_upstream,
    resolve_model_path,
    segment,
)
from instanseg_scnp.upstream.inference import pad_for_inference


def test_resolve_model_path_takes_a_run_directory_or_a_file(run_dir):
    assert resolve_model_path(run_dir) == run_dir / "instanseg.pt"
    assert resolve_model_path(str(run_dir / "instanseg.pt")) == run_dir / "instanseg.pt"


@pytest.mark.parametrize("make, message", [
    (lambda tmp: "", "no model chosen"),
    (lambda tmp: tmp / "nowhere.pt", "does not exist"),
    (lambda tmp: tmp, "has no instanseg.pt"),
])
def test_resolve_model_path_says_what_is_wrong(tmp_path, make, message):
    with pytest.raises(ModelError, match=message):
        resolve_model_path(make(tmp_path))


def test_load_model_rejects_files_that_are_not_exported_models(tmp_path, run_dir):
    junk = tmp_path / "junk.pt"
    junk.write_bytes(b"not a model")
    with pytest.raises(ModelError, match="is not a readable TorchScript model"):
        load_model(junk)
    truncated = tmp_path / "truncated.pt"
    truncated.write_bytes((run_dir / "instanseg.pt").read_bytes()[:5000])
    with pytest.raises(ModelError, match="was it truncated"):
        load_model(truncated)
    plain = tmp_path / "plain.pt"
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", FutureWarning)  # torch >= 2.10 deprecates TorchScript
        torch.jit.save(torch.jit.script(torch.nn.Linear(2, 2)), str(plain))
    with pytest.raises(ModelError, match="is not an exported InstanSeg model"):
        load_model(plain)


@pytest.mark.parametrize("shape, channel_axis, taken", [
    ((32, 40), None, lambda a: np.stack([a] * 3)),
    ((32, 40, 1), -1, lambda a: np.repeat(np.moveaxis(a, -1, 0), 3, axis=0)),
    ((32, 40, 3), 2, lambda a: np.moveaxis(a, -1, 0)),
    ((32, 40, 4), -1, lambda a: np.moveaxis(a, -1, 0)[:3]),  # RGBA: alpha dropped
    ((3, 32, 40), 0, lambda a: a),
])
def test_prepare_image_layouts_and_upstreams_normalization(shape, channel_axis, taken):
    image = np.random.default_rng(0).integers(0, 255, shape).astype(np.uint8)
    raw = prepare_image(image, channel_axis=channel_axis, normalize=False)
    expected = taken(image).astype(np.float32)
    np.testing.assert_array_equal(raw[0].numpy(), expected)
    normalized = prepare_image(image, channel_axis=channel_axis)
    oracle = percentile_normalize(torch.from_numpy(expected)).clamp(-2, 3)  # (C, H, W), as eval_small_image
    torch.testing.assert_close(normalized[0], oracle)


@pytest.mark.parametrize("image, channel_axis, error, message", [
    (np.zeros((2, 32, 40)), None, ValueError, r"3-D with channel_axis naming its channel axis; got shape \(2, 32, 40\)"),
    (np.zeros((32, 40)), 0, ValueError, "2-D .* with channel_axis=None"),
    (np.zeros((32, 40, 2)), -1, ValueError, "the model takes 3 channels .* got 2"),
    (np.zeros((8, 40)), None, ValueError, r"too small for the model: \(8, 40\)"),
    (np.full((32, 40), np.nan), None, ValueError, "NaN or infinite"),
    (np.zeros((32, 40), bool).astype(object), None, TypeError, "real numbers, got dtype object"),
])
def test_prepare_image_bad_input(image, channel_axis, error, message):
    with pytest.raises(error, match=message):
        prepare_image(image, channel_axis=channel_axis)


@pytest.mark.parametrize("shape", [(40, 48), (64, 64), (10, 100), (200, 30)])
def test_pad_for_inference_reaches_the_minimum_and_crops_back(shape):
    tensor = torch.rand(1, 3, *shape, generator=torch.Generator().manual_seed(0))
    padded, crop = pad_for_inference(tensor)
    assert min(padded.shape[-2:]) >= MIN_INFERENCE_SIZE and padded.shape[:2] == (1, 3)
    torch.testing.assert_close(padded[..., crop[0], crop[1]], tensor, rtol=0, atol=0)


def test_segment_is_upstreams_inference(run_dir, cells):
    image, _ = cells
    with quiet_upstream():
        oracle = InstanSeg(torch.jit.load(str(run_dir / "instanseg.pt")), device="cpu", verbosity=0)
        expected = oracle.eval_small_image(torch.from_numpy(np.stack([image] * 3)), None, return_image_tensor=False,
                                           seed_threshold=0.2)
    labels = segment(load_model(run_dir), image, seed_threshold=0.2)
    assert labels.dtype == np.int32 and labels.max() > 0
    np.testing.assert_array_equal(labels, expected.squeeze().numpy())


def test_segment_pads_small_images_and_cuts_the_labels_back(run_dir, cells):
    image = cells[0][:40, :48]
    labels = segment(load_model(run_dir), image[..., None], channel_axis=-1, seed_threshold=0.2)
    assert labels.shape == (40, 48)


def test_model_outputs_are_faithful_to_upstream(run_dir, cells):
    image, _ = cells
    model = load_model(run_dir)
    seed_threshold = 0.2
    output = model_outputs(model, image, seed_threshold=seed_threshold)
    # the labels are upstream inference's
    np.testing.assert_array_equal(output.labels, segment(model, image, seed_threshold=seed_threshold))
    # the seed map is the network's last channel on the normalized image
    with torch.no_grad():
        raw = model.fcn(prepare_image(image))
    np.testing.assert_allclose(output.seed_logits, raw[0, -1].numpy(), atol=1e-5)
    # one crop per seed, and the assembled map says foreground where upstream's labels do
    assert len(output.crops.logits) > 0 and output.crops.logits.shape[1:] == (1, 64, 64)
    assert output.labels.max() > 0
    foreground = output.mask_logits >= output.mask_threshold
    assert (foreground == (output.labels > 0)).mean() > 0.99
    assert output.seed_threshold == pytest.approx(15 * (seed_threshold - 0.5))


def test_model_outputs_refuses_images_upstream_cannot_take(run_dir, cells):
    with pytest.raises(ValueError, match=r"too small for upstream's model: \(40, 48\)"):
        model_outputs(load_model(run_dir), cells[0][:40, :48])
