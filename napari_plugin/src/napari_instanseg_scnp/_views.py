"""How the inspector's results become layers and tables: names, colours, placement (napari, no Qt widgets).

Everything here takes a :class:`~napari_instanseg_scnp._layers.LayerManager` or
returns plain values, so that the widget keeps only the flow of a run.
"""

from __future__ import annotations

import numpy as np
import pandas as pd
from napari.utils.colormaps import Colormap, DirectLabelColormap

from napari_instanseg_scnp._compute import ERROR_CLASSES, ERROR_COLORS, CellCrop, symmetric_limits
from napari_instanseg_scnp._layers import LayerManager
from napari_instanseg_scnp._models import GROUND_TRUTH, ModelComparison

__all__ = [
    "CELL_ROLES",
    "DIFFERENCE_COLORMAP",
    "ERROR_LABEL_COLORS",
    "LOGIT_COLORMAP",
    "comparison_headline",
    "penalty_name",
    "show_cell_crop",
    "show_comparison",
    "table_value",
]

LOGIT_COLORMAP = "RdBu_r"
SHORT = {"seed map": "seed", "instance masks": "masks", "logits": ""}
"""How layer names abbreviate what is penalized."""
CELL_ROLES = ("cell logits", "cell z_tilde", "cell difference")
"""The layers of the selected cell's own instance-mask crop."""


def _heat_map(name: str = "PRGn", steps: int = 33) -> Colormap:
    """A diverging colormap that is transparent at its centre (z - z~ = 0), so the image shows where SCNP does not
    bite; opacity grows with |value| and is full from two thirds of the range."""
    from matplotlib import colormaps

    colors = colormaps[name](np.linspace(0, 1, steps))
    colors[:, 3] = np.clip(1.5 * np.abs(np.linspace(-1, 1, steps)), 0, 1)
    return Colormap(colors=colors, name=f"{name}, clear at 0")


DIFFERENCE_COLORMAP = _heat_map()
ERROR_LABEL_COLORS = DirectLabelColormap(color_dict={None: "transparent", 0: "transparent",
                                                     **{i: ERROR_COLORS[c] for i, c in enumerate(ERROR_CLASSES, 1)}})
"""Error layers: one colour per error class (value = position in ERROR_CLASSES + 1)."""


def penalty_name(prefix: str, target: str, window: int) -> str:
    """``z~ w3``, ``z−z~ masks w5``: short layer names of one window's SCNP layers.

    Examples
    --------
    >>> penalty_name("z~", "logits", 3), penalty_name("z−z~", "instance masks", 5)
    ('z~ w3', 'z−z~ masks w5')
    """
    return " ".join(part for part in (prefix, SHORT.get(target, target), f"w{window}") if part)


def show_cell_crop(layers: LayerManager, crop: CellCrop, placement: dict, window: int) -> None:
    """The cell's crop logits, z~ and z - z~ as small layers placed at the crop (z - z~ shown, the others hidden)."""
    scale = placement["scale"]
    translate = tuple(t + s * c for t, s, c in zip(placement["translate"], scale, crop.top_left, strict=True))
    limits = symmetric_limits(crop.logits, 100)
    label = crop.label
    shown = {"cell logits": (crop.logits, f"cell {label}: mask logits", LOGIT_COLORMAP, False)}
    if crop.penalized is not None:
        shown["cell z_tilde"] = (crop.penalized, f"cell {label}: z~ w{window}", LOGIT_COLORMAP, False)
        shown["cell difference"] = (crop.difference, f"cell {label}: z−z~ w{window}", DIFFERENCE_COLORMAP, True)
    layers.remove(*(role for role in CELL_ROLES if role not in shown))
    for role, (data, name, colormap, visible) in shown.items():
        layer = layers.get(role)
        layers.put_image(role, data, name=name, colormap=colormap, contrast_limits=limits, scale=scale,
                         translate=translate, visible=visible if layer is None else layer.visible)


def show_comparison(layers: LayerManager, comparison: ModelComparison, placement: dict) -> None:
    """Each model's labels (hidden, with their shapes as features) and its error cells against the ground truth, or
    without one its cells no other model matches; the first model's shown (they overlap), the others a click away."""
    layers.remove(*(role for role in layers.roles() if role.startswith("model ")))
    for index, (name, result) in enumerate(comparison.models.items()):
        labels = layers.put_labels(f"model {name}", result.labels, name=name, visible=False, **placement)
        labels.features = result.features
        if result.errors is not None:
            errors = layers.put_labels(f"model {name} errors", result.errors, name=f"{name}: errors", opacity=0.7,
                                       visible=index == 0, **placement)
            errors.colormap = ERROR_LABEL_COLORS
            errors.features = {"index": list(range(1, len(ERROR_CLASSES) + 1)), "error": list(ERROR_CLASSES),
                               "cells": [result.error_counts[c] for c in ERROR_CLASSES]}
        elif result.disagreement is not None:
            layers.put_labels(f"model {name} unmatched", result.disagreement, name=f"{name}: unmatched",
                              opacity=0.7, visible=index == 0, **placement)


def table_value(frame: pd.DataFrame, index: list | None = None) -> dict:
    """A magicgui ``Table`` value of a numeric frame: counts as integers, other numbers to 3 digits, NaN blank."""
    return {"data": [[_shown(value) for value in row] for row in frame.to_numpy(float)],
            "index": [str(i) for i in (frame.index if index is None else index)], "columns": list(frame.columns)}


def _shown(value: float) -> str:
    if not np.isfinite(value):
        return ""
    return f"{value:.0f}" if float(value).is_integer() else f"{value:.3f}"


def comparison_headline(comparison: ModelComparison) -> str:
    """Each model's summary in a few words, for the status line."""
    parts = []
    for name, row in comparison.summary.drop(index=GROUND_TRUTH, errors="ignore").iterrows():
        if comparison.has_ground_truth:
            parts.append(f"{name}: F1@0.5 {row['f1_50']:.2f}, {int(row['merged'])} merged, {int(row['split'])} split")
        else:
            parts.append(f"{name}: {int(row['n_cells'])} cells, {int(row.get('unmatched', 0))} unmatched")
    return "; ".join(parts)
