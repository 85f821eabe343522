"""The "SCNP inspector" dock widget: a thin composition of small parts.

- inputs and the "Run" of one model (:mod:`._analysis`, in a :class:`._tasks.BackgroundTask`
  with a progress bar and a Cancel, tiled on large images);
- the SCNP window: which window to compute next is decided by the Qt-free
  :class:`._scheduler.WindowScheduler`; each window is computed in stages in a
  thread worker, the layers first (what the slider waits for; on a large, zoomed-out
  map first at about screen resolution, every few pixels, then at every pixel), the
  per-cell penalty after;
- layers by role (:class:`._layers.LayerManager`), short names, hidden until asked for,
  and how each result becomes layers and tables (:mod:`._views`);
- a selected cell's own instance-mask logits (:func:`._compute.cell_crop`);
- model comparison (:mod:`._models`, Qt-free).

Scripts and tests drive it through :meth:`SCNPInspector.run`, :attr:`~SCNPInspector.window`,
:meth:`~SCNPInspector.compare_models`, :meth:`~SCNPInspector.select_cell` and
:meth:`~SCNPInspector.wait`.
"""

from __future__ import annotations

import logging
import math
from collections.abc import Sequence
from functools import partial
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np
from magicgui.widgets import (
    ComboBox,
    Container,
    FileEdit,
    Label,
    LineEdit,
    ListEdit,
    PushButton,
    Slider,
    Table,
    create_widget,
)
from napari.layers import Image, Labels
from napari.qt.threading import create_worker
from napari.utils.colormaps import DirectLabelColormap
from napari.utils.notifications import show_error, show_info, show_warning
from instanseg_scnp.upstream import Cancelled, ModelError, resolve_model_path
from psygnal import Signal
from qtpy.QtCore import QCoreApplication, QElapsedTimer, QTimer
from qtpy.QtWidgets import QSizePolicy

from napari_instanseg_scnp import _torch_guard  # noqa: F401 (first of the torch stack: see its docstring)
from napari_instanseg_scnp._analysis import PENALTY_TARGETS, Analysis, InputError, Inputs, analyse_steps
from napari_instanseg_scnp._compute import (
    PENALTY_COLUMN,
    cell_crop,
    column_limits,
    shape_colors,
    symmetric_limits,
)
from napari_instanseg_scnp._histogram import ShapeHistogram
from napari_instanseg_scnp._layers import LayerManager
from napari_instanseg_scnp._models import GROUND_TRUTH, HISTOGRAM_COLUMNS, ModelComparison, compare_models_steps
from napari_instanseg_scnp._sample_data import MODEL_METADATA_KEY
from napari_instanseg_scnp._scheduler import WindowScheduler, run_job
from napari_instanseg_scnp._tasks import BackgroundTask
from napari_instanseg_scnp._views import (
    CELL_ROLES,
    DIFFERENCE_COLORMAP,
    LOGIT_COLORMAP,
    comparison_headline,
    penalty_name,
    show_cell_crop,
    show_comparison,
    table_value,
)

if TYPE_CHECKING:
    import napari

logger = logging.getLogger(__name__)

__all__ = ["MAX_WINDOW", "SCNPInspector"]

MAX_WINDOW = 15
"""Largest window on the slider (the operator takes up to 255)."""
WINDOWS = tuple(range(1, MAX_WINDOW + 1, 2))
AUTO_TILE_SIDE = 1024
"""With tiles "auto", images with a side above this run tile by tile, in tiles of :data:`AUTO_TILE_SIZE`."""
AUTO_TILE_SIZE = 1024
TILE_CHOICES = ("auto", "whole image", "512", "1024", "2048")
SAMPLE_BUDGET = 1024 * 1024
"""Most pixels of a map computed on the main thread when the window changes (about 15-25 ms on two cores).

A window of a larger map is shown first at every ``step``-th pixel, computed at once
on the main thread: the smallest step whose samples fit this budget, or the screen's
own (image pixels per screen pixel) where that is coarser. Every pixel follows from
the worker. Computing the samples where they are painted matters: in a worker thread
the same samples took two to three times as long, waiting for Python's GIL while Qt
painted the moved slider.
"""

