"""The model path: loading a run directory or a .pt file, and taking the model's output apart."""

from __future__ import annotations

import warnings

import numpy as np
import pytest
import torch
from instanseg_scnp.evaluation import load_segmenter

from napari_instanseg_scnp._model import ModelError, load_model, prepare_image, resolve_model_path, run_model


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


def test_load_model_rejects_files_that_are_not_exported_models(tmp_path):
    junk = tmp_path / "junk.pt"
    junk.write_bytes(b"not a model")
    with pytest.raises(ModelError, match="is not a TorchScript model"):
        load_model(junk)
    plain = tmp_path / "plain.pt"
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", FutureWarning)  # torch >= 2.10 deprecates TorchScript
        torch.jit.save(torch.jit.script(torch.nn.Linear(2, 2)), str(plain))
    with pytest.raises(ModelError, match="is not an exported InstanSeg model"):
        load_model(plain)


def test_prepare_image_checks_the_layout():
    assert prepare_image(np.zeros((32, 40)), rgb=False).shape == (1, 3, 32, 40)
    assert prepare_image(np.zeros((32, 40, 4), np.uint8), rgb=True).shape == (1, 3, 32, 40)
    with pytest.raises(ValueError, match=r"2-D grayscale or RGB image, got shape \(2, 32, 40\)"):
        prepare_image(np.zeros((2, 32, 40)), rgb=False)


def test_run_model_is_faithful_to_upstream(run_dir, cells, seed_threshold):
    image, _ = cells
    model = load_model(run_dir)
    output = run_model(model, image, rgb=False, seed_threshold=seed_threshold)
    # the labels are upstream inference's, as instanseg_scnp.evaluation runs it
    expected = load_segmenter(run_dir / "instanseg.pt")(image[..., None], None)
    reference = run_model(model, image, rgb=False)
    np.testing.assert_array_equal(reference.labels, expected)
    # the seed map is the network's last channel on the normalized image
    with torch.no_grad():
        raw = model.fcn(prepare_image(image, rgb=False))
    np.testing.assert_allclose(output.seed_logits, raw[0, -1].numpy(), atol=1e-5)
    # one crop per seed, and the assembled map says foreground where upstream's labels do
    assert len(output.crops.logits) > 0 and output.crops.logits.shape[1:] == (1, 64, 64)
    assert output.labels.max() > 0
    foreground = output.mask_logits >= output.mask_threshold
    assert (foreground == (output.labels > 0)).mean() > 0.99
    assert output.seed_threshold == pytest.approx(15 * (seed_threshold - 0.5))
