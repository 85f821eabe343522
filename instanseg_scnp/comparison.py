r"""Compare runs: group them by everything they trained with, pair them by seed and image against a
baseline, and mark only the differences the data support.

**Settings.** Runs belong to one setting when their resolved configs are equal
in every field but :data:`NOT_A_SETTING` (the seed, and where and how a run
ran). Runs that differ in data, epochs, learning rate or any other field are
different settings, named by :func:`~instanseg_scnp._options.setting_label`
and the fields that tell them apart (``epochs=3``).

**Baseline.** Each SCNP setting is compared with the SCNP-off setting whose
config is otherwise equal (or with ``baseline``, which must differ from it only
in the SCNP options :data:`SCNP_FIELDS`, or in fields named in
``allow_different``).

**Paired statistics.** Training is paired by construction: a seed fixes the
initial weights and the tiles, and every run is scored on the same test
images. For a metric :math:`m` of :data:`PAIRED_METRICS`, each seed :math:`s`
run by both settings and each image :math:`i` give one difference
:math:`d_{si} = m_{si}(\text{setting}) - m_{si}(\text{baseline})`. We report

- the mean of :math:`d_{si}` (the mean over seeds of the per-run differences);
- a 95 % bootstrap CI, two-stage: resample the seeds, then the images within
  each drawn seed (:func:`bootstrap_ci`), so that both the seed-to-seed and the
  image-to-image spread count;
- the Wilcoxon signed-rank p over images of :math:`\bar d_i`, the difference
  averaged over seeds (:func:`scipy.stats.wilcoxon`).

A difference is marked (bold) only when its CI excludes 0; the report says how
many comparisons the table makes, since at 95 % one in twenty is expected to be
marked by chance when nothing differs.
"""

from __future__ import annotations

import dataclasses
import json
import logging
import warnings
from pathlib import Path

import numpy as np
import pandas as pd
from scipy import stats

from instanseg_scnp._files import atomic_directory, check_replaceable, read_json
from instanseg_scnp._options import baselines_first, setting_label
from instanseg_scnp.plots import plot_comparison, plot_validation_curves
from instanseg_scnp.rundir import CONFIG, EVALUATION, METRICS, require_run_dir
from instanseg_scnp.training.config import TrainConfig, upgrade_saved

logger = logging.getLogger(__name__)

NOT_A_SETTING = ("seed", "out", "device", "workers", "data_root", "preset", "log", "log_images_every", "export")
"""Config fields that do not make a different setting: the seed (what pairs runs), where a run wrote and
ran, where the data lives, the preset's name (its values are the resolved fields) and what it logged."""
SCNP_FIELDS = ("scnp", "scnp_window", "scnp_mode")
"""The fields in which a setting may differ from its baseline."""

PAIRED_METRICS = {
    "f1_50": ("F1@.5", "higher"),
    "f1_50to90_by10": ("F1 .5:.1:.9", "higher"),
    "pq": ("PQ", "higher"),
    "count_error": ("count error", "lower"),
    "splits": ("splits", "lower"),
    "merges": ("merges", "lower"),
    "fragmented": ("fragmented", "lower"),
    "beta0_error": ("β0 error", "lower"),
    "beta1_error": ("β1 error", "lower"),
    "roundness_error": ("roundness error", "lower"),
    "circularity_error": ("circularity error", "lower"),
}
"""Per-image column -> (title, which way is better), for the paired differences."""
RUN_METRICS = {(f"pooled_{key}" if key.startswith("f1") else f"mean_{key}"): value
               for key, value in PAIRED_METRICS.items()}
"""Summary key -> (column title, which way is better), for the runs table (mean ± std over seeds):
the same metrics, F1 pooled over the images as upstream reports it, the rest means over images."""
N_BOOTSTRAP = 2000
"""Bootstrap draws per CI."""
COMPARISON_FILES = ("comparison.md", "runs.csv", "per_image.csv", "paired.csv", "comparison.png", "epochs.csv",
                    "curves.png")
"""What a comparison folder holds: ``--overwrite`` replaces a folder of only these."""


@dataclasses.dataclass(frozen=True)
class Runs:
    """What :func:`collect_runs` read: one row per run, and one row per image of every run.

    ``runs`` has ``run, data, setting, seed``, the evaluation summary and the
    setting's config fields; ``per_image`` has ``run, data, setting, seed`` and the
    evaluation's per-image columns; ``settings`` maps each setting's name to its
    config fields (without :data:`NOT_A_SETTING`).
    """

    runs: pd.DataFrame
    per_image: pd.DataFrame
    settings: dict[str, dict]


