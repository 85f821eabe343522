"""The SCNP inspector end to end in a headless viewer: layers in, button and slider, layers and features out."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from instanseg_scnp import scnp
from instanseg_scnp.evaluation import load_segmenter
from instanseg_scnp.metrics import cell_shapes, topology_errors
from napari.layers import Image, Labels
from napari.utils.colormaps import DirectLabelColormap
from scipy import ndimage

from napari_instanseg_scnp._compute import ERROR_CLASSES, Penalty
from napari_instanseg_scnp._widget import SCNPInspector

TIMEOUT_MS = 120_000


@pytest.fixture
def inspector(make_napari_viewer):
    """The widget docked in a viewer through its npe2 contribution."""
    viewer = make_napari_viewer()
    _, widget = viewer.window.add_plugin_dock_widget("napari-instanseg-scnp", "SCNP inspector")
    assert isinstance(widget, SCNPInspector)
    return viewer, widget


def add_cells(viewer, cells):
    image, labels = cells
    z = (4 * (image - image.mean()) / image.std()).astype(np.float32)  # a stand-in logit map
    viewer.add_image(image, name="cells")
    viewer.add_image(z, name="logits")
    viewer.add_labels(labels, name="ground truth")
    return z, labels


def run(qtbot, widget):
    with qtbot.waitSignal(widget.analysis_done, timeout=TIMEOUT_MS):
        widget._run.native.click()
    qtbot.waitUntil(lambda: widget.shown is not None or not widget._analysis.penalties, timeout=TIMEOUT_MS)


def show_window(qtbot, widget, window):
    widget._window.value = window
    qtbot.waitUntil(lambda: widget.shown == (widget._penalize.value, window), timeout=TIMEOUT_MS)


def errors(notifications):
    return [message for message, severity in notifications if severity == "error"]


def test_logit_layer_end_to_end(qtbot, inspector, cells, notifications):
    viewer, widget = inspector
    z, gt = add_cells(viewer, cells)
    widget._image.value = viewer.layers["logits"]
    widget._ground_truth.value = viewer.layers["ground truth"]
    run(qtbot, widget)
    assert not errors(notifications)
    names = [layer.name for layer in viewer.layers]
    assert "SCNP z~ of logits, w=3 (logits)" in names and "z - z~ of logits, w=3 (logits)" in names

    for window in (5, 1, 9):
        show_window(qtbot, widget, window)
        expected = scnp(torch.from_numpy(z)[None, None], torch.from_numpy(gt > 0)[None, None], window)[0, 0].numpy()
        np.testing.assert_array_equal(widget.layer_data("z_tilde"), expected)
        np.testing.assert_array_equal(widget.layer_data("difference"), z - expected)
    magnitude = np.abs(widget.layer_data("difference"))
    for layer in (widget._layers["prediction"], viewer.layers["ground truth"]):  # each cell and its 4 px ring
        labels = np.asarray(layer.data)
        expected = [magnitude[ndimage.binary_dilation(labels == cell, np.ones((3, 3), bool), iterations=4)].mean()
                    for cell in layer.features["index"]]
        np.testing.assert_allclose(layer.features["scnp_penalty"], expected, rtol=1e-6)
    difference = widget._layers["difference"]
    assert difference.name == "z - z~ of logits, w=9 (logits)"
    assert difference.contrast_limits[0] == -difference.contrast_limits[1] and difference.colorbar.visible
    assert widget._layers["z_tilde"].colormap.name == "RdBu_r"

    prediction = widget._layers["prediction"]
    assert isinstance(prediction, Labels) and prediction.name == "cells of logits > 0"
    assert prediction.features["index"].tolist() == cell_shapes(prediction.data)["label"].tolist()
    assert {"roundness", "circularity"} <= set(viewer.layers["ground truth"].features.columns)
    assert isinstance(prediction.colormap, DirectLabelColormap)
    histogram = widget._histogram.counts
    assert histogram["prediction"].sum() == pytest.approx(1) and histogram["ground truth"].sum() == pytest.approx(1)
    widget._shape.value = "circularity"
    assert widget._histogram.axes.get_xlabel() == "circularity per cell"


def test_hidden_layer_gets_its_data_when_shown(qtbot, inspector, cells):
    viewer, widget = inspector
    add_cells(viewer, cells)
    widget._image.value = viewer.layers["logits"]
    widget._ground_truth.value = viewer.layers["ground truth"]
    run(qtbot, widget)
    show_window(qtbot, widget, 7)
    z_tilde = widget._layers["z_tilde"]
    assert not z_tilde.visible
    z_tilde.visible = True
    np.testing.assert_array_equal(z_tilde.data, widget.layer_data("z_tilde"))
    assert z_tilde.name.endswith("w=7 (logits)")


def test_slider_changes_are_coalesced_and_snap_to_odd(qtbot, inspector, cells, monkeypatch):
    viewer, widget = inspector
    add_cells(viewer, cells)
    widget._image.value = viewer.layers["logits"]
    widget._ground_truth.value = viewer.layers["ground truth"]
    widget.prefetch = False
    run(qtbot, widget)
    computed = []
    original = Penalty.compute
    monkeypatch.setattr(Penalty, "compute", lambda self, window: computed.append(window) or original(self, window))
    for window in (5, 7, 9, 11):  # faster than a window is computed: only the first and the last run
        widget._window.value = window
    qtbot.waitUntil(lambda: widget.shown == ("logits", 11), timeout=TIMEOUT_MS)
    widget.wait()
    assert computed == [5, 11]
    widget._window.value = 6
    assert widget._window.value == 7
    qtbot.waitUntil(lambda: widget.shown == ("logits", 7), timeout=TIMEOUT_MS)
    widget.wait()  # no result may land on the viewer while the fixture closes it


def test_model_end_to_end(qtbot, inspector, cells, run_dir, seed_threshold, notifications):
    # upstream's inference first: warnings filters are process-wide, and the widget's thread workers set theirs
    labels = load_segmenter(run_dir / "instanseg.pt")(cells[0][..., None], None)
    viewer, widget = inspector
    add_cells(viewer, cells)
    widget._image.value = viewer.layers["cells"]
    widget._model.value = str(run_dir)
    widget._seed_threshold.value = f"{seed_threshold:.6f}"
    widget._ground_truth.value = viewer.layers["ground truth"]
    run(qtbot, widget)
    assert not errors(notifications)
    seed, masks = widget._layers["seed map"], widget._layers["instance masks"]
    assert isinstance(seed, Image) and seed.name == "seed map (logits)"
    assert masks.name == "instance masks, max over seeds (logits)"
    assert widget._layers["prediction"].name == "predicted labels"
    assert widget._penalize.choices == ("seed map", "instance masks")
    show_window(qtbot, widget, 5)
    assert widget._layers["difference"].name == "z - z~ of seed map, w=5 (logits)"
    widget._penalize.value = "instance masks"
    qtbot.waitUntil(lambda: widget.shown == ("instance masks", 5), timeout=TIMEOUT_MS)
    assert widget._layers["difference"].name == "z - z~ of instance masks, w=5 (logits)"
    assert labels.shape == widget._layers["prediction"].data.shape


def test_compare_marks_error_cells_with_counts(qtbot, inspector, cells):
    viewer, widget = inspector
    gt = cells[1]
    baseline = np.roll(gt, 3, axis=1)
    scnp_like = gt.copy()
    scnp_like[gt == 4] = 0
    viewer.add_labels(gt, name="ground truth")
    viewer.add_labels(baseline, name="baseline")
    viewer.add_labels(scnp_like, name="scnp")
    widget._ground_truth.value = viewer.layers["ground truth"]
    widget._labels_a.value = viewer.layers["baseline"]
    widget._labels_b.value = viewer.layers["scnp"]
    with qtbot.waitSignal(widget.comparison_done, timeout=TIMEOUT_MS):
        widget._compare.native.click()
    for name, labels in (("baseline", baseline), ("scnp", scnp_like)):
        expected = topology_errors(gt, labels)
        counts = widget.counts[name]
        assert counts == {"split": expected["splits"], "merged": expected["merges"],
                          "fragmented": expected["fragmented"], "missed": expected["missed"],
                          "spurious": expected["spurious"]}
        layer = viewer.layers[f"errors of {name} vs ground truth"]
        assert layer.features["cells"].tolist() == [counts[c] for c in ERROR_CLASSES]
        assert set(np.unique(layer.data)) <= set(range(len(ERROR_CLASSES) + 1))
    assert widget.counts["scnp"]["missed"] == 1
    assert widget._counts.data.to_list()[ERROR_CLASSES.index("missed")][1] == 1


@pytest.mark.parametrize("setup, message", [
    (lambda viewer, widget, tmp: None, "no Image layer"),
    (lambda viewer, widget, tmp: setattr(widget._model, "value", str(tmp / "missing.pt")), "does not exist"),
    (lambda viewer, widget, tmp: setattr(widget._model, "value", str(tmp)), "has no instanseg.pt"),
    (lambda viewer, widget, tmp: setattr(widget._seed_threshold, "value", "high"), "seed threshold must be a number"),
])
def test_missing_inputs_are_told_in_the_viewer(qtbot, inspector, cells, tmp_path, notifications, setup, message):
    viewer, widget = inspector
    if message != "no Image layer":
        add_cells(viewer, cells)
        widget._image.value = viewer.layers["cells"]
    setup(viewer, widget, tmp_path)
    widget._run.native.click()
    assert any(message in text for text in errors(notifications)), notifications
    assert widget._analysis is None


def test_broken_model_file_is_told_in_the_viewer(qtbot, inspector, cells, tmp_path, notifications):
    viewer, widget = inspector
    add_cells(viewer, cells)
    broken = tmp_path / "instanseg.pt"
    broken.write_bytes(b"\x00" * 64)
    widget._image.value = viewer.layers["cells"]
    widget._model.value = str(broken)
    widget._run.native.click()
    qtbot.waitUntil(lambda: bool(errors(notifications)), timeout=TIMEOUT_MS)
    assert "is not a readable TorchScript model" in errors(notifications)[0]


def test_no_ground_truth_warns_and_still_shows_the_prediction(qtbot, inspector, cells, notifications):
    viewer, widget = inspector
    add_cells(viewer, cells)
    widget._image.value = viewer.layers["logits"]
    run(qtbot, widget)
    assert any("no ground-truth Labels layer" in text for text, severity in notifications if severity == "warning")
    assert "prediction" in widget._layers and "difference" not in widget._layers


def test_rgb_image_without_model_is_refused(qtbot, inspector, notifications):
    viewer, widget = inspector
    viewer.add_image(np.zeros((64, 64, 3), np.uint8), name="rgb", rgb=True)
    widget._image.value = viewer.layers["rgb"]
    widget._run.native.click()
    qtbot.waitUntil(lambda: bool(errors(notifications)), timeout=TIMEOUT_MS)
    assert "must be one 2-D map" in errors(notifications)[0]


def test_compare_needs_two_layers(qtbot, inspector, notifications):
    viewer, widget = inspector
    widget._compare.native.click()
    assert any("choose two different Labels layers" in text for text in errors(notifications))
