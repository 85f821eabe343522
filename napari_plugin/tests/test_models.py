"""The "Compare models" computations, without a viewer: hand-made labels with counts derived by hand, and runs
of the session's tiny model checked against ``segment(load_model(run_dir), image)``."""

from __future__ import annotations

import hashlib
import zipfile

import numpy as np
import pandas as pd
import pytest
from instanseg_scnp.metrics import cell_shapes
from instanseg_scnp.upstream import load_model, segment

import napari_instanseg_scnp._models as models_module
from napari_instanseg_scnp._compute import ERROR_CLASSES, SHAPE_RANGE
from napari_instanseg_scnp._models import (
    GROUND_TRUTH,
    HISTOGRAM_COLUMNS,
    InputError,
    compare_labels,
    compare_models,
    compare_models_steps,
    model_names,
)

SPLIT, MERGED = ERROR_CLASSES.index("split") + 1, ERROR_CLASSES.index("merged") + 1


def hand_made():
    """A ground truth of four cells, a prediction merging two of them, and one splitting another (20 x 24).

    gt: 1 (8 x 8) beside 2 (8 x 6), 3 (8 x 8), 4 (8 x 10).
    "merge": 5 = 1 + 2 (IoU 64/112 with 1, so matched to it); 3 and 4 exact.
    "split": 1, 2, 3 exact; 4 cut into 6 (8 x 3, IoU 0.3) and 7 (8 x 7, IoU 0.7, matched).
    """
    gt = np.zeros((20, 24), np.int32)
    gt[0:8, 0:8], gt[0:8, 8:14], gt[10:18, 0:8], gt[10:18, 10:20] = 1, 2, 3, 4
    merge = np.where(np.isin(gt, (1, 2)), 5, gt).astype(np.int32)
    split = gt.copy()
    split[10:18, 10:13], split[10:18, 13:20] = 6, 7
    return gt, merge, split


def test_compare_labels_scores_a_merge_and_a_split_as_counted_by_hand():
    gt, merge, split = hand_made()
    comparison = compare_labels({"merge": merge, "split": split}, gt)
    summary = comparison.summary
    assert list(summary.index) == ["merge", "split", GROUND_TRUTH] and comparison.has_ground_truth
    # merge: 3 cells, TP 3 (5-1, 3, 4), FP 0, FN 1 (2); split: 5 cells, TP 4, FP 1 (6), FN 0
    assert summary.loc["merge", ["n_cells", "merged", "split", "missed", "spurious", "count_error"]].tolist() \
        == [3, 1, 0, 0, 0, 1]
    assert summary.loc["split", ["n_cells", "merged", "split", "missed", "spurious", "count_error"]].tolist() \
        == [5, 0, 1, 0, 0, 1]
    assert summary.loc["merge", "f1_50"] == pytest.approx(6 / 7)
    assert summary.loc["split", "f1_50"] == pytest.approx(8 / 9)
    # foreground pieces: {1, 2}, 3, 4 in every image; no holes
    assert (summary.loc[["merge", "split"], ["beta0_error", "beta1_error", "fragmented"]] == 0).all().all()
    assert summary.loc[GROUND_TRUTH, "n_cells"] == 4 and summary.loc[GROUND_TRUTH, ["f1_50", "merged"]].isna().all()
    # the error layers: the merged cell with its predicted pixels, the split cell with its gt pixels
    assert np.array_equal(comparison.models["merge"].errors, np.where(merge == 5, MERGED, 0))
    assert np.array_equal(comparison.models["split"].errors, np.where(gt == 4, SPLIT, 0))
    assert comparison.models["split"].error_counts == {"split": 1, "merged": 0, "fragmented": 0, "missed": 0,
                                                       "spurious": 0}
    # paired shape differences: the split's matched cells 1, 2, 3 are exact, 4 is found as its 8 x 7 part
    shapes = cell_shapes(gt).set_index("label")
    part = cell_shapes(split).set_index("label").loc[7, "roundness"]
    assert summary.loc["split", "roundness_error"] == pytest.approx(abs(shapes.loc[4, "roundness"] - part) / 4)
    assert summary.loc[GROUND_TRUTH, "roundness"] == pytest.approx(shapes["roundness"].mean())