def setting_fields(config: dict, derived: dict | None = None) -> dict:
    """The fields that make a run's setting: its resolved config without :data:`NOT_A_SETTING`.

    An older run's config is read in this version's spellings and resolved
    through its preset; ``data`` is the resolved dataset path when the run
    recorded one. With SCNP off, window and mode do not change the training and
    are left out.

    Examples
    --------
    >>> fields = setting_fields({"data": "synthetic", "scnp": "off", "seed": 3, "epochs": 5})
    >>> fields["epochs"], fields["lr"], fields["scnp_window"], "seed" in fields
    (5, 0.003, None, False)
    """
    derived = derived or {}
    known = {field.name for field in dataclasses.fields(TrainConfig)}
    saved = {key: value for key, value in upgrade_saved(config, derived).items() if key in known}
    fields = json.loads(TrainConfig(**saved).to_json())
    fields["data"] = str(derived.get("data", fields["data"]))
    if fields["scnp"] == "off":
        fields["scnp_window"] = fields["scnp_mode"] = None
    return {key: value for key, value in fields.items() if key not in NOT_A_SETTING}


def collect_runs(run_dirs: list[str | Path]) -> Runs:
    """Read each run's config and test-split evaluation; name the settings; check one run per setting and seed."""
    if not run_dirs:
        raise ValueError("compare needs at least one run directory")
    rows, images, fields = [], [], []
    for run_dir in run_dirs:
        run_dir = require_run_dir(Path(run_dir), CONFIG, f"{EVALUATION}/summary.json", f"{EVALUATION}/per_image.csv")
        saved = read_json(run_dir / CONFIG)
        summary = read_json(run_dir / EVALUATION / "summary.json")
        per_image = pd.read_csv(run_dir / EVALUATION / "per_image.csv")
        missing = [column for column in PAIRED_METRICS if column not in per_image]
        if missing:
            raise ValueError(f"{run_dir / EVALUATION} was written by an older version (no {', '.join(missing)}); "
                             f"evaluate it again: instanseg-scnp evaluate {run_dir} --output {run_dir / EVALUATION} "
                             "--overwrite")
        fields.append(setting_fields(saved["config"], saved.get("derived")))
        seed = int(saved["config"]["seed"])
        numbers = {key: value for key, value in summary.items() if isinstance(value, (int, float))}
        rows.append({"run": str(run_dir), "seed": seed, "split": summary.get("split"), **numbers})
        images.append(per_image.assign(run=str(run_dir), seed=seed))
    names = _setting_names(fields)
    runs = pd.DataFrame(rows)
    runs.insert(1, "data", [Path(field["data"]).stem for field in fields])
    runs.insert(2, "setting", names)
    runs = pd.concat([runs, pd.DataFrame(fields).drop(columns="data").add_prefix("config.")], axis=1)
    duplicated = runs[runs.duplicated(["setting", "seed"], keep=False)]
    if not duplicated.empty:
        raise ValueError("pairing needs one run per setting and seed; these runs repeat one: "
                         + ", ".join(duplicated["run"]))
    labels = runs.set_index("run")[["data", "setting"]]
    per_image = pd.concat(images, ignore_index=True)
    per_image = per_image.join(labels, on="run")
    front = ["run", "data", "setting", "seed"]
    per_image = per_image[front + [column for column in per_image if column not in front]]
    return Runs(runs, per_image, dict(zip(names, fields, strict=True)))


def _setting_names(fields: list[dict]) -> list[str]:
    """:func:`setting_label` of each run, plus ``field=value`` for every other field in which settings differ."""
    named = set(SCNP_FIELDS) | {"seed_loss", "mask_loss"}
    varying = [key for key in fields[0] if key not in named and len({json.dumps(f[key]) for f in fields}) > 1]
    names = []
    for field in fields:
        name = setting_label(field["scnp"], field["scnp_window"], field["scnp_mode"], field["seed_loss"],
                             field["mask_loss"])
        extra = [f"{key}={Path(field[key]).stem if key == 'data' else _shown(field[key])}" for key in varying]
        names.append(" ".join([name, *extra]))
    return names


