"""Matched-pair shape errors against shapes and matches computed by hand."""

from __future__ import annotations

import numpy as np
import pytest

from instanseg_scnp.metrics import MIN_SHAPE_AREA, cell_shapes, match, matched_pairs, shape_differences


def test_matched_pairs_are_the_pairs_match_counts():
    rng = np.random.default_rng(0)
    gt = np.kron(rng.integers(0, 9, (8, 8)), np.ones((6, 6), int))
    pred = np.roll(gt, 2, axis=1) * 3
    for threshold in (0.5, 0.7):
        pairs = matched_pairs(gt, pred, threshold)
        assert len(pairs) == match(gt, pred, thresholds=(threshold,))["per_threshold"][0]["tp"]
        assert (pairs["pred_label"] == 3 * pairs["gt_label"]).all()  # the roll keeps each label's block
        for row in pairs.itertuples():  # brute-force IoU of each pair
            a, b = gt == row.gt_label, pred == row.pred_label
            assert row.iou == pytest.approx((a & b).sum() / (a | b).sum()) and row.iou >= threshold


def test_shape_differences_pair_each_cell_with_its_own_match_and_skip_small_cells():
    gt = np.zeros((40, 90), int)
    gt[5:25, 5:25] = 1  # unchanged
    gt[5:25, 35:55] = 2  # predicted 16 px wide: roundness drops
    gt[30:33, 60:63] = 3  # 9 px, under the minimum area
    pred = gt * 10
    pred[5:25, 51:55] = 0
    pred[0:3, 80:90] = 77  # a spurious speck: matched to nothing, so not compared
    table = shape_differences(matched_pairs(gt, pred), cell_shapes(gt), cell_shapes(pred))
    assert table["gt_label"].tolist() == [1, 2] and table["pred_label"].tolist() == [10, 20]
    gt_shapes, pred_shapes = cell_shapes(gt).set_index("label"), cell_shapes(pred).set_index("label")
    for row in table.itertuples():
        for shape in ("roundness", "circularity"):
            expected = abs(pred_shapes.loc[row.pred_label, shape] - gt_shapes.loc[row.gt_label, shape])
            assert getattr(row, f"{shape}_error") == pytest.approx(expected)
    assert table.loc[0, "roundness_error"] == 0 and table.loc[1, "roundness_error"] > 0.1
    assert MIN_SHAPE_AREA > 9
    everything = shape_differences(matched_pairs(gt, pred), cell_shapes(gt), cell_shapes(pred), min_area=0)
    assert everything["gt_label"].tolist() == [1, 2, 3]
    with pytest.raises(ValueError, match="min_area"):
        shape_differences(matched_pairs(gt, pred), cell_shapes(gt), cell_shapes(pred), min_area=-1)
