import builtins
import math

import pandas as pd
import pytest
import torch

from instanseg_scnp.cli import main
from instanseg_scnp.training import TrainConfig, resume, train

pytest.importorskip("tensorboard")
from tensorboard.backend.event_processing.event_accumulator import EventAccumulator  # noqa: E402


def _events(folder):
    events = EventAccumulator(str(folder), size_guidance={"scalars": 0, "images": 0})
    events.Reload()
    return events


def test_log_tensorboard_writes_losses_validation_lr_and_panels_and_resume_continues(tiny_data, tmp_path,
                                                                                       monkeypatch):
    out = tmp_path / "run"
    config = TrainConfig(data=str(tiny_data), out=out, preset="demo", epochs=3, hotstart=1, epoch_length=8,
                         batch_size=2, tile_size=64, layers=(8, 16), window_size=32, device="cpu", log="tensorboard",
                         log_images_every=2)
    save = torch.save

    def disk_fills_after_the_first_checkpoint(obj, path, *args, **kwargs):
        if "checkpoint" in str(path) and (out / "checkpoint.pth").exists():
            raise OSError(28, "No space left on device")
        return save(obj, path, *args, **kwargs)

    # the first process dies in epoch 2, after its training steps were logged; the resumed one redoes them
    monkeypatch.setattr(torch, "save", disk_fills_after_the_first_checkpoint)
    with pytest.raises(OSError, match="cannot write the checkpoint"):
        train(config)
    monkeypatch.setattr(torch, "save", save)
    resume(out)
    assert len(list((out / "tensorboard").iterdir())) == 2  # one event file per process
    # 8 tiles / batch 2: 4 steps an epoch; panels after epoch 2 (every 2nd) and epoch 3 (the last)
    events = _events(out / "tensorboard")
    tags = events.Tags()
    assert set(tags["scalars"]) == {"train/loss", "val/loss", "val/f1", "lr"}
    assert tags["images"] == ["val/panel"]
    assert [event.step for event in events.Scalars("train/loss")] == list(range(1, 13))
    metrics = pd.read_csv(out / "metrics.csv")
    for tag, column in (("val/loss", "val_loss"), ("val/f1", "val_f1"), ("lr", "lr")):
        scalars = events.Scalars(tag)
        assert [event.step for event in scalars] == [4, 8, 12]
        assert [event.value for event in scalars] == pytest.approx(list(metrics[column]), rel=1e-6)
    assert all(math.isfinite(event.value) for event in events.Scalars("train/loss"))
    panels = events.Images("val/panel")
    assert [panel.step for panel in panels] == [8, 12]
    assert (panels[0].width, panels[0].height) == (3 * 64 + 2 * 2, 64)


def test_missing_tensorboard_is_a_clear_error_before_any_work(monkeypatch, tmp_path, capsys):
    real_import = builtins.__import__

    def no_tensorboard(name, *args, **kwargs):
        if name == "tensorboard" or name.startswith("tensorboard."):
            raise ModuleNotFoundError(f"No module named {name!r}")
        return real_import(name, *args, **kwargs)

    monkeypatch.setattr(builtins, "__import__", no_tensorboard)
    out = tmp_path / "run"
    assert main(["train", "--log", "tensorboard", "--out", str(out), "--device", "cpu"]) == 1
    error = capsys.readouterr().err
    assert "pip install 'instanseg-scnp[tensorboard]'" in error and len(error.strip().splitlines()) == 1
    assert not out.exists()