def _shown(value: object) -> str:
    return "-".join(map(str, value)) if isinstance(value, list) else str(value)


def differing_fields(first: dict, second: dict, *, ignore: tuple[str, ...] = ()) -> dict[str, tuple]:
    """``{field: (first's value, second's value)}`` for each field in which two settings differ."""
    return {key: (first.get(key), second.get(key)) for key in sorted(set(first) | set(second))
            if key not in ignore and first.get(key) != second.get(key)}


def choose_baselines(settings: dict[str, dict], baseline: str | None = None,
                     allow_different: tuple[str, ...] = ()) -> tuple[dict[str, str], list[str]]:
    """Each setting's baseline, and notes on the settings left without one.

    Without ``baseline``, an SCNP setting's baseline is the SCNP-off setting equal
    to it in every field but :data:`SCNP_FIELDS` and ``allow_different``. With
    ``baseline`` (a setting name), every other setting is compared with it, and one
    that differs from it in any other field is refused with a ``ValueError`` naming
    the fields.
    """
    unknown = set(allow_different) - set(next(iter(settings.values()), {}))
    if unknown:
        raise ValueError(f"allow_different names no config field: {sorted(unknown)}")
    ignore = (*SCNP_FIELDS, *allow_different)
    if baseline is not None:
        if baseline not in settings:
            raise ValueError(f"baseline {baseline!r} is none of the settings compared: {sorted(settings)}")
        chosen = {}
        for name, fields in settings.items():
            if name == baseline:
                continue
            differ = differing_fields(settings[baseline], fields, ignore=ignore)
            if differ:
                raise ValueError(_refusal(name, baseline, differ))
            chosen[name] = baseline
        return chosen, []
    chosen, notes = {}, []
    baselines = {name: fields for name, fields in settings.items() if fields["scnp"] == "off"}
    for name, fields in settings.items():
        if fields["scnp"] == "off":
            continue
        candidates = [b for b, b_fields in baselines.items() if not differing_fields(b_fields, fields, ignore=ignore)]
        if len(candidates) > 1:
            raise ValueError(f"setting {name!r} has several baselines ({candidates}); choose one with --baseline")
        if candidates:
            chosen[name] = candidates[0]
            continue
        closest = min(baselines, key=lambda b: len(differing_fields(baselines[b], fields, ignore=ignore)), default=None)
        note = f"{name!r} has no SCNP-off setting with an otherwise equal config"
        if closest is not None:
            differ = differing_fields(baselines[closest], fields, ignore=ignore)
            note += f"; the closest, {_refusal(name, closest, differ)}"
        notes.append(note)
    return chosen, notes


def _refusal(name: str, baseline: str, differ: dict[str, tuple]) -> str:
    details = ", ".join(f"{key} ({a!r} vs {b!r})" for key, (a, b) in differ.items())
    return (f"{baseline!r}, differs from {name!r} in more than the SCNP options: {details}; pass --baseline "
            f"{baseline!r} --allow-different {' '.join(differ)} to compare them anyway")


def bootstrap_ci(differences: np.ndarray, *, level: float = 0.95, n_boot: int = N_BOOTSTRAP,
                 rng: int | np.random.Generator = 0) -> tuple[float, float]:
    """Two-stage percentile bootstrap CI of the mean of a (seeds, images) array of paired differences.

    Each draw resamples the seeds with replacement, then, within each drawn seed,
    the images with replacement, and takes the mean (NaNs skipped). With one
    seed it is the ordinary bootstrap over images.

    Examples
    --------
    >>> low, high = bootstrap_ci(np.full((3, 5), 0.2))
    >>> round(low, 6), round(high, 6)
    (0.2, 0.2)
    """
    differences = np.asarray(differences, float)
    if differences.ndim != 2 or differences.size == 0:
        raise ValueError(f"differences must be a non-empty (seeds, images) array, got shape {differences.shape}")
    generator = np.random.default_rng(rng)
    n_seeds, n_images = differences.shape
    seeds = generator.integers(0, n_seeds, (n_boot, n_seeds))
    images = generator.integers(0, n_images, (n_boot, n_seeds, n_images))
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", RuntimeWarning)  # a draw of only NaNs: skipped below
        draws = np.nanmean(differences[seeds[:, :, None], images], axis=(1, 2))
    draws = draws[np.isfinite(draws)]
    if not len(draws):
        return float("nan"), float("nan")
    low, high = np.percentile(draws, [50 * (1 - level), 50 * (1 + level)])
    return float(low), float(high)


