"""What one press of "Run" computes, from arrays to arrays (no napari, no Qt).

:func:`analyse_steps` is a generator, so that the widget's thread worker can stop
it between stages when newer inputs make it stale; :func:`analyse` runs it through.
"""

from __future__ import annotations

from collections.abc import Callable, Generator
from dataclasses import dataclass, field
from typing import TypeVar
from pathlib import Path

import numpy as np
import pandas as pd
from instanseg_scnp.metrics import check_labels
from instanseg_scnp.upstream import ModelError, ModelOutputs, load_model, model_outputs, normalizes_per_tile

from napari_instanseg_scnp._compute import (
    Penalty,
    crop_penalty,
    labels_from_logits,
    map_penalty,
    shape_features,
)

__all__ = ["PENALTY_TARGETS", "Analysis", "InputError", "Inputs", "analyse", "analyse_steps", "check_ground_truth",
           "run_to_end"]

T = TypeVar("T")


class InputError(ValueError):
    """Inputs the inspector cannot use; the message says why and what to choose instead."""


PENALTY_TARGETS = ("seed map", "instance masks")
"""What the SCNP layers penalize: the seed logits, or each seed's instance-mask crop logits."""


@dataclass(frozen=True, eq=False)
class Inputs:
    """The arrays and options of one run.

    ``image`` is the input of ``model`` (a run directory or ``.pt``), or, with no
    model, itself the logits (H, W). ``ground_truth`` (H, W) int labels, optional;
    negative values are unannotated. ``tile_size`` runs the model tile by tile
    (upstream's tiling, for images too large to run at once; None: whole image) on
    ``device``.
    """

    image: np.ndarray
    rgb: bool = False
    model: str | Path | None = None
    ground_truth: np.ndarray | None = None
    seed_threshold: float | None = None
    tile_size: int | None = None
    device: str = "cpu"


@dataclass(frozen=True, eq=False)
class Analysis:
    """The outputs of one run (see the layers the widget makes of them).

    ``logits`` holds the logit maps by name: "seed map" and "instance masks" with
    a model, "logits" without. ``penalties`` holds a :class:`Penalty` per
    penalizable map (empty without ground truth), prepared for every window of the
    slider in the run (so that no window change pays for it). ``prediction`` are the predicted
    labels: the model's, or connected components of ``logits > 0`` without one.
    ``outputs`` is what the model computed (its per-seed crops), None without one;
    ``notes`` what the user should know about the run (a tiled model that normalizes
    each tile by itself).
    """

    logits: dict[str, np.ndarray]
    penalties: dict[str, Penalty]
    prediction: np.ndarray
    prediction_features: pd.DataFrame
    ground_truth_features: pd.DataFrame | None
    thresholds: dict[str, float] = field(default_factory=dict)
    with_model: bool = False
    outputs: ModelOutputs | None = None
    ground_truth: np.ndarray | None = None
    notes: tuple[str, ...] = ()


def _logit_map(image: np.ndarray, rgb: bool) -> np.ndarray:
    array = np.asarray(image)
    if rgb or array.ndim != 2:
        raise InputError(f"with no model the image layer is taken as logits and must be one 2-D map, got shape "
                         f"{array.shape}{' (RGB)' if rgb else ''}: choose a logit layer, or a model")
    if not np.issubdtype(array.dtype, np.number) or np.issubdtype(array.dtype, np.complexfloating):
        raise InputError(f"logits must be real numbers, got dtype {array.dtype}")
    return array.astype(np.float32, copy=False)


def analyse_steps(inputs: Inputs, *, progress: Callable[[int, int], None] | None = None,
                  cancel: Callable[[], bool] | None = None) -> Generator[str, None, Analysis]:
    """Run the model (or take the logits), the penalties' set-up and the shape tables; yields stage names.

    With ``inputs.tile_size``, ``progress(done, total)`` hears of every tile and
    ``cancel()`` returning True stops the model between tiles
    (:class:`instanseg_scnp.upstream.Cancelled`).
    """
    gt = None if inputs.ground_truth is None else check_ground_truth(inputs.ground_truth)
    penalties: dict[str, Penalty] = {}
    output, notes = None, []
    if inputs.model is not None and str(inputs.model).strip() not in ("", "."):
        try:
            model = load_model(inputs.model, device=inputs.device)
        except ModelError as error:
            raise InputError(str(error)) from error
        yield "model loaded"
        tiling = {} if inputs.tile_size is None else {"tile_size": inputs.tile_size, "progress": progress,
                                                        "cancel": cancel}
        if tiling and normalizes_per_tile(model):
            notes.append(f"this model normalizes each tile by its own statistics (instance norm), so its outputs in "
                         f"tiles of {inputs.tile_size} px differ a little from the whole image's; choose tiles "
                         f"'whole image' where memory allows")
        try:
            output = model_outputs(model, inputs.image, channel_axis=-1 if inputs.rgb else None,
                                   seed_threshold=inputs.seed_threshold, **tiling)
        except (TypeError, ValueError) as error:  # a model or image the model cannot take: the message says why
            raise InputError(str(error)) from error
        yield "model run"
        logits = {"seed map": output.seed_logits, "instance masks": output.mask_logits}
        prediction = output.labels
        thresholds = {"seed map": output.seed_threshold, "instance masks": output.mask_threshold}
        if gt is not None:
            check_ground_truth(gt, output.seed_logits.shape)
            penalties["seed map"] = map_penalty(output.seed_logits, gt).prepare()
            penalties["instance masks"] = crop_penalty(output.crops, output.mask_logits, output.pick, gt).prepare()
    else:
        z = _logit_map(inputs.image, inputs.rgb)
        logits, thresholds = {"logits": z}, {"logits": 0.0}
        prediction = labels_from_logits(z)
        if gt is not None:
            check_ground_truth(gt, z.shape)
            penalties["logits"] = map_penalty(z, gt).prepare()
    yield "penalties ready"
    prediction_features = shape_features(prediction)
    gt_features = None if gt is None else shape_features(np.where(gt > 0, gt, 0))
    yield "shapes measured"
    return Analysis(logits, penalties, prediction, prediction_features, gt_features, thresholds,
                    with_model=output is not None, outputs=output, ground_truth=gt, notes=tuple(notes))


def check_ground_truth(labels: np.ndarray, shape: tuple[int, ...] | None = None, *,
                       name: str = "the ground truth") -> np.ndarray:
    """The ground truth through the library's label check (-1: unannotated), its errors as :class:`InputError`
    naming it ``name`` (an argument's name where a caller's argument is checked)."""
    try:
        return check_labels(labels, name=name, ndims=(2,), shape=None if shape is None else tuple(shape),
                            shape_of="the image", allow_unannotated=True)
    except (TypeError, ValueError) as error:
        raise InputError(f"{error}: choose a Labels layer of this image") from error


def run_to_end(steps: Generator[str, None, T]) -> T:
    """What a stage-by-stage generator returns, its stages run without a worker (scripts and tests)."""
    while True:
        try:
            next(steps)
        except StopIteration as done:
            return done.value


def analyse(inputs: Inputs) -> Analysis:
    """:func:`analyse_steps` run to the end."""
    return run_to_end(analyse_steps(inputs))
