import json

import numpy as np
import pytest

from instanseg_scnp.cli import main
from instanseg_scnp.comparison import collect_runs, markdown_table, summarize
from instanseg_scnp.rundir import RunDirError

SUMMARY_KEYS = ("pooled_mean_f1", "pooled_f1_50", "mean_pq", "mean_beta0_error", "mean_beta1_error",
                "mean_fragmented", "mean_splits", "mean_merges", "cell_roundness", "cell_circularity")


def fake_run(root, name, *, scnp, seed, f1, beta0, window=3):
    run = root / name
    (run / "evaluation").mkdir(parents=True)
    config = {"data": "synthetic", "scnp": scnp, "seed": seed, "seed_loss": "binary_xloss",
              "mask_loss": "dice_loss", "scnp_mode": "penalized", "scnp_window": window}
    (run / "config.json").write_text(json.dumps({"config": config, "derived": {"scnp_window": window}}))
    summary = {key: 0.5 for key in SUMMARY_KEYS} | {"pooled_mean_f1": f1, "mean_beta0_error": beta0,
                                                     "gt_cell_roundness": 0.6, "gt_cell_circularity": 0.8}
    (run / "evaluation" / "summary.json").write_text(json.dumps(summary))
    return run


@pytest.fixture
def runs(tmp_path):
    return [fake_run(tmp_path, "scnp-0", scnp="mask", seed=0, f1=0.6, beta0=2.0),
            fake_run(tmp_path, "base-0", scnp="off", seed=0, f1=0.5, beta0=4.0),
            fake_run(tmp_path, "base-1", scnp="off", seed=1, f1=0.4, beta0=6.0),
            fake_run(tmp_path, "scnp-1", scnp="mask", seed=1, f1=0.7, beta0=3.0)]


def test_runs_group_by_setting_with_mean_and_std_over_seeds(runs):
    table = summarize(collect_runs(runs))
    settings = [setting for _, setting in table.index]
    assert settings == ["no SCNP (binary_xloss + dice_loss)", "SCNP mask w3 penalized (binary_xloss + dice_loss)"]
    baseline = table.iloc[0]
    assert baseline[("runs", "")] == 2
    assert baseline[("pooled_mean_f1", "mean")] == pytest.approx(0.45)
    assert baseline[("pooled_mean_f1", "std")] == pytest.approx(np.std([0.5, 0.4], ddof=1))
    assert table.iloc[1][("mean_beta0_error", "mean")] == pytest.approx(2.5)


def test_markdown_table_marks_the_best_value_per_column(runs):
    markdown = markdown_table(summarize(collect_runs(runs)))
    lines = markdown.splitlines()
    assert lines[0].startswith("| data | setting | runs | F1 (IoU .5-.9) ↑")
    assert "| 0.450 ± 0.071 |" in lines[2] and "**0.650 ± 0.071**" in lines[3]  # F1: higher is better
    assert "**2.500 ± 0.707**" in lines[3] and "| 5.000 ± 1.414 |" in lines[2]  # β0 error: lower is better
    assert lines[4].startswith("| synthetic | ground truth |") and "0.600" in lines[4]


def test_compare_command_prints_and_writes_the_table(runs, tmp_path, capsys):
    assert main(["compare", *map(str, runs), "--output", str(tmp_path / "out")]) == 0
    printed = capsys.readouterr().out
    assert printed == (tmp_path / "out" / "comparison.md").read_text()
    assert (tmp_path / "out" / "comparison.png").read_bytes()[:4] == b"\x89PNG"
    assert len((tmp_path / "out" / "runs.csv").read_text().splitlines()) == 5
    assert main(["compare", *map(str, runs), "--output", str(tmp_path / "out")]) == 2  # no silent overwrite


def test_compare_refuses_unfinished_runs(tmp_path):
    (tmp_path / "half").mkdir()
    (tmp_path / "half" / "config.json").write_text("{}")
    with pytest.raises(RunDirError, match=r"missing \['evaluation/summary.json'\]"):
        collect_runs([tmp_path / "half"])
    with pytest.raises(ValueError, match="at least one run directory"):
        collect_runs([])
