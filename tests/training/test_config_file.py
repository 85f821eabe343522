"""``train --config FILE`` and ``TrainConfig.from_file``: runs replayed from their config.json, or set up in TOML."""

import json
import re

import pytest

from instanseg_scnp import training
from instanseg_scnp.cli import main
from instanseg_scnp.training import TrainConfig, train

TOML = """\
data = "synthetic"
epochs = 4
hotstart = 1
layers = [8, 16]
scnp = "mask+seed"
scnp_window = 5
lr = 0.001
deterministic = true
"""


@pytest.fixture
def captured_train(monkeypatch):
    """The config ``train`` is called with, instead of training."""
    calls = []

    def fake_train(config=None, **kwargs):
        calls.append(config)
        return type("Result", (), {"model_path": "model.pt"})()

    monkeypatch.setattr(training, "train", fake_train)
    return calls


def test_train_config_replays_a_run_with_another_seed_and_out(tiny_data, tmp_path):
    a, b = tmp_path / "a", tmp_path / "b"
    train(TrainConfig(data=str(tiny_data), out=a, preset="demo", epochs=2, hotstart=1, epoch_length=8, batch_size=2,
                      tile_size=64, layers=(8, 16), window_size=32, device="cpu", scnp="mask+seed", scnp_window=5,
                      lr=0.002))
    assert main(["train", "-q", "--config", str(a / "config.json"), "--seed", "1", "--out", str(b)]) == 0
    saved_a, saved_b = (json.loads((run / "config.json").read_text()) for run in (a, b))
    assert (saved_b["config"]["seed"], saved_b["config"]["out"]) == (1, str(b))
    assert {**saved_b["config"], "seed": 0, "out": str(a)} == saved_a["config"]
    assert saved_b["derived"] == saved_a["derived"]  # nothing derived depends on the seed or the folder


def test_a_toml_file_gives_the_settings_and_flags_replace_them(tmp_path, captured_train):
    (tmp_path / "run.toml").write_text(TOML)
    expected = TrainConfig(data="synthetic", epochs=4, hotstart=1, layers=(8, 16), scnp="mask+seed", scnp_window=5,
                           lr=0.001, deterministic=True)
    assert TrainConfig.from_file(tmp_path / "run.toml") == expected
    assert main(["train", "-q", "--config", str(tmp_path / "run.toml"), "--epochs", "6", "--out", "x"]) == 0
    assert captured_train == [TrainConfig(**{**vars(expected), "epochs": 6, "out": "x"})]


def test_a_config_json_and_its_toml_twin_give_the_same_config(tmp_path):
    config = TrainConfig(epochs=4, layers=(8, 16), scnp="seed", seed=3, out=tmp_path / "r")
    (tmp_path / "config.json").write_text(json.dumps({"config": json.loads(config.to_json()), "derived": {}}))
    (tmp_path / "flat.json").write_text(config.to_json())
    assert TrainConfig.from_file(tmp_path / "config.json") == TrainConfig.from_file(tmp_path / "flat.json") == config
    assert TrainConfig.from_file(tmp_path / "config.json", seed=1).seed == 1


@pytest.mark.parametrize(("name", "text", "match"), [
    ("run.toml", TOML + "epoch = 3\n", r"unknown setting 'epoch' \(did you mean 'epochs'\?\); the settings are "
                                       r"data, data_root, out, .*, seed, "),
    ("config.json", '{"config": {"epochs": 3, "colour": "red"}, "derived": {}}', "unknown setting 'colour'"),
    ("config.json", '{"config": {"epochs": 3}, "derivd": {}}', r"unknown setting 'derivd' \(did you mean 'derived'"),
    ("run.toml", "epochs = [3", "is not valid TOML"),
    ("config.json", "[3]", "holds a list, not a table of settings"),
    ("run.toml", 'epochs = "many"', "epochs must be an int >= 1, got 'many'"),
])
def test_a_bad_config_file_is_one_line_naming_the_problem(tmp_path, capsys, captured_train, name, text, match):
    (tmp_path / name).write_text(text)
    assert main(["train", "--config", str(tmp_path / name)]) == 2
    error = capsys.readouterr().err
    assert len(error.strip().splitlines()) == 1
    assert re.search(match, error), error
    assert captured_train == []


def test_config_and_resume_do_not_mix(tmp_path, capsys):
    assert main(["train", "--config", str(tmp_path / "config.json"), "--resume", str(tmp_path)]) == 2
    assert "cannot be combined with --config" in capsys.readouterr().err


def test_a_missing_config_file_is_named(tmp_path, capsys, captured_train):
    assert main(["train", "--config", str(tmp_path / "nothing.toml")]) == 2
    assert "nothing.toml" in capsys.readouterr().err
