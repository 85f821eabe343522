"""Compare models on one image: what one press of "Compare" computes, from arrays to arrays (no napari, no Qt).

Each model (a run directory, an exported ``instanseg.pt``, a bioimage.io package
folder) segments the image; then

- with a ground truth, each model is scored against it: its error cells
  (:func:`~napari_instanseg_scnp._compute.error_map`) and one summary row with
  the numbers ``instanseg-scnp evaluate`` reports for an image
  (:func:`instanseg_scnp.evaluation.score_image`, so they agree);
- with two or more models, each model is compared with the others: its
  *disagreement map* holds the cells that have no match in another model. A
  match is the one-to-one matching at IoU >= 0.5 of
  :func:`instanseg_scnp.metrics.matched_pairs`, the matching F1@0.5 counts. It
  is symmetric (no model plays the ground truth, unlike
  :func:`~instanseg_scnp.metrics.classify_errors`, whose split/merged and
  missed/spurious depend on which side is the reference), so model A's
  unmatched cells against B are F1@0.5's false positives of A with B as the
  reference, and B's its false negatives.

:func:`compare_labels` does this for label images already made;
:func:`compare_models_steps` runs the models first. It is a generator, so that
the widget's thread worker can stop it between stages when newer inputs make it
stale; :func:`compare_models` runs it through.
"""

from __future__ import annotations

from collections.abc import Callable, Generator, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd
from instanseg_scnp.evaluation import ImageScore, score_image
from instanseg_scnp.metrics import check_labels, f1_from_counts, matched_pairs
from instanseg_scnp.upstream import ModelError, load_model, resolve_model_path, segment

from napari_instanseg_scnp._analysis import InputError, check_ground_truth, run_to_end
from napari_instanseg_scnp._compute import ERROR_CLASSES, error_map, histograms, shape_features

__all__ = [
    "GROUND_TRUTH",
    "HISTOGRAM_COLUMNS",
    "InputError",
    "ModelComparison",
    "ModelResult",
    "Segmenter",
    "compare_labels",
    "compare_models",
    "compare_models_steps",
    "model_names",
]

GROUND_TRUTH = "ground truth"
"""The name of the ground truth's row in the summary and its series in the histograms (no model takes it)."""

HISTOGRAM_COLUMNS = ("roundness", "circularity")
"""The shape columns :attr:`ModelComparison.histograms` bins."""

SCORE_COLUMNS = ("f1_50", "count_error", "beta0_error", "beta1_error", "roundness_error", "circularity_error")
"""The summary's columns taken from :func:`~instanseg_scnp.evaluation.score_image`'s row."""

Segmenter = Callable[[Path, np.ndarray], np.ndarray]
"""``segmenter(model_file, image) -> labels`` (H, W): runs one model (a file :func:`resolve_model_path` found)."""


@dataclass(frozen=True, eq=False)
class ModelResult:
    """One model's labels and what was computed from them.

    Attributes
    ----------
    name : str
        Its display name (:func:`model_names`).
    labels : (H, W) int32 ndarray
        Its cells.
    features : pandas.DataFrame
        :func:`~napari_instanseg_scnp._compute.shape_features` of ``labels`` (a ``Labels.features`` table).
    path : Path or None
        The model file that made ``labels`` (None for :func:`compare_labels`).
    errors : (H, W) uint8 ndarray or None
        Its error cells against the ground truth
        (:func:`~napari_instanseg_scnp._compute.error_map`, value = position in
        ``ERROR_CLASSES`` + 1); None without a ground truth.
    error_counts : dict or None
        The number of cells of each error class; None without a ground truth.
    score : ImageScore or None
        :func:`instanseg_scnp.evaluation.score_image` against the ground truth; None without one.
    disagreement : (H, W) uint8 ndarray or None
        For each of its cells, the number of other models in which the cell has no
        match at IoU >= 0.5 (0: every other model found it; also the background);
        None with one model.
    """

    name: str
    labels: np.ndarray
    features: pd.DataFrame
    path: Path | None = None
    errors: np.ndarray | None = None
    error_counts: dict[str, int] | None = None
    score: ImageScore | None = None
    disagreement: np.ndarray | None = None


