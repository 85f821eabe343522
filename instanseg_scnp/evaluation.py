"""Evaluate an exported model on a dataset split: per-image and per-cell tables, a summary, plots.

The model runs through upstream's own inference class (``instanseg.InstanSeg``),
exactly as a user of the exported file would run it; the metrics are
:mod:`instanseg_scnp.metrics`. An evaluation folder holds::

    per_image.csv   one row per image: F1, PQ, Betti errors, split/merge/... counts, mean shape
    per_cell.csv    one row per cell, predicted and ground truth: area, perimeter, circularity, roundness, ...
    summary.json    dataset-level numbers (below)
    evaluation.png  Betti-0 error per image; roundness and circularity, prediction against ground truth
"""

from __future__ import annotations

import json
import logging
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd
import torch
from tqdm.auto import tqdm

from instanseg_scnp._files import atomic_directory
from instanseg_scnp._options import look_up_option
from instanseg_scnp._upstream import pad_for_inference, quiet_upstream
from instanseg_scnp.data import SPLITS, open_dataset
from instanseg_scnp.metrics import DEFAULT_THRESHOLDS, cell_shapes, f1_from_counts, match, topology_errors
from instanseg_scnp.plots import plot_evaluation
from instanseg_scnp.rundir import CONFIG, TORCHSCRIPT, require_run_dir

logger = logging.getLogger(__name__)

Segmenter = Callable[[np.ndarray, "float | None"], np.ndarray]

PER_IMAGE_COLUMNS = (
    "name", "n_gt", "n_pred", "mean_f1", "f1_50", "pq", "beta0_error", "beta1_error",
    "fragmented", "splits", "merges", "missed", "spurious", "roundness", "circularity",
)
COUNT_COLUMNS = ("fragmented", "splits", "merges", "missed", "spurious")


@dataclass(frozen=True)
class Evaluation:
    """Tables and summary of one model on one set of images.

    Attributes
    ----------
    per_image : pandas.DataFrame
        Columns :data:`PER_IMAGE_COLUMNS`: F1 averaged over IoU 0.5-0.9 and at 0.5,
        PQ, Betti-0/1 errors, the instance error counts, and the mean roundness and
        circularity of the image's predicted cells.
    per_cell : pandas.DataFrame
        :func:`instanseg_scnp.metrics.cell_shapes` of every image, prediction and
        ground truth, with ``name`` and ``source`` ("prediction" or "ground truth").
    summary : dict
        ``images``; ``pooled_mean_f1`` and ``pooled_f1_50`` from TP/FP/FN summed
        over all images (how upstream reports a dataset); ``mean_<column>``, the
        mean over images of each numeric per-image column; ``cell_roundness`` and
        ``cell_circularity`` over all predicted cells, ``gt_cell_*`` over all
        ground-truth cells.
    """

    per_image: pd.DataFrame
    per_cell: pd.DataFrame
    summary: dict


def load_segmenter(model_path: str | Path, *, device: str = "cpu", **postprocessing: float) -> Segmenter:
    """``segment(image, pixel_size) -> labels`` through upstream inference on a TorchScript file.

    ``image`` is (H, W, C); a one-channel image is repeated to the three channels
    the model takes, and an image under 64 px a side is padded for upstream (see
    :data:`instanseg_scnp._upstream.MIN_INFERENCE_SIZE`). ``pixel_size`` (µm) lets
    upstream rescale to the model's. ``postprocessing`` overrides the exported
    defaults (``seed_threshold=``, ``mask_threshold=``, ``peak_distance=``, ...).
    """
    from instanseg import InstanSeg

    path = Path(model_path)
    if not path.is_file():
        raise FileNotFoundError(f"model file {str(path)!r} does not exist")
    with quiet_upstream():
        instanseg = InstanSeg(torch.jit.load(str(path), map_location=device), device=device, verbosity=0)

    def segment(image: np.ndarray, pixel_size: float | None = None) -> np.ndarray:
        padded, crop = pad_for_inference(np.asarray(image, np.float32))
        tensor = torch.from_numpy(np.moveaxis(padded, -1, 0).copy())
        if tensor.shape[0] == 1:
            tensor = tensor.repeat(3, 1, 1)
        with quiet_upstream():
            labels = instanseg.eval_small_image(tensor, pixel_size, return_image_tensor=False, **postprocessing)
        return labels.squeeze().cpu().numpy().astype(np.int32)[crop]

    return segment


