"""Render a screenshot of the SCNP inspector on the synthetic sample data, for the README.

Run (needs a display; on a headless machine under Xvfb)::

    xvfb-run -a -s "-screen 0 1920x1200x24" python napari_plugin/scripts/screenshot.py [--model RUN_DIR]

Opens napari with the window shown (a hidden window renders a blank canvas), loads
the "Synthetic cells" sample, docks the inspector, runs it on the sample's
threshold logits (or on the image with ``--model``) against the ground truth, sets
the SCNP window, and saves the whole window, docks included, in grid mode, as a
256-colour PNG.
"""

from __future__ import annotations

import argparse
from pathlib import Path

OUTPUT = Path(__file__).resolve().parents[1] / "docs" / "screenshot.png"


def shrink(path: Path) -> None:
    """Rewrite the PNG with a 256-colour palette (a third of the size; the panels have few colours)."""
    from PIL import Image

    with Image.open(path) as image:
        palette = image.convert("RGB").quantize(256, method=Image.Quantize.MEDIANCUT, dither=Image.Dither.NONE)
    palette.save(path, optimize=True)


def main(argv: list[str] | None = None) -> Path:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", default=None, help="a run directory or exported instanseg.pt (default: no model)")
    parser.add_argument("--window", type=int, default=5, help="the SCNP window to show (odd)")
    parser.add_argument("--output", type=Path, default=OUTPUT)
    args = parser.parse_args(argv)

    import napari
    from qtpy.QtCore import QCoreApplication

    viewer = napari.Viewer(show=True, title="SCNP inspector")
    viewer.window.resize(1800, 1100)
    viewer.open_sample("napari-instanseg-scnp", "synthetic")
    _, widget = viewer.window.add_plugin_dock_widget("napari-instanseg-scnp", "SCNP inspector")
    widget._image.value = viewer.layers["synthetic cells" if args.model else "threshold (logits)"]
    widget._ground_truth.value = viewer.layers["ground truth"]
    if args.model:
        widget._model.value = args.model
    widget.run()
    widget.wait(600)
    widget._window.value = args.window
    while widget.shown != (widget._penalize.value, args.window):
        QCoreApplication.processEvents()

    for layer in viewer.layers:
        layer.visible = True
    widget._shape.value = "roundness"
    grid = viewer.canvas.grid if hasattr(getattr(viewer, "canvas", None), "grid") else viewer.grid  # napari < 0.9
    grid.enabled = True
    grid.shape = (2, -1)
    viewer.layers.selection.active = widget._layers["prediction"]
    viewer.reset_view()
    for _ in range(20):
        QCoreApplication.processEvents()
    args.output.parent.mkdir(parents=True, exist_ok=True)
    viewer.screenshot(str(args.output), canvas_only=False)
    viewer.close()
    shrink(args.output)
    print(f"wrote {args.output}")
    return args.output


if __name__ == "__main__":
    main()
