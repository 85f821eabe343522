"""Sample data: what each sample holds, and that napari lists and opens them."""

from __future__ import annotations

import numpy as np
import pytest
from instanseg_scnp.data import synthetic_image

from napari_instanseg_scnp._sample_data import (
    SYNTHETIC_SEED,
    SYNTHETIC_SHAPE,
    immunohistochemistry,
    synthetic_cells,
    threshold_logits,
)


def test_synthetic_cells_come_with_their_ground_truth():
    (image, _, _), (logits, logit_meta, _), (labels, _, kind) = synthetic_cells()
    expected = synthetic_image(SYNTHETIC_SHAPE, modality="fluorescence", rng=SYNTHETIC_SEED)
    np.testing.assert_array_equal(image, expected.image[..., 0])
    np.testing.assert_array_equal(labels, expected.labels)
    assert kind == "labels" and logits.dtype == np.float32 and "logits" in logit_meta["name"]
    assert logits[labels > 0].mean() > 0 > logits[labels == 0].mean()


def test_immunohistochemistry_is_scikit_image_s():
    from skimage import data

    (rgb, meta, _), (logits, _, _), (nuclei, nuclei_meta, kind) = immunohistochemistry()
    np.testing.assert_array_equal(rgb, data.immunohistochemistry())
    assert meta["rgb"] and kind == "labels" and "reference" in nuclei_meta["name"]
    assert logits.shape == nuclei.shape == rgb.shape[:2] and nuclei.max() > 50


def test_threshold_logits_cross_zero_at_otsu():
    z = threshold_logits(np.r_[np.zeros(50), np.ones(50)][None].repeat(3, 0))
    assert z.min() < 0 < z.max()


@pytest.mark.parametrize("key, n_layers", [("synthetic", 3), ("immunohistochemistry", 3)])
def test_napari_opens_the_samples(make_napari_viewer, key, n_layers):
    viewer = make_napari_viewer()
    viewer.open_sample("napari-instanseg-scnp", key)
    assert len(viewer.layers) == n_layers
    assert [type(layer).__name__ for layer in viewer.layers] == ["Image", "Image", "Labels"]
