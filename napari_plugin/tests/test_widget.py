"""The SCNP inspector end to end in a headless viewer, driven through its public methods."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from instanseg_scnp import scnp
from instanseg_scnp.evaluation import load_segmenter
from instanseg_scnp.metrics import cell_shapes, topology_errors
from instanseg_scnp.upstream import load_model, model_outputs, segment
from matplotlib import colormaps
from napari.layers import Image, Labels
from napari.utils.interactions import mouse_press_callbacks, mouse_release_callbacks
from scipy import ndimage
from wrapt import ObjectProxy

from napari_instanseg_scnp import _widget
from napari_instanseg_scnp._compute import ERROR_CLASSES
from napari_instanseg_scnp._sample_data import demo_model_path
from napari_instanseg_scnp._widget import SCNPInspector

TIMEOUT_S = 120


@pytest.fixture
def inspector(make_napari_viewer):
    """The widget docked in a viewer through its npe2 contribution."""
    viewer = make_napari_viewer()
    _, widget = viewer.window.add_plugin_dock_widget("napari-instanseg-scnp", "SCNP inspector")
    assert isinstance(widget, SCNPInspector)
    yield viewer, widget
    widget.wait(TIMEOUT_S)  # no result may land on the viewer while the fixture closes it


def add_cells(viewer, cells):
    image, labels = cells
    z = (4 * (image - image.mean()) / image.std()).astype(np.float32)  # a stand-in logit map
    viewer.add_image(image, name="cells")
    viewer.add_image(z, name="logits")
    viewer.add_labels(labels, name="ground truth")
    return z, labels


def show_window(qtbot, widget, window):
    widget.window = window
    qtbot.waitUntil(lambda: widget.shown == (widget._penalize.value, window), timeout=TIMEOUT_S * 1000)


def errors(notifications):
    return [message for message, severity in notifications if severity == "error"]


def oracle_penalty(difference, labels, window):
    """Mean |z - z~| over each cell dilated by w // 2 (scipy), in the order of the cells' labels."""
    magnitude = np.abs(difference)
    return [magnitude[ndimage.binary_dilation(labels == cell, np.ones((3, 3), bool), iterations=window // 2)].mean()
            for cell in np.unique(labels[labels > 0])]


def test_logit_layer_end_to_end(qtbot, inspector, cells, notifications):
    viewer, widget = inspector
    z, gt = add_cells(viewer, cells)
    widget.run(image="logits", ground_truth="ground truth")
    widget.wait(TIMEOUT_S)
    assert not errors(notifications)
    assert {"z~ w3", "z−z~ w3", "prediction"} <= {layer.name for layer in viewer.layers}

    for window in (5, 1, 9):
        show_window(qtbot, widget, window)
        expected = scnp(torch.from_numpy(z)[None, None], torch.from_numpy(gt > 0)[None, None], window)[0, 0].numpy()
        np.testing.assert_array_equal(widget.layers.data("z_tilde"), expected)
        np.testing.assert_array_equal(widget.layers.data("difference"), z - expected)
    widget.wait(TIMEOUT_S)
    for layer in (widget.layers["prediction"], viewer.layers["ground truth"]):
        labels = np.asarray(layer.data)
        assert layer.features["index"].tolist() == np.unique(labels[labels > 0]).tolist()
        np.testing.assert_allclose(layer.features["scnp_penalty"], oracle_penalty(z - expected, labels, 9), rtol=1e-6)
    difference = widget.layers["difference"]
    assert difference.name == "z−z~ w9" and difference.visible and difference.colorbar.visible
    assert difference.contrast_limits[0] == -difference.contrast_limits[1]
    assert not widget.layers["z_tilde"].visible and not widget.layers["z_tilde"].colorbar.visible

    prediction = widget.layers["prediction"]
    assert isinstance(prediction, Labels) and prediction.name == "prediction"
    assert prediction.features["index"].tolist() == cell_shapes(prediction.data)["label"].tolist()
    histogram = widget._histogram.counts
    assert histogram["prediction"].sum() == pytest.approx(1) and histogram["ground truth"].sum() == pytest.approx(1)
    widget._color_by.value = "circularity"
    assert widget._histogram.axes.get_xlabel() == "circularity per cell"


def test_a_large_map_shows_samples_at_once_then_every_pixel_from_the_worker(qtbot, inspector, cells, monkeypatch):
    viewer, widget = inspector
    z, gt = add_cells(viewer, cells)
    viewer.layers["logits"].scale = (2, 2)  # the samples' scale is a multiple of the image's
    monkeypatch.setattr(_widget, "SAMPLE_BUDGET", z.size // 2)  # this map is over the budget: every 2nd pixel fits
    widget.prefetch = False
    widget.run(image="logits", ground_truth="ground truth")
    widget.wait(TIMEOUT_S)
    difference = widget.layers["difference"]
    seen = []
    widget.samples_shown.connect(lambda target, window: seen.append(
        (window, difference.data.copy(), tuple(difference.scale), difference.name, widget.shown)))

    def change_window(window, zoom):
        """Samples (if any) on screen when the slider's change returns, before the worker; then every pixel."""
        _widget._camera(viewer).zoom = zoom  # screen pixels per world unit (an image pixel is 2 units)
        count = len(seen)
        widget.window = window
        sampled = seen[count:]
        qtbot.waitUntil(lambda: widget.shown == ("logits", window), timeout=TIMEOUT_S * 1000)
        expected = scnp(torch.from_numpy(z)[None, None], torch.from_numpy(gt > 0)[None, None], window)[0, 0].numpy()
        assert tuple(difference.scale) == (2, 2)  # every pixel, at the image's scale
        np.testing.assert_array_equal(difference.data, z - expected)
        return sampled, expected

    # zoomed out, 3.5 image pixels per screen pixel: the screen's step (3) is coarser than the budget's (2)
    sampled, expected = change_window(7, 1 / 7)
    assert len(sampled) == 1
    window, data, scale, name, shown = sampled[0]
    assert (window, scale, name, shown) == (7, (6, 6), "z−z~ w7", None)
    np.testing.assert_array_equal(data, (z - expected)[::3, ::3])
    # zoomed in, 2 screen pixels per image pixel: still every 2nd pixel first, what the budget allows
    sampled, expected = change_window(9, 1)
    assert [(window, scale) for window, _, scale, _, _ in sampled] == [(9, (4, 4))]
    np.testing.assert_array_equal(sampled[0][1], (z - expected)[::2, ::2])
    # a map within the budget: every pixel at once, from the worker, no samples
    monkeypatch.setattr(_widget, "SAMPLE_BUDGET", z.size)
    sampled, _ = change_window(11, 1 / 7)
    assert sampled == []


def test_a_new_window_takes_the_previous_windows_penalties_out_of_the_features_until_its_own_are_in(
        qtbot, inspector, cells):
    viewer, widget = inspector
    z, gt = add_cells(viewer, cells)
    widget.prefetch = False
    widget.run(image="logits", ground_truth="ground truth")
    widget.wait(TIMEOUT_S)
    prediction = widget.layers["prediction"]
    assert prediction.features["scnp_penalty"].notna().all()  # window 3's
    measured = []
    widget.features_done.connect(lambda target, window: measured.append(window))
    states = []
    prediction.events.features.connect(lambda _event: states.append(prediction.features["scnp_penalty"].copy()))
    show_window(qtbot, widget, 9)
    widget.wait(TIMEOUT_S)
    assert measured == [9]
    assert states[0].isna().all()  # cleared first, after the layers were put in
    expected = scnp(torch.from_numpy(z)[None, None], torch.from_numpy(gt > 0)[None, None], 9)[0, 0].numpy()
    np.testing.assert_allclose(states[-1], oracle_penalty(z - expected, np.asarray(prediction.data), 9), rtol=1e-6)


def test_cells_are_coloured_and_listed_by_their_scnp_penalty(qtbot, inspector, cells):
    viewer, widget = inspector
    z, gt = add_cells(viewer, cells)
    widget.run(image="logits", ground_truth="ground truth")
    widget.wait(TIMEOUT_S)
    widget._color_by.value = "scnp_penalty"
    prediction = widget.layers["prediction"]
    penalty = prediction.features.set_index("index")["scnp_penalty"]
    high = max(penalty.max(), viewer.layers["ground truth"].features["scnp_penalty"].max())
    for label in penalty.index[:5]:
        np.testing.assert_allclose(prediction.colormap.color_dict[label], colormaps["magma"](penalty[label] / high),
                                   atol=1e-6)
    listed = [int(label) for label in widget._cells.row_headers[:5]]
    assert listed == penalty.sort_values(ascending=False).index[:5].tolist()
    assert float(widget._cells.data.to_list()[0][0]) == pytest.approx(penalty.max(), abs=1e-3)
    assert widget._histogram.axes.get_xlabel() == "scnp_penalty per cell"


def test_hidden_layer_gets_its_data_when_shown(qtbot, inspector, cells):
    viewer, widget = inspector
    add_cells(viewer, cells)
    widget.run(image="logits", ground_truth="ground truth")
    widget.wait(TIMEOUT_S)
    show_window(qtbot, widget, 7)
    z_tilde = widget.layers["z_tilde"]
    assert not z_tilde.visible
    z_tilde.visible = True
    np.testing.assert_array_equal(z_tilde.data, widget.layers.data("z_tilde"))
    assert z_tilde.name == "z~ w7"


def test_slider_changes_are_coalesced_and_snap_to_odd(qtbot, inspector, cells, monkeypatch):
    viewer, widget = inspector
    add_cells(viewer, cells)
    widget.prefetch = False
    widget.run(image="logits", ground_truth="ground truth")
    widget.wait(TIMEOUT_S)
    computed = []
    original = _widget.run_job
    monkeypatch.setattr(_widget, "run_job", lambda job, analysis: computed.append((job.key[1], job.stage))
                        or original(job, analysis))
    for window in (5, 7, 9, 11):  # faster than a window is computed: only the first and the last run
        widget.window = window
    qtbot.waitUntil(lambda: widget.shown == ("logits", 11), timeout=TIMEOUT_S * 1000)
    widget.wait(TIMEOUT_S)
    assert [window for window, stage in computed if stage == 1] == [5, 11]
    widget.window = 6
    assert widget.window == 7
    qtbot.waitUntil(lambda: widget.shown == ("logits", 7), timeout=TIMEOUT_S * 1000)


def test_model_run_and_a_selected_cell_s_own_mask_logits(qtbot, inspector, cells, run_dir, seed_threshold,
                                                        notifications):
    # upstream's inference first: warnings filters are process-wide, and the widget's thread workers set theirs
    labels = load_segmenter(run_dir / "instanseg.pt")(cells[0][..., None], None)
    outputs = model_outputs(load_model(run_dir), cells[0], seed_threshold=seed_threshold)
    viewer, widget = inspector
    add_cells(viewer, cells)
    widget._seed_threshold.value = f"{seed_threshold:.6f}"
    widget.run(image="cells", model=run_dir, ground_truth="ground truth")
    widget.wait(TIMEOUT_S)
    assert not errors(notifications)
    assert widget.layers["seed map"].name == "seed logits" and widget.layers["instance masks"].name == "mask logits"
    assert not widget.layers["seed map"].visible
    assert widget._penalize.choices == ("seed map", "instance masks")
    np.testing.assert_array_equal(widget.layers["prediction"].data, outputs.labels)
    assert labels.shape == outputs.labels.shape
    show_window(qtbot, widget, 5)
    assert widget.layers["difference"].name == "z−z~ seed w5"
    widget._penalize.value = "instance masks"
    qtbot.waitUntil(lambda: widget.shown == ("instance masks", 5), timeout=TIMEOUT_S * 1000)
    assert widget.layers["difference"].name == "z−z~ masks w5"

    # the cell under a seed: its crop, penalized against the ground-truth cell under that seed (scipy-free oracle)
    crops, gt = outputs.crops, cells[1]
    index = next(i for i, (r, c) in enumerate(crops.seeds.tolist()) if outputs.labels[r, c] > 0 and gt[r, c] > 0)
    row, col = crops.seeds[index].tolist()
    label = int(outputs.labels[row, col])
    top, left = crops.top_left[index].tolist()
    size = crops.size
    target = torch.from_numpy(gt[top:top + size, left:left + size] == gt[row, col])[None, None]
    expected = scnp(crops.logits[index:index + 1], target, 5)[0, 0].numpy()

    with qtbot.waitSignal(widget.cell_shown, timeout=TIMEOUT_S * 1000):
        mouse_press_callbacks(widget.layers["prediction"], ObjectProxy(_Event("mouse_press", (row, col))))
        mouse_release_callbacks(widget.layers["prediction"], _Event("mouse_release", (row, col)))
    assert widget.layers["prediction"].selected_label == label
    raw, penalized, difference = (widget.layers[role] for role in ("cell logits", "cell z_tilde", "cell difference"))
    assert difference.name == f"cell {label}: z−z~ w5" and difference.visible and not raw.visible
    np.testing.assert_array_equal(raw.data, crops.logits[index, 0].numpy())
    np.testing.assert_array_equal(widget.layers.data("cell z_tilde"), expected)
    np.testing.assert_array_equal(difference.data, crops.logits[index, 0].numpy() - expected)
    assert tuple(difference.translate) == (top, left)
    assert penalized.name == f"cell {label}: z~ w5"

    show_window(qtbot, widget, 7)  # the cell's layers follow the window
    assert widget.layers["cell difference"].name == f"cell {label}: z−z~ w7"


class _Event:
    """The parts of a napari mouse event a mouse callback reads (napari wraps the press event in a proxy, and
    points the proxy at each later event of the drag)."""

    def __init__(self, type_, position):
        self.type = type_
        self.position = position
        self.view_direction = None
        self.dims_displayed = [0, 1]
        self.modifiers = []
        self.handled = False


def test_a_row_of_the_cell_table_selects_that_cell(qtbot, inspector, cells):
    viewer, widget = inspector
    add_cells(viewer, cells)
    widget.run(image="logits", ground_truth="ground truth")
    widget.wait(TIMEOUT_S)
    label = int(widget._cells.row_headers[2])
    widget._cells.native.cellClicked.emit(2, 0)
    assert widget.layers["prediction"].selected_label == label
    assert "no model" in widget._status.value  # logits only: no instance-mask crops to show


def test_compare_two_models_against_the_ground_truth(qtbot, inspector, cells, run_dir):
    image, gt = cells
    expected = {name: segment(load_model(path), image) for name, path in
                (("tiny", run_dir), ("demo_model", demo_model_path()))}
    viewer, widget = inspector
    add_cells(viewer, cells)
    with qtbot.waitSignal(widget.models_compared, timeout=TIMEOUT_S * 1000):
        widget.compare_models("cells", [run_dir, demo_model_path()], ground_truth="ground truth")
    summary = widget._summary.data.to_list()
    columns = list(widget._summary.column_headers)
    for row, (name, labels) in enumerate(expected.items()):
        np.testing.assert_array_equal(viewer.layers[name].data, labels)
        oracle = topology_errors(gt, labels)
        counts = {column: float(value or "nan") for column, value in zip(columns, summary[row], strict=True)}
        assert [counts[c] for c in ("split", "merged", "missed", "spurious")] == [
            oracle["splits"], oracle["merges"], oracle["missed"], oracle["spurious"]]
        assert counts["count_error"] == pytest.approx(oracle["count_error"])
        errors_layer = viewer.layers[f"{name}: errors"]
        assert errors_layer.features["cells"].tolist()[ERROR_CLASSES.index("merged")] == oracle["merges"]
        assert set(np.unique(errors_layer.data)) <= set(range(len(ERROR_CLASSES) + 1))
    assert set(widget._histogram.counts) == {"tiny", "demo_model", "ground truth"}
    assert widget.comparison.names == ["tiny", "demo_model"]
    assert "F1@0.5" in widget._status.value


def test_tiled_run_reports_progress_and_cancels(qtbot, inspector, run_dir, monkeypatch, notifications):
    from napari_instanseg_scnp import _tasks

    bars = []

    class RecordingBar(_tasks.progress_bar):
        def __init__(self, *args, **kwargs):
            super().__init__(*args, **kwargs)
            bars.append(self)

    monkeypatch.setattr(_tasks, "progress_bar", RecordingBar)
    viewer, widget = inspector
    from instanseg_scnp.data import synthetic_image

    viewer.add_image(synthetic_image((700, 700), modality="fluorescence", rng=1).image[..., 0], name="large")
    widget._tiles.value = "512"
    widget.run(image="large", model=run_dir)
    widget.wait(TIMEOUT_S)
    assert bars and bars[0].total >= 4 and bars[0].n == bars[0].total
    assert any("instance norm" in text for text, severity in notifications if severity == "warning")
    np.testing.assert_array_equal(widget.layers["prediction"].data,
                                  model_outputs(load_model(run_dir), viewer.layers["large"].data, tile_size=512).labels)

    widget.run(image="large", model=run_dir)
    qtbot.waitUntil(lambda: len(bars) == 2 and bars[1].n >= 1, timeout=TIMEOUT_S * 1000)
    widget._cancel.native.click()
    widget.wait(TIMEOUT_S)
    assert widget._status.value == "cancelled" and not widget._cancel.visible
    assert bars[1].n < bars[1].total  # stopped between tiles


def test_demo_sample_offers_its_model(qtbot, inspector):
    viewer, widget = inspector
    viewer.open_sample("napari-instanseg-scnp", "synthetic_with_model")
    widget._image.value = viewer.layers[0]
    assert str(widget._model.value) == str(demo_model_path())


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


def test_run_names_a_missing_layer(inspector):
    viewer, widget = inspector
    with pytest.raises(ValueError, match="image: no layer named 'nope'"):
        widget.run(image="nope")


def test_broken_model_file_is_told_in_the_viewer(qtbot, inspector, cells, tmp_path, notifications):
    viewer, widget = inspector
    add_cells(viewer, cells)
    broken = tmp_path / "instanseg.pt"
    broken.write_bytes(b"\x00" * 64)
    widget.run(image="cells", model=broken)
    widget.wait(TIMEOUT_S)
    assert "is not a readable TorchScript model" in errors(notifications)[0]


def test_no_ground_truth_warns_and_still_shows_the_prediction(qtbot, inspector, cells, notifications):
    viewer, widget = inspector
    add_cells(viewer, cells)
    widget.run(image="logits")
    widget.wait(TIMEOUT_S)
    assert any("no ground-truth Labels layer" in text for text, severity in notifications if severity == "warning")
    assert "prediction" in widget.layers and "difference" not in widget.layers


def test_rgb_image_without_model_is_refused(qtbot, inspector, notifications):
    viewer, widget = inspector
    viewer.add_image(np.zeros((64, 64, 3), np.uint8), name="rgb", rgb=True)
    widget.run(image="rgb")
    widget.wait(TIMEOUT_S)
    assert "must be one 2-D map" in errors(notifications)[0]


def test_compare_needs_two_models_or_a_ground_truth(qtbot, inspector, cells, run_dir, notifications):
    viewer, widget = inspector
    viewer.add_image(cells[0], name="cells")
    widget.compare_models("cells", [run_dir])
    widget.wait(TIMEOUT_S)
    assert any("at least two models" in text for text in errors(notifications)), notifications
    assert isinstance(viewer.layers["cells"], Image)


def test_a_runtime_error_in_the_run_is_told_and_the_inspector_recovers(qtbot, inspector, cells, monkeypatch,
                                                                       notifications):
    """superqt ends a generator worker raising RuntimeError silently (no errored, no finished): not ours."""
    viewer, widget = inspector
    add_cells(viewer, cells)

    def out_of_memory(inputs, *, progress=None, cancel=None):
        yield "model loaded"
        raise RuntimeError("CUDA out of memory (pretend)")

    monkeypatch.setattr(_widget, "analyse_steps", out_of_memory)
    widget.run(image="logits")
    widget.wait(TIMEOUT_S)
    assert any("CUDA out of memory (pretend)" in text for text in errors(notifications)), notifications
    assert widget._run.enabled and not widget._cancel.visible


def test_a_new_run_places_reused_layers_on_the_new_image(qtbot, inspector, cells):
    viewer, widget = inspector
    z, _ = add_cells(viewer, cells)
    widget.run(image="logits")
    widget.wait(TIMEOUT_S)
    viewer.add_image(z, name="logits, half size", scale=(0.5, 0.5), translate=(10, 20))
    widget.run(image="logits, half size")
    widget.wait(TIMEOUT_S)
    prediction = widget.layers["prediction"]
    assert tuple(prediction.scale) == (0.5, 0.5) and tuple(prediction.translate) == (10, 20)
