"""Evaluate an exported model on a dataset split: per-image and per-cell tables, a summary, plots.

The model runs through upstream's own inference class (``instanseg.InstanSeg``,
by :func:`instanseg_scnp.segment`), exactly as a user of the exported file would run it; the metrics are
:mod:`instanseg_scnp.metrics`. An evaluation folder holds::

    per_image.csv   one row per image: F1, PQ, count and Betti errors, split/merge/... counts, shape errors
    per_cell.csv    one row per cell, predicted and ground truth: area, perimeter, circularity, roundness, ...
    pairs.csv       one row per matched cell pair (IoU >= 0.5): both cells' roundness and circularity
    summary.json    dataset-level numbers (below)
    evaluation.png  splits, merges and count error per image; roundness and circularity, prediction against
                    ground truth
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd
from tqdm.auto import tqdm

from instanseg_scnp._files import atomic_directory, check_replaceable, read_json, strict_json
from instanseg_scnp._options import look_up_option
from instanseg_scnp.data import SPLITS, open_dataset
from instanseg_scnp.metrics import (
    DEFAULT_THRESHOLDS,
    SHAPE_ERROR_COLUMNS,
    UPSTREAM_THRESHOLDS,
    cell_shapes,
    f1_from_counts,
    match,
    matched_pairs,
    shape_differences,
    topology_errors,
)
from instanseg_scnp.plots import plot_evaluation
from instanseg_scnp.rundir import CONFIG, TORCHSCRIPT, require_run_dir

logger = logging.getLogger(__name__)

__all__ = [
    "COUNT_COLUMNS",
    "EVALUATION_FILES",
    "F1_COLUMNS",
    "PER_IMAGE_COLUMNS",
    "Evaluation",
    "ImageScore",
    "Segmenter",
    "evaluate_items",
    "evaluate_run",
    "load_segmenter",
    "score_image",
    "summary_line",
    "write_evaluation",
]

Segmenter = Callable[[np.ndarray, "float | None"], np.ndarray]

F1_COLUMNS = {"f1_50": (0.5,), "f1_50to90_by05": DEFAULT_THRESHOLDS, "f1_50to90_by10": UPSTREAM_THRESHOLDS}
"""F1 column -> the IoU thresholds it averages; ``f1_50to90_by10`` is upstream's reported ``mean_f1``."""
COUNT_COLUMNS = ("fragmented", "splits", "merges", "missed", "spurious")
PER_IMAGE_COLUMNS = (
    "name", "n_gt", "n_pred", *F1_COLUMNS, "pq", "count_error", "beta0_error", "beta1_error",
    *COUNT_COLUMNS, *SHAPE_ERROR_COLUMNS, "roundness", "circularity",
)
EVALUATION_FILES = ("per_image.csv", "per_cell.csv", "pairs.csv", "summary.json", "evaluation.png")
"""What an evaluation folder holds: ``--overwrite`` replaces a folder of only these."""
_THRESHOLDS = tuple(sorted({t for thresholds in F1_COLUMNS.values() for t in thresholds}))


@dataclass(frozen=True)
class Evaluation:
    """Tables and summary of one model on one set of images.

    Attributes
    ----------
    per_image : pandas.DataFrame
        Columns :data:`PER_IMAGE_COLUMNS`: F1 at IoU 0.5 and averaged over the
        thresholds its name gives (:data:`F1_COLUMNS`), PQ, the instance-count
        error and the binary Betti-0/1 errors, the instance error counts, the mean
        shape errors of the matched cells (NaN without a matched cell of
        :data:`~instanseg_scnp.metrics.MIN_SHAPE_AREA` px), and the mean
        roundness and circularity of the image's predicted cells.
    per_cell : pandas.DataFrame
        :func:`instanseg_scnp.metrics.cell_shapes` of every image, prediction and
        ground truth, with ``name`` and ``source`` ("prediction" or "ground truth").
    pairs : pandas.DataFrame
        :func:`instanseg_scnp.metrics.shape_differences` of every image, with ``name``.
    summary : dict
        ``images``; ``pooled_<F1 column>`` from TP/FP/FN summed over all images
        (how upstream reports a dataset: ``pooled_f1_50to90_by10`` is its
        ``mean_f1``); ``mean_<column>``, the mean over images of each numeric
        per-image column (NaNs skipped); ``cell_roundness`` and
        ``cell_circularity`` over all predicted cells, ``gt_cell_*`` over all
        ground-truth cells.
    """

    per_image: pd.DataFrame
    per_cell: pd.DataFrame
    pairs: pd.DataFrame
    summary: dict


