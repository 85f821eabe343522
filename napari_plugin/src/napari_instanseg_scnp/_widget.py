"""The "SCNP inspector" dock widget: a thin magicgui/Qt layer over :mod:`._analysis` and :mod:`._compute`.

Everything slow runs in napari thread workers: "Run" (model, shapes) and each new
SCNP window. Window changes are coalesced: while one window is computed, only the
latest requested one waits, the ones in between are never started, and a result
that arrives for a window or a run that is no longer current goes to the cache (or
is dropped), never to the screen. Computed windows stay in a cache, and the
remaining windows of the slider are computed in the background, so moving the
slider back and forth only swaps layer data.
"""

from __future__ import annotations

import logging
from functools import partial
from typing import TYPE_CHECKING

import numpy as np
from magicgui.widgets import ComboBox, Container, FileEdit, Label, LineEdit, PushButton, Slider, Table, create_widget
from napari.qt.threading import create_worker
from napari.utils.colormaps import DirectLabelColormap
from napari.utils.notifications import show_error, show_info, show_warning
from instanseg_scnp.upstream import ModelError, resolve_model_path
from psygnal import Signal

from napari_instanseg_scnp import _torch_guard  # noqa: F401 (first of the torch stack: see its docstring)
from napari_instanseg_scnp._analysis import PENALTY_TARGETS, Analysis, InputError, Inputs, analyse_steps
from napari_instanseg_scnp._compute import (
    ERROR_CLASSES,
    ERROR_COLORS,
    PENALTY_COLUMN,
    Penalty,
    WindowCache,
    error_map,
    penalty_column,
    shape_colors,
    symmetric_limits,
)
from napari_instanseg_scnp._histogram import ShapeHistogram

if TYPE_CHECKING:
    import napari

logger = logging.getLogger(__name__)

__all__ = ["MAX_WINDOW", "SCNPInspector"]

MAX_WINDOW = 15
"""Largest window on the slider (the operator takes up to 255)."""

LOGIT_COLORMAP = "RdBu_r"
DIFFERENCE_COLORMAP = "PRGn"
SHAPE_COLORMAP = "viridis"
SHAPE_COLUMNS = ("roundness", "circularity")
PREFIX = "SCNP inspector: "


