"""``compare``: settings from the full config, baselines, and paired statistics against scipy and closed forms."""

import json

import numpy as np
import pandas as pd
import pytest
from scipy import stats

from instanseg_scnp.cli import main
from instanseg_scnp.comparison import (
    PAIRED_METRICS,
    RUN_METRICS,
    bootstrap_ci,
    choose_baselines,
    collect_runs,
    compare_runs,
    paired_differences,
)
from instanseg_scnp.rundir import RunDirError

IMAGES = [f"image_{i}" for i in range(6)]
BASELINE = "no SCNP (l1_distance + dice_loss)"
SCNP = "SCNP mask w3 penalized (l1_distance + dice_loss)"


def fake_run(root, name, *, scnp, seed, f1_50, merges, **config):
    """A finished run directory: config.json and an evaluation whose per-image values are given."""
    run = root / name
    (run / "evaluation").mkdir(parents=True)
    config = {"data": "synthetic", "scnp": scnp, "seed": seed, "epochs": 4, "hotstart": 1, **config}
    (run / "config.json").write_text(json.dumps({"config": config, "derived": {"data": "synthetic"}}))
    per_image = pd.DataFrame({"name": IMAGES, **{key: 0.5 for key in PAIRED_METRICS}})
    per_image["f1_50"], per_image["merges"] = f1_50, merges
    per_image.to_csv(run / "evaluation" / "per_image.csv", index=False)
    summary = {key: 0.5 for key in RUN_METRICS} | {"pooled_f1_50": float(np.mean(f1_50)),
                                                    "mean_merges": float(np.mean(merges)),
                                                    "run_dir": str(run), "data": "synthetic", "split": "Test"}
    (run / "evaluation" / "summary.json").write_text(json.dumps(summary))
    return run


def paired_runs(root, seeds=3, **config):
    """SCNP adds exactly 0.1 to every image's F1@0.5; merges move by +1 or -1, balanced: no change."""
    rng = np.random.default_rng(0)
    runs = []
    for seed in range(seeds):
        f1 = rng.uniform(0.3, 0.7, len(IMAGES))
        merges = rng.integers(2, 9, len(IMAGES)).astype(float)
        swing = np.where(np.arange(len(IMAGES)) % 2 == 0, 1.0, -1.0) * (-1) ** seed
        runs.append(fake_run(root, f"base-{seed}", scnp="off", seed=seed, f1_50=f1, merges=merges, **config))
        runs.append(fake_run(root, f"scnp-{seed}", scnp="mask", seed=seed, f1_50=f1 + 0.1, merges=merges + swing,
                             **config))
    return runs


def test_runs_that_differ_in_more_than_the_seed_are_different_settings(tmp_path):
    runs = [fake_run(tmp_path, "a", scnp="off", seed=0, f1_50=0.5, merges=1.0, epochs=2),
            fake_run(tmp_path, "b", scnp="off", seed=1, f1_50=0.5, merges=1.0, epochs=3),
            fake_run(tmp_path, "c", scnp="off", seed=2, f1_50=0.5, merges=1.0, epochs=3, device="cpu", workers=2)]
    collected = collect_runs(runs)
    assert collected.runs["setting"].tolist() == [f"{BASELINE} epochs=2", f"{BASELINE} epochs=3",
                                                  f"{BASELINE} epochs=3"]  # device and workers are not settings
    assert collected.runs["config.epochs"].tolist() == [2, 3, 3]
    assert len(collected.per_image) == 3 * len(IMAGES) and set(collected.per_image["seed"]) == {0, 1, 2}


def test_one_run_per_setting_and_seed(tmp_path):
    runs = [fake_run(tmp_path, "a", scnp="off", seed=0, f1_50=0.5, merges=1.0),
            fake_run(tmp_path, "b", scnp="off", seed=0, f1_50=0.6, merges=1.0)]
    with pytest.raises(ValueError, match="one run per setting and seed.*/a, .*/b"):
        collect_runs(runs)


