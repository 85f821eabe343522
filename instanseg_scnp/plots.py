"""PNG figures of runs, drawn on matplotlib ``Figure`` objects (no pyplot, no global state).

matplotlib is imported inside the functions that draw: importing this module does not load it.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd

from instanseg_scnp._files import atomic_path
from instanseg_scnp._options import baselines_first, is_baseline


def plot_training_curves(history: list[dict], path: str | Path, *, title: str | None = None) -> Path:
    """Training and validation loss, and validation F1, per epoch; hotstart epochs shaded; ``title`` above."""
    from matplotlib.figure import Figure

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
    f1_axes.set(xlabel="epoch", ylabel="F1, IoU .5:.05:.9", ylim=(0, 1), title="validation F1 (upstream's)")
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
    """Instance errors per image (splits, merges, count error), and roundness and circularity histograms,
    prediction against ground truth."""
    from matplotlib.figure import Figure

    figure = Figure(figsize=(13, 3.8), layout="constrained")
    error_axes, *shape_axes = figure.subplots(1, 3)
    positions = np.arange(len(per_image))
    for offset, (column, color) in enumerate((("splits", "C0"), ("merges", "C3"), ("count_error", "0.4"))):
        error_axes.bar(positions + (offset - 1) * 0.27, per_image[column], width=0.27, color=color,
                       label=f"{column.replace('_', ' ')} (mean {per_image[column].mean():.2f})")
    error_axes.set(xlabel="image", ylabel="per image", title="instance errors")
    error_axes.legend(fontsize="small")
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
    """One panel per metric: each run as a dot, each setting's mean as a bar, each seed's runs joined by a line
    (runs are paired by seed: the line shows how one seed moved between settings)."""
    from matplotlib.figure import Figure

    metrics = {key: title for key, title in metrics.items() if key in runs}
    labels = runs["data"] + ": " + runs["setting"]
    pairs = sorted(set(zip(runs["data"], runs["setting"], strict=True)),
                   key=lambda pair: (pair[0], *baselines_first(pair[1])))
    settings = [f"{data}: {setting}" for data, setting in pairs]
    position = labels.map({setting: index for index, setting in enumerate(settings)})
    columns = min(4, len(metrics))
    rows = -(-len(metrics) // columns)
    figure = Figure(figsize=(3.4 * columns, 0.9 + (0.45 * len(settings) + 1.2) * rows), layout="constrained")
    for index, (key, title) in enumerate(metrics.items()):
        axes = figure.add_subplot(rows, columns, index + 1)
        values = runs[key].astype(float)
        for _, members in runs.groupby(["data", "seed"]).groups.items():  # a seed's runs on one dataset
            order = position[members].sort_values().index
            axes.plot(values[order], position[order], "-", color="0.75", linewidth=0.8, zorder=1)
        for at, setting in enumerate(settings):
            chosen = values[labels == setting]
            color = "0.6" if is_baseline(pairs[at][1]) else f"C{at % 10}"
            axes.barh(at, chosen.mean(), color=color, alpha=0.4, zorder=0)
            axes.plot(chosen, np.full(len(chosen), at), "o", color=color, markersize=4, zorder=2)
        axes.set_yticks(range(len(settings)), settings if index % columns == 0 else [""] * len(settings),
                        fontsize="small")
        axes.invert_yaxis()
        axes.set_title(title, fontsize="medium")
        axes.grid(axis="x", alpha=0.3)
    with atomic_path(path) as tmp:
        figure.savefig(tmp, format="png", dpi=110)
    return Path(path)


def plot_validation_curves(epochs: pd.DataFrame, path: str | Path) -> Path:
    """Validation F1 per epoch of every run (thin), and each setting's mean over seeds (thick), one panel per
    dataset: whether the runs had stopped improving."""
    from matplotlib.figure import Figure

    datasets = list(dict.fromkeys(epochs["data"]))
    figure = Figure(figsize=(7.5, 3.6 * len(datasets)), layout="constrained")
    for axes, data in zip(np.atleast_1d(figure.subplots(len(datasets), 1)), datasets, strict=True):
        chosen = epochs[epochs["data"] == data]
        settings = sorted(set(chosen["setting"]), key=baselines_first)
        for index, setting in enumerate(settings):
            color = "0.4" if is_baseline(setting) else f"C{index % 10}"
            runs = chosen[chosen["setting"] == setting]
            for _, run in runs.groupby("run"):
                axes.plot(run["epoch"] + 1, run["val_f1"], color=color, alpha=0.3, linewidth=0.8)
            mean = runs.groupby("epoch")["val_f1"].mean()
            axes.plot(mean.index + 1, mean, color=color, linewidth=2.2,
                      label=f"{setting} ({runs['run'].nunique()} runs)")
        axes.set(xlabel="epoch", ylabel="validation F1, IoU .5:.05:.9", title=data, ylim=(0, None))
        axes.grid(alpha=0.3)
        axes.legend(fontsize="small", loc="lower right")
    with atomic_path(path) as tmp:
        figure.savefig(tmp, format="png", dpi=110)
    return Path(path)
