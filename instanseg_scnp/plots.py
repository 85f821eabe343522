"""PNG figures of runs, drawn on matplotlib ``Figure`` objects (no pyplot, no global state)."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd
from matplotlib.figure import Figure

from instanseg_scnp._files import atomic_path


def plot_training_curves(history: list[dict], path: str | Path, *, title: str | None = None) -> Path:
    """Training and validation loss, and validation F1, per epoch; hotstart epochs shaded; ``title`` above."""
    table = pd.DataFrame(history)
    epochs = table["epoch"] + 1
    figure = Figure(figsize=(9, 3.5), layout="constrained")
    loss_axes, f1_axes = figure.subplots(1, 2)
    if title:
        figure.suptitle(title)
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


def plot_evaluation(per_image: pd.DataFrame, per_cell: pd.DataFrame, path: str | Path) -> Path:
    """Betti-0 error per image, and roundness and circularity histograms, prediction against ground truth."""
    figure = Figure(figsize=(13, 3.8), layout="constrained")
    betti_axes, *shape_axes = figure.subplots(1, 3)
    betti_axes.bar(range(len(per_image)), per_image["beta0_error"], color="C3")
    betti_axes.set(xlabel="image", ylabel="|β0(gt) - β0(pred)|",
                   title=f"Betti-0 error per image (mean {per_image['beta0_error'].mean():.2f})")
    bins = np.linspace(0, 1, 26)
    for axes, column in zip(shape_axes, ("roundness", "circularity"), strict=True):
        for source, color in (("ground truth", "0.5"), ("prediction", "C0")):
            values = per_cell.loc[per_cell["source"] == source, column].dropna()
            if values.empty:
                axes.plot([], [], color=color, label=f"{source} (no cells)")
                continue
            axes.hist(values, bins=bins, density=True, histtype="step" if source == "prediction" else "stepfilled",
                      color=color, alpha=1 if source == "prediction" else 0.5, linewidth=2,
                      label=f"{source} ({len(values)} cells, mean {values.mean():.3f})")
        axes.set(xlabel=column, ylabel="density", title=f"{column} per cell")
        axes.legend(loc="upper left", fontsize="small")
    with atomic_path(path) as tmp:
        figure.savefig(tmp, format="png", dpi=110)
    return Path(path)


def plot_comparison(runs: pd.DataFrame, metrics: dict[str, str], path: str | Path) -> Path:
    """One panel per metric: each setting's runs as dots, their mean as a bar, ±1 std as a line."""
    metrics = {key: title for key, title in metrics.items() if key in runs}
    settings = list(dict.fromkeys(runs["data"] + ": " + runs["setting"]))
    labels = runs["data"] + ": " + runs["setting"]
    columns = min(5, len(metrics))
    rows = -(-len(metrics) // columns)
    figure = Figure(figsize=(3.2 * columns, 0.9 + 0.45 * len(settings) * rows + 1.2 * rows), layout="constrained")
    for index, (key, title) in enumerate(metrics.items()):
        axes = figure.add_subplot(rows, columns, index + 1)
        for position, setting in enumerate(settings):
            values = runs.loc[labels == setting, key].astype(float)
            color = "0.6" if ": no SCNP" in setting else f"C{position % 10}"
            axes.barh(position, values.mean(), color=color, alpha=0.5,
                      xerr=values.std() if len(values) > 1 else None, capsize=3)
            axes.plot(values, np.full(len(values), position), "o", color=color, markersize=4)
        axes.set_yticks(range(len(settings)), settings if index % columns == 0 else [""] * len(settings),
                        fontsize="small")
        axes.invert_yaxis()
        axes.set_title(title, fontsize="medium")
        axes.grid(axis="x", alpha=0.3)
    with atomic_path(path) as tmp:
        figure.savefig(tmp, format="png", dpi=110)
    return Path(path)