def test_each_scnp_setting_gets_the_baseline_with_an_otherwise_equal_config(tmp_path):
    runs = paired_runs(tmp_path / "short", seeds=2, epochs=2) + paired_runs(tmp_path / "long", seeds=2, epochs=3)
    runs.append(fake_run(tmp_path, "lonely", scnp="mask", seed=0, f1_50=0.5, merges=1.0, epochs=3, lr=0.01))
    settings = collect_runs(runs).settings
    chosen, notes = choose_baselines(settings)
    assert chosen == {f"{SCNP} epochs=2 lr=0.003": f"{BASELINE} epochs=2 lr=0.003",
                      f"{SCNP} epochs=3 lr=0.003": f"{BASELINE} epochs=3 lr=0.003"}
    assert len(notes) == 1 and "lr (0.003 vs 0.01)" in notes[0] and "--allow-different lr" in notes[0]


def test_a_baseline_that_differs_in_more_than_scnp_is_refused_unless_allowed(tmp_path):
    runs = [fake_run(tmp_path, "a", scnp="off", seed=0, f1_50=0.5, merges=1.0, epochs=2),
            fake_run(tmp_path, "b", scnp="mask", seed=0, f1_50=0.5, merges=1.0, epochs=3, scnp_window=5)]
    settings = collect_runs(runs).settings
    baseline = f"{BASELINE} epochs=2"
    with pytest.raises(ValueError, match=r"in more than the SCNP options: epochs \(2 vs 3\)"):
        choose_baselines(settings, baseline)
    assert choose_baselines(settings, baseline, ("epochs",)) == ({"SCNP mask w5 penalized (l1_distance + "
                                                                  "dice_loss) epochs=3": baseline}, [])
    with pytest.raises(ValueError, match="none of the settings"):
        choose_baselines(settings, "no such setting")
    with pytest.raises(ValueError, match="names no config field"):
        choose_baselines(settings, baseline, ("epoch",))


def test_paired_differences_against_closed_forms_and_scipy(tmp_path):
    per_image = collect_runs(paired_runs(tmp_path)).per_image
    table = paired_differences(per_image, SCNP, BASELINE, n_boot=500).set_index("metric")
    f1 = table.loc["f1_50"]
    assert (f1["seeds"], f1["images"]) == (3, len(IMAGES))
    assert f1["difference"] == pytest.approx(0.1) and f1["ci_low"] == pytest.approx(0.1)
    assert f1["ci_high"] == pytest.approx(0.1) and f1["marked"] and f1["better"]
    merges = table.loc["merges"]  # +1 and -1 in equal numbers: no difference
    assert merges["difference"] == pytest.approx(0) and merges["ci_low"] < 0 < merges["ci_high"]
    assert not merges["marked"] and merges["better"] is None
    assert table.loc["pq", "wilcoxon_p"] == 1.0 and not table.loc["pq", "marked"]  # identical everywhere
    # Wilcoxon over images of the seed-averaged differences, as scipy computes it
    wide = per_image.pivot_table(index="name", columns=["setting", "seed"], values="f1_50")
    per_image_difference = (wide[SCNP] - wide[BASELINE]).mean(axis=1) + np.linspace(0, 0.01, len(IMAGES))
    noisy = per_image.copy()
    noisy.loc[noisy["setting"] == SCNP, "f1_50"] += np.tile(np.linspace(0, 0.01, len(IMAGES)), 3)
    p = paired_differences(noisy, SCNP, BASELINE, n_boot=10).set_index("metric").loc["f1_50", "wilcoxon_p"]
    assert p == pytest.approx(stats.wilcoxon(per_image_difference.to_numpy()).pvalue)


def test_lower_is_better_for_errors(tmp_path):
    per_image = collect_runs(paired_runs(tmp_path)).per_image
    per_image.loc[per_image["setting"] == SCNP, "splits"] -= 1  # one split fewer per image
    row = paired_differences(per_image, SCNP, BASELINE, n_boot=200).set_index("metric").loc["splits"]
    assert row["difference"] == pytest.approx(-1) and row["marked"] and row["better"]


def test_bootstrap_ci_matches_the_normal_interval_over_images():
    sample = np.random.default_rng(1).normal(0.3, 1.0, 400)
    low, high = bootstrap_ci(sample[None, :], n_boot=4000)
    half = 1.96 * sample.std(ddof=1) / np.sqrt(len(sample))
    assert low == pytest.approx(sample.mean() - half, abs=0.25 * half)
    assert high == pytest.approx(sample.mean() + half, abs=0.25 * half)


