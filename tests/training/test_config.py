import dataclasses
import json
import warnings

import pytest

from instanseg_scnp.training import PRESETS, TrainConfig
from instanseg_scnp.training.config import upgrade_saved


@pytest.mark.parametrize(
    ("settings", "match"),
    [
        ({"epochs": 0}, "epochs must be an int >= 1, got 0"),
        ({"batch_size": 2.5}, "batch_size must be an int >= 1, got 2.5"),
        ({"workers": -1}, "workers must be an int >= 0"),
        ({"mlp_width": 0}, "mlp_width must be an int >= 1, got 0"),
        ({"scnp_window": 4}, "scnp_window must be a positive odd int, got 4"),
        ({"scnp_window": -3}, "scnp_window must be a positive odd int"),
        ({"scnp_window": "big"}, "scnp_window must be a positive odd int, got 'big'"),
        ({"scnp_window": "auto"}, "scnp_window='auto' was removed"),
        ({"hotstart": 12, "epochs": 12}, r"hotstart must be fewer than epochs \(12\), got 12"),
        ({"preset": "fast"}, "preset must be one of 'demo', 'upstream', 'paper', got 'fast'"),
        ({"tile_size": 100}, "tile_size must be a multiple of 8 for 4 UNet levels, got 100"),
        ({"seed_loss": "l1"}, "seed_loss must be one of"),
        ({"mask_loss": "lovasz"}, r"mask_loss must be one of .* \(did you mean 'lovasz_hinge'\?\)"),
        ({"scnp": "mask2"}, r"scnp must be one of 'off', 'mask', 'seed', 'mask\+seed'"),
        ({"scnp_mode": "sum"}, r"scnp_mode must be one of 'penalized', 'plain\+penalized'"),
        ({"device": "gpu"}, "device must be one of 'auto', 'cpu', 'cuda'"),
        ({"lr": 0.0}, "lr must be a positive number, got 0.0"),
        ({"lr": float("nan")}, "lr must be a positive number"),
        ({"pixel_size": -0.5}, "pixel_size must be a positive number of µm"),
        ({"layers": (16, 0)}, r"layers must be positive ints, got \(16, 0\)"),
        ({"norm": "BATCH", "batch_size": 1, "tile_size": 8}, r"batch_size 1 x 1x1 px there"),
    ],
)
def test_train_config_rejects_bad_settings(settings, match):
    with pytest.raises(ValueError, match=match):
        TrainConfig(**settings)


def test_train_config_round_trips_through_json(tmp_path):
    config = TrainConfig(out=tmp_path / "run", scnp_window=5, layers=[8, 16], pixel_size=0.25)
    assert config.layers == (8, 16)
    assert TrainConfig.from_json(config.to_json()) == config
    assert json.loads(config.to_json())["out"] == str(tmp_path / "run")


@pytest.mark.parametrize(("data", "preset", "expected"), [
    ("synthetic", None, "demo"),
    ("IHC_TMA", None, "upstream"),
    ("/data/mine.pth", None, "upstream"),
    ("synthetic", "paper", "paper"),
    ("IHC_TMA", "demo", "demo"),
])
def test_preset_fills_every_setting_not_given(data, preset, expected):
    config = TrainConfig(data=data, preset=preset, epochs=70)
    assert config.preset == expected
    recorded = json.loads(config.to_json())
    for name, value in PRESETS[expected].items():
        if name != "epochs":
            assert getattr(config, name) == value, name
            assert recorded[name] == (list(value) if isinstance(value, tuple) else value), name
    assert config.epochs == 70 and recorded["epochs"] == 70  # an explicit setting wins


def test_paper_preset_is_upstream_with_the_authors_cedice_on_the_mask():
    upstream, paper = TrainConfig(preset="upstream"), TrainConfig(preset="paper")
    differences = {f.name for f in dataclasses.fields(TrainConfig)
                   if getattr(upstream, f.name) != getattr(paper, f.name)}
    assert differences == {"preset", "mask_loss"}
    assert (paper.mask_loss, paper.scnp, paper.scnp_window, paper.scnp_mode) == ("cedice", "mask", 3, "penalized")


