"""Evaluate an exported model on a dataset split: per-image metrics and their summary.

The model runs through upstream's own inference class (``instanseg.InstanSeg``),
exactly as a user of the exported file would run it; the metrics are
:mod:`instanseg_scnp.metrics`.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from pathlib import Path

import numpy as np
import pandas as pd
import torch
from tqdm.auto import tqdm

from instanseg_scnp._upstream import quiet_upstream
from instanseg_scnp.metrics import DEFAULT_THRESHOLDS, cell_shapes, f1_from_counts, match, topology_errors

logger = logging.getLogger(__name__)

Segmenter = Callable[[np.ndarray, "float | None"], np.ndarray]

PER_IMAGE_COLUMNS = (
    "name", "n_gt", "n_pred", "mean_f1", "f1_50", "pq", "beta0_error", "beta1_error",
    "fragmented", "splits", "merges", "missed", "spurious", "roundness", "circularity",
)


def load_segmenter(model_path: str | Path, *, device: str = "cpu") -> Segmenter:
    """``segment(image, pixel_size) -> labels`` through upstream inference on a TorchScript file.

    ``image`` is (H, W, C); a one-channel image is repeated to the channels the
    model takes. ``pixel_size`` (µm) lets upstream rescale to the model's.
    """
    from instanseg import InstanSeg

    path = Path(model_path)
    if not path.is_file():
        raise FileNotFoundError(f"model file {str(path)!r} does not exist")
    with quiet_upstream():
        instanseg = InstanSeg(torch.jit.load(str(path), map_location=device), device=device, verbosity=0)

    def segment(image: np.ndarray, pixel_size: float | None = None) -> np.ndarray:
        tensor = torch.from_numpy(np.moveaxis(np.asarray(image, np.float32), -1, 0).copy())
        if tensor.shape[0] == 1:
            tensor = tensor.repeat(3, 1, 1)
        with quiet_upstream():
            labels = instanseg.eval_small_image(tensor, pixel_size, return_image_tensor=False)
        return labels.squeeze().cpu().numpy().astype(np.int32)

    return segment


def evaluate_items(segment: Segmenter, items: list[dict], *, progress: bool = False) -> tuple[pd.DataFrame, dict]:
    """Segment every item and score it against its ``nucleus_masks``.

    Unannotated pixels (-1) are removed from both label images before scoring,
    as upstream does.

    Returns
    -------
    per_image : pandas.DataFrame
        One row per image, columns :data:`PER_IMAGE_COLUMNS`: F1 averaged over IoU
        0.5-0.9 and at 0.5, PQ, Betti-0/1 errors, the instance error counts, and
        the mean roundness and circularity of the predicted cells.
    summary : dict
        ``images``; ``pooled_mean_f1`` and ``pooled_f1_50`` from TP/FP/FN summed
        over all images (how upstream reports a dataset); and the mean of every
        numeric per-image column (``mean_<column>``); ``cell_roundness``,
        ``cell_circularity`` over all predicted cells and ``gt_cell_*`` over all
        ground-truth cells, for comparison.
    """
    rows, totals, cells = [], np.zeros((len(DEFAULT_THRESHOLDS), 3)), {"pred": [], "gt": []}
    for index, item in enumerate(tqdm(items, desc="evaluate", unit="image", disable=not progress)):
        gt = item["nucleus_masks"].copy()
        predicted = segment(item["image"], item.get("pixel_size"))
        predicted[gt < 0] = 0
        gt[gt < 0] = 0
        matched = match(gt, predicted)
        totals += [[row["tp"], row["fp"], row["fn"]] for row in matched["per_threshold"]]
        shapes = cell_shapes(predicted)
        cells["pred"].append(shapes)
        cells["gt"].append(cell_shapes(gt))
        errors = topology_errors(gt, predicted)
        rows.append({
            "name": item.get("name", f"image_{index:04d}"),
            **{key: matched[key] for key in ("n_gt", "n_pred", "mean_f1", "f1_50", "pq")},
            **{key: errors[key] for key in ("beta0_error", "beta1_error", "fragmented", "splits", "merges",
                                            "missed", "spurious")},
            "roundness": shapes["roundness"].mean(),
            "circularity": shapes["circularity"].mean(),
        })
    per_image = pd.DataFrame(rows, columns=list(PER_IMAGE_COLUMNS))
    pooled = [f1_from_counts(*map(int, counts)) for counts in totals]
    cells = {who: pd.concat(tables) if tables else pd.DataFrame(columns=["roundness", "circularity"])
             for who, tables in cells.items()}
    summary = {
        "images": len(per_image),
        "pooled_mean_f1": float(np.mean(pooled)),
        "pooled_f1_50": float(pooled[list(DEFAULT_THRESHOLDS).index(0.5)]),
        **{f"mean_{column}": float(per_image[column].mean()) for column in PER_IMAGE_COLUMNS[1:]},
        **{f"{prefix}cell_{column}": float(cells[who][column].mean())
           for who, prefix in (("pred", ""), ("gt", "gt_")) for column in ("roundness", "circularity")},
    }
    return per_image, summary