@dataclass(frozen=True, eq=False)
class ModelComparison:
    """The models' results side by side.

    Attributes
    ----------
    models : dict
        :class:`ModelResult` by display name, in the order the models were given.
    summary : pandas.DataFrame
        One row per model (index: the names), and with a ground truth a last row
        :data:`GROUND_TRUTH`. Columns: ``n_cells``; with a ground truth the error
        counts (``split, merged, fragmented, missed, spurious``), ``f1_50``,
        ``count_error``, ``beta0_error``, ``beta1_error``, and the mean shape
        differences of the matched cells (``roundness_error``,
        ``circularity_error``); ``roundness`` and ``circularity``, the mean of the
        cells; with two or more models ``unmatched``, the cells without a match in
        at least one other model, and with three or more ``unmatched_in_all``, those
        without a match in any. Where a ground truth is given, the numbers scored
        against it are those of its annotated pixels (its -1 pixels removed from both
        sides, as ``instanseg-scnp evaluate`` does); ``unmatched`` and
        ``unmatched_in_all`` compare the models' whole labels. The ground truth's row has ``n_cells``,
        ``roundness`` and ``circularity``, and NaN elsewhere.
    histograms : dict
        For each of :data:`HISTOGRAM_COLUMNS`: ``(edges, fractions)``, the bin edges
        and the fraction of cells per bin of each model and the ground truth
        (:func:`~napari_instanseg_scnp._compute.histograms`), the cells the summary counts.
    agreement : pandas.DataFrame or None
        F1@0.5 of each model against each other (symmetric, 1 on the diagonal); None with one model.
    ground_truth_features : pandas.DataFrame or None
        :func:`~napari_instanseg_scnp._compute.shape_features` of the (annotated) ground truth.
    """

    models: dict[str, ModelResult]
    summary: pd.DataFrame
    histograms: dict[str, tuple[np.ndarray, dict[str, np.ndarray]]]
    agreement: pd.DataFrame | None = None
    ground_truth_features: pd.DataFrame | None = None

    @property
    def names(self) -> list[str]:
        return list(self.models)

    @property
    def has_ground_truth(self) -> bool:
        return self.ground_truth_features is not None


def _base_name(path: Path) -> str:
    """A run directory's name; a file's stem, or its folder's name when it is that folder's model file."""
    if path.is_dir():
        return path.name
    try:
        if resolve_model_path(path.parent) == path:  # RUN_DIR/instanseg.pt: the run's name says more
            return path.parent.name
    except ModelError:
        pass
    return path.stem


def model_names(models: Sequence[str | Path]) -> list[str]:
    """Short unique display names for model paths: the run directory's name, or the file's stem.

    A name taken already (or :data:`GROUND_TRUTH`) gets `` (2)``, `` (3)``, ...

    Examples
    --------
    >>> model_names(["runs/a", "other/a", "exports/b.pt"])
    ['a', 'a (2)', 'b']
    """
    names: list[str] = []
    taken = {GROUND_TRUTH}
    for index, model in enumerate(models):
        path = Path(str(model).strip()).expanduser()
        base = _base_name(path) or f"model {index + 1}"
        name, n = base, 2
        while name in taken:
            name, n = f"{base} ({n})", n + 1
        taken.add(name)
        names.append(name)
    return names


def _check_count(n_models: int, with_ground_truth: bool) -> None:
    if n_models == 0 or (n_models == 1 and not with_ground_truth):
        raise InputError(f"models: comparing needs at least two models, or one with a ground truth; got {n_models}: "
                         "choose another model" + ("" if with_ground_truth else ", or a ground truth"))


def _model_labels(labels: np.ndarray, name: str, shape: tuple[int, ...] | None) -> np.ndarray:
    try:
        checked = check_labels(labels, name=f"the labels of model {name!r}", ndims=(2,), shape=shape,
                               shape_of="the image")
    except (TypeError, ValueError) as error:
        raise InputError(str(error)) from error
    return checked.astype(np.int32, copy=False)


def _unmatched_counts(labels: Mapping[str, np.ndarray]) -> tuple[dict[str, np.ndarray], dict[str, np.ndarray],
                                                                   pd.DataFrame]:
    """For each cell of each model, the number of other models without a match at IoU >= 0.5: per cell (in the
    order of the cell ids) and as an (H, W) uint8 map; and the models' pairwise F1@0.5."""
    names = list(labels)
    ids = {name: np.unique(image[image > 0]) for name, image in labels.items()}
    missing = {name: np.zeros(len(ids[name]), np.int64) for name in names}
    agreement = pd.DataFrame(np.eye(len(names)), index=names, columns=names)
    for i, first in enumerate(names):
        for second in names[i + 1:]:
            pairs = matched_pairs(labels[first], labels[second], 0.5)
            for name, found in ((first, pairs["gt_label"]), (second, pairs["pred_label"])):
                missing[name] += ~np.isin(ids[name], found.to_numpy())
            tp = len(pairs)
            f1 = f1_from_counts(tp, len(ids[second]) - tp, len(ids[first]) - tp)
            agreement.loc[first, second] = agreement.loc[second, first] = f1
    maps = {}
    for name, image in labels.items():
        values, inverse = np.unique(image, return_inverse=True)
        per_value = np.zeros(len(values), np.uint8)
        per_value[np.isin(values, ids[name])] = missing[name]  # values are sorted, ids the positive ones
        maps[name] = per_value[inverse].reshape(image.shape)
    return missing, maps, agreement