def test_upstream_preset_is_upstreams_train_script():
    """Against upstream's own argument parser (instanseg/scripts/train.py), read with no arguments."""
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        from instanseg.scripts import train as upstream_train
    defaults = upstream_train.parser.parse_args([])
    config = TrainConfig(preset="upstream")
    assert config.epochs == defaults.num_epochs
    assert config.epoch_length == defaults.length_of_epoch
    assert config.batch_size == defaults.batch_size
    assert config.tile_size == defaults.tile_size
    assert config.lr == defaults.lr and defaults.optimizer == "adam" and defaults.weight_decay == 0
    assert config.lr_schedule == ("cosine" if defaults.cosineannealing else "constant")
    assert config.seed_loss == defaults.seed_loss_fn
    assert config.mask_loss == defaults.binary_loss_fn
    assert config.hotstart == defaults.hotstart_training
    assert list(config.layers) == json.loads(defaults.layers)
    assert config.window_size == defaults.window_size
    assert config.norm == defaults.norm
    assert config.mlp_width == defaults.mlp_width
    assert config.grad_clip == defaults.clip
    assert config.pixel_size == defaults.requested_pixel_size


@pytest.mark.parametrize(("old", "field", "new"), [
    ({"scnp": "both"}, "scnp", "mask+seed"),
    ({"scnp_mode": "both"}, "scnp_mode", "plain+penalized"),
])
def test_old_spellings_are_accepted_with_a_warning(old, field, new):
    with pytest.warns(FutureWarning, match="deprecated"):
        config = TrainConfig(**old)
    assert getattr(config, field) == new


def test_configs_of_older_runs_load_without_warnings():
    saved = {**json.loads(TrainConfig().to_json()), "scnp": "both", "scnp_mode": "both", "scnp_window": "auto"}
    del saved["preset"]
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        config = TrainConfig(**upgrade_saved(saved, {"scnp_window": 5}))
    assert (config.scnp, config.scnp_mode, config.scnp_window) == ("mask+seed", "plain+penalized", 5)


def test_scnp_label_names_target_window_and_mode():
    assert TrainConfig(scnp="off").scnp_label == "no SCNP"
    assert TrainConfig(scnp="mask+seed", scnp_window=5, scnp_mode="plain+penalized").scnp_label == \
        "SCNP mask+seed w5 plain+penalized"


@pytest.mark.parametrize(("batch_size", "tile_size"), [(1, 8), (2, 8), (1, 16)])
def test_the_batch_norm_rule_is_torchs(batch_size, tile_size):
    """TrainConfig refuses exactly the shapes at which torch's BatchNorm fails in training (4 UNet levels)."""
    import torch

    deepest = torch.zeros(batch_size, 4, tile_size // 8, tile_size // 8)
    try:
        torch.nn.BatchNorm2d(4).train()(deepest)
        torch_fails = False
    except ValueError:
        torch_fails = True
    try:
        TrainConfig(norm="BATCH", batch_size=batch_size, tile_size=tile_size, layers=(8, 8, 8, 8))
        refused = False
    except ValueError:
        refused = True
    assert refused == torch_fails


def test_literal_choices_are_the_option_lists_the_config_checks():
    """The CLI's choices come from the fields' Literal types; the config checks the option tuples: one list."""
    import typing

    from instanseg_scnp import _options
    from instanseg_scnp.training import config as config_module

    lists = {"scnp": _options.SCNP_TARGETS, "scnp_mode": _options.MODES, "export": _options.EXPORT_FORMATS,
             "device": config_module.DEVICES, "precision": config_module.PRECISIONS,
             "lr_schedule": config_module.SCHEDULES, "norm": config_module.NORMS, "log": config_module.LOGS}
    hints = typing.get_type_hints(TrainConfig)
    for name, choices in lists.items():
        literal = [arg for arg in typing.get_args(hints[name]) if typing.get_origin(arg) is typing.Literal]
        literal = literal[0] if literal else hints[name]
        assert typing.get_args(literal) == tuple(choices), name