def load_segmenter(model_path: str | Path, *, device: str = "cpu", **postprocessing: float) -> Segmenter:
    """``segment(image, pixel_size) -> labels`` of an exported model, through upstream's inference class.

    ``image`` is (H, W, C) or (H, W); :func:`instanseg_scnp.segment` prepares it
    (channels repeated to three, padding of small images). ``pixel_size`` (µm)
    lets upstream rescale to the model's. ``postprocessing`` overrides the
    exported defaults (``seed_threshold=``, ``mask_threshold=``, ``peak_distance=``, ...).
    """
    from instanseg_scnp.upstream import load_model, segment

    model = load_model(model_path, device=device)

    def segment_image(image: np.ndarray, pixel_size: float | None = None) -> np.ndarray:
        image = np.asarray(image)
        return segment(model, image, channel_axis=-1 if image.ndim == 3 else None, pixel_size=pixel_size,
                       **postprocessing)

    return segment_image


@dataclass(frozen=True, eq=False)
class ImageScore:
    """The scores of one predicted label image against its ground truth, from :func:`score_image`.

    Attributes
    ----------
    row : dict
        The image's row of :attr:`Evaluation.per_image`: a value for each of
        :data:`PER_IMAGE_COLUMNS`, in that order.
    shapes, gt_shapes : pandas.DataFrame
        :func:`instanseg_scnp.metrics.cell_shapes` of the prediction and of the ground truth.
    pairs : pandas.DataFrame
        :func:`instanseg_scnp.metrics.shape_differences` of the cells matched at IoU >= 0.5.
    counts : dict
        IoU threshold -> ``(tp, fp, fn)``, for every threshold of :data:`F1_COLUMNS`:
        what a dataset sums over its images to pool F1 (divide once, at the end).
    """

    row: dict
    shapes: pd.DataFrame
    gt_shapes: pd.DataFrame
    pairs: pd.DataFrame
    counts: dict[float, tuple[int, int, int]]


def score_image(gt: np.ndarray, predicted: np.ndarray, name: str = "image") -> ImageScore:
    """Score one predicted label image against its ground truth: the one per-image scoring.

    :func:`evaluate_items` scores each image with it, and the napari plugin each
    model it compares, so a number means the same wherever it is shown.

    Parameters
    ----------
    gt, predicted : (M, N) ndarray of int
        Label images of one shape, 0 background, ids >= 0. Unannotated pixels
        (-1) must already be removed from both (as :func:`evaluate_items` does).
    name : str
        The ``name`` of the row.

    Returns
    -------
    ImageScore

    Raises
    ------
    TypeError, ValueError
        Label images that :func:`instanseg_scnp.metrics.check_labels` refuses, or of two shapes.

    Examples
    --------
    Ground-truth cell 1 found, cell 2 missed:

    >>> score = score_image(np.array([[1, 1, 0, 2, 2]]), np.array([[7, 7, 0, 0, 0]]))
    >>> score.row["f1_50"], score.row["count_error"], score.row["missed"], score.counts[0.5]
    (0.6666666666666666, 1, 1, (1, 0, 1))
    """
    matched = match(gt, predicted, thresholds=_THRESHOLDS)
    f1 = {row["threshold"]: row["f1"] for row in matched["per_threshold"]}
    counts = {row["threshold"]: (int(row["tp"]), int(row["fp"]), int(row["fn"])) for row in matched["per_threshold"]}
    shapes, gt_shapes = cell_shapes(predicted), cell_shapes(gt)
    differences = shape_differences(matched_pairs(gt, predicted), gt_shapes, shapes)
    errors = topology_errors(gt, predicted)
    row = {
        "name": name,
        **{key: matched[key] for key in ("n_gt", "n_pred", "pq")},
        **{column: float(np.mean([f1[t] for t in thresholds])) for column, thresholds in F1_COLUMNS.items()},
        **{key: errors[key] for key in ("count_error", "beta0_error", "beta1_error", *COUNT_COLUMNS)},
        **{column: differences[column].mean() for column in SHAPE_ERROR_COLUMNS},
        "roundness": shapes["roundness"].mean(),
        "circularity": shapes["circularity"].mean(),
    }
    return ImageScore({column: row[column] for column in PER_IMAGE_COLUMNS}, shapes, gt_shapes, differences, counts)