def _compare_steps(labels: Mapping[str, np.ndarray], ground_truth: np.ndarray | None,
                   paths: Mapping[str, Path] | None = None) -> Generator[str, None, ModelComparison]:
    """:func:`compare_labels` on checked labels, stage by stage (yields the name of the stage about to run)."""
    paths = paths or {}
    names = list(labels)
    gt = None if ground_truth is None else np.where(ground_truth > 0, ground_truth, 0)
    annotated = None if ground_truth is None else ground_truth >= 0
    rows: dict[str, dict] = {name: {"n_cells": len(np.unique(labels[name][labels[name] > 0]))} for name in names}
    results: dict[str, dict] = {name: {} for name in names}
    cell_tables: dict[str, pd.DataFrame] = {}
    if gt is not None:
        yield "scoring"
        for name in names:
            scored = np.where(annotated, labels[name], 0)
            score = score_image(gt, scored, name=name)
            errors, counts = error_map(gt, scored)
            results[name].update(errors=errors, error_counts=counts, score=score)
            rows[name] = {"n_cells": score.row["n_pred"], **counts, **{c: score.row[c] for c in SCORE_COLUMNS}}
            cell_tables[name] = score.shapes
    agreement = None
    if len(names) > 1:
        yield "comparing models"
        missing, maps, agreement = _unmatched_counts(labels)
        for name in names:
            results[name]["disagreement"] = maps[name]
            rows[name]["unmatched"] = int((missing[name] > 0).sum())
            if len(names) > 2:
                rows[name]["unmatched_in_all"] = int((missing[name] == len(names) - 1).sum())
    yield "measuring shapes"
    models = {}
    for name in names:
        features = shape_features(labels[name])
        cells = cell_tables.setdefault(name, features)
        rows[name].update({column: cells[column].mean() for column in HISTOGRAM_COLUMNS})
        models[name] = ModelResult(name=name, labels=labels[name], features=features, path=paths.get(name),
                                   **results[name])
    gt_features = None
    if gt is not None:
        gt_features = shape_features(gt)
        cell_tables[GROUND_TRUTH] = gt_features
        rows[GROUND_TRUTH] = {"n_cells": len(gt_features),
                              **{column: gt_features[column].mean() for column in HISTOGRAM_COLUMNS}}
    columns = ["n_cells", *((*ERROR_CLASSES, *SCORE_COLUMNS) if gt is not None else ()), *HISTOGRAM_COLUMNS,
               *(("unmatched",) if len(names) > 1 else ()), *(("unmatched_in_all",) if len(names) > 2 else ())]
    summary = pd.DataFrame.from_dict(rows, orient="index").reindex(columns=columns)
    summary.index.name = "model"
    shapes = {column: histograms({name: table[column].to_numpy(float) for name, table in cell_tables.items()})
              for column in HISTOGRAM_COLUMNS}
    return ModelComparison(models=models, summary=summary, histograms=shapes, agreement=agreement,
                           ground_truth_features=gt_features)


def compare_labels(labels: Mapping[str, np.ndarray], ground_truth: np.ndarray | None = None) -> ModelComparison:
    """Compare label images made already, by name (two or more, or one with a ground truth).

    ``ground_truth`` (H, W) int labels, -1 unannotated. The comparison of
    :func:`compare_models`, without running a model.

    Raises
    ------
    InputError
        Fewer than two label images (one with a ground truth), a label image that
        is not (H, W) int labels, or one of another shape than the first.
    """
    _check_count(len(labels), ground_truth is not None)
    names = list(labels)
    checked = {names[0]: _model_labels(labels[names[0]], names[0], None)}
    shape = checked[names[0]].shape
    checked.update({name: _model_labels(labels[name], name, shape) for name in names[1:]})
    gt = None if ground_truth is None else check_ground_truth(ground_truth, shape, name="ground_truth")
    return run_to_end(_compare_steps(checked, gt))


