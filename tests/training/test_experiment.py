"""``experiment``: the planned runs, side by side in their own processes, resumed, refused, compared."""

import json
import shutil

import pandas as pd
import pytest
import torch

from instanseg_scnp.experiment import plan_experiment, run_experiment
from instanseg_scnp.rundir import BEST_WEIGHTS, CHECKPOINT, CONFIG, EVALUATION, METRICS, TORCHSCRIPT
from instanseg_scnp.training import train

TINY = {"preset": "demo", "epochs": 3, "hotstart": 1, "epoch_length": 8, "batch_size": 2, "tile_size": 64,
        "layers": (8, 16), "window_size": 32, "device": "cpu", "deterministic": True}


@pytest.fixture(scope="module")
def experiment(tiny_data, tmp_path_factory):
    """A finished 2 settings x 2 seeds experiment, trained two at a time."""
    out = tmp_path_factory.mktemp("experiment") / "exp"
    folder, markdown = run_experiment(out, targets=("off", "mask"), seeds=2, jobs=2, data=str(tiny_data), **TINY)
    return out, folder, markdown


def test_plan_names_every_setting_window_and_seed_and_passes_settings_through(tmp_path):
    runs = plan_experiment(tmp_path, targets=("off", "mask+seed"), seeds=2, windows=(3, 5), epochs=7, lr=0.01)
    assert [run.name for run in runs] == ["baseline-s0", "scnp-mask+seed-w3-s0", "scnp-mask+seed-w5-s0",
                                          "baseline-s1", "scnp-mask+seed-w3-s1", "scnp-mask+seed-w5-s1"]
    assert [(r.config.scnp, r.config.scnp_window, r.config.seed) for r in runs[:3]] == [
        ("off", 3, 0), ("mask+seed", 3, 0), ("mask+seed", 5, 0)]
    assert all(r.config.epochs == 7 and r.config.lr == 0.01 and r.config.out == tmp_path / r.name for r in runs)
    with pytest.raises(ValueError, match=r"sets \['seed'\]"):
        plan_experiment(tmp_path, seed=3)
    with pytest.raises(ValueError, match="windows must be positive odd ints"):
        plan_experiment(tmp_path, windows=(4,))
    with pytest.raises(ValueError, match="targets must be one of"):
        plan_experiment(tmp_path, targets=("mask", "boundary"))


def test_experiment_trains_each_run_as_train_would_and_compares_them(experiment, tiny_data):
    out, folder, markdown = experiment
    names = ["baseline-s0", "scnp-mask-w3-s0", "baseline-s1", "scnp-mask-w3-s1"]
    assert all((out / name / EVALUATION / "summary.json").is_file() for name in names)
    assert sorted(path.name for path in (out / "logs").iterdir()) == sorted(f"{name}.log" for name in names)
    paired = pd.read_csv(folder / "paired.csv")
    assert set(paired["setting"]) == {"SCNP mask w3 penalized (l1_distance + dice_loss)"}
    assert set(paired["seeds"]) == {2} and "## Paired differences" in markdown
    assert (folder / "curves.png").is_file() and len(pd.read_csv(folder / "epochs.csv")) == 4 * TINY["epochs"]
    # the oracle: the same run trained directly, on one thread as each of the two jobs had
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        direct = train(data=str(tiny_data), out=out.parent / "direct", scnp="mask", seed=1, **TINY)
    finally:
        torch.set_num_threads(threads)
    ours = torch.load(out / "scnp-mask-w3-s1" / BEST_WEIGHTS, weights_only=False)["model_state_dict"]
    theirs = torch.load(direct.run_dir / BEST_WEIGHTS, weights_only=False)["model_state_dict"]
    assert ours.keys() == theirs.keys() and all(torch.equal(ours[key], theirs[key]) for key in ours)


def test_experiment_keeps_finished_runs_resumes_interrupted_ones_and_refuses_changed_settings(experiment, tiny_data):
    out, _, _ = experiment
    kept = (out / "baseline-s0" / EVALUATION / "summary.json").stat().st_mtime_ns
    interrupted = out / "scnp-mask-w3-s0"  # killed after its last checkpoint, before export and evaluation
    epochs_before = (interrupted / METRICS).read_text()
    shutil.rmtree(interrupted / EVALUATION)
    (interrupted / TORCHSCRIPT).unlink()
    barely_started = out / "baseline-s1"  # killed in its first epoch: only its config was written
    for path in barely_started.iterdir():
        if path.name != CONFIG:
            shutil.rmtree(path) if path.is_dir() else path.unlink()
    run_experiment(out, targets=("off", "mask"), seeds=2, jobs=1, data=str(tiny_data), **TINY)
    assert (out / "baseline-s0" / EVALUATION / "summary.json").stat().st_mtime_ns == kept
    assert (interrupted / METRICS).read_text() == epochs_before  # no epoch trained again
    assert "resuming" in (out / "logs" / "scnp-mask-w3-s0.log").read_text()
    assert (interrupted / EVALUATION / "summary.json").is_file() and (barely_started / CHECKPOINT).is_file()
    assert json.loads((barely_started / EVALUATION / "summary.json").read_text())["images"] == 2
    with pytest.raises(ValueError, match=r"baseline-s0 was trained with epochs=3 \(asked: 4\)"):
        run_experiment(out, targets=("off", "mask"), seeds=2, data=str(tiny_data), **{**TINY, "epochs": 4})
