"""PNG figures of runs, drawn on matplotlib ``Figure`` objects (no pyplot, no global state)."""

from __future__ import annotations

from pathlib import Path

import pandas as pd
from matplotlib.figure import Figure

from instanseg_scnp._files import atomic_path


def plot_training_curves(history: list[dict], path: str | Path) -> Path:
    """Training and validation loss, and validation F1, per epoch; hotstart epochs shaded."""
    table = pd.DataFrame(history)
    epochs = table["epoch"] + 1
    figure = Figure(figsize=(9, 3.5), layout="constrained")
    loss_axes, f1_axes = figure.subplots(1, 2)
    loss_axes.plot(epochs, table["train_loss"], marker="o", label="train")
    loss_axes.plot(epochs, table["val_loss"], marker="o", label="validation")
    loss_axes.set(xlabel="epoch", ylabel="loss", title="InstanSeg loss")
    f1_axes.plot(epochs, table["val_f1"], marker="o", color="C2")
    f1_axes.set(xlabel="epoch", ylabel="F1 (IoU 0.5-0.9)", ylim=(0, 1), title="validation F1")
    hot = epochs[table["phase"] == "hotstart"]
    for axes in (loss_axes, f1_axes):
        if len(hot):
            axes.axvspan(hot.min() - 0.5, hot.max() + 0.5, color="0.9", label="hotstart (no SCNP)")
        axes.grid(alpha=0.3)
    loss_axes.legend()
    with atomic_path(path) as tmp:
        figure.savefig(tmp, format="png", dpi=120)
    return Path(path)
