"""A Matplotlib histogram of a shape column, prediction against ground truth, for the dock."""

from __future__ import annotations

import numpy as np
from matplotlib.backends.backend_qtagg import FigureCanvasQTAgg
from matplotlib.figure import Figure
from qtpy.QtWidgets import QSizePolicy

from napari_instanseg_scnp._compute import SHAPE_RANGE, histograms

__all__ = ["ShapeHistogram"]


class ShapeHistogram(FigureCanvasQTAgg):
    """Fraction of cells per bin of ``column``: prediction (bars coloured by value), ground truth and models (outlines)."""

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

    def plot(self, column: str, series: dict[str, np.ndarray], *, limits: tuple[float, float] = SHAPE_RANGE,
             cmap: str | None = None) -> None:
        """Histograms of ``column`` per named series, on one set of bins over ``limits``.

        The first series is drawn as bars coloured by value (as its cells are on the
        canvas); the others as outlines: "ground truth" in the text colour, models in
        the colours of matplotlib's cycle.
        """
        from matplotlib import colormaps

        cmap = cmap or self.cmap
        edges, fractions = histograms(series, limits=limits)
        self.counts = fractions
        self.axes.clear()
        self._style()
        centres, width = (edges[:-1] + edges[1:]) / 2, np.diff(edges)
        cycle = iter(f"C{i}" for i in range(10))
        for index, (name, values) in enumerate(series.items()):
            finite = np.asarray(values, float)[np.isfinite(values)]
            label = f"{name} ({finite.size}, mean {finite.mean():.2f})" if finite.size else f"{name} (no values)"
            if index == 0:
                colors = colormaps[cmap]((centres - limits[0]) / ((limits[1] - limits[0]) or 1.0))
                self.axes.bar(centres, fractions[name], width=width, color=colors, alpha=0.85, label=label)
            else:
                color = self.text_color if name == "ground truth" else next(cycle)
                self.axes.stairs(fractions[name], edges, color=color, linewidth=1.5, label=label)
        self.axes.set_xlim(*limits)
        self.axes.set_xlabel(f"{column} per cell", color=self.text_color, fontsize=8)
        self.axes.set_ylabel("fraction of cells", color=self.text_color, fontsize=8)
        legend = self.axes.legend(fontsize=7, frameon=False, loc="upper left")
        for text in legend.get_texts():
            text.set_color(self.text_color)
        self.draw_idle()