class SCNPInspector(Container):
    """Seed and mask logits, SCNP-penalized logits, z - z~, predicted labels and cell shapes of one image.

    Layers it makes (named with what they hold, "(logits)" for logit maps):
    ``seed map (logits)`` and ``instance masks, max over seeds (logits)`` with a
    model; ``SCNP z~ of <map>, w=<window> (logits)`` and ``z - z~ of <map>, ...``
    with a ground truth; ``predicted labels`` (or ``cells of logits > 0`` without a
    model) with their ``cell_shapes`` as features, coloured by roundness or
    circularity, as is the ground truth. A comparison of two Labels layers adds
    ``errors of <layer>`` with one value per error class.
    """

    penalty_shown = Signal(str, int)
    """Emitted with (map, window) when SCNP layers for that window are on screen."""
    analysis_done = Signal()
    comparison_done = Signal()

    def __init__(self, viewer: napari.viewer.Viewer) -> None:
        super().__init__(labels=True)
        self._viewer = viewer
        self._image = create_widget(label="image", annotation="napari.layers.Image",
                                    options={"tooltip": "the model's input; with no model, the logits themselves"})
        self._model = FileEdit(label="model", mode="r", filter="*.pt", value="",
                               tooltip="a run directory of `instanseg-scnp train` or an exported instanseg.pt; "
                                       "empty: the image layer is taken as logits")
        self._seed_threshold = LineEdit(label="seed threshold", value="",
                                        tooltip="passed to the model (on seed / 15 + 0.5); empty: the model's own")
        self._ground_truth = create_widget(label="ground truth", annotation="napari.layers.Labels",
                                           options={"nullable": True,
                                                    "tooltip": "SCNP's target; its cells are measured too"})
        self._run = PushButton(text="Run")
        self._penalize = ComboBox(label="penalize", choices=self._penalty_choices,
                                  tooltip="the seed logits, or each seed's instance-mask crop against its cell")
        self._window = Slider(label="SCNP window", min=1, max=MAX_WINDOW, step=2, value=3, tracking=True,
                              tooltip="odd window w: every pixel takes the worst logit of its class in w x w")
        self._shape = ComboBox(label="colour cells by", choices=list(SHAPE_COLUMNS))
        self._histogram = ShapeHistogram(text_color=_text_color(viewer), cmap=SHAPE_COLORMAP)
        self._labels_a = create_widget(label="labels A", annotation="napari.layers.Labels", options={"nullable": True})
        self._labels_b = create_widget(label="labels B", annotation="napari.layers.Labels", options={"nullable": True})
        self._compare = PushButton(text="Compare A and B")
        self._counts = Table(value={"data": [], "columns": []}, visible=False)
        self._counts.min_height = 170
        self._status = Label(value="choose an image (and a model), then Run")
        self.extend([
            Label(value="<b>Inputs</b>"), self._image, self._model, self._seed_threshold, self._ground_truth,
            self._run,
            Label(value="<b>SCNP</b>"), self._penalize, self._window,
            Label(value="<b>Cell shape</b>"), self._shape,
        ])
        self.native.layout().addWidget(self._histogram)
        self.extend([Label(value="<b>Compare two label layers</b>"), self._labels_a, self._labels_b, self._compare,
                     self._counts, self._status])

        self._analysis: Analysis | None = None
        self._generation = 0
        self._cache = WindowCache()
        self._wanted: tuple[str, int] | None = None
        self._limits: dict[str, tuple[float, float]] = {}
        self._layers: dict[str, napari.layers.Layer] = {}
        self._pending: dict[str, np.ndarray] = {}
        self._ground_truth_layer = None
        self._run_worker = None
        self._penalty_worker = None
        self._compare_worker = None
        self._features_table_open = False
        self.prefetch = True
        """Compute the slider's other windows in the background once the wanted one is shown."""
        self.shown: tuple[str, int] | None = None
        self.counts: dict[str, dict[str, int]] = {}

        self._run.changed.connect(self.run)
        self._window.changed.connect(self._on_window)
        self._penalize.changed.connect(self._request)
        self._shape.changed.connect(self._recolour)
        self._compare.changed.connect(self.compare)

    # ------------------------------------------------------------------ inputs and errors
    def _inputs(self) -> tuple[Inputs, dict] | None:
        """The run's inputs, or None after telling the user in the viewer what is missing."""
        layer = self._image.value
        if layer is None:
            show_error(PREFIX + "no Image layer: open an image (File > Open, or File > Open Sample > "
                       "SCNP inspector) and choose it as 'image'")
            return None
        if layer.multiscale:
            show_error(PREFIX + f"{layer.name!r} is multiscale; choose a single-scale image")
            return None
        model = str(self._model.value).strip()
        model = None if model in ("", ".") else model
        try:
            if model is not None:
                resolve_model_path(model)
            threshold = _parse_threshold(self._seed_threshold.value)
        except (InputError, ModelError) as error:
            show_error(PREFIX + str(error))
            return None
        gt_layer = self._ground_truth.value
        if gt_layer is None:
            show_warning(PREFIX + "no ground-truth Labels layer: SCNP penalizes against the true cells, so the "
                         "SCNP layers need one; showing logits, prediction and shapes only")
        inputs = Inputs(image=np.asarray(layer.data), rgb=bool(layer.rgb), model=model,
                        ground_truth=None if gt_layer is None else np.asarray(gt_layer.data),
                        seed_threshold=threshold)
        placement = {"scale": tuple(layer.scale[-2:]), "translate": tuple(layer.translate[-2:])}
        return inputs, {"placement": placement, "ground_truth": gt_layer, "image": layer.name}

    def _on_error(self, generation: int, error: Exception) -> None:
        if generation != self._generation:
            return
        self._status.value = "failed: see the message"
        if isinstance(error, InputError):
            show_error(PREFIX + str(error))
        else:
            logger.error("SCNP inspector failed", exc_info=error)
            show_error(PREFIX + f"failed ({type(error).__name__}: {error})")

    # ------------------------------------------------------------------ run
    def run(self) -> None:
        """Start a run on the current inputs (a newer run makes a running one stale)."""
        collected = self._inputs()
        if collected is None:
            return
        inputs, context = collected
        self._generation += 1
        if self._run_worker is not None:
            self._run_worker.quit()
        self._status.value = "running the model..." if inputs.model else "reading the logits..."
        worker = create_worker(analyse_steps, inputs, _start_thread=False, _connect={
            "yielded": self._on_stage,
            "returned": partial(self._on_analysis, self._generation, context),
            "errored": partial(self._on_error, self._generation),
        })
        self._run_worker = worker
        worker.finished.connect(partial(self._forget, "_run_worker", worker))
        worker.start()

    def _forget(self, attribute: str, worker: object) -> None:
        if getattr(self, attribute) is worker:
            setattr(self, attribute, None)

    def _on_stage(self, stage: str) -> None:
        self._status.value = f"{stage}..."

    def _on_analysis(self, generation: int, context: dict, analysis: Analysis) -> None:
        if generation != self._generation:
            return
        self._analysis, self.shown, self._wanted = analysis, None, None
        self._cache.clear()
        placement = context["placement"]
        self._limits = {name: symmetric_limits(z) for name, z in analysis.logits.items()}
        if analysis.with_model:
            for name, z in analysis.logits.items():
                title = "seed map (logits)" if name == "seed map" else "instance masks, max over seeds (logits)"
                self._put_image(name, z, name=title, colormap=LOGIT_COLORMAP, contrast_limits=self._limits[name],
                                visible=False, **placement)
        for role in ("z_tilde", "difference"):
            self._remove(role)
        prediction_name = "predicted labels" if analysis.with_model else f"cells of {context['image']} > 0"
        prediction = self._put_labels("prediction", analysis.prediction, name=prediction_name, **placement)
        prediction.features = analysis.prediction_features
        self._ground_truth_layer = context["ground_truth"]
        if self._ground_truth_layer is not None and analysis.ground_truth_features is not None:
            self._ground_truth_layer.features = analysis.ground_truth_features
        self._recolour()
        with self._penalize.changed.blocked():
            self._penalize.reset_choices()
            self._penalize.value = self._penalize.choices[0]
        n_cells = len(analysis.prediction_features)
        self._status.value = (f"{n_cells} predicted cells" +
                              ("" if analysis.penalties else "; no ground truth, so no SCNP layers"))
        self._open_features_table(prediction)
        self.analysis_done.emit()
        self._request()

    # ------------------------------------------------------------------ SCNP window
    def _penalty_choices(self, _widget: object = None) -> list[str]:
        analysis = getattr(self, "_analysis", None)
        if analysis is None:
            return list(PENALTY_TARGETS)
        return list(analysis.penalties) or list(analysis.logits)

    def _on_window(self, value: int) -> None:
        if value % 2 == 0:  # the slider steps by 2, but a drag can land anywhere
            self._window.value = value + 1 if value < MAX_WINDOW else value - 1
            return
        self._request()

    def _request(self, *_: object) -> None:
        """Show the current (map, window): from the cache now, or as soon as a worker computes it."""
        analysis = self._analysis
        if analysis is None or self._penalize.value not in analysis.penalties:
            return
        self._wanted = key = (self._penalize.value, int(self._window.value))
        cached = self._cache.get(key)
        if cached is not None:
            self._show_penalty(key, *cached)
        self._pump()

    def _pump(self) -> None:
        """Start the next computation if none runs: the wanted window, else one to have ready."""
        if self._penalty_worker is not None or self._analysis is None or self._wanted is None:
            return
        key = self._wanted
        if key in self._cache:
            if not self.prefetch:
                return
            target, window = key
            missing = [w for w in range(1, MAX_WINDOW + 1, 2) if (target, w) not in self._cache]
            if not missing:
                return
            key = (target, min(missing, key=lambda w: (abs(w - window), w)))
        else:
            self._status.value = f"computing SCNP, w={key[1]}..."
        penalty = self._analysis.penalties[key[0]]
        ground_truth = None if self._ground_truth_layer is None else np.asarray(self._ground_truth_layer.data)
        connect = {"returned": partial(self._on_penalized, self._generation, key),
                   "errored": partial(self._on_error, self._generation), "finished": self._on_penalty_finished}
        worker = create_worker(_window_result, penalty, key[1], self._analysis, ground_truth, _start_thread=False,
                               _connect=connect)
        self._penalty_worker = worker
        worker.start()

    def _on_penalized(self, generation: int, key: tuple[str, int], result: tuple[np.ndarray, ...]) -> None:
        if generation != self._generation:
            return
        self._cache.put(key, result)
        if key == self._wanted:
            self._show_penalty(key, *result)

    def _on_penalty_finished(self) -> None:
        self._penalty_worker = None
        self._pump()

    def _show_penalty(self, key: tuple[str, int], z_tilde: np.ndarray, difference: np.ndarray,
                      prediction_penalty: np.ndarray, ground_truth_penalty: np.ndarray) -> None:
        target, window = key
        analysis = self._analysis
        prediction = self._layers.get("prediction")
        if prediction is not None:
            prediction.features = analysis.prediction_features.assign(**{PENALTY_COLUMN: prediction_penalty})
        gt_layer, gt_features = self._ground_truth_layer, analysis.ground_truth_features
        if gt_layer is not None and gt_features is not None and len(ground_truth_penalty) == len(gt_features):
            gt_layer.features = gt_features.assign(**{PENALTY_COLUMN: ground_truth_penalty})
        limits = self._limits[target]
        placement = {"scale": self._layers["prediction"].scale, "translate": self._layers["prediction"].translate}
        self._put_image("z_tilde", z_tilde, name=f"SCNP z~ of {target}, w={window} (logits)",
                        colormap=LOGIT_COLORMAP, contrast_limits=limits, visible=False, **placement)
        self._put_image("difference", difference, name=f"z - z~ of {target}, w={window} (logits)",
                        colormap=DIFFERENCE_COLORMAP, contrast_limits=limits, **placement)
        self.shown = key
        self._status.value = f"SCNP of the {target}, window {window}"
        self.penalty_shown.emit(target, window)

    # ------------------------------------------------------------------ shapes
    def _recolour(self, *_: object) -> None:
        column = self._shape.value
        analysis = self._analysis
        if analysis is None:
            return
        layers = [(self._layers.get("prediction"), analysis.prediction_features),
                  (self._ground_truth_layer, analysis.ground_truth_features)]
        for layer, features in layers:
            if layer is not None and features is not None and layer in self._viewer.layers:
                layer.colormap = DirectLabelColormap(color_dict=shape_colors(features, column, SHAPE_COLORMAP))
        gt = analysis.ground_truth_features
        self._histogram.plot(column, analysis.prediction_features[column].to_numpy(),
                             None if gt is None else gt[column].to_numpy())

    def _open_features_table(self, layer: napari.layers.Layer) -> None:
        self._viewer.layers.selection.active = layer
        if self._features_table_open:
            return
        try:
            self._viewer.window.add_plugin_dock_widget("napari", "Features table widget")
            self._features_table_open = True
        except (KeyError, ValueError, LookupError, AttributeError) as error:  # older napari: no such widget
            logger.info("no features table widget: %s", error)

    # ------------------------------------------------------------------ comparison
    def compare(self) -> None:
        """Mark the split, merged, fragmented, missed and spurious cells of A and B (against the ground truth)."""
        a, b = self._labels_a.value, self._labels_b.value
        if a is None or b is None or a is b:
            show_error(PREFIX + "choose two different Labels layers as 'labels A' and 'labels B' to compare "
                       "(for example a baseline model's and an SCNP model's predicted labels)")
            return
        reference = self._ground_truth.value
        if reference is None:
            show_info(PREFIX + f"no ground truth: {b.name!r} is compared against {a.name!r}")
        pairs = [(reference, a), (reference, b)] if reference is not None else [(a, b)]
        shapes = {layer.data.shape for pair in pairs for layer in pair}
        if len(shapes) > 1:
            show_error(PREFIX + f"the label layers have different shapes {sorted(shapes)}: choose labels of one image")
            return
        arrays = [(_cells(ref.data), _cells(pred.data)) for ref, pred in pairs]
        names = [(ref.name, pred.name) for ref, pred in pairs]
        worker = create_worker(lambda: [error_map(ref, pred) for ref, pred in arrays], _start_thread=False, _connect={
            "returned": partial(self._on_comparison, names, [pred for _, pred in pairs]),
            "errored": partial(self._on_error, self._generation),
        })
        self._compare_worker = worker
        worker.finished.connect(partial(self._forget, "_compare_worker", worker))
        self._status.value = "comparing..."
        worker.start()

    def _on_comparison(self, names: list[tuple[str, str]], layers: list, results: list) -> None:
        self.counts = {}
        colormap = DirectLabelColormap(color_dict={None: "transparent", 0: "transparent",
                                                   **{i: ERROR_COLORS[c] for i, c in enumerate(ERROR_CLASSES, 1)}})
        for index, ((reference, predicted), layer, (errors, counts)) in enumerate(zip(names, layers, results,
                                                                                          strict=True)):
            out = self._put_labels(f"errors {index}", errors, name=f"errors of {predicted} vs {reference}",
                                   scale=layer.scale, translate=layer.translate)
            out.colormap = colormap
            out.features = {"index": list(range(1, len(ERROR_CLASSES) + 1)), "error": list(ERROR_CLASSES),
                            "cells": [counts[c] for c in ERROR_CLASSES]}
            self.counts[predicted] = counts
        self._counts.value = {"data": [[self.counts[name][c] for name in self.counts] for c in ERROR_CLASSES],
                              "index": list(ERROR_CLASSES), "columns": list(self.counts)}
        self._counts.visible = True
        self._status.value = "; ".join(f"{name}: " + ", ".join(f"{n} {c}" for c, n in counts.items())
                                       for name, counts in self.counts.items())
        self.comparison_done.emit()

    # ------------------------------------------------------------------ layers
    def _put_image(self, role: str, data: np.ndarray, *, name: str, **properties) -> napari.layers.Image:
        """Add the layer of ``role``, or update it: a hidden layer gets its new data when it is shown."""
        layer = self._layers.get(role)
        if layer is None or layer not in self._viewer.layers:
            layer = self._viewer.add_image(data, name=name, **properties)
            layer.colorbar.visible = True
            layer.events.visible.connect(partial(self._apply_pending, role))
            self._layers[role] = layer
            self._pending.pop(role, None)
            return layer
        if layer.name != name:
            layer.name = name
        limits = properties.get("contrast_limits")
        if limits is not None and tuple(layer.contrast_limits) != tuple(limits):
            layer.contrast_limits = limits
        if layer.visible:
            self._pending.pop(role, None)
            layer.data = data
        else:
            self._pending[role] = data
        return layer

    def _apply_pending(self, role: str, *_: object) -> None:
        layer = self._layers.get(role)
        if layer is not None and layer.visible and role in self._pending:
            layer.data = self._pending.pop(role)

    def layer_data(self, role: str) -> np.ndarray:
        """The current data of an output layer by role, hidden or not ("z_tilde", "difference", ...)."""
        return self._pending.get(role, self._layers[role].data)

    def _put_labels(self, role: str, data: np.ndarray, *, name: str, **placement) -> napari.layers.Labels:
        layer = self._layers.get(role)
        if layer is None or layer not in self._viewer.layers:
            layer = self._viewer.add_labels(data, name=name, opacity=0.6, **placement)
            self._layers[role] = layer
        else:
            layer.data = data
            layer.name = name
        return layer

    def _remove(self, role: str) -> None:
        layer = self._layers.pop(role, None)
        if layer is not None and layer in self._viewer.layers:
            self._viewer.layers.remove(layer)

    def wait(self, timeout: float = 60.0) -> None:
        """Block until the workers are idle (scripts and tests)."""
        from qtpy.QtCore import QCoreApplication, QElapsedTimer

        timer = QElapsedTimer()
        timer.start()
        while any(w is not None for w in (self._run_worker, self._penalty_worker, self._compare_worker)):
            if timer.elapsed() > timeout * 1000:
                raise TimeoutError(f"the SCNP inspector's workers did not finish within {timeout} s")
            QCoreApplication.processEvents()