def test_compare_labels_histograms_hold_every_series_on_one_set_of_edges():
    gt, merge, split = hand_made()
    comparison = compare_labels({"merge": merge, "split": split}, gt)
    assert set(comparison.histograms) == set(HISTOGRAM_COLUMNS)
    edges, fractions = comparison.histograms["circularity"]
    assert list(fractions) == ["merge", "split", GROUND_TRUTH]
    for name, labels in (("merge", merge), ("split", split), (GROUND_TRUTH, gt)):
        counts = np.histogram(cell_shapes(labels)["circularity"], np.linspace(*SHAPE_RANGE, len(edges)))[0]
        np.testing.assert_allclose(fractions[name], counts / counts.sum())


def test_compare_labels_without_ground_truth_maps_cells_unmatched_in_the_other_model():
    gt, merge, split = hand_made()
    comparison = compare_labels({"merge": merge, "split": split})
    assert not comparison.has_ground_truth and comparison.models["merge"].errors is None
    assert list(comparison.summary.columns) == ["n_cells", "roundness", "circularity", "unmatched"]
    # merge's 5 matches split's 1 (IoU 64/112), 3 and 4 match 3 and 7; split's 2 and 6 have no match
    assert comparison.summary["unmatched"].tolist() == [0, 2]
    assert not comparison.models["merge"].disagreement.any()
    assert np.array_equal(comparison.models["split"].disagreement, np.isin(split, (2, 6)).astype(np.uint8))
    assert comparison.agreement.loc["merge", "split"] == pytest.approx(2 * 3 / (3 + 5))
    assert comparison.agreement.loc["split", "split"] == 1


def test_compare_labels_of_three_models_counts_the_models_that_miss_each_cell():
    gt, merge, split = hand_made()
    comparison = compare_labels({"merge": merge, "split": split, "truth": gt})
    # split's 2: unmatched in merge only; its 6: in merge and truth. truth's 2: unmatched in merge.
    expected = np.select([split == 2, split == 6], [1, 2], 0)
    assert np.array_equal(comparison.models["split"].disagreement, expected)
    assert np.array_equal(comparison.models["truth"].disagreement, (gt == 2).astype(np.uint8))
    assert comparison.summary[["unmatched", "unmatched_in_all"]].to_dict("list") == {
        "unmatched": [0, 2, 1], "unmatched_in_all": [0, 1, 0]}


def test_compare_labels_leaves_unannotated_pixels_out_of_the_scores():
    gt, merge, split = hand_made()
    gt[10:18, 10:20] = -1  # cell 4, the one split, unannotated
    comparison = compare_labels({"split": split}, gt)
    row = comparison.summary.loc["split"]
    assert (row["n_cells"], row["split"], row["f1_50"]) == (3, 0, 1.0)
    assert comparison.agreement is None and comparison.models["split"].disagreement is None
    assert np.array_equal(comparison.models["split"].labels, split)  # the layer shows every cell


def test_compare_labels_refuses_too_few_and_mismatched_labels():
    gt, merge, split = hand_made()
    with pytest.raises(InputError, match="models: comparing needs at least two models, or one with a ground truth"):
        compare_labels({"merge": merge})
    with pytest.raises(InputError, match=r"labels of model 'split'.*\(20, 23\)"):
        compare_labels({"merge": merge, "split": split[:, :-1]})
    with pytest.raises(InputError, match="ground_truth"):
        compare_labels({"merge": merge}, gt[:-1])


def test_model_names_are_short_and_unique(tmp_path):
    (tmp_path / "x" / "tiny").mkdir(parents=True)
    (tmp_path / "x" / "tiny" / "instanseg.pt").write_bytes(b"")
    paths = [tmp_path / "x" / "tiny", tmp_path / "y" / "tiny", tmp_path / "x" / "tiny" / "instanseg.pt",
             "exports/b.pt", f"{GROUND_TRUTH}.pt"]
    assert model_names(paths) == ["tiny", "tiny (2)", "tiny (3)", "b", f"{GROUND_TRUTH} (2)"]


@pytest.fixture
def fake_models(tmp_path):
    """Two model files and a segmenter that returns the hand-made labels of each."""
    gt, merge, split = hand_made()
    known = {"merge": merge, "split": split}
    files = []
    for name in known:
        (tmp_path / f"{name}.pt").write_bytes(b"not run")
        files.append(tmp_path / f"{name}.pt")
    return files, lambda file, image: known[file.stem].copy(), gt


def test_compare_models_steps_yields_each_stage_and_returns_the_comparison(fake_models):
    files, segmenter, gt = fake_models
    steps = compare_models_steps(np.zeros(gt.shape, np.float32), files, gt, segmenter=segmenter)
    stages = []
    while True:
        try:
            stages.append(next(steps))
        except StopIteration as done:
            comparison = done.value
            break
    assert stages == ["model 1/2: merge", "model 2/2: split", "scoring", "comparing models", "measuring shapes"]
    expected = compare_labels(dict(zip(("merge", "split"), hand_made()[1:], strict=True)), gt)
    pd.testing.assert_frame_equal(comparison.summary, expected.summary)
    assert comparison.models["merge"].path == files[0]


