"""Render a screenshot of the SCNP inspector comparing two models on the demo sample, for the README.

Run (needs a display; on a headless machine under Xvfb)::

    xvfb-run -a -s "-screen 0 1920x1200x24" python napari_plugin/scripts/screenshot.py --baseline RUN_DIR

Opens napari with the window shown (a hidden window renders a blank canvas), loads
the "Synthetic cells + demo model" sample, docks the inspector, runs the demo model
against the ground truth, shows the SCNP window, selects the cell with the highest
SCNP penalty (its own mask logits appear at the cell), then compares ``--baseline``
(e.g. the demo recipe trained with ``--scnp off``) with the demo model against the
ground truth, shows the baseline's error cells on the image, and saves the whole window,
docks included, as a 256-colour PNG.
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
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0],
                                     formatter_class=argparse.ArgumentDefaultsHelpFormatter)
    parser.add_argument("--baseline", required=True,
                        help="the model to compare the demo model with: a run directory or exported instanseg.pt")
    parser.add_argument("--window", type=int, default=3, help="the SCNP window to show (odd)")
    parser.add_argument("--output", type=Path, default=OUTPUT, help="the PNG to write")
    args = parser.parse_args(argv)

    import napari
    from qtpy.QtCore import QCoreApplication

    from napari_instanseg_scnp._sample_data import demo_model_path

    viewer = napari.Viewer(show=True, title="SCNP inspector")
    viewer.window.resize(1900, 1150)
    viewer.open_sample("napari-instanseg-scnp", "synthetic_with_model")
    _, widget = viewer.window.add_plugin_dock_widget("napari-instanseg-scnp", "SCNP inspector")
    widget.native.setMaximumWidth(620)  # the canvas gets the rest; the tables scroll
    image, ground_truth = viewer.layers[0], viewer.layers[1]
    widget._window.value = args.window
    widget.run(image=image, ground_truth=ground_truth)  # the sample's image names the demo model
    widget.wait(600)
    widget._color_by.value = "scnp_penalty"
    widget.select_cell(int(widget._cells.row_headers[0]))
    widget.compare_models(image, [args.baseline, demo_model_path()], ground_truth=ground_truth)
    widget.wait(600)
    for layer in (ground_truth, widget.layers["prediction"], widget.layers["difference"]):
        layer.visible = False  # the canvas shows the baseline's error cells on the image
    viewer.layers.selection.active = widget.layers["prediction"]
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