def _model_files(models: Sequence[str | Path]) -> list[Path]:
    """Each model's file (:func:`resolve_model_path`); a path that is no model, or one given twice, refused."""
    files: list[Path] = []
    for index, model in enumerate(models):
        try:
            file = resolve_model_path(model)
        except ModelError as error:
            raise InputError(f"models[{index}]: {error}") from error
        same = [i for i, other in enumerate(files) if other.resolve() == file.resolve()]
        if same:
            raise InputError(f"models[{same[0]}] and models[{index}] are the same model ({str(file)!r}): "
                             "choose each model once")
        files.append(file)
    return files


def _image_shape(image: np.ndarray, rgb: bool) -> tuple[int, int]:
    shape = np.shape(image)
    if len(shape) != (3 if rgb else 2):
        raise InputError(f"image must be {'(H, W, C) with rgb=True' if rgb else '(H, W) with rgb=False'}, "
                         f"got shape {shape}: choose a 2-D image layer" + (" (RGB)" if rgb else ""))
    return shape[0], shape[1]


def compare_models_steps(image: np.ndarray, models: Sequence[str | Path], ground_truth: np.ndarray | None = None,
                         *, rgb: bool = False, segmenter: Segmenter | None = None, tile_size: int | None = None,
                         progress: Callable[[int, int], None] | None = None,
                         cancel: Callable[[], bool] | None = None,
                         device: str = "cpu") -> Generator[str, None, ModelComparison]:
    """Run each model on ``image`` and compare them; yields the name of each stage before it runs.

    Stages: ``"model 1/2: <name>"`` per model, then ``"scoring"`` (with a ground
    truth), ``"comparing models"`` (two or more models) and ``"measuring shapes"``;
    the generator returns a :class:`ModelComparison`.

    Parameters
    ----------
    image : (H, W) ndarray, or (H, W, C) with ``rgb``
    models : sequence of path
        Run directories, exported ``instanseg.pt`` files or bioimage.io package
        folders; at least two, or one with a ground truth (scored alone, as in
        the inspector, with no other model to disagree with).
    ground_truth : (H, W) ndarray of int, optional
        The image's labels, -1 unannotated.
    rgb : bool
        The image's last axis is its channels.
    segmenter : callable, optional
        ``segmenter(model_file, image) -> labels`` instead of loading the file
        with :func:`instanseg_scnp.upstream.load_model` on ``device`` and running
        :func:`instanseg_scnp.upstream.segment` (e.g. models loaded already).
    tile_size, progress, cancel
        With ``tile_size``, passed to :func:`~instanseg_scnp.upstream.segment`
        (tiled inference; ``progress(done, total)`` per tile, ``cancel()`` True
        stops between tiles, raising upstream's ``Cancelled``, which is not caught
        here); None runs each model on the whole image (and passes none of the three,
        so this works with any ``segment``).
    device : str
        Where the default runner loads the models.

    Raises
    ------
    InputError
        Too few models, a model path that is not a model, or that cannot be read
        (the :class:`~instanseg_scnp.upstream.ModelError` message), the same model
        twice, an image the model cannot take, or a ground truth of another shape
        than the image. Each message names the argument.
    """
    if isinstance(models, (str, Path)):
        raise InputError(f"models must be a list of model paths, got one path {str(models)!r}")
    models = list(models)
    _check_count(len(models), ground_truth is not None)
    shape = _image_shape(image, rgb)
    gt = None if ground_truth is None else check_ground_truth(ground_truth, shape, name="ground_truth")
    files = _model_files(models)
    names = model_names(models)
    options = {} if tile_size is None else {"tile_size": tile_size, "progress": progress, "cancel": cancel}

    def run_model(file: Path, image: np.ndarray) -> np.ndarray:
        model = load_model(file, device=device)
        return segment(model, image, channel_axis=-1 if rgb else None, **options)

    run = segmenter or run_model
    labels: dict[str, np.ndarray] = {}
    for index, (name, file) in enumerate(zip(names, files, strict=True)):
        yield f"model {index + 1}/{len(files)}: {name}"
        try:
            predicted = run(file, image)
        except ModelError as error:
            raise InputError(f"models[{index}]: {error}") from error
        except (TypeError, ValueError) as error:  # an image the model cannot take: the message says why
            raise InputError(f"image: model {name!r} cannot segment it: {error}") from error
        labels[name] = _model_labels(predicted, name, shape)
    return (yield from _compare_steps(labels, gt, dict(zip(names, files, strict=True))))


def compare_models(image: np.ndarray, models: Sequence[str | Path], ground_truth: np.ndarray | None = None,
                   **options) -> ModelComparison:
    """:func:`compare_models_steps` run to the end (same arguments)."""
    return run_to_end(compare_models_steps(image, models, ground_truth, **options))
