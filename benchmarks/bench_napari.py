"""The napari SCNP inspector on a 2048 x 2048 image: how long a change of window takes to show.

Run (a display is needed for the viewer part; on a headless machine use Xvfb)::

    xvfb-run -a python benchmarks/bench_napari.py [--size 2048] [--repeats 5]

Scenarios, each timed as the median of interleaved repeats in one process:

- ``bench_penalty``: one window's SCNP on the logit map as the inspector computes it
  (``Penalty.penalized``: ``instanseg_scnp.scnp`` under ``torch.no_grad``, then z - z~),
  side by side with the same operator with autograd tracking the logits (what
  calling it on a training tensor costs);
- ``bench_crops``: the "instance masks" map: one 64 x 64 crop per ground-truth cell
  penalized against its cell, then read back into the image, side by side with the
  same operator with autograd tracking the crops;
- ``bench_viewer``: the widget in a shown viewer: from setting the slider to both
  SCNP layers updated, and to the canvas repainted, for a window not yet computed
  (background computation off, cache empty) and for one already computed (what
  every window is once the background computation after a run is done).

The budget in the issue is 100 ms for a window change on CPU at 2048 x 2048.
"""

from __future__ import annotations

import argparse
import os
import platform
import statistics
import time

import numpy as np
import torch
from instanseg_scnp import scnp
from instanseg_scnp.data import synthetic_image
from instanseg_scnp.upstream import InstanceCrops

from napari_instanseg_scnp._compute import crop_penalty, map_penalty
from napari_instanseg_scnp._sample_data import threshold_logits

WINDOWS = (3, 5, 9)
BUDGET_MS = 100.0
SEED = 0


def machine() -> str:
    model = next((line.split(":", 1)[1].strip() for line in open("/proc/cpuinfo") if line.startswith("model name")),
                 platform.processor() or platform.machine()) if os.path.exists("/proc/cpuinfo") else platform.machine()
    load = os.getloadavg()[0] if hasattr(os, "getloadavg") else float("nan")
    return (f"{model}, {os.cpu_count()} logical CPUs, torch {torch.__version__} with {torch.get_num_threads()} "
            f"threads, load average {load:.1f} at start")


def median_ms(times: list[float]) -> float:
    return 1000 * statistics.median(times)


def make_inputs(size: int) -> tuple[np.ndarray, np.ndarray]:
    sample = synthetic_image((size, size), modality="fluorescence", rng=SEED)
    return threshold_logits(sample.image[..., 0]), sample.labels.astype(np.int32)


def bench_penalty(logits: np.ndarray, gt: np.ndarray, repeats: int) -> None:
    penalty = map_penalty(logits, gt)
    tracked = torch.from_numpy(logits)[None, None].clone().requires_grad_(True)
    print(f"\nSCNP of the logit map, {logits.shape[0]} x {logits.shape[1]} (ms, median of {repeats})")
    print("| window | scnp with autograd | inspector: z~ (no_grad) | inspector: z~ and z - z~ | "
          "ratio autograd / inspector |")
    print("|---|---|---|---|---|")
    for window in WINDOWS:
        graph, plain, both = [], [], []
        for _ in range(repeats):
            start = time.perf_counter()
            scnp(tracked, penalty.parts[0].target, window)
            graph.append(time.perf_counter() - start)
            start = time.perf_counter()
            z_tilde = penalty.penalized(window)
            plain.append(time.perf_counter() - start)
            start = time.perf_counter()
            penalty.compute(window)
            both.append(time.perf_counter() - start)
        del z_tilde
        print(f"| {window} | {median_ms(graph):.0f} | {median_ms(plain):.0f} | {median_ms(both):.0f} | "
              f"{median_ms(graph) / median_ms(both):.2f}x |")


def synthetic_crops(gt: np.ndarray, half: int = 32) -> tuple[InstanceCrops, np.ndarray, torch.Tensor]:
    """One crop per gt cell around its centroid; logits high inside the cell, falling with the distance to it."""
    from scipy import ndimage

    ids = np.unique(gt)[1:]
    centres = np.rint(ndimage.center_of_mass(gt > 0, gt, ids)).astype(np.int64).reshape(-1, 2)
    seeds = torch.from_numpy(centres)
    height, width = gt.shape
    top_left = torch.stack((seeds[:, 0].clamp(half, height - half), seeds[:, 1].clamp(half, width - half)), 1) - half
    crops = InstanceCrops(torch.empty(len(seeds), 1, 2 * half, 2 * half), seeds, top_left, gt.shape)
    rows, cols = crops.coordinates()
    generator = torch.Generator().manual_seed(SEED)
    inside = (torch.from_numpy(gt)[rows, cols] == torch.from_numpy(ids)[:, None, None]).float()
    distance = ((rows - seeds[:, 0, None, None]) ** 2 + (cols - seeds[:, 1, None, None]) ** 2).float().sqrt()
    noise = torch.randn(inside.shape, generator=generator)
    logits = (3 * inside - 1.5 - 0.1 * distance + 0.5 * noise)[:, None]
    crops = InstanceCrops(logits, seeds, top_left, gt.shape)
    shown, pick = crops.assemble()
    return crops, shown, pick


def tracked_crops(crops: InstanceCrops, shown: np.ndarray, pick: torch.Tensor, gt: np.ndarray):
    """The same computation with autograd tracking the crop logits (what the training loss does)."""
    labels = torch.from_numpy(gt.astype(np.int64))
    at_seed = labels[crops.seeds[:, 0], crops.seeds[:, 1]]
    rows, cols = crops.coordinates()
    target = ((labels[rows, cols] == at_seed[:, None, None]) & (at_seed[:, None, None] > 0))[:, None]
    covered = pick >= 0

    tracked = crops.logits.clone().requires_grad_(True)

    def compute(window: int) -> tuple[np.ndarray, np.ndarray]:
        z_tilde = scnp(tracked, target, window).detach()
        out = shown.reshape(-1).copy()
        out[covered.numpy()] = z_tilde.reshape(-1)[pick[covered]].numpy()
        out = out.reshape(shown.shape)
        return out, shown - out

    return compute


