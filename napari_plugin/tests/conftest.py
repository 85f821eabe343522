"""Shared fixtures: a tiny trained model (once per session), synthetic cells, captured notifications."""

from __future__ import annotations

import numpy as np
import pytest


@pytest.fixture(scope="session")
def run_dir(tmp_path_factory):
    """A run directory with a real exported model, trained for seconds on the built-in synthetic cells."""
    import instanseg_scnp

    out = tmp_path_factory.mktemp("models") / "tiny"
    instanseg_scnp.train(out=out, epochs=2, hotstart=1, epoch_length=8, tile_size=64, layers=(8, 16),
                         window_size=32, device="cpu")
    return out


@pytest.fixture(scope="session")
def cells():
    """A 256 x 256 synthetic fluorescence image (H, W) and its labels."""
    from instanseg_scnp.data import synthetic_image

    sample = synthetic_image((256, 256), modality="fluorescence", rng=3)
    return sample.image[..., 0], sample.labels.astype(np.int32)


@pytest.fixture(scope="session")
def seed_threshold(run_dir, cells):
    """A seed threshold at which the (barely trained) model finds a handful of seeds on ``cells``."""
    from napari_instanseg_scnp._model import load_model, run_model

    seed_logits = run_model(load_model(run_dir), cells[0], rgb=False).seed_logits
    return float(np.quantile(seed_logits, 0.9995)) / 15 + 0.5


@pytest.fixture
def notifications():
    """The notifications napari shows while the test runs (message, severity)."""
    from napari.utils.notifications import notification_manager

    records = []

    def record(notification):
        records.append((str(notification.message), str(notification.severity)))

    notification_manager.notification_ready.connect(record)
    yield records
    notification_manager.notification_ready.disconnect(record)
