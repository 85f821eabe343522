import json

import pytest

from instanseg_scnp.training import TrainConfig, auto_window
from instanseg_scnp.training.config import AUTO_WINDOW_RANGE


@pytest.mark.parametrize(
    ("settings", "match"),
    [
        ({"epochs": 0}, "epochs must be an int >= 1, got 0"),
        ({"batch_size": 2.5}, "batch_size must be an int >= 1, got 2.5"),
        ({"workers": -1}, "workers must be an int >= 0"),
        ({"scnp_window": 4}, "scnp_window must be a positive odd int or 'auto', got 4"),
        ({"scnp_window": -3}, "scnp_window must be a positive odd int"),
        ({"scnp_window": "big"}, "scnp_window must be a positive odd int or 'auto', got 'big'"),
        ({"hotstart": 12, "epochs": 12}, r"hotstart must be fewer than epochs \(12\), got 12"),
        ({"tile_size": 100}, "tile_size must be a multiple of 8 for 4 UNet levels, got 100"),
        ({"seed_loss": "l1"}, "seed_loss must be one of"),
        ({"mask_loss": "lovasz"}, r"mask_loss must be one of .* \(did you mean 'lovasz_hinge'\?\)"),
        ({"scnp": "mask2"}, "scnp must be one of 'off', 'mask', 'seed', 'both'"),
        ({"device": "gpu"}, "device must be one of 'auto', 'cpu', 'cuda'"),
        ({"lr": 0.0}, "lr must be a positive number, got 0.0"),
        ({"lr": float("nan")}, "lr must be a positive number"),
        ({"pixel_size": -0.5}, "pixel_size must be a positive number of µm"),
        ({"layers": (16, 0)}, r"layers must be positive ints, got \(16, 0\)"),
    ],
)
def test_train_config_rejects_bad_settings(settings, match):
    with pytest.raises(ValueError, match=match):
        TrainConfig(**settings)


def test_train_config_round_trips_through_json(tmp_path):
    config = TrainConfig(out=tmp_path / "run", scnp_window="auto", layers=[8, 16], pixel_size=0.25)
    assert config.layers == (8, 16)
    assert TrainConfig.from_json(config.to_json()) == config
    assert json.loads(config.to_json())["out"] == str(tmp_path / "run")


def test_auto_window_is_the_odd_window_nearest_a_quarter_diameter():
    low, high = AUTO_WINDOW_RANGE
    for diameter in [2.0, 9.0, 13.0, 17.5, 21.0, 25.9, 30.0, 33.0, 40.0, 200.0]:
        candidates = range(low, high + 1, 2)
        expected = min(candidates, key=lambda w: abs(w - diameter / 4))
        assert auto_window(diameter) == expected, diameter
