"""A Matplotlib histogram of a shape column, prediction against ground truth, for the dock."""

from __future__ import annotations

import numpy as np
from matplotlib.backends.backend_qtagg import FigureCanvasQTAgg
from matplotlib.figure import Figure
from qtpy.QtWidgets import QSizePolicy

from napari_instanseg_scnp._compute import SHAPE_RANGE, histogram

__all__ = ["ShapeHistogram"]


class ShapeHistogram(FigureCanvasQTAgg):
    """Fraction of cells per bin of ``column``, prediction (bars coloured by value) and ground truth (outline)."""

    def __init__(self, *, text_color: str = "#222222", cmap: str = "viridis") -> None:
        self.figure = Figure(figsize=(3.2, 2.2), layout="constrained")
        self.figure.patch.set_alpha(0)
        super().__init__(self.figure)
        self.setStyleSheet("background-color: transparent;")
        self.setSizePolicy(QSizePolicy.Policy.Expanding, QSizePolicy.Policy.Fixed)
        self.setMinimumHeight(190)
        self.setMaximumHeight(190)
        self.axes = self.figure.add_subplot()
        self.text_color = text_color
        self.cmap = cmap
        self.counts: dict[str, np.ndarray] = {}
        self.clear()

    def clear(self) -> None:
        self.counts = {}
        self.axes.clear()
        self._style()
        self.axes.text(0.5, 0.5, "run the inspector to see\nthe cells' shapes", ha="center", va="center",
                       transform=self.axes.transAxes, color=self.text_color, fontsize=8)
        self.draw_idle()

    def _style(self) -> None:
        self.axes.set_facecolor("none")
        for spine in self.axes.spines.values():
            spine.set_color(self.text_color)
        self.axes.tick_params(colors=self.text_color, labelsize=7)

    def plot(self, column: str, prediction: np.ndarray, ground_truth: np.ndarray | None) -> None:
        """Histograms of ``column`` values; ``ground_truth`` None draws the prediction alone."""
        from matplotlib import colormaps

        edges, pred, gt = histogram(prediction, np.array([]) if ground_truth is None else ground_truth)
        self.counts = {"prediction": pred, "ground truth": gt}
        self.axes.clear()
        self._style()
        centres, width = (edges[:-1] + edges[1:]) / 2, np.diff(edges)
        colors = colormaps[self.cmap]((centres - SHAPE_RANGE[0]) / (SHAPE_RANGE[1] - SHAPE_RANGE[0]))
        self.axes.bar(centres, pred, width=width, color=colors, alpha=0.85,
                      label=f"prediction ({len(prediction)}, mean {np.nanmean(prediction):.2f})"
                      if len(prediction) else "prediction (no cells)")
        if ground_truth is not None:
            self.axes.stairs(gt, edges, color=self.text_color, linewidth=1.5,
                             label=f"ground truth ({len(ground_truth)}, mean {np.nanmean(ground_truth):.2f})"
                             if len(ground_truth) else "ground truth (no cells)")
        self.axes.set_xlim(*SHAPE_RANGE)
        self.axes.set_xlabel(f"{column} per cell", color=self.text_color, fontsize=8)
        self.axes.set_ylabel("fraction of cells", color=self.text_color, fontsize=8)
        legend = self.axes.legend(fontsize=7, frameon=False, loc="upper left")
        for text in legend.get_texts():
            text.set_color(self.text_color)
        self.draw_idle()