def paired_differences(per_image: pd.DataFrame, setting: str, baseline: str, *,
                       metrics: dict[str, tuple[str, str]] = PAIRED_METRICS, n_boot: int = N_BOOTSTRAP,
                       rng: int = 0) -> pd.DataFrame:
    """One row per metric: ``setting`` minus ``baseline`` over the (seed, image) pairs both have.

    Columns: ``setting, baseline, metric, seeds, images, baseline_mean,
    setting_mean, difference, ci_low, ci_high, wilcoxon_p, marked`` (the CI
    excludes 0) and ``better`` (True/False when marked: whether the setting is
    better by the metric's direction; None otherwise).
    """
    own = per_image[per_image["setting"] == setting].set_index(["seed", "name"])
    base = per_image[per_image["setting"] == baseline].set_index(["seed", "name"])
    common = own.index.intersection(base.index)
    if common.empty:
        raise ValueError(f"{setting!r} and its baseline {baseline!r} share no (seed, image): run both with the "
                         "same seeds on the same data")
    dropped = len(own.index.union(base.index)) - len(common)
    if dropped:
        logger.warning("%s vs %s: %d (seed, image) rows without a partner are left out", setting, baseline, dropped)
    seeds = sorted(common.get_level_values("seed").unique())
    names = sorted(common.get_level_values("name").unique())
    rows = []
    for metric, (_, direction) in metrics.items():
        difference = (own.loc[common, metric] - base.loc[common, metric]).astype(float)
        grid = difference.unstack("name").reindex(index=seeds, columns=names).to_numpy()
        low, high = bootstrap_ci(grid, n_boot=n_boot, rng=rng)
        marked = bool(low > 0 or high < 0)
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", RuntimeWarning)  # no finite difference (no matched cells): NaN
            mean, per_image_mean = np.nanmean(grid), np.nanmean(grid, axis=0)
        rows.append({
            "setting": setting, "baseline": baseline, "metric": metric, "seeds": len(seeds), "images": len(names),
            "baseline_mean": float(base.loc[common, metric].mean()),
            "setting_mean": float(own.loc[common, metric].mean()),
            "difference": float(mean), "ci_low": low, "ci_high": high, "wilcoxon_p": _wilcoxon_p(per_image_mean),
            "marked": marked,
            "better": ((low > 0) == (direction == "higher")) if marked else None,
        })
    return pd.DataFrame(rows)


def _wilcoxon_p(per_image: np.ndarray) -> float:
    """Two-sided Wilcoxon signed-rank p of per-image differences; 1 when all are 0, NaN without any."""
    values = per_image[np.isfinite(per_image)]
    if not len(values):
        return float("nan")
    if not np.any(values):
        return 1.0
    return float(stats.wilcoxon(values).pvalue)


def summarize(runs: pd.DataFrame) -> pd.DataFrame:
    """Mean and std over the seeds of each setting; baselines first."""
    columns = [key for key in RUN_METRICS if key in runs]
    grouped = runs.groupby(["data", "setting"], sort=False)
    table = grouped[columns].agg(["mean", "std"])
    table.insert(0, ("seeds", ""), grouped["seed"].nunique())
    order = sorted(table.index, key=lambda key: (key[0], *baselines_first(key[1])))
    return table.loc[order]


