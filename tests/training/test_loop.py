import json
import math
import os
import re
import shutil
import signal
import subprocess
import sys
import time
import zipfile

import numpy as np
import pandas as pd
import pytest
import torch
from instanseg.utils.loss.instanseg_loss import InstanSeg
from instanseg.utils.model_loader import load_model

from instanseg_scnp import SCNPTerm
from instanseg_scnp.data import DatasetError, check_dataset, synthetic_dataset
from instanseg_scnp.upstream.mask_losses import OUR_MASK_LOSSES
from instanseg_scnp.rundir import RunDirError
from instanseg_scnp.training import TrainConfig, resume, train
from instanseg_scnp.training.fit import FitState


def tiny_config(data, out, **settings):
    """The Python twin of the ``tiny_flags`` fixture."""
    return TrainConfig(**{"data": str(data), "out": out, "preset": "demo", "epochs": 3, "hotstart": 1, "epoch_length": 8,
                          "batch_size": 2, "tile_size": 64, "layers": (8, 16), "window_size": 32, "device": "cpu",
                          **settings})


@pytest.fixture(scope="module")
def finished_run(tiny_data, tmp_path_factory):
    out = tmp_path_factory.mktemp("runs") / "run"
    return train(tiny_config(tiny_data, out, scnp="mask+seed", scnp_window=5, mlp_width=7))