def evaluate_items(segment: Segmenter, items: list[dict], *, progress: bool = False) -> Evaluation:
    """Segment every item and score it against its ``nucleus_masks``.

    Unannotated pixels (-1) are removed from both label images before scoring, as
    upstream does.
    """
    rows, totals, cells = [], np.zeros((len(DEFAULT_THRESHOLDS), 3)), []
    for index, item in enumerate(tqdm(items, desc="evaluate", unit="image", disable=not progress)):
        name = item.get("name", f"image_{index:04d}")
        gt = item["nucleus_masks"].copy()
        predicted = segment(item["image"], item.get("pixel_size"))
        predicted[gt < 0] = 0
        gt[gt < 0] = 0
        matched = match(gt, predicted)
        totals += [[row["tp"], row["fp"], row["fn"]] for row in matched["per_threshold"]]
        shapes = cell_shapes(predicted)
        cells += [shapes.assign(name=name, source="prediction"),
                  cell_shapes(gt).assign(name=name, source="ground truth")]
        errors = topology_errors(gt, predicted)
        rows.append({
            "name": name,
            **{key: matched[key] for key in ("n_gt", "n_pred", "mean_f1", "f1_50", "pq")},
            **{key: errors[key] for key in ("beta0_error", "beta1_error", *COUNT_COLUMNS)},
            "roundness": shapes["roundness"].mean(),
            "circularity": shapes["circularity"].mean(),
        })
    per_image = pd.DataFrame(rows, columns=list(PER_IMAGE_COLUMNS))
    per_cell = pd.concat(cells, ignore_index=True) if cells else pd.DataFrame(columns=["name", "source"])
    pooled = [f1_from_counts(*map(int, counts)) for counts in totals]
    summary = {
        "images": len(per_image),
        "pooled_mean_f1": float(np.mean(pooled)),
        "pooled_f1_50": float(pooled[list(DEFAULT_THRESHOLDS).index(0.5)]),
        **{f"mean_{column}": float(per_image[column].mean()) for column in PER_IMAGE_COLUMNS[1:]},
    }
    for source, prefix in (("prediction", ""), ("ground truth", "gt_")):
        chosen = per_cell[per_cell["source"] == source]
        for column in ("roundness", "circularity"):
            summary[f"{prefix}cell_{column}"] = float(chosen[column].mean()) if len(chosen) else float("nan")
    return Evaluation(per_image, per_cell[["name", "source", *[c for c in per_cell if c not in ("name", "source")]]],
                      summary)


def write_evaluation(evaluation: Evaluation, directory: str | Path, *, overwrite: bool = False,
                     extra: dict | None = None) -> Path:
    """Write an evaluation folder (module docstring) whole: built aside, then renamed into place."""
    with atomic_directory(directory, overwrite=overwrite) as staging:
        evaluation.per_image.to_csv(staging / "per_image.csv", index=False)
        evaluation.per_cell.to_csv(staging / "per_cell.csv", index=False)
        (staging / "summary.json").write_text(json.dumps({**(extra or {}), **evaluation.summary}, indent=2))
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
    config = json.loads((run_dir / CONFIG).read_text())
    data = data or config["derived"].get("data", config["config"]["data"])
    output = Path(output) if output else run_dir / f"evaluation-{Path(str(data)).stem}-{split}"
    if output.exists() and not overwrite:  # before the work; write_evaluation checks again
        raise FileExistsError(f"{str(output)!r} exists; pass --overwrite (overwrite=True) to replace it")
    dataset = open_dataset(data, required=(split,))
    evaluation = evaluate_items(load_segmenter(run_dir / TORCHSCRIPT), dataset[split], progress=progress)
    return write_evaluation(evaluation, output, overwrite=overwrite,
                            extra={"run_dir": str(run_dir), "data": str(data), "split": split})