def bench_crops(gt: np.ndarray, repeats: int) -> None:
    start = time.perf_counter()
    crops, shown, pick = synthetic_crops(gt)
    made = time.perf_counter()
    penalty = crop_penalty(crops, shown, pick, gt)
    setup = time.perf_counter() - made
    reference = tracked_crops(crops, shown, pick, gt)
    print(f"\nSCNP of the instance-mask crops: {len(crops.logits)} crops of 64 x 64, one per cell "
          f"(once per run: assembling them {1000 * (made - start):.0f} ms, setting up the penalty "
          f"{1000 * setup:.0f} ms)")
    print("| window | with autograd, as in training (ms) | inspector, no_grad (ms) | ratio | same result |")
    print("|---|---|---|---|---|")
    for window in WINDOWS:
        graph, plain = [], []
        for _ in range(repeats):
            start = time.perf_counter()
            expected = reference(window)
            graph.append(time.perf_counter() - start)
            start = time.perf_counter()
            got = penalty.compute(window)
            plain.append(time.perf_counter() - start)
        same = all(np.array_equal(a, b) for a, b in zip(expected, got, strict=True))
        print(f"| {window} | {median_ms(graph):.0f} | {median_ms(plain):.0f} | "
              f"{median_ms(graph) / median_ms(plain):.2f}x | {same} |")


def bench_viewer(logits: np.ndarray, gt: np.ndarray, repeats: int) -> None:
    import napari
    from qtpy.QtCore import QEventLoop, QTimer

    from napari_instanseg_scnp._widget import SCNPInspector

    viewer = napari.Viewer(show=True)
    viewer.add_image(logits, name="logits")
    viewer.add_labels(gt, name="ground truth")
    widget = SCNPInspector(viewer)
    viewer.window.add_dock_widget(widget, name="SCNP inspector")
    widget._image.value = viewer.layers["logits"]
    widget._ground_truth.value = viewer.layers["ground truth"]
    widget.prefetch = False
    widget.run()
    widget.wait(600)
    canvas = viewer.window._qt_viewer.canvas.native  # private: to force a synchronous repaint

    def change(window: int) -> tuple[float, float]:
        """Seconds from the slider to the layers updated, and to the canvas repainted (no busy waiting)."""
        loop = QEventLoop()

        def done(*_: object) -> None:
            loop.quit()

        widget.penalty_shown.connect(done)
        QTimer.singleShot(60_000, loop.quit)
        start = time.perf_counter()
        widget._window.value = window
        if widget.shown != ("logits", window):
            loop.exec()
        widget.penalty_shown.disconnect(done)
        shown = time.perf_counter()
        canvas.repaint()
        return shown - start, time.perf_counter() - start

    rows = {w: {"cold": [], "cold_paint": [], "warm": [], "warm_paint": []} for w in WINDOWS}
    for _ in range(repeats):
        for window in WINDOWS:
            change(1)
            widget._cache.clear()
            cold, cold_paint = change(window)
            change(1)
            warm, warm_paint = change(window)  # computed just before: from the cache
            for key, value in (("cold", cold), ("cold_paint", cold_paint), ("warm", warm), ("warm_paint", warm_paint)):
                rows[window][key].append(value)
    print(f"\nWindow change in a shown napari {napari.__version__} viewer (ms, median of {repeats}; budget "
          f"{BUDGET_MS:.0f} ms): from setting the slider to both SCNP layers updated, and to the canvas repainted "
          "(this machine paints with Mesa's software OpenGL under Xvfb)")
    print("| window | not yet computed: layers | + repaint | already computed: layers | + repaint | "
          "computed, layers / budget |")
    print("|---|---|---|---|---|---|")
    for window in WINDOWS:
        r = {key: median_ms(values) for key, values in rows[window].items()}
        print(f"| {window} | {r['cold']:.0f} | {r['cold_paint']:.0f} | {r['warm']:.0f} | {r['warm_paint']:.0f} | "
              f"{r['warm'] / BUDGET_MS:.2f} |")
    widget.prefetch = True
    widget._cache.clear()
    start = time.perf_counter()
    change(3)
    widget.wait(600)
    print(f"all {len(widget._cache)} slider windows ready in the background after a run: "
          f"{time.perf_counter() - start:.1f} s")
    viewer.close()


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--size", type=int, default=2048)
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--no-viewer", action="store_true", help="skip the napari part (no display needed)")
    parser.add_argument("--threads", type=int, default=None, help="torch intra-op threads (default: torch's)")
    args = parser.parse_args(argv)
    if args.threads:
        torch.set_num_threads(args.threads)
    print(f"machine: {machine()}")
    start = time.perf_counter()
    logits, gt = make_inputs(args.size)
    print(f"inputs: synthetic fluorescence {args.size} x {args.size} (seed {SEED}), {gt.max()} cells, "
          f"threshold logits ({time.perf_counter() - start:.0f} s to make)")
    bench_penalty(logits, gt, args.repeats)
    bench_crops(gt, args.repeats)
    if not args.no_viewer:
        bench_viewer(logits, gt, args.repeats)
    print(f"\nload average at the end: {os.getloadavg()[0]:.1f}")


if __name__ == "__main__":
    main()
