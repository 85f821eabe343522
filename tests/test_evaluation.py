import json

import numpy as np
import pandas as pd
import pytest

from instanseg_scnp.data import synthetic_dataset
from instanseg_scnp.evaluation import PER_IMAGE_COLUMNS, evaluate_items, score_image, write_evaluation
from instanseg_scnp.metrics import MIN_SHAPE_AREA, cell_shapes, match, topology_errors


@pytest.fixture(scope="module")
def items():
    return synthetic_dataset(n_train=1, n_validation=1, n_test=3, shape=(96, 96), rng=2)["Test"]


def shifted(image, pixel_size, *, lookup):
    """A stand-in model: the ground truth moved two pixels right."""
    return np.roll(lookup[id(image)], 2, axis=1)


def test_perfect_segmenter_scores_perfectly(items):
    truth = {id(item["image"]): item["nucleus_masks"] for item in items}
    evaluation = evaluate_items(lambda image, pixel_size: truth[id(image)].copy(), items)
    assert list(evaluation.per_image.columns) == list(PER_IMAGE_COLUMNS)
    assert (evaluation.per_image[["f1_50", "f1_50to90_by05", "f1_50to90_by10", "pq"]] == 1).all().all()
    errors = ["count_error", "beta0_error", "beta1_error", "splits", "merges", "missed", "roundness_error",
              "circularity_error"]
    assert (evaluation.per_image[errors] == 0).all().all()
    summary = evaluation.summary
    assert summary["pooled_f1_50to90_by10"] == 1 and summary["cell_roundness"] == summary["gt_cell_roundness"]


def test_per_image_rows_match_the_metrics_computed_directly(items):
    truth = {id(item["image"]): item["nucleus_masks"] for item in items}
    evaluation = evaluate_items(lambda image, size: shifted(image, size, lookup=truth), items)
    for item, (_, row) in zip(items, evaluation.per_image.iterrows(), strict=True):
        predicted = np.roll(item["nucleus_masks"], 2, axis=1)
        expected, errors = match(item["nucleus_masks"], predicted), topology_errors(item["nucleus_masks"], predicted)
        assert row["name"] == item["name"]
        assert row["f1_50to90_by05"] == pytest.approx(expected["mean_f1"])
        assert row["pq"] == pytest.approx(expected["pq"])
        assert row["f1_50to90_by10"] == pytest.approx(
            match(item["nucleus_masks"], predicted, thresholds=(0.5, 0.6, 0.7, 0.8, 0.9))["mean_f1"])
        assert row["beta0_error"] == errors["beta0_error"] and row["merges"] == errors["merges"]
        assert row["count_error"] == abs(len(np.unique(item["nucleus_masks"])) - len(np.unique(predicted)))
        assert row["roundness"] == pytest.approx(cell_shapes(predicted)["roundness"].mean())
        # a roll by 2 px keeps every cell's shape, except those it wraps around the right edge
        pairs = evaluation.pairs[evaluation.pairs["name"] == item["name"]]
        assert (pairs["gt_area"] >= MIN_SHAPE_AREA).all() and len(pairs) > 0
        inside = pairs[~pairs["gt_label"].isin(np.unique(item["nucleus_masks"][:, -2:]))]
        assert len(inside) > 0
        assert inside["roundness_error"].max() < 1e-9 and inside["circularity_error"].max() < 1e-9
    cells = evaluation.per_cell
    assert (cells["source"] == "ground truth").sum() == sum(len(np.unique(i["nucleus_masks"])) - 1 for i in items)
    # pooled F1 at 0.5: the F1 of the summed counts, not the mean of the images' F1
    counts = np.sum([[r["tp"], r["fp"], r["fn"]] for i in items
                     for r in match(i["nucleus_masks"], np.roll(i["nucleus_masks"], 2, axis=1))["per_threshold"]
                     if r["threshold"] == 0.5], axis=0)
    assert evaluation.summary["pooled_f1_50"] == pytest.approx(2 * counts[0] / (2 * counts[0] + counts[1] + counts[2]))