def test_bootstrap_ci_counts_the_spread_between_seeds():
    rng = np.random.default_rng(2)
    seed_effects = np.array([-1.0, 0.5, 2.0, -0.5, 1.0])
    differences = seed_effects[:, None] + rng.normal(0, 0.05, (5, 40))
    low, high = bootstrap_ci(differences)
    assert low < 0 < high  # the seeds disagree: an image-only bootstrap would call this a clear effect
    image_only = bootstrap_ci(differences.reshape(1, -1))
    assert image_only[1] - image_only[0] < (high - low) / 3
    with pytest.raises(ValueError, match="non-empty"):
        bootstrap_ci(np.zeros(3))


def test_compare_writes_every_table_and_bolds_only_supported_differences(tmp_path, capsys):
    runs = paired_runs(tmp_path / "runs")
    assert main(["compare", *map(str, runs), "--output", str(tmp_path / "out")]) == 0
    printed = capsys.readouterr().out
    out = tmp_path / "out"
    assert printed == (out / "comparison.md").read_text()
    assert (out / "comparison.png").read_bytes()[:4] == b"\x89PNG"
    assert len(pd.read_csv(out / "runs.csv")) == 6 and len(pd.read_csv(out / "per_image.csv")) == 6 * len(IMAGES)
    paired = pd.read_csv(out / "paired.csv")
    assert len(paired) == len(PAIRED_METRICS) and paired["marked"].sum() == 1
    row = next(line for line in printed.splitlines() if line.startswith(f"| {SCNP} | {BASELINE} |"))
    assert row.count("**") == 2 and "**+0.100 [+0.100, +0.100]**" in row
    assert f"makes {len(PAIRED_METRICS)} comparisons" in printed
    assert main(["compare", *map(str, runs), "--output", str(out)]) == 2  # no silent overwrite


def test_compare_refuses_unfinished_and_older_runs(tmp_path):
    (tmp_path / "half").mkdir()
    (tmp_path / "half" / "config.json").write_text("{}")
    with pytest.raises(RunDirError, match=r"missing \['evaluation/summary.json', 'evaluation/per_image.csv'\]"):
        collect_runs([tmp_path / "half"])
    with pytest.raises(ValueError, match="at least one run directory"):
        collect_runs([])
    old = fake_run(tmp_path, "old", scnp="off", seed=0, f1_50=0.5, merges=1.0)
    pd.read_csv(old / "evaluation" / "per_image.csv").drop(columns="count_error").to_csv(
        old / "evaluation" / "per_image.csv", index=False)
    with pytest.raises(ValueError, match="older version .*count_error.*instanseg-scnp evaluate"):
        compare_runs([old], tmp_path / "out")


def test_overwrite_replaces_a_comparison_but_never_a_users_file(tmp_path, capsys):
    runs = paired_runs(tmp_path / "runs", seeds=2)
    out = tmp_path / "out"
    assert main(["compare", *map(str, runs), "--output", str(out)]) == 0
    assert main(["compare", *map(str, runs), "--output", str(out), "--overwrite"]) == 0  # our own folder: replaced
    (out / "thesis.txt").write_text("months of work")
    assert main(["compare", *map(str, runs), "--output", str(out), "--overwrite"]) == 2
    assert "holds files this project did not write (thesis.txt)" in capsys.readouterr().err
    assert (out / "thesis.txt").read_text() == "months of work" and (out / "comparison.md").is_file()


def test_a_corrupt_config_is_one_line_naming_the_file(tmp_path, capsys):
    run = fake_run(tmp_path, "run", scnp="off", seed=0, f1_50=0.5, merges=1.0)
    (run / "config.json").write_text('{"config": {"data": "synth')  # truncated
    assert main(["compare", str(run), "--output", str(tmp_path / "out")]) == 2
    error = capsys.readouterr().err
    assert f"'{run / 'config.json'}' is not readable JSON" in error and "Traceback" not in error
