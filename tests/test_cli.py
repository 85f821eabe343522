import argparse
import dataclasses
import json
import re
import subprocess
import sys

import numpy as np
import pytest
import torch

from instanseg_scnp.cli import build_parser, main
from instanseg_scnp.data import synthetic_dataset
from instanseg_scnp.metrics import match
from instanseg_scnp.training import PRESETS, TrainConfig


def subcommand(name):
    parser = build_parser()
    (commands,) = (action for action in parser._actions if isinstance(action, argparse._SubParsersAction))
    return commands.choices[name]


def test_train_help_documents_every_setting_with_its_default():
    helps = {action.option_strings[0]: action.help for action in subcommand("train")._actions if action.option_strings}

    def shown(value):
        return " ".join(map(str, value)) if isinstance(value, tuple) else str(value)

    for field in dataclasses.fields(TrainConfig):
        flag = "--" + field.name.replace("_", "-")
        if field.name == "preset":
            assert helps[flag].endswith("(default: demo for --data synthetic, else upstream)")
        elif field.name in PRESETS["demo"]:  # decided by the preset: each preset's value is shown
            values = {preset: shown(PRESETS[preset][field.name]) for preset in PRESETS}
            if len(set(values.values())) == 1:
                assert helps[flag].endswith(f"(default: {values['demo']})"), (flag, helps[flag])
            else:
                listed = ", ".join(f"{preset} {value}" for preset, value in values.items())
                assert helps[flag].endswith(f"(default: {listed})"), (flag, helps[flag])
        else:
            assert helps[flag].endswith(f"(default: {shown(field.default)})"), (flag, helps[flag])
    for flag in ("--resume", "--overwrite", "-v", "-q", "-h"):
        assert helps[flag], flag


@pytest.mark.parametrize("name", ["train", "export", "evaluate", "compare", "experiment", "prepare"])
def test_every_flag_of_every_command_states_its_default(name):
    for action in subcommand(name)._actions:
        if action.option_strings and action.option_strings[0] != "-h":
            assert "(default: " in action.help, (name, action.option_strings)


def test_help_runs_from_the_command_line():
    result = subprocess.run([sys.executable, "-m", "instanseg_scnp", "train", "--help"],
                            capture_output=True, text=True, check=True)
    assert "--scnp-window" in result.stdout and "(default: 3)" in " ".join(result.stdout.split())


@pytest.mark.parametrize(
    ("argv", "message"),
    [
        (["train", "--scnp-window", "4"], "scnp_window must be a positive odd int, got 4"),
        (["train", "--preset", "upstream", "--epochs", "5"], r"hotstart must be fewer than epochs \(5\), got 10"),
        (["train", "--data", "nowhere.pth"], r"neither one of \['synthetic'\] nor an existing InstanSeg \.pth"),
        (["train", "--hotstart", "300"], rf"hotstart must be fewer than epochs \({PRESETS['demo']['epochs']}\)"),
        (["train", "--resume", "no_such_run"], "run directory 'no_such_run' does not exist"),
        (["export", "no_such_run"], "run directory 'no_such_run' does not exist"),
        (["experiment", "--seeds", "0"], r"seeds must be an int >= 1"),
        (["experiment", "--jobs", "0"], r"jobs must be an int >= 1"),
        (["experiment", "--windows", "4"], r"windows must be positive odd ints, got 4"),
    ],
)
def test_bad_input_is_one_line_and_exit_status_2(argv, message, capsys, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    assert main(argv) == 2
    error = capsys.readouterr().err
    assert re.search(message, error) and "Traceback" not in error
    assert not (tmp_path / "runs").exists()


def test_argparse_rejects_unknown_choices():
    with pytest.raises(SystemExit) as exit_info:
        build_parser().parse_args(["train", "--seed-loss", "l3_distance"])
    assert exit_info.value.code == 2


@pytest.mark.skipif(torch.cuda.is_available(), reason="needs a machine without CUDA")
def test_cuda_requested_without_a_gpu(capsys, tmp_path):
    assert main(["train", "--device", "cuda", "--out", str(tmp_path / "run")]) == 2
    assert "device='cuda' was requested but torch sees no CUDA GPU" in capsys.readouterr().err


@pytest.mark.slow
def test_train_with_no_arguments_learns_to_segment(tmp_path):
    """The README's main job: train on the synthetic default, export, evaluate; upstream inference segments."""
    from instanseg import InstanSeg

    from instanseg_scnp.upstream import quiet_upstream

    result = subprocess.run([sys.executable, "-m", "instanseg_scnp", "train", "-q"], cwd=tmp_path,
                            capture_output=True, text=True, timeout=1200)
    assert result.returncode == 0, result.stderr[-3000:]
    run = tmp_path / "runs" / "instanseg-scnp"
    assert result.stdout.strip() == str(run.relative_to(tmp_path) / "instanseg.pt")
    summary = json.loads((run / "evaluation" / "summary.json").read_text())
    # seeds 0-4 gave 0.65-0.72 (the default seed 0.713; docs/training.md)
    assert summary["images"] == 8 and summary["pooled_f1_50"] > 0.6
    test_item = synthetic_dataset(rng=0)["Test"][1]  # the run's own held-out data
    with quiet_upstream():
        instanseg = InstanSeg(torch.jit.load(str(run / "instanseg.pt")), device="cpu", verbosity=0)
        labels = instanseg.eval_small_image(torch.from_numpy(np.moveaxis(test_item["image"], -1, 0).copy()), 0.5,
                                            return_image_tensor=False)
    assert match(test_item["nucleus_masks"], labels.squeeze().numpy().astype(np.int32))["f1_50"] > 0.3


def test_experiment_passes_every_train_flag_to_its_runs(monkeypatch, tmp_path, capsys):
    from instanseg_scnp import experiment

    planned = {}

    def plan_only(out, *, targets, seeds, windows, jobs, progress, **settings):
        planned["runs"] = experiment.plan_experiment(out, targets=targets, seeds=seeds, windows=windows, **settings)
        return tmp_path, "report\n"

    monkeypatch.setattr(experiment, "run_experiment", plan_only)
    assert main(["experiment", "--out", str(tmp_path / "exp"), "--settings", "off", "seed", "--seeds", "2",
                 "--windows", "3", "5", "--epochs", "12", "--lr", "0.01", "--preset", "upstream", "-q"]) == 0
    runs = planned["runs"]
    assert [run.name for run in runs] == ["baseline-s0", "scnp-seed-w3-s0", "scnp-seed-w5-s0",
                                          "baseline-s1", "scnp-seed-w3-s1", "scnp-seed-w5-s1"]
    assert {(run.config.epochs, run.config.lr, run.config.preset, run.config.hotstart) for run in runs} == {
        (12, 0.01, "upstream", 10)}  # given flags, and the preset for the rest
    assert capsys.readouterr().out == "report\n"