def test_compare_models_allows_one_model_with_ground_truth(fake_models):
    files, segmenter, gt = fake_models
    comparison = compare_models(np.zeros(gt.shape), files[:1], gt, segmenter=segmenter)
    assert comparison.names == ["merge"] and comparison.summary.loc["merge", "merged"] == 1


def test_compare_models_errors_name_the_argument(fake_models, tmp_path):
    files, segmenter, gt = fake_models
    image = np.zeros(gt.shape)
    with pytest.raises(InputError, match="models: comparing needs at least two models.*or a ground truth"):
        compare_models(image, files[:1], segmenter=segmenter)
    with pytest.raises(InputError, match="models must be a list"):
        compare_models(image, str(files[0]), gt, segmenter=segmenter)
    with pytest.raises(InputError, match=r"models\[1\]: model .*nothing.pt' does not exist"):
        compare_models(image, [files[0], tmp_path / "nothing.pt"], segmenter=segmenter)
    (tmp_path / "sub").mkdir()
    with pytest.raises(InputError, match=r"models\[0\] and models\[2\] are the same model"):
        compare_models(image, [files[0], files[1], tmp_path / "sub" / ".." / files[0].name], segmenter=segmenter)
    with pytest.raises(InputError, match=r"ground_truth .*\(20, 24\), got \(20, 23\)"):
        compare_models(image, files, gt[:, :-1], segmenter=segmenter)
    with pytest.raises(InputError, match=r"image must be \(H, W, C\) with rgb=True"):
        compare_models(image, files, rgb=True, segmenter=segmenter)


def test_compare_models_refuses_an_unreadable_model(fake_models, tmp_path):
    files, _, gt = fake_models
    with pytest.raises(InputError, match=r"models\[0\]: .*merge.pt' is not a readable TorchScript model"):
        compare_models(np.zeros(gt.shape), files)


def test_compare_models_passes_tiling_to_segment_only_when_asked(fake_models, monkeypatch):
    files, _, gt = fake_models
    calls = []

    def fake_segment(model, image, **options):
        calls.append(options)
        return np.zeros(image.shape[:2], np.int32)

    monkeypatch.setattr(models_module, "load_model", lambda file, device: file)
    monkeypatch.setattr(models_module, "segment", fake_segment)
    image = np.zeros((*gt.shape, 3))
    compare_models(image, files, rgb=True)
    assert calls == [{"channel_axis": -1}] * 2
    calls.clear()
    progress, cancel = (lambda done, total: None), (lambda: False)
    compare_models(image, files, rgb=True, tile_size=128, progress=progress, cancel=cancel)
    assert calls == [{"channel_axis": -1, "tile_size": 128, "progress": progress, "cancel": cancel}] * 2


def test_compare_models_runs_each_model_as_segment_does(run_dir, cells, tmp_path):
    image, gt = cells
    weights = (run_dir / "instanseg.pt").read_bytes()
    package = tmp_path / f"{run_dir.name}.zip"  # the same model as a bioimage.io package: rdf.yaml + weights
    with zipfile.ZipFile(package, "w") as archive:
        archive.writestr("rdf.yaml", "type: model\nweights:\n  torchscript:\n    source: weights/instanseg.pt\n"
                                     f"    sha256: {hashlib.sha256(weights).hexdigest()}\n")
        archive.writestr("weights/instanseg.pt", weights)
    comparison = compare_models(image, [run_dir, package], gt)
    expected = segment(load_model(run_dir), image)
    assert expected.max() > 0  # the tiny model finds cells: the comparison below is not of two empty images
    assert comparison.names == [run_dir.name, f"{run_dir.name} (2)"]
    for result in comparison.models.values():
        assert result.labels.dtype == np.int32 and np.array_equal(result.labels, expected)
        assert not result.disagreement.any()
    assert comparison.summary.loc[comparison.names, "unmatched"].tolist() == [0, 0]
    assert comparison.agreement.to_numpy().tolist() == [[1, 1], [1, 1]]
    assert comparison.summary.loc[GROUND_TRUTH, "n_cells"] == len(np.unique(gt)) - 1
    with pytest.raises(InputError, match=r"models\[0\] and models\[1\] are the same model"):
        compare_models(image, [run_dir, run_dir / "instanseg.pt"])