PENALTY_COLORMAP = "magma"
COLOR_COLUMNS = ("roundness", "circularity", PENALTY_COLUMN)
CELL_TABLE_ROWS = 100
CELL_TABLE_COLUMNS = (PENALTY_COLUMN, "roundness", "circularity", "area")
"""The cell table's columns; its rows are headed by the cells' labels."""
PREFIX = "SCNP inspector: "
MODEL_FILES = "*.pt *.zip"
"""The file dialogs' filter: exported TorchScript files and bioimage.io packages (a folder is chosen as a folder)."""


class SCNPInspector(Container):
    """Seed and mask logits, SCNP-penalized logits, z - z~, predicted labels, cell shapes and penalties of one image.

    Layers it makes (short names): ``seed logits`` and ``mask logits`` (hidden) with
    a model; ``z~ w3`` (hidden) and ``z−z~ w3``, the penalty heat map, with a ground
    truth; ``prediction`` with its features table (shapes and ``scnp_penalty``),
    coloured by the chosen column, as is the ground truth; ``cell 12: z−z~`` and its
    raw and penalized crops for a selected cell; per compared model its labels and
    its error cells.
    """

    penalty_shown = Signal(str, int)
    """Emitted with (map, window) when SCNP layers for that window are on screen."""
    samples_shown = Signal(str, int)
    """Emitted with (map, window) when that window's z - z~ is on screen at every few pixels (its layers follow)."""
    analysis_done = Signal()
    features_done = Signal(str, int)
    """Emitted with (map, window) when the cells' ``scnp_penalty`` of that window is in their features."""
    cell_shown = Signal(int)
    models_compared = Signal()

    def __init__(self, viewer: napari.viewer.Viewer) -> None:
        super().__init__(labels=True)
        self._viewer = viewer
        self._image = create_widget(label="image", annotation="napari.layers.Image",
                                    options={"tooltip": "the model's input; with no model, the logits themselves"})
        self._model = FileEdit(label="model", mode="r", filter=MODEL_FILES, value="",
                               tooltip="a run directory of `instanseg-scnp train`, an exported instanseg.pt or a "
                                       "bioimage.io package (folder or .zip); empty: the image layer is taken as "
                                       "logits")
        self._seed_threshold = LineEdit(label="seed threshold", value="",
                                        tooltip="passed to the model (on seed / 15 + 0.5); empty: the model's own")
        self._ground_truth = create_widget(label="ground truth", annotation="napari.layers.Labels",
                                           options={"nullable": True,
                                                    "tooltip": "SCNP's target; its cells are measured too"})
        self._tiles = ComboBox(label="tiles", choices=TILE_CHOICES, value="auto",
                               tooltip=f"run the model tile by tile (upstream's tiling, with its overlap); auto: "
                                       f"tiles of {AUTO_TILE_SIZE} for images above {AUTO_TILE_SIDE} px a side")
        self._run = PushButton(text="Run")
        self._cancel = PushButton(text="Cancel", visible=False)
        self._penalize = ComboBox(label="penalize", choices=self._penalty_choices,
                                  tooltip="the seed logits, or each seed's instance-mask crop against its cell")
        self._window = Slider(label="SCNP window", min=1, max=MAX_WINDOW, step=2, value=3, tracking=True,
                              tooltip="odd window w: every pixel takes the worst logit of its class in w x w")
        self._color_by = ComboBox(label="colour cells by", choices=list(COLOR_COLUMNS), value="roundness")
        self._histogram = ShapeHistogram(text_color=_text_color(viewer))
        self._cells = Table(value={"data": [], "index": [], "columns": list(CELL_TABLE_COLUMNS)})
        self._cells.read_only = True
        self._cells.min_height = 150
        self._models = ListEdit(value=[], annotation=list[Path], label="models",
                                options={"mode": "r", "filter": MODEL_FILES},
                                tooltip="run directories, exported instanseg.pt files or bioimage.io packages "
                                        "(folders or .zip files)")
        self._compare = PushButton(text="Compare models")
        self._summary = Table(value={"data": [], "index": [], "columns": []}, visible=False)
        self._summary.read_only = True
        self._summary.min_height = 170
        self._status = Label(value="choose an image (and a model), then Run")
        self._status.native.setWordWrap(True)  # a long message must not widen the dock
        self._status.native.setSizePolicy(QSizePolicy.Policy.Ignored, QSizePolicy.Policy.Preferred)
        self.extend([
            Label(value="<b>Inputs</b>"), self._image, self._model, self._seed_threshold, self._ground_truth,
            self._tiles, self._run, self._cancel,
            Label(value="<b>SCNP</b>"), self._penalize, self._window, self._color_by,
        ])
        self.native.layout().addWidget(self._histogram)
        self.extend([Label(value="<b>Cells by SCNP penalty</b> (click one)"), self._cells,
                     Label(value="<b>Compare models</b> (on the image, against the ground truth)"), self._models,
                     self._compare, self._summary, self._status])

        self._layer_manager = LayerManager(viewer)
        self._scheduler = WindowScheduler(WINDOWS)
        self._analysis: Analysis | None = None
        self.comparison: ModelComparison | None = None
        """The last :meth:`compare_models` result (labels, error maps, summary table)."""
        self._limits: dict[str, tuple[float, float]] = {}
        self._placement: dict = {}
        self._run_task = BackgroundTask("segmenting tiles", idle=self._on_idle)
        self._compare_task = BackgroundTask("comparing models: tiles", idle=self._on_idle)
        self._window_worker = None
        self._ground_truth_layer: napari.layers.Labels | None = None
        self._selected: int | None = None
        self.shown: tuple[str, int] | None = None
        """The (map, window) whose SCNP layers are on screen."""

        self._run.changed.connect(lambda: self.run())
        self._cancel.changed.connect(self.cancel)
        self._window.changed.connect(self._on_window)
        self._penalize.changed.connect(self._request)
        self._color_by.changed.connect(self._recolour)
        self._compare.changed.connect(lambda: self.compare_models())
        self._image.changed.connect(self._offer_model)
        self._cells.native.cellClicked.connect(self._on_cell_row)

    @property
    def prefetch(self) -> bool:
        """Compute the slider's other windows in the background once the wanted one is shown."""
        return self._scheduler.prefetch

    @prefetch.setter
    def prefetch(self, value: bool) -> None:
        self._scheduler.prefetch = bool(value)
        self._pump()

    @property
    def window(self) -> int:
        """The SCNP window on the slider; setting it moves the slider (and shows that window)."""
        return int(self._window.value)

    @window.setter
    def window(self, value: int) -> None:
        self._window.value = value

    @property
    def layers(self) -> LayerManager:
        """The output layers by role ("prediction", "difference", "seed logits", ...)."""
        return self._layer_manager

    # ------------------------------------------------------------------ inputs
    def _set_inputs(self, image: object, model: object, ground_truth: object) -> None:
        if image is not None:
            self._image.value = self._as_layer(image, Image, "image")
        if model is not None:
            self._model.value = str(model)
        if ground_truth is not None:
            self._ground_truth.value = self._as_layer(ground_truth, Labels, "ground_truth")

    def _as_layer(self, value: object, kind: type, argument: str) -> napari.layers.Layer:
        """A layer of the viewer from a layer, or a layer's name."""
        if isinstance(value, str):
            if value not in self._viewer.layers:
                raise ValueError(f"{argument}: no layer named {value!r} in the viewer")
            value = self._viewer.layers[value]
        if not isinstance(value, kind):
            raise TypeError(f"{argument} must be a {kind.__name__} layer of the viewer (or its name), got "
                            f"{type(value).__name__}")
        return value

    def _offer_model(self, layer: object) -> None:
        """Fill an empty model field with the model an image layer names in its metadata (the demo sample)."""
        path = getattr(layer, "metadata", {}).get(MODEL_METADATA_KEY) if layer is not None else None
        if path and str(self._model.value).strip() in ("", "."):
            self._model.value = str(path)

    def _tile_size(self, shape: tuple[int, ...]) -> int | None:
        choice = self._tiles.value
        if choice == "whole image":
            return None
        if choice == "auto":
            return AUTO_TILE_SIZE if max(shape) > AUTO_TILE_SIDE else None
        return int(choice)

    def _collect(self) -> tuple[Inputs, dict] | None:
        """The run's inputs, or None after telling the user in the viewer what is missing."""
        layer = self._image.value
        if layer is None:
            show_error(PREFIX + "no Image layer: open an image (File > Open, or File > Open Sample > "
                       "SCNP inspector) and choose it as 'image'")
            return None
        if layer.multiscale:
            show_error(PREFIX + f"{layer.name!r} is multiscale; choose a single-scale image")
            return None
        self._offer_model(layer)
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
        image = np.asarray(layer.data)
        spatial = image.shape[:2] if layer.rgb else image.shape
        inputs = Inputs(image=image, rgb=bool(layer.rgb), model=model,
                        ground_truth=None if gt_layer is None else np.asarray(gt_layer.data),
                        seed_threshold=threshold, tile_size=self._tile_size(spatial), device=_device())
        placement = {"scale": tuple(layer.scale[-2:]), "translate": tuple(layer.translate[-2:])}
        return inputs, {"placement": placement, "ground_truth": gt_layer, "image": layer.name}

    def _on_error(self, error: Exception) -> None:
        if isinstance(error, Cancelled):
            self._status.value = "cancelled"
            return
        self._status.value = "failed: see the message"
        if isinstance(error, InputError):
            show_error(PREFIX + str(error))
        else:
            logger.error("SCNP inspector failed", exc_info=error)
            show_error(PREFIX + f"failed ({type(error).__name__}: {error})")

    def _busy(self, busy: bool) -> None:
        self._cancel.visible = busy
        self._run.enabled = self._compare.enabled = not busy

    def _on_idle(self) -> None:
        """Run and Compare come back once no computation runs, a cancelled one included (it may hold memory)."""
        if not (self._run_task.running or self._compare_task.running):
            self._busy(False)

    def cancel(self) -> None:
        """Stop the running model run or comparison (between tiles); nothing of it reaches the viewer."""
        self._run_task.cancel()
        self._compare_task.cancel()
        self._cancel.visible = False
        self._status.value = "cancelled"

    # ------------------------------------------------------------------ run
    def run(self, image: object = None, model: str | Path | None = None, ground_truth: object = None) -> None:
        """Run on the inputs (keywords set them first: layers or layer names, a model path).

        A newer run makes a running one stale. Results arrive in the viewer
        asynchronously: :meth:`wait` blocks until they are there.
        """
        self._set_inputs(image, model, ground_truth)
        collected = self._collect()
        if collected is None:
            return
        inputs, context = collected
        self._status.value = "running the model..." if inputs.model else "reading the logits..."
        self._busy(True)
        self._run_task.start(analyse_steps, inputs, stage=self._on_stage,
                             returned=lambda analysis: self._on_analysis(context, analysis), errored=self._on_error)

    def _on_stage(self, stage: str) -> None:
        self._status.value = f"{stage}..."

    def _on_analysis(self, context: dict, analysis: Analysis) -> None:
        self._analysis, self.shown, self._selected = analysis, None, None
        self._scheduler.reset()
        self._placement = placement = context["placement"]
        self._limits = {name: symmetric_limits(z) for name, z in analysis.logits.items()}
        layers = self._layer_manager
        if analysis.with_model:
            for name, z in analysis.logits.items():
                title = "seed logits" if name == "seed map" else "mask logits"
                layers.put_image(name, z, name=title, colormap=LOGIT_COLORMAP, contrast_limits=self._limits[name],
                                 visible=False, **placement)
        if not analysis.with_model:
            layers.remove("seed map", "instance masks")
        layers.remove("z_tilde", "difference", *CELL_ROLES)
        prediction = layers.put_labels("prediction", analysis.prediction, name="prediction", **placement)
        prediction.features = analysis.prediction_features
        if self._on_click not in prediction.mouse_drag_callbacks:
            prediction.mouse_drag_callbacks.append(self._on_click)
        self._ground_truth_layer = context["ground_truth"]
        if self._ground_truth_layer is not None and analysis.ground_truth_features is not None:
            self._ground_truth_layer.features = analysis.ground_truth_features
        with self._penalize.changed.blocked():
            self._penalize.reset_choices()
            self._penalize.value = self._penalize.choices[0]
        if not analysis.penalties and self._color_by.value == PENALTY_COLUMN:
            self._color_by.value = "roundness"
        self._recolour()
        self._fill_cell_table()
        n_cells = len(analysis.prediction_features)
        self._status.value = (f"{n_cells} predicted cells" +
                              ("" if analysis.penalties else "; no ground truth, so no SCNP layers"))
        self._viewer.layers.selection.active = prediction
        for note in analysis.notes:
            show_warning(PREFIX + note)
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
        key = (self._penalize.value, int(self._window.value))
        cached = self._scheduler.request(key)
        if cached is not None:
            self._show(key, cached)
        else:
            step = self._sample_step(key[0])
            if step > 1:
                self._show_samples(key, self._analysis.penalties[key[0]].sample(key[1], step), step)
        self._pump()

    def _sample_step(self, target: str) -> int:
        """The step of a map's first samples (:data:`SAMPLE_BUDGET`); 1 for a map within the budget or of crops."""
        penalty = self._analysis.penalties[target]
        if not penalty.can_sample or penalty.shown.size <= SAMPLE_BUDGET:
            return 1
        height, width = penalty.shown.shape
        step = math.ceil(math.sqrt(height * width / SAMPLE_BUDGET))
        while -(-height // step) * -(-width // step) > SAMPLE_BUDGET:
            step += 1
        screen_per_pixel = _camera(self._viewer).zoom * min(abs(s) for s in self._placement["scale"])
        return max(step, math.floor(1 / screen_per_pixel)) if screen_per_pixel > 0 else step

    def _pump(self) -> None:
        """Start the scheduler's next job if no window worker runs."""
        if self._window_worker is not None or self._analysis is None:
            return
        job = self._scheduler.next_job()
        if job is None:
            return
        worker = create_worker(run_job, job, self._analysis, _start_thread=False, _ignore_errors=True)
        worker.returned.connect(lambda result: self._on_job(job, result))
        worker.errored.connect(lambda error: self._on_job_error(job, error))
        worker.finished.connect(self._on_window_finished)
        self._window_worker = worker
        worker.start()

    def _on_job(self, job: object, result: tuple) -> None:
        if not self._scheduler.finished(job, result):
            return
        self._show(job.key, self._scheduler.result(job.key))

    def _show_samples(self, key: tuple[str, int], result: tuple, step: int) -> None:
        """Put a window's z - z~ at every ``step``-th pixel on screen, each sample covering step x step pixels.

        Only the visible heat map changes (z~ and the cells' penalties wait for the
        full-resolution layers, which follow); ``shown`` stays unset until they are in.
        """
        self._put_difference(key, result[1], step)
        self.shown = None
        self.samples_shown.emit(*key)

    def _put_difference(self, key: tuple[str, int], difference: np.ndarray, step: int = 1) -> None:
        """Put a window's z - z~ in the heat-map layer, at every ``step``-th pixel of the image."""
        target, window = key
        self._layer_manager.put_image("difference", difference, name=penalty_name("z−z~", target, window),
                                      colormap=DIFFERENCE_COLORMAP, contrast_limits=self._limits[target],
                                      colorbar=True, scale=tuple(step * s for s in self._placement["scale"]),
                                      translate=self._placement["translate"])

    def _on_job_error(self, job: object, error: Exception) -> None:
        """Tell the user of a failed window only if it is the one asked for (not a background prefetch)."""
        if self._scheduler.failed(job) and job.key == self._scheduler.wanted:
            logger.error("SCNP inspector: window %s failed", job.key, exc_info=error)
            show_error(PREFIX + f"SCNP of the {job.key[0]} at window {job.key[1]} failed "
                       f"({type(error).__name__}: {error})")

    def _on_window_finished(self) -> None:
        self._window_worker = None
        self._pump()

    def _show(self, key: tuple[str, int], result: tuple) -> None:
        """Put a window's layers on screen (stage 1) and its cells' penalties in their features (stage 2)."""
        target, window = key
        layers = self._layer_manager
        if self.shown != key:
            z_tilde, difference = result[:2]
            self._put_difference(key, difference)
            layers.put_image("z_tilde", z_tilde, name=penalty_name("z~", target, window),
                             colormap=LOGIT_COLORMAP, contrast_limits=self._limits[target], visible=False,
                             **self._placement)
            self.shown = key
            if len(result) == 2:  # this window's penalties are not measured yet: none shown meanwhile
                QTimer.singleShot(0, partial(self._clear_penalty_features, key))
            self._show_cell()
            self.penalty_shown.emit(target, window)
        if len(result) > 2:
            self._set_penalty_features(*result[2:])
            self._status.value = f"SCNP of the {target}, window {window}: each cell's penalty measured"
            self.features_done.emit(target, window)

    def _clear_penalty_features(self, key: tuple[str, int]) -> None:
        """Take another window's penalties out of the features while ``key``'s are measured.

        Called from the event loop after ``key``'s layers are put in, so that the canvas
        is painted first: the features, the colours and the table of thousands of cells
        cost more than the paint.
        """
        cached = self._scheduler.result(key)
        if self.shown == key and (cached is None or len(cached) == 2):
            self._set_penalty_features(None, None)

    def _set_penalty_features(self, prediction_penalty: np.ndarray | None,
                              ground_truth_penalty: np.ndarray | None) -> None:
        """The cells' ``scnp_penalty`` column of the window shown (None: not measured yet, NaN)."""
        analysis = self._analysis
        prediction = self._layer_manager.get("prediction")
        if prediction is not None:
            values = np.nan if prediction_penalty is None else prediction_penalty
            prediction.features = analysis.prediction_features.assign(**{PENALTY_COLUMN: values})
        gt_layer, gt_features = self._ground_truth_layer, analysis.ground_truth_features
        if gt_layer is not None and gt_features is not None and (
                ground_truth_penalty is None or len(ground_truth_penalty) == len(gt_features)):
            values = np.nan if ground_truth_penalty is None else ground_truth_penalty
            gt_layer.features = gt_features.assign(**{PENALTY_COLUMN: values})
        self._fill_cell_table()
        if self._color_by.value == PENALTY_COLUMN:
            self._recolour()

    # ------------------------------------------------------------------ cells: colours, table, selection
    def _recolour(self, *_: object) -> None:
        """Colour predicted and ground-truth cells by the chosen column; its histogram in the dock."""
        column = self._color_by.value
        if self._analysis is None:
            return
        prediction = self._layer_manager.get("prediction")
        tables = {"prediction": prediction.features if prediction is not None else None}
        gt_layer = self._ground_truth_layer
        if gt_layer is not None and gt_layer in self._viewer.layers and self._analysis.ground_truth_features is not None:
            tables["ground truth"] = gt_layer.features
        tables = {name: table if column in table else table.assign(**{column: np.nan})  # not measured: grey
                  for name, table in tables.items() if table is not None}
        limits = column_limits(column, *tables.values())
        colormap = PENALTY_COLORMAP if column == PENALTY_COLUMN else "viridis"
        for name, table in tables.items():
            layer = prediction if name == "prediction" else gt_layer
            layer.colormap = DirectLabelColormap(color_dict=shape_colors(table, column, colormap, limits))
        self._histogram.plot(column, {name: table[column].to_numpy(float) for name, table in tables.items()},
                             limits=limits, cmap=colormap)

    def _fill_cell_table(self) -> None:
        prediction = self._layer_manager.get("prediction")
        if prediction is None:
            return
        features = prediction.features
        columns = [c for c in CELL_TABLE_COLUMNS if c in features]
        if PENALTY_COLUMN in features:
            features = features.sort_values(PENALTY_COLUMN, ascending=False, na_position="last")
        rows = features.head(CELL_TABLE_ROWS)
        self._cells.value = table_value(rows[columns], index=rows["index"].tolist())

    def _on_click(self, layer: napari.layers.Labels, event: object):
        """Mouse callback of the prediction layer: a click (not a drag) selects the cell under the pointer."""
        yield
        moved = False
        while event.type == "mouse_move":
            moved = True
            yield
        value = None if moved else layer.get_value(event.position, world=True)
        if value is not None:
            self.select_cell(int(value))

    def _on_cell_row(self, row: int, _column: int) -> None:
        self.select_cell(int(self._cells.row_headers[row]), center=True)

    def select_cell(self, label: int, *, center: bool = False) -> None:
        """Show predicted cell ``label``'s own instance-mask logits (raw, penalized, z - z~) at the cell."""
        prediction = self._layer_manager.get("prediction")
        if prediction is None or self._analysis is None:
            return
        self._selected = int(label) if label else None
        if self._selected is not None:
            prediction.selected_label = self._selected
            if center:
                rows, cols = np.nonzero(np.asarray(prediction.data) == self._selected)
                if rows.size:
                    _camera(self._viewer).center = tuple(prediction.data_to_world((rows.mean(), cols.mean())))
        self._show_cell()

    def _show_cell(self) -> None:
        analysis, label = self._analysis, self._selected
        layers = self._layer_manager
        outputs = None if analysis is None else analysis.outputs
        if label is None or outputs is None:
            layers.remove(*CELL_ROLES)
            if label is not None:
                self._status.value = f"cell {label}: no model, so no instance-mask logits"
            return
        window = int(self._window.value)
        crop = cell_crop(outputs.crops, outputs.pick, analysis.prediction, label, window, analysis.ground_truth)
        if crop is None:
            layers.remove(*CELL_ROLES)
            self._status.value = f"cell {label}: no seed's crop reaches it"
            return
        show_cell_crop(layers, crop, self._placement, window)
        self._status.value = (f"cell {label}: its seed at {crop.seed}, crop {crop.logits.shape[0]} px" +
                              ("" if crop.penalized is not None else "; no ground truth, so no SCNP"))
        self.cell_shown.emit(label)

    # ------------------------------------------------------------------ model comparison
    def compare_models(self, image: object = None, models: Sequence[str | Path] | None = None,
                       ground_truth: object = None) -> None:
        """Run every model on the image; each model's labels, error cells and a summary table.

        With a ground truth each model is scored against it (split, merged,
        fragmented, missed and spurious cells, F1@0.5, count and Betti errors,
        shape differences); without one, each model's cells the other models do
        not have are marked. Keywords set the inputs first.
        """
        self._set_inputs(image, None, ground_truth)
        if models is not None:
            self._models.value = [Path(model) for model in models]
        layer = self._image.value
        paths = [str(path) for path in self._models.value if str(path).strip() not in ("", ".")]
        if layer is None:
            show_error(PREFIX + "no Image layer: choose the image the models should segment as 'image'")
            return
        gt_layer = self._ground_truth.value
        if gt_layer is None:
            show_info(PREFIX + "no ground truth: the models are compared with each other")
        image_data = np.asarray(layer.data)
        spatial = image_data.shape[:2] if layer.rgb else image_data.shape
        placement = {"scale": tuple(layer.scale[-2:]), "translate": tuple(layer.translate[-2:])}
        self._status.value = "comparing models..."
        self._busy(True)
        self._compare_task.start(
            compare_models_steps, image_data, paths, None if gt_layer is None else np.asarray(gt_layer.data),
            rgb=bool(layer.rgb), tile_size=self._tile_size(spatial), device=_device(), stage=self._on_stage,
            returned=lambda comparison: self._on_models(comparison, placement), errored=self._on_error)

    def _on_models(self, comparison: ModelComparison, placement: dict) -> None:
        self.comparison = comparison
        show_comparison(self._layer_manager, comparison, placement)
        self._summary.value = table_value(comparison.summary)
        self._summary.visible = True
        column = self._color_by.value if self._color_by.value in HISTOGRAM_COLUMNS else HISTOGRAM_COLUMNS[0]
        series = {name: result.features[column].to_numpy(float) for name, result in comparison.models.items()}
        if comparison.ground_truth_features is not None:
            series[GROUND_TRUTH] = comparison.ground_truth_features[column].to_numpy(float)
        self._histogram.plot(column, series)
        self._status.value = comparison_headline(comparison)
        self.models_compared.emit()

    # ------------------------------------------------------------------ waiting
    def wait(self, timeout: float = 60.0) -> None:
        """Block until every computation is done and its results are in the viewer (scripts and tests)."""
        timer = QElapsedTimer()
        timer.start()
        while (self._run_task.running or self._compare_task.running or self._window_worker is not None
               or (self._analysis is not None and self._scheduler.pending())):
            if timer.elapsed() > timeout * 1000:
                raise TimeoutError(f"the SCNP inspector's workers did not finish within {timeout} s")
            QCoreApplication.processEvents()


def _camera(viewer: napari.viewer.Viewer) -> object:
    """The viewer's camera (``viewer.scene.camera`` since napari 0.9, ``viewer.camera`` before)."""
    scene = getattr(viewer, "scene", None)
    return scene.camera if scene is not None else viewer.camera


def _device() -> str:
    import torch

    return "cuda" if torch.cuda.is_available() else "cpu"


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


def _text_color(viewer: napari.viewer.Viewer) -> str:
    from napari.utils.theme import get_theme

    try:
        return get_theme(viewer.theme).text.as_hex()
    except (KeyError, ValueError, AttributeError):
        return "#222222"