def evaluate_items(segment: Segmenter, items: list[dict], *, progress: bool = False) -> Evaluation:
    """Segment every item and score it against its ``nucleus_masks`` (:func:`score_image`).

    Unannotated pixels (-1) are removed from both label images before scoring, as
    upstream does.
    """
    rows, totals, cells, pairs = [], np.zeros((len(_THRESHOLDS), 3)), [], []
    for index, item in enumerate(tqdm(items, desc="evaluate", unit="image", disable=not progress)):
        name = item.get("name", f"image_{index:04d}")
        gt = item["nucleus_masks"].copy()
        predicted = segment(item["image"], item.get("pixel_size"))
        predicted[gt < 0] = 0
        gt[gt < 0] = 0
        score = score_image(gt, predicted, name=name)
        rows.append(score.row)
        totals += [score.counts[t] for t in _THRESHOLDS]
        cells += [score.shapes.assign(name=name, source="prediction"),
                  score.gt_shapes.assign(name=name, source="ground truth")]
        pairs.append(score.pairs.assign(name=name))
    per_image = pd.DataFrame(rows, columns=list(PER_IMAGE_COLUMNS))
    per_cell = pd.concat(cells, ignore_index=True) if cells else pd.DataFrame(columns=["name", "source"])
    pairs = pd.concat(pairs, ignore_index=True) if pairs else pd.DataFrame(columns=["name"])
    pooled = dict(zip(_THRESHOLDS, (f1_from_counts(*map(int, counts)) for counts in totals), strict=True))
    summary = {
        "images": len(per_image),
        **{f"pooled_{column}": float(np.mean([pooled[t] for t in thresholds]))
           for column, thresholds in F1_COLUMNS.items()},
        **{f"mean_{column}": float(per_image[column].mean()) for column in PER_IMAGE_COLUMNS[1:]},
    }
    for source, prefix in (("prediction", ""), ("ground truth", "gt_")):
        chosen = per_cell[per_cell["source"] == source]
        for column in ("roundness", "circularity"):
            summary[f"{prefix}cell_{column}"] = float(chosen[column].mean()) if len(chosen) else float("nan")
    per_cell = per_cell[["name", "source", *[c for c in per_cell if c not in ("name", "source")]]]
    return Evaluation(per_image, per_cell, pairs[["name", *[c for c in pairs if c != "name"]]], summary)


def summary_line(summary: dict) -> str:
    """The headline numbers of a summary in one line, for logs."""
    def shown(key: str, digits: int) -> str:  # NaN, or null in a strict JSON file: no value
        value = summary.get(key)
        return "n/a" if value is None or not np.isfinite(value) else f"{value:.{digits}f}"

    return (f"{summary['images']} images: F1@0.5 {shown('pooled_f1_50', 3)}, F1 IoU .5:.1:.9 "
            f"{shown('pooled_f1_50to90_by10', 3)}, PQ {shown('mean_pq', 3)}; per image: count error "
            f"{shown('mean_count_error', 2)}, splits {shown('mean_splits', 2)}, merges {shown('mean_merges', 2)}, "
            f"Betti-0 error {shown('mean_beta0_error', 2)}")


def write_evaluation(evaluation: Evaluation, directory: str | Path, *, overwrite: bool = False,
                     extra: dict | None = None) -> Path:
    """Write an evaluation folder (module docstring) whole: built aside, then renamed into place."""
    with atomic_directory(directory, overwrite=overwrite, ours=EVALUATION_FILES) as staging:
        evaluation.per_image.to_csv(staging / "per_image.csv", index=False)
        evaluation.per_cell.to_csv(staging / "per_cell.csv", index=False)
        evaluation.pairs.to_csv(staging / "pairs.csv", index=False)
        (staging / "summary.json").write_text(strict_json({**(extra or {}), **evaluation.summary}))
        plot_evaluation(evaluation.per_image, evaluation.per_cell, staging / "evaluation.png")
    return Path(directory)


def evaluate_run(run_dir: str | Path, *, data: str | Path | None = None, split: str = "Test",
                 output: str | Path | None = None, overwrite: bool = False, progress: bool = False) -> Path:
    """Evaluate a run's exported model (``RUN_DIR/instanseg.pt``) on a split; returns the folder written.

    Parameters
    ----------
    run_dir : path
        A finished run directory.
    data : str or path, optional
        ``--data`` as for training; default: the run's own.
    split : {"Test", "Validation", "Train"}
    output : path, optional
        Default ``RUN_DIR/evaluation-<data>-<split>``; an existing folder needs ``overwrite``.
    """
    look_up_option(split, SPLITS, name="split")
    run_dir = require_run_dir(Path(run_dir), CONFIG, TORCHSCRIPT)
    config = read_json(run_dir / CONFIG)
    data = data or config["derived"].get("data", config["config"]["data"])
    output = Path(output) if output else run_dir / f"evaluation-{Path(str(data)).stem}-{split}"
    check_replaceable(output, overwrite=overwrite, ours=EVALUATION_FILES)  # before the work; checked again at the end
    dataset = open_dataset(data, required=(split,))
    evaluation = evaluate_items(load_segmenter(run_dir / TORCHSCRIPT), dataset[split], progress=progress)
    return write_evaluation(evaluation, output, overwrite=overwrite,
                            extra={"run_dir": str(run_dir), "data": str(data), "split": split})
