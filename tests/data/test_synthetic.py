"""The synthetic generator: reproducible, exact labels, and the hard cases it promises."""

from __future__ import annotations

import numpy as np
import pytest
from scipy import ndimage

from instanseg_scnp.data import MODALITIES, synthetic_image
from instanseg_scnp.metrics import cell_shapes, count_fragments


@pytest.mark.parametrize("modality", MODALITIES)
def test_synthetic_image_is_reproducible(modality):
    first, again = synthetic_image(rng=3, modality=modality), synthetic_image(rng=3, modality=modality)
    other = synthetic_image(rng=4, modality=modality)
    assert np.array_equal(first.image, again.image) and np.array_equal(first.labels, again.labels)
    assert not np.array_equal(first.labels, other.labels)


@pytest.mark.parametrize(("modality", "channels"), [("fluorescence", 1), ("brightfield", 3)])
def test_synthetic_image_layout(modality, channels):
    sample = synthetic_image((96, 128), modality=modality, rng=0)
    assert sample.image.shape == (96, 128, channels) and sample.image.dtype == np.float32
    assert 0 <= sample.image.min() and sample.image.max() <= 1
    assert sample.labels.shape == sample.classes.shape == (96, 128)


def test_synthetic_labels_are_exact():
    sample = synthetic_image(rng=5)
    labels = sample.labels
    ids, pieces = count_fragments(labels)
    assert ids.tolist() == list(range(1, labels.max() + 1))  # consecutive
    assert (pieces == 1).all()  # every cell is one piece
    assert np.array_equal(sample.classes > 0, labels > 0)
    for box_label, box in enumerate(ndimage.find_objects(labels), start=1):  # one class per cell
        assert len(np.unique(sample.classes[box][labels[box] == box_label])) == 1


@pytest.mark.parametrize("modality", MODALITIES)
def test_synthetic_cells_stand_out_from_the_background(modality):
    sample = synthetic_image(rng=6, modality=modality)
    signal = sample.image.mean(axis=-1)
    inside, outside = signal[sample.labels > 0].mean(), signal[sample.labels == 0].mean()
    assert inside > outside + 0.1 if modality == "fluorescence" else inside < outside - 0.1


def test_synthetic_images_hold_the_hard_cases():
    """Touching cells, a wide spread of sizes, elongated cells and thin necks."""
    samples = [synthetic_image(rng=seed) for seed in range(3)]
    touching = sum(
        int(((a != b) & (a > 0) & (b > 0)).sum())
        for s in samples
        for a, b in ((s.labels[:, 1:], s.labels[:, :-1]), (s.labels[1:], s.labels[:-1]))
    )
    assert touching > 100
    shapes = [cell_shapes(s.labels) for s in samples]
    areas = np.concatenate([t.area for t in shapes])
    assert areas.max() / areas.min() > 20
    assert min(t.roundness.min() for t in shapes) < 0.45  # elongated
    dumbbells = [
        cell_shapes(np.where(s.classes == 2, s.labels, 0)).solidity for s in samples if (s.classes == 2).any()
    ]
    assert dumbbells and np.concatenate(dumbbells).min() < 0.7  # a thin neck is far from convex


@pytest.mark.parametrize(
    ("kwargs", "error", "message"),
    [
        ({"modality": "he"}, ValueError, "modality must be one of 'fluorescence', 'brightfield'"),
        ({"shape": (16, 64)}, ValueError, "each >= 32"),
        ({"shape": (64,)}, ValueError, "shape must be two ints"),
        ({"density": 0}, ValueError, "density must be a positive number"),
    ],
)
def test_synthetic_image_bad_input(kwargs, error, message):
    with pytest.raises(error, match=message):
        synthetic_image(**kwargs)