def test_unannotated_pixels_do_not_count(items):
    item = {**items[0], "nucleus_masks": items[0]["nucleus_masks"].copy()}
    item["nucleus_masks"][:, :48] = -1
    spurious = np.where(np.arange(96)[None, :] < 48, 99, item["nucleus_masks"].clip(0))  # junk where unannotated
    evaluation = evaluate_items(lambda image, size: spurious.copy(), [item])
    assert evaluation.per_image.loc[0, "f1_50"] == 1 and evaluation.per_image.loc[0, "spurious"] == 0


def test_write_evaluation_writes_every_file_and_keeps_existing_results(items, tmp_path):
    truth = {id(item["image"]): item["nucleus_masks"] for item in items}
    evaluation = evaluate_items(lambda image, size: shifted(image, size, lookup=truth), items)
    folder = write_evaluation(evaluation, tmp_path / "evaluation", extra={"split": "Test"})
    assert sorted(p.name for p in folder.iterdir()) == ["evaluation.png", "pairs.csv", "per_cell.csv",
                                                        "per_image.csv", "summary.json"]
    assert json.loads((folder / "summary.json").read_text())["split"] == "Test"
    pd.testing.assert_frame_equal(pd.read_csv(folder / "per_image.csv"), evaluation.per_image, check_dtype=False)
    with pytest.raises(FileExistsError, match="exists; pass --overwrite"):
        write_evaluation(evaluation, folder)
    write_evaluation(evaluation, folder, overwrite=True)  # our own folder: replaced
    (folder / "notes.txt").write_text("mine")
    with pytest.raises(FileExistsError, match=r"did not write \(notes.txt\)"):
        write_evaluation(evaluation, folder, overwrite=True)
    assert (folder / "notes.txt").read_text() == "mine"
    assert not list(tmp_path.glob(".*"))  # no staging folder left behind


def test_summary_json_is_strict_json_with_null_for_no_value(items, tmp_path):
    evaluation = evaluate_items(lambda image, size: np.zeros(image.shape[:2], np.int32), items)  # finds nothing
    assert np.isnan(evaluation.summary["cell_roundness"])
    folder = write_evaluation(evaluation, tmp_path / "evaluation")

    def refuse(constant):
        raise AssertionError(f"{constant} is not JSON")

    summary = json.loads((folder / "summary.json").read_text(), parse_constant=refuse)
    assert summary["cell_roundness"] is None and summary["mean_roundness_error"] is None
    assert summary["pooled_f1_50"] == 0.0


@pytest.mark.filterwarnings("ignore:Sparse:UserWarning")  # raised inside upstream's sparse IoU
def test_pooled_f1_by_tenths_is_upstreams_reported_mean_f1(items):
    """Oracle: upstream's ``compute_and_export_metrics``, which InstanSeg reports a dataset's mean_f1 with."""
    import torch
    from instanseg.utils.metrics import compute_and_export_metrics

    truth = {id(item["image"]): item["nucleus_masks"] for item in items}
    evaluation = evaluate_items(lambda image, size: shifted(image, size, lookup=truth), items)
    gt = [torch.from_numpy(item["nucleus_masks"].astype(np.int32)) for item in items]
    pred = [torch.from_numpy(np.roll(item["nucleus_masks"], 2, axis=1).astype(np.int32)) for item in items]
    mean_f1, f1_05 = compute_and_export_metrics(gt, pred, None, "nuclei", return_metrics=True, verbose=False)
    assert 0 < mean_f1 < 1
    assert evaluation.summary["pooled_f1_50to90_by10"] == pytest.approx(mean_f1, abs=1e-8)
    assert evaluation.summary["pooled_f1_50"] == pytest.approx(f1_05, abs=1e-8)