def test_run_directory_has_upstreams_layout_and_our_logs(finished_run):
    out = finished_run.run_dir
    for name in ("config.json", "experiment_log.csv", "model_weights.pth", "checkpoint.pth", "metrics.csv",
                 "curves.png", "instanseg.pt", "evaluation/per_image.csv", "evaluation/per_cell.csv",
                 "evaluation/summary.json", "evaluation/evaluation.png"):
        assert (out / name).is_file(), name
    assert not list(out.glob(".*tmp")), "temporary files left behind"
    assert (out / "curves.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    metrics = pd.read_csv(out / "metrics.csv")
    assert list(metrics["epoch"]) == [0, 1, 2]
    assert list(metrics["phase"]) == ["hotstart", "main", "main"]
    assert list(metrics["seed_loss"])[:2] == ["binary_xloss", "scnp-w5_l1_distance"]  # hotstart: no SCNP
    assert list(metrics["mask_loss"])[:2] == ["dice_loss", "scnp-w5_dice_loss"]
    config = json.loads((out / "config.json").read_text())
    assert config["config"]["preset"] == "demo" and config["config"]["seed_loss"] == "l1_distance"
    assert config["config"]["scnp"] == "mask+seed" and config["config"]["scnp_window"] == 5
    evaluation = json.loads((out / "evaluation/summary.json").read_text())
    assert evaluation["images"] == 2 and 0 <= evaluation["pooled_f1_50to90_by10"] <= 1


def test_best_weights_are_the_best_main_epoch_and_upstream_rebuilds_them(finished_run):
    metrics = pd.read_csv(finished_run.run_dir / "metrics.csv")
    main = metrics[metrics["phase"] == "main"]
    # the highest F1; among equal ones, the lowest validation loss; then the earliest
    chosen = main.assign(f1=main["val_f1"].fillna(-1)).sort_values(["f1", "val_loss", "epoch"],
                                                                   ascending=[False, True, True])
    assert finished_run.best_epoch == int(chosen["epoch"].iloc[0])
    best = torch.load(finished_run.run_dir / "model_weights.pth", weights_only=False)
    assert best["epoch"] == finished_run.best_epoch and best["f1_score"] == pytest.approx(finished_run.best_f1)
    model, arguments = load_model(folder="", path=str(finished_run.run_dir))  # upstream's loader
    assert arguments["binary_loss_fn"] == "scnp-w5_dice_loss" and arguments["pixel_size"] == 0.5
    assert int(arguments["mlp_width"]) == 7 and model.pixel_classifier.fc1.out_features == 7  # --mlp-width, rebuilt
    for name, tensor in model.state_dict().items():
        assert torch.equal(tensor, best["model_state_dict"][name]), name


def test_exported_model_is_upstreams_export_of_the_best_weights(finished_run, tiny_data):
    """Oracle: upstream's own steps (load_model, InstanSeg_Torchscript, script) on model_weights.pth."""
    from instanseg import InstanSeg
    from instanseg.utils.loss.instanseg_loss import InstanSeg_Torchscript

    from instanseg_scnp.upstream import quiet_upstream

    image = torch.load(tiny_data, weights_only=False)["Test"][1]["image"]  # brightfield (H, W, 3)
    tensor = torch.from_numpy(np.moveaxis(image, -1, 0).copy())
    with quiet_upstream():
        model, _ = load_model(folder="", path=str(finished_run.run_dir))
        upstream_export = torch.jit.script(InstanSeg_Torchscript(model.eval(), pixel_size=0.5,
                                                                 params={"seed_threshold": 0.5}))
        for kwargs in ({}, {"seed_threshold": 0.0, "mask_threshold": 0.0}):  # the second finds "cells" anywhere
            labels = InstanSeg(torch.jit.load(str(finished_run.model_path)), device="cpu", verbosity=0
                               ).eval_small_image(tensor, 0.5, return_image_tensor=False, **kwargs)
            expected = InstanSeg(upstream_export, device="cpu", verbosity=0
                                 ).eval_small_image(tensor, 0.5, return_image_tensor=False, **kwargs)
            assert labels.shape == (1, 1, 96, 96)
            assert torch.equal(labels, expected)
    assert labels.max() > 0
    with zipfile.ZipFile(finished_run.model_path) as archive:  # SCNP is training-only
        code = [archive.read(name).decode() for name in archive.namelist() if name.endswith(".py")]
    assert code and not any("scnp" in text.lower() for text in code)


def test_evaluate_command_on_another_split(finished_run, capsys):
    from instanseg_scnp.cli import main

    assert main(["evaluate", str(finished_run.run_dir), "--split", "Validation", "-q"]) == 0
    folder = finished_run.run_dir / "evaluation-tiny_dataset-Validation"
    assert capsys.readouterr().out.strip() == str(folder)
    summary = json.loads((folder / "summary.json").read_text())
    assert summary["split"] == "Validation" and summary["images"] == 2
    assert len(pd.read_csv(folder / "per_image.csv")) == 2
    assert main(["evaluate", str(finished_run.run_dir), "--split", "Validation"]) == 2  # exists: refused
    assert "exists; pass --overwrite" in capsys.readouterr().err


def test_exported_model_segments_images_smaller_than_upstream_handles(finished_run, tiny_data):
    """Upstream's exported model corrupts memory under 64 px a side; the segmenter pads (this would crash)."""
    from instanseg_scnp.evaluation import load_segmenter

    segment = load_segmenter(finished_run.model_path, seed_threshold=0.0, mask_threshold=0.0)  # cells anywhere
    image = torch.load(tiny_data, weights_only=False)["Test"][1]["image"]
    with torch.sparse.check_sparse_tensor_invariants(True):  # unpadded, upstream's bad indices raise here
        small = segment(image[:40, :48], 0.5)
    assert small.shape == (40, 48) and small.dtype == np.int32


@pytest.mark.parametrize("mask_loss", sorted(OUR_MASK_LOSSES))
def test_our_mask_losses_train_with_scnp_and_their_names_reload(mask_loss, tiny_data, tmp_path):
    """The paper's baselines and CEDice through a real run: finite losses, and the SCNP name in
    upstream's experiment_log.csv rebuilds the same loss through upstream's constructor."""
    result = train(tiny_config(tiny_data, tmp_path / "run", epochs=2, mask_loss=mask_loss, scnp="mask"))
    metrics = pd.read_csv(result.run_dir / "metrics.csv")
    assert list(metrics["mask_loss"]) == ["dice_loss", f"scnp_{mask_loss}"]
    assert np.isfinite(metrics[["train_loss", "val_loss"]].to_numpy()).all()
    _, arguments = load_model(folder="", path=str(result.run_dir))
    assert arguments["binary_loss_fn"] == f"scnp_{mask_loss}"
    rebuilt = InstanSeg(binary_loss_fn_str=arguments["binary_loss_fn"], device="cpu")
    assert rebuilt.scnp_active["mask"] == SCNPTerm() and rebuilt.scnp_mask_loss_name == f"scnp_{mask_loss}"


def test_existing_run_dir_is_refused_then_replaced_with_overwrite_but_never_a_users_file(tiny_data, tmp_path):
    out = tmp_path / "run"
    train(tiny_config(tiny_data, out, epochs=2))  # an earlier run
    with pytest.raises(RunDirError, match="already exists and is not empty; pass --overwrite"):
        train(tiny_config(tiny_data, out))
    (out / "notes.txt").write_text("what I saw")
    with pytest.raises(RunDirError, match=r"did not write \(notes.txt\); --overwrite would delete them"):
        train(tiny_config(tiny_data, out), overwrite=True)
    assert (out / "notes.txt").read_text() == "what I saw"
    (out / "notes.txt").unlink()
    train(tiny_config(tiny_data, out, epochs=2, seed=1), overwrite=True)
    assert (out / "instanseg.pt").is_file() and '"seed": 1' in (out / "config.json").read_text()


def test_overwrite_never_deletes_a_folder_that_is_not_a_run(tiny_data, tmp_path):
    (tmp_path / "thesis.tex").write_text("years of work")
    with pytest.raises(RunDirError, match=r"is not a run directory .* choose another --out"):
        train(tiny_config(tiny_data, tmp_path), overwrite=True)
    (tmp_path / "config.json").write_text("{}")  # any config.json does not make a run
    with pytest.raises(RunDirError, match=r"is not a run directory .* choose another --out"):
        train(tiny_config(tiny_data, tmp_path), overwrite=True)
    assert (tmp_path / "thesis.tex").read_text() == "years of work"


def test_training_images_need_a_common_pixel_size(tmp_path):
    data = synthetic_dataset(n_train=2, n_validation=1, n_test=1, shape=(64, 64), rng=0)
    data["Train"][1]["pixel_size"] = 0.25
    torch.save(data, tmp_path / "mixed.pth")
    with pytest.raises(ValueError, match="pixel sizes are missing or differ; pass --pixel-size"):
        train(tiny_config(tmp_path / "mixed.pth", tmp_path / "run"))
    assert not (tmp_path / "run").exists()


def test_best_epoch_rule():
    state = FitState()
    assert state.improves(math.nan, 5.0)
    state.best_epoch, state.best_f1, state.best_val_loss = 0, math.nan, 5.0
    assert not state.improves(math.nan, 6.0) and state.improves(math.nan, 4.0)  # no F1 yet: the loss decides
    assert state.improves(0.1, 9.0)  # any F1 beats none
    state.best_f1 = 0.3
    assert not state.improves(math.nan, 0.1) and state.improves(0.31, 9.0) and not state.improves(0.29, 0.1)
    assert state.improves(0.3, 4.0) and not state.improves(0.3, 6.0)  # equal F1: the loss decides
    state.best_f1 = 0.0
    assert state.improves(0.0, 4.0)  # an F1 stuck at 0 does not freeze the choice on the first epoch


def test_resume_needs_the_same_number_of_processes(finished_run, monkeypatch):
    monkeypatch.setenv("WORLD_SIZE", "2")
    with pytest.raises(ValueError, match=r"trained by 1 process\(es\); resume it with as many \(got 2\)"):
        resume(finished_run.run_dir)


def test_bad_data_stops_before_anything_is_written(tmp_path):
    torch.save({"Train": [], "Validation": []}, tmp_path / "empty.pth")
    with pytest.raises(ValueError, match="the 'Train' split is empty"):
        train(tiny_config(tmp_path / "empty.pth", tmp_path / "run"))
    with pytest.raises(ValueError, match=r"neither one of \['synthetic'\] nor an existing InstanSeg \.pth"):
        train(tiny_config(tmp_path / "missing.pth", tmp_path / "run"))
    assert not (tmp_path / "run").exists()


@pytest.mark.skipif(torch.cuda.is_available(), reason="needs a machine without CUDA")
def test_cuda_and_fp16_without_a_gpu_are_refused(tiny_data, tmp_path):
    with pytest.raises(ValueError, match="device='cuda' was requested but torch sees no CUDA GPU"):
        train(tiny_config(tiny_data, tmp_path / "run", device="cuda"))
    with pytest.raises(ValueError, match="precision='fp16' needs CUDA"):
        train(tiny_config(tiny_data, tmp_path / "run", precision="fp16"))


def test_the_runs_optimizer_is_adams_textbook_update(tiny_data, tmp_path):
    """The run's optimizer (fused) moves every weight as torch's per-parameter Adam loop does, given the same
    gradients (through a whole step the two would differ by float noise that Adam's normalization amplifies
    where a gradient is about 0, as it is for a bias before instance norm)."""
    from instanseg_scnp.training.distributed import start
    from instanseg_scnp.training.setup import set_up

    config = tiny_config(tiny_data, tmp_path / "run")
    run = set_up(config, start("cpu"), out=config.out, overwrite=False, resuming=False)
    ours = list(run.model.parameters())
    theirs = [parameter.detach().clone().requires_grad_() for parameter in ours]
    initial = [parameter.detach().clone() for parameter in ours]
    textbook = torch.optim.Adam(theirs, lr=config.lr, foreach=False, fused=False)
    generator = torch.Generator().manual_seed(0)
    for _ in range(3):  # later steps use the moments the earlier ones left
        for mine, reference in zip(ours, theirs, strict=True):
            scale = 10.0 ** torch.randint(-4, 1, (), generator=generator)  # gradients from 1e-4 to 1
            mine.grad = torch.randn(mine.shape, generator=generator) * scale
            reference.grad = mine.grad.clone()
        run.optimizer.step()
        textbook.step()
    assert all(not torch.equal(mine, before) for mine, before in zip(ours, initial, strict=True))
    for (name, mine), reference in zip(run.model.named_parameters(), theirs, strict=True):
        torch.testing.assert_close(mine, reference, rtol=1e-6, atol=1e-7, msg=name)


def test_resume_keeps_the_config(finished_run):
    with pytest.raises(ValueError, match=r"only \['device', 'workers'\] may change, got \['lr'\]"):
        resume(finished_run.run_dir, lr=0.1)


def _weights(path):
    checkpoint = torch.load(path, weights_only=False)
    return checkpoint.get("model") or checkpoint["model_state_dict"]


def test_a_run_killed_mid_epoch_and_resumed_ends_with_the_same_weights(tiny_data, tiny_flags, run_cli, tmp_path):
    flags = [*tiny_flags, "--epochs", "4", "--epoch-length", "24", "--deterministic", "--data", tiny_data, "-q"]
    run_cli("train", *flags, "--out", tmp_path / "straight")

    killed = tmp_path / "killed"
    process = subprocess.Popen([sys.executable, "-m", "instanseg_scnp", "train", *map(str, flags), "--out", killed],
                               stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    deadline = time.monotonic() + 300
    while not (killed / "checkpoint.pth").exists() and process.poll() is None and time.monotonic() < deadline:
        time.sleep(0.02)
    time.sleep(0.3)  # into the next epoch
    os.kill(process.pid, signal.SIGKILL)
    process.wait()
    assert not (killed / "instanseg.pt").exists(), "the run finished before it could be killed"
    interrupted_after = torch.load(killed / "checkpoint.pth", weights_only=False)["state"]["epoch"]
    assert 1 <= interrupted_after < 4

    run_cli("train", "--resume", killed, "-q")
    for name in ("checkpoint.pth", "model_weights.pth"):
        straight, resumed = _weights(tmp_path / "straight" / name), _weights(killed / name)
        assert straight.keys() == resumed.keys()
        for key in straight:
            assert torch.equal(straight[key], resumed[key]), (name, key)
    columns = ["epoch", "train_loss", "val_loss", "val_f1"]
    pd.testing.assert_frame_equal(pd.read_csv(tmp_path / "straight" / "metrics.csv")[columns],
                                  pd.read_csv(killed / "metrics.csv")[columns])


def test_torchrun_trains_data_parallel_on_two_cpu_processes(tiny_flags, tmp_path):
    """Odd epoch length (uneven split), one tile per step, and an image without nuclei: a rank's step can
    have no seeds at all, which leaves upstream's pixel classifier without gradients."""
    data = synthetic_dataset(n_train=3, n_validation=2, n_test=2, shape=(96, 96), rng=0)
    data["Train"].append({**data["Train"][0], "nucleus_masks": np.zeros((96, 96), np.int32), "name": "empty"})
    torch.save(data, tmp_path / "with_empty.pth")
    out = tmp_path / "ddp"
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    result = subprocess.run(
        [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc-per-node", "2",
         "-m", "instanseg_scnp", "train", *tiny_flags, "--epoch-length", "9", "--batch-size", "1",
         "--data", str(tmp_path / "with_empty.pth"), "--out", str(out)],
        capture_output=True, text=True, env=env, timeout=600)
    assert result.returncode == 0, result.stderr[-3000:]
    assert "the 2 replicas' weights are identical" in result.stderr
    assert len(re.findall(r"INFO epoch 3/3 main", result.stderr)) == 1  # rank 0 alone reports
    derived = json.loads((out / "config.json").read_text())["derived"]
    assert derived["world_size"] == 2
    assert len(pd.read_csv(out / "metrics.csv")) == 3 and (out / "instanseg.pt").is_file()


def test_a_diverging_run_stops_before_its_weights_become_nan(tiny_data, tmp_path, tiny_flags, run_cli):
    out = tmp_path / "run"
    result = run_cli("train", *tiny_flags, "--data", tiny_data, "--out", out, "--lr", "1e30", "--hotstart", "0",
                     "--nonfinite-patience", "2", check=False)
    assert result.returncode == 1 and "Traceback" not in result.stderr
    assert "2 training steps in a row had a NaN or infinite loss or gradient" in result.stderr
    assert not (out / "instanseg.pt").exists() and not (out / "model_weights.pth").exists()
    if (out / "checkpoint.pth").exists():  # an epoch finished before the divergence: its weights are finite
        weights = torch.load(out / "checkpoint.pth", weights_only=False)["model"]
        assert all(torch.isfinite(tensor).all() for tensor in weights.values())


@pytest.mark.parametrize(
    ("name", "command", "message"),
    [
        ("instanseg.pt", ["evaluate", "{run}", "--output", "{tmp}/evaluation"], "is not a readable TorchScript model"),
        ("model_weights.pth", ["export", "{run}", "--output", "{tmp}/model.pt"], "cannot rebuild the model from"),
        ("checkpoint.pth", ["train", "--resume", "{run}"], "is not a readable checkpoint"),
        ("config.json", ["evaluate", "{run}", "--output", "{tmp}/evaluation"], "is not readable JSON"),
    ],
)
def test_a_truncated_file_is_one_line_naming_it(finished_run, tmp_path, run_cli, name, command, message):
    run = tmp_path / "run"
    shutil.copytree(finished_run.run_dir, run)
    data = (run / name).read_bytes()
    (run / name).write_bytes(data[: len(data) // 2])
    result = run_cli(*[part.format(run=run, tmp=tmp_path) for part in command], check=False)
    assert result.returncode == 2 and "Traceback" not in result.stderr, result.stderr
    assert message in result.stderr and str(run / name) in result.stderr


def test_resume_refuses_a_dataset_that_changed_unless_allowed(tmp_path, tiny_flags, run_cli):
    data = tmp_path / "data.pth"
    torch.save(synthetic_dataset(n_train=4, n_validation=2, n_test=2, shape=(96, 96), rng=0), data)
    out = tmp_path / "run"
    train(tiny_config(data, out, epochs=2))
    recorded = json.loads((out / "config.json").read_text())["derived"]["data_fingerprint"]
    assert recorded["size"] == data.stat().st_size and len(recorded["sha256"]) == 64
    torch.save(synthetic_dataset(n_train=4, n_validation=2, n_test=2, shape=(96, 96), rng=1), data)  # edited
    result = run_cli("train", "--resume", out, check=False)
    assert result.returncode == 2 and f"its dataset '{data}' changed since the run started" in result.stderr
    result = run_cli("train", "--resume", out, "--allow-changed-data", check=False)
    assert result.returncode == 0 and "on a dataset that changed since the run started" in result.stderr


def test_a_killed_or_failed_overwrite_leaves_the_old_run_and_resume_finishes_the_new(tiny_data, tiny_flags,
                                                                                      run_cli, tmp_path):
    flags = [*tiny_flags, "--data", tiny_data, "-q"]
    out = tmp_path / "run"
    run_cli("train", *flags, "--out", out)
    old_model = (out / "instanseg.pt").read_bytes()

    failing = run_cli("train", *flags, "--out", out, "--overwrite", "--lr", "1e30", "--hotstart", "0",
                      "--nonfinite-patience", "2", check=False)
    assert failing.returncode == 1 and (out / "instanseg.pt").read_bytes() == old_model

    process = subprocess.Popen([sys.executable, "-m", "instanseg_scnp", "train", *map(str, flags), "--out", out,
                                "--overwrite", "--seed", "7", "--epochs", "6", "--epoch-length", "24"],
                               stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    staging = tmp_path / ".run.overwrite"
    deadline = time.monotonic() + 300
    while not (staging / "checkpoint.pth").exists() and process.poll() is None and time.monotonic() < deadline:
        time.sleep(0.02)
    os.kill(process.pid, signal.SIGKILL)
    process.wait()
    assert (staging / "checkpoint.pth").exists(), "the overwrite finished before it could be killed"
    # the old run is whole and loadable: its model segments through upstream inference
    assert (out / "instanseg.pt").read_bytes() == old_model and json.loads((out / "config.json").read_text())[
        "config"]["seed"] == 0
    assert run_cli("evaluate", out, "--output", tmp_path / "old-evaluation", "-q").returncode == 0

    run_cli("train", "--resume", out, "-q")  # finds the unfinished overwrite and ends it
    assert not staging.exists() and json.loads((out / "config.json").read_text())["config"]["seed"] == 7
    assert (out / "instanseg.pt").read_bytes() != old_model and len(pd.read_csv(out / "metrics.csv")) == 6


def test_a_full_disk_while_checkpointing_names_the_file_and_keeps_the_previous_checkpoint(tiny_data, tmp_path,
                                                                                          monkeypatch):
    save = torch.save

    def disk_fills_after_the_first_checkpoint(obj, path, *args, **kwargs):
        if "checkpoint" in str(path) and (tmp_path / "run" / "checkpoint.pth").exists():
            raise OSError(28, "No space left on device")
        return save(obj, path, *args, **kwargs)

    monkeypatch.setattr(torch, "save", disk_fills_after_the_first_checkpoint)
    with pytest.raises(OSError, match=r"cannot write the checkpoint .*checkpoint.pth.* previous checkpoint is intact"):
        train(tiny_config(tiny_data, tmp_path / "run"))
    monkeypatch.setattr(torch, "save", save)
    assert torch.load(tmp_path / "run" / "checkpoint.pth", weights_only=False)["state"]["epoch"] == 1
    assert not list((tmp_path / "run").glob(".*tmp"))


def test_a_nan_image_stops_training_before_anything_is_written(tmp_path):
    data = synthetic_dataset(n_train=2, n_validation=1, n_test=1, shape=(64, 64), rng=0)
    data["Test"][0]["image"] = data["Test"][0]["image"].astype(np.float32)
    data["Test"][0]["image"][5, 5] = np.nan
    torch.save(data, tmp_path / "nan.pth")
    with pytest.raises(DatasetError, match=r"Test\[0\]: image has 1 NaN or infinite pixel"):
        train(tiny_config(tmp_path / "nan.pth", tmp_path / "run"))
    assert not (tmp_path / "run").exists()
    with pytest.raises(DatasetError, match=r"Test\[0\]: image has 1 NaN"):
        check_dataset(tmp_path / "nan.pth")  # prepare --check


def test_resume_before_any_best_epoch_says_so(finished_run, tmp_path, caplog):
    run = tmp_path / "run"
    shutil.copytree(finished_run.run_dir, run)
    checkpoint = torch.load(run / "checkpoint.pth", weights_only=False)
    checkpoint["state"].update(best_epoch=-1, best_f1=math.nan)  # as after a hotstart epoch
    torch.save(checkpoint, run / "checkpoint.pth")
    with caplog.at_level("INFO", logger="instanseg_scnp"):
        resume(run)
    resuming = next(record.getMessage() for record in caplog.records if record.getMessage().startswith("resuming"))
    assert "no best epoch yet" in resuming and "nan" not in resuming
