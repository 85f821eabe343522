"""A tiny exported model, trained once per session on the built-in synthetic cells."""

from __future__ import annotations

import numpy as np
import pytest


@pytest.fixture(scope="session")
def run_dir(tmp_path_factory):
    """A finished run directory with a real exported model (seconds of training: few, rough cells).

    Its architecture is given in full (upstream's 5-wide pixel classifier, not the demo preset's 10), so that
    the tests that read it do not change with the demo recipe.
    """
    import instanseg_scnp

    out = tmp_path_factory.mktemp("models") / "tiny"
    instanseg_scnp.train(out=out, epochs=2, hotstart=1, epoch_length=8, tile_size=64, layers=(8, 16),
                         mlp_width=5, window_size=32, device="cpu")
    return out


@pytest.fixture(scope="session")
def cells():
    """A 256 x 256 synthetic fluorescence image (H, W) and its labels."""
    from instanseg_scnp.data import synthetic_image

    sample = synthetic_image((256, 256), modality="fluorescence", rng=3)
    return sample.image[..., 0], sample.labels.astype(np.int32)