def _hand_made_pair():
    """Ground truth and prediction (20 x 40) whose scores are known by hand.

    gt cells: A=1 (10 x 12), B=4 (10 x 8) beside C=5 (10 x 4), D=7, E=8, F=11 (6 x 6 each).
    predicted: A split into 2 (10 x 4, IoU 1/3) and 3 (10 x 8, IoU 2/3); B and C merged into 6
    (IoU 2/3 with B, 1/3 with C); E found exactly (10); D and F missed; 9 spurious.
    """
    gt, pred = np.zeros((20, 40), np.int32), np.zeros((20, 40), np.int32)
    gt[0:10, 0:12], gt[0:10, 14:22], gt[0:10, 22:26] = 1, 4, 5
    gt[12:18, 0:6], gt[12:18, 10:16], gt[12:18, 20:26] = 7, 8, 11
    pred[0:10, 0:4], pred[0:10, 4:12], pred[0:10, 14:26] = 2, 3, 6
    pred[12:18, 10:16], pred[12:18, 30:36] = 10, 9
    return gt, pred


def test_score_image_matches_counts_derived_by_hand():
    gt, pred = _hand_made_pair()
    score = score_image(gt, pred, name="hand")
    row = score.row
    assert list(row) == list(PER_IMAGE_COLUMNS) and row["name"] == "hand"
    assert (row["n_gt"], row["n_pred"], row["count_error"]) == (6, 5, 1)
    # IoU 0.5 to 0.65: (A, 3), (B, 6), (E, 10) match; from 0.7 only (E, 10)
    assert score.counts[0.5] == (3, 2, 3) and score.counts[0.65] == (3, 2, 3)
    assert score.counts[0.7] == (1, 4, 5) and score.counts[0.9] == (1, 4, 5)
    assert row["f1_50"] == pytest.approx(6 / 11)
    assert row["f1_50to90_by10"] == pytest.approx((2 * 6 / 11 + 3 * 2 / 11) / 5)
    assert row["f1_50to90_by05"] == pytest.approx((4 * 6 / 11 + 5 * 2 / 11) / 9)
    assert row["pq"] == pytest.approx((2 / 3 + 2 / 3 + 1) / 3 * 6 / 11)
    assert (row["splits"], row["merges"], row["missed"], row["spurious"], row["fragmented"]) == (1, 1, 2, 1, 0)
    # foreground pieces: gt A, B+C, D, E, F (5); predicted 2+3, 6, 10, 9 (4); no holes
    assert (row["beta0_error"], row["beta1_error"]) == (1, 0)
    assert score.pairs["gt_label"].tolist() == [1, 4, 8] and score.pairs["pred_label"].tolist() == [3, 6, 10]
    # E is found exactly; A (10 x 12, aspect 1.2) is rounder than its match 3 (10 x 8, aspect 1.25)
    assert score.pairs["roundness_error"].iloc[2] == 0
    assert score.pairs["roundness_gt"].iloc[0] > score.pairs["roundness_pred"].iloc[0]
    assert row["roundness_error"] == pytest.approx(score.pairs["roundness_error"].mean())
    assert sorted(score.gt_shapes["label"]) == [1, 4, 5, 7, 8, 11] and sorted(score.shapes["label"]) == [2, 3, 6, 9, 10]
    assert row["roundness"] == pytest.approx(score.shapes["roundness"].mean())


def test_evaluate_items_rows_are_score_image_rows():
    gt, pred = _hand_made_pair()
    evaluation = evaluate_items(lambda image, size: pred.copy(), [{"name": "hand", "image": gt, "nucleus_masks": gt}])
    expected = pd.DataFrame([score_image(gt, pred, name="hand").row])
    pd.testing.assert_frame_equal(evaluation.per_image, expected, check_dtype=False)
    assert evaluation.summary["pooled_f1_50"] == pytest.approx(6 / 11)