def markdown_report(table: pd.DataFrame, paired: pd.DataFrame, notes: list[str]) -> str:
    """The runs table (mean ± std, nothing marked) and the paired differences (bold: CI excludes 0)."""
    metrics = [key for key in RUN_METRICS if (key, "mean") in table]
    header = ["data", "setting", "seeds", *(f"{RUN_METRICS[key][0]} {_arrow(RUN_METRICS[key][1])}" for key in metrics)]
    lines = ["## Runs", "", "Mean ± std over seeds. F1 is pooled over the test images (upstream's way); "
             "the other columns are means over images.", "", _row(header), "|" + "---|" * len(header)]
    for (data, setting), row in table.iterrows():
        cells = [data, setting, str(int(row[("seeds", "")]))]
        for key in metrics:
            mean, std = row[(key, "mean")], row[(key, "std")]
            cells.append(f"{mean:.3f}" + (f" ± {std:.3f}" if np.isfinite(std) else ""))
        lines.append(_row(cells))
    lines += ["", "## Paired differences against the baseline", ""]
    if paired.empty:
        lines.append("No setting has a baseline to be paired with.")
    else:
        shown = [key for key in PAIRED_METRICS if key in set(paired["metric"])]
        comparisons = len(paired)
        lines += [
            "Setting minus baseline, averaged over the (seed, image) pairs both ran, with a 95% two-stage bootstrap "
            "CI (seeds, then images). **Bold**: the CI excludes 0. ↑/↓: which way is better. "
            f"This table makes {comparisons} comparisons; at 95% each, about {comparisons / 20:.1f} would be "
            "bold by chance alone if no setting differed from its baseline. Wilcoxon p over images: `paired.csv`.",
            "",
        ]
        header = ["setting", "baseline", "seeds × images",
                  *(f"{PAIRED_METRICS[key][0]} {_arrow(PAIRED_METRICS[key][1])}" for key in shown)]
        lines += [_row(header), "|" + "---|" * len(header)]
        for (setting, baseline), rows in paired.groupby(["setting", "baseline"], sort=False):
            rows = rows.set_index("metric")
            first = rows.iloc[0]
            cells = [setting, baseline, f"{first['seeds']} × {first['images']}"]
            for key in shown:
                row = rows.loc[key]
                text = f"{row['difference']:+.3f} [{row['ci_low']:+.3f}, {row['ci_high']:+.3f}]"
                cells.append(f"**{text}**" if row["marked"] else text)
            lines.append(_row(cells))
    if notes:
        lines += ["", *(f"- Not paired: {note}." for note in notes)]
    return "\n".join(lines) + "\n"


def _row(cells: list[str]) -> str:
    return "| " + " | ".join(cells) + " |"


def _arrow(direction: str) -> str:
    return {"higher": "↑", "lower": "↓"}[direction]


def validation_curves(runs: pd.DataFrame) -> pd.DataFrame:
    """Every run's ``metrics.csv`` (one row per epoch), with ``run, data, setting, seed``; empty if none has one."""
    tables = [pd.read_csv(Path(row.run) / METRICS).assign(run=row.run, data=row.data, setting=row.setting,
                                                          seed=row.seed)
              for row in runs.itertuples() if (Path(row.run) / METRICS).is_file()]
    return pd.concat(tables, ignore_index=True) if tables else pd.DataFrame()


def compare_runs(run_dirs: list[str | Path], output: str | Path, *, baseline: str | None = None,
                 allow_different: tuple[str, ...] = (), overwrite: bool = False,
                 n_boot: int = N_BOOTSTRAP) -> tuple[Path, str]:
    """Compare finished runs; returns the folder written and the Markdown report.

    The folder holds ``comparison.md`` (the report), ``runs.csv`` (one row per
    run: summary and config), ``per_image.csv`` (every test image of every run),
    ``paired.csv`` (:func:`paired_differences` of every setting against its
    baseline), ``comparison.png`` (each metric per run, a seed's runs joined by a
    line), and, when the runs logged them, ``epochs.csv`` and ``curves.png`` (the
    validation F1 of every epoch of every run).
    """
    check_replaceable(output, overwrite=overwrite, ours=COMPARISON_FILES)  # before the work; checked again at the end
    collected = collect_runs(run_dirs)
    baselines, notes = choose_baselines(collected.settings, baseline, tuple(allow_different))
    for note in notes:
        logger.warning("not paired: %s", note)
    paired = pd.concat([paired_differences(collected.per_image, setting, base, n_boot=n_boot)
                        for setting, base in baselines.items()], ignore_index=True) if baselines else pd.DataFrame()
    markdown = markdown_report(summarize(collected.runs), paired, notes)
    curves = validation_curves(collected.runs)
    with atomic_directory(output, overwrite=overwrite, ours=COMPARISON_FILES) as staging:
        (staging / "comparison.md").write_text(markdown)
        collected.runs.to_csv(staging / "runs.csv", index=False)
        collected.per_image.to_csv(staging / "per_image.csv", index=False)
        paired.to_csv(staging / "paired.csv", index=False)
        plot_comparison(collected.runs, {key: title for key, (title, _) in RUN_METRICS.items()},
                        staging / "comparison.png")
        if not curves.empty:
            curves.to_csv(staging / "epochs.csv", index=False)
            plot_validation_curves(curves, staging / "curves.png")
    return Path(output), markdown