def _parse_threshold(text: str) -> float | None:
    text = text.strip()
    if not text:
        return None
    try:
        value = float(text)
    except ValueError:
        raise InputError(f"the seed threshold must be a number in (0, 1) or empty, got {text!r}") from None
    if not 0 < value < 1:
        raise InputError(f"the seed threshold must be in (0, 1) (a probability-like seed value), got {value}")
    return value


def _cells(data: np.ndarray) -> np.ndarray:
    """Label data for the metrics: negative (unannotated) values as background."""
    data = np.asarray(data)
    return np.where(data > 0, data, 0) if data.size and data.min() < 0 else data


def _text_color(viewer: napari.viewer.Viewer) -> str:
    from napari.utils.theme import get_theme

    try:
        return get_theme(viewer.theme).text.as_hex()
    except (KeyError, ValueError, AttributeError):
        return "#222222"


def _window_result(penalty: Penalty, window: int, analysis: Analysis, ground_truth: np.ndarray | None
                   ) -> tuple[np.ndarray, ...]:
    """What one window shows (runs in a worker thread): z~, z - z~, and each predicted and ground-truth cell's
    SCNP penalty in the order of its features table (the ground truth's empty without one)."""
    z_tilde, difference = penalty.compute(window)
    prediction = penalty_column(analysis.prediction_features, analysis.prediction, difference, window)
    gt_features = analysis.ground_truth_features
    if ground_truth is None or gt_features is None:
        return z_tilde, difference, prediction, np.empty(0)
    return z_tilde, difference, prediction, penalty_column(gt_features, ground_truth, difference, window)
