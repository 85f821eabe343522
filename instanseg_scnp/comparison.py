"""Compare runs: group them by SCNP setting, mean ± std over seeds, in the paper's table style.

Each run contributes the summary of its ``evaluation/`` folder (written at the end
of training); runs that differ only in ``seed`` form one group.
"""

from __future__ import annotations

import json
import logging
from pathlib import Path

import numpy as np
import pandas as pd

from instanseg_scnp._files import atomic_directory
from instanseg_scnp._options import setting_label
from instanseg_scnp.plots import plot_comparison
from instanseg_scnp.rundir import CONFIG, EVALUATION, require_run_dir
from instanseg_scnp.training.config import upgrade_saved

logger = logging.getLogger(__name__)

METRICS = {
    "pooled_mean_f1": ("F1 (IoU .5-.9)", "higher"),
    "pooled_f1_50": ("F1@0.5", "higher"),
    "mean_pq": ("PQ", "higher"),
    "mean_beta0_error": ("β0 error", "lower"),
    "mean_beta1_error": ("β1 error", "lower"),
    "mean_fragmented": ("fragmented", "lower"),
    "mean_splits": ("splits", "lower"),
    "mean_merges": ("merges", "lower"),
    "cell_roundness": ("roundness", "closer to ground truth"),
    "cell_circularity": ("circularity", "closer to ground truth"),
}
"""Summary key -> (column title, which way is better). β errors and counts are per image."""


def setting_name(config: dict, derived: dict) -> str:
    """A short name for what a run trained with: SCNP target, window and mode, and the losses.

    Examples
    --------
    >>> setting_name({"scnp": "off", "seed_loss": "l1_distance", "mask_loss": "dice_loss", "data": "synthetic"}, {})
    'no SCNP (l1_distance + dice_loss)'
    >>> setting_name({"scnp": "mask+seed", "seed_loss": "l1_distance", "mask_loss": "dice_loss",
    ...               "scnp_mode": "plain+penalized", "scnp_window": 5, "data": "synthetic"}, {})
    'SCNP mask+seed w5 plain+penalized (l1_distance + dice_loss)'
    >>> setting_name({"scnp": "both", "seed_loss": "binary_xloss", "mask_loss": "dice_loss", "scnp_mode": "both",
    ...               "scnp_window": "auto", "data": "synthetic"}, {"scnp_window": 5})  # an older run's config
    'SCNP mask+seed w5 plain+penalized (binary_xloss + dice_loss)'
    """
    config = upgrade_saved(config, derived)
    return setting_label(config["scnp"], config.get("scnp_window", 3), config.get("scnp_mode", "penalized"),
                         config["seed_loss"], config["mask_loss"])


def collect_runs(run_dirs: list[str | Path]) -> pd.DataFrame:
    """One row per run: its data, setting, seed and evaluation summary."""
    if not run_dirs:
        raise ValueError("compare needs at least one run directory")
    rows = []
    for run_dir in run_dirs:
        run_dir = require_run_dir(Path(run_dir), CONFIG, f"{EVALUATION}/summary.json")
        saved = json.loads((run_dir / CONFIG).read_text())
        config, derived = saved["config"], saved.get("derived", {})
        summary = json.loads((run_dir / EVALUATION / "summary.json").read_text())
        rows.append({"run": str(run_dir), "data": Path(str(config["data"])).stem,
                     "setting": setting_name(config, derived), "scnp": config["scnp"], "seed": config["seed"],
                     **summary})
    runs = pd.DataFrame(rows)
    duplicated = runs[runs.duplicated(["data", "setting", "seed"], keep=False)]
    if not duplicated.empty:
        logger.warning("runs with the same data, setting and seed are counted separately: %s",
                       ", ".join(duplicated["run"]))
    return runs


def summarize(runs: pd.DataFrame) -> pd.DataFrame:
    """Mean and std over the runs of each (data, setting); baselines first, then SCNP settings."""
    columns = [key for key in METRICS if key in runs]
    grouped = runs.groupby(["data", "setting"], sort=False)
    table = grouped[columns].agg(["mean", "std"])
    table.insert(0, ("runs", ""), grouped.size())
    gt = runs.groupby(["data"])[["gt_cell_roundness", "gt_cell_circularity"]].mean()
    order = sorted(table.index, key=lambda key: (key[0], not key[1].startswith("no SCNP"), key[1]))
    table = table.loc[order]
    table.attrs["ground_truth"] = gt
    return table


def markdown_table(table: pd.DataFrame) -> str:
    """The paper's style: one row per setting, ``mean ± std`` over seeds, best value in bold."""
    metrics = [key for key in METRICS if (key, "mean") in table]
    header = ["data", "setting", "runs", *(f"{METRICS[key][0]} {_arrow(key)}" for key in metrics)]
    lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    gt = table.attrs.get("ground_truth")
    for (data, setting), row in table.iterrows():
        cells = [data, setting, str(int(row[("runs", "")]))]
        for key in metrics:
            mean, std = row[(key, "mean")], row[(key, "std")]
            text = f"{mean:.3f}" + (f" ± {std:.3f}" if np.isfinite(std) else "")
            cells.append(f"**{text}**" if _is_best(table, data, key, mean, gt) else text)
        lines.append("| " + " | ".join(cells) + " |")
    if gt is not None:
        for data, row in gt.iterrows():
            cells = [data, "ground truth", "", *("" for _ in metrics)]
            for key in ("cell_roundness", "cell_circularity"):
                if key in metrics:
                    cells[3 + metrics.index(key)] = f"{row[f'gt_{key}']:.3f}"
            lines.append("| " + " | ".join(cells) + " |")
    return "\n".join(lines) + "\n"


def _arrow(key: str) -> str:
    return {"higher": "↑", "lower": "↓"}.get(METRICS[key][1], "(≈ gt)")


def _is_best(table: pd.DataFrame, data: str, key: str, mean: float, gt: pd.DataFrame | None) -> bool:
    """Whether ``mean`` is the best of its column, as printed (3 decimals): ties in print are not singled out."""
    means = table.loc[data][(key, "mean")].round(3)
    mean = round(mean, 3)
    if means.nunique() < 2 or not np.isfinite(mean):  # nothing to single out
        return False
    direction = METRICS[key][1]
    if direction == "higher":
        return mean == means.max()
    if direction == "lower":
        return mean == means.min()
    target = gt.loc[data, f"gt_{key}"] if gt is not None else np.nan
    distance = (means - target).abs().round(3)
    return np.isfinite(target) and round(abs(mean - target), 3) == distance.min()


def compare_runs(run_dirs: list[str | Path], output: str | Path, *, overwrite: bool = False) -> tuple[Path, str]:
    """Write ``comparison.md``, ``runs.csv`` and ``comparison.png`` to ``output``; returns it and the table."""
    runs = collect_runs(run_dirs)
    table = summarize(runs)
    markdown = markdown_table(table)
    with atomic_directory(output, overwrite=overwrite) as staging:
        (staging / "comparison.md").write_text(markdown)
        runs.to_csv(staging / "runs.csv", index=False)
        plot_comparison(runs, {key: title for key, (title, _) in METRICS.items()}, staging / "comparison.png")
    return Path(output), markdown
