"""The napari SCNP inspector on a 2048 x 2048 image: how long a change of window takes to show.

Run (a display is needed for the viewer part; on a headless machine use Xvfb)::

    xvfb-run -a -s "-screen 0 1920x1080x24" python benchmarks/bench_napari.py [--size 2048] [--repeats 5]

Scenarios, each timed as the median of interleaved repeats in one process:

- ``bench_penalty``: one window's SCNP on the logit map: stage 1 as the inspector
  computes it now (``_scheduler.window_layers``: z~ and z - z~ by ``Penalty.compute``,
  NumPy blocks on ``torch.get_num_threads()`` threads), side by side with what it
  computed before (``instanseg_scnp.scnp`` under ``torch.no_grad``, then z - z~) and
  with the operator with autograd tracking the logits (what calling it on a training
  tensor costs); then stage 2, the per-cell penalty columns (``window_features``);
- ``bench_crops``: the "instance masks" map: one 64 x 64 crop per ground-truth cell
  penalized against its cell, then read back into the image, the same three ways;
- ``bench_viewer``: a shown napari viewer. The widget is being restructured, so this
  drives plain napari Image layers the way it does: a ``WindowScheduler`` hands out
  the jobs, a napari thread worker runs each (``run_job``), and a stage-1 result
  swaps the data of the visible "z - z~" layer (z~ waits for its hidden layer to be
  shown, as in the widget) and the canvas is repainted. Timed from the slider's
  change (``scheduler.request``) to the layer updated and to the canvas repainted,
  for a window not yet computed (prefetch off, cache empty), side by side with the
  previous single worker call (the operator, then both penalty columns, then the
  swap), and for a window already computed; and napari's own part: the data swap
  and the repaint. Stage 2 (features) follows stage 1 and is timed on its own.

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

from napari_instanseg_scnp._analysis import Inputs, analyse
from napari_instanseg_scnp._compute import Penalty, crop_penalty, map_penalty, penalty_column, symmetric_limits
from napari_instanseg_scnp._sample_data import threshold_logits
from napari_instanseg_scnp._scheduler import LAYERS, WindowScheduler, run_job, window_features, window_layers

WINDOWS = (3, 5, 9)
SLIDER = range(1, 16, 2)
WINDOW_SIZE = (1280, 800)
"""The viewer's window (pixels): the repaint's cost grows with the canvas, so runs use one size."""
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


def previous_layers(penalty: Penalty, window: int) -> tuple[np.ndarray, np.ndarray]:
    """z~ and z - z~ as ``Penalty.compute`` made them before its NumPy blocks: the operator under no_grad."""
    parts = penalty.parts
    with torch.no_grad():
        if len(parts) == 1 and parts[0].pixels is None:
            z_tilde = scnp(parts[0].logits, parts[0].target, window, ignore=parts[0].ignore)[0, 0].numpy()
        else:
            out = penalty.shown.reshape(-1).copy()
            for part in parts:
                penalized = scnp(part.logits, part.target, window, ignore=part.ignore)
                out[part.pixels] = penalized.reshape(-1)[part.index].numpy()
            z_tilde = out.reshape(penalty.shown.shape)
    return z_tilde, np.subtract(penalty.shown, z_tilde, dtype=np.float32)


def bench_penalty(logits: np.ndarray, gt: np.ndarray, repeats: int) -> None:
    start = time.perf_counter()
    penalty = map_penalty(logits, gt)
    setup = time.perf_counter() - start
    analysis = analyse(Inputs(image=logits, ground_truth=gt))
    tracked = torch.from_numpy(logits)[None, None].clone().requires_grad_(True)
    print(f"\nSCNP of the logit map, {logits.shape[0]} x {logits.shape[1]} (ms, median of {repeats}; once per run: "
          f"setting up the penalty {1000 * setup:.0f} ms)")
    print("| window | scnp with autograd | before: scnp no_grad, z~ and z - z~ | stage 1 now: z~ and z - z~ | "
          "before / now | stage 2: penalty columns, prediction and ground truth | same result |")
    print("|---|---|---|---|---|---|---|")
    for window in WINDOWS:
        graph, before, now, features = [], [], [], []
        for _ in range(repeats):
            start = time.perf_counter()
            scnp(tracked, penalty.parts[0].target, window)
            graph.append(time.perf_counter() - start)
            start = time.perf_counter()
            expected = previous_layers(penalty, window)
            before.append(time.perf_counter() - start)
            start = time.perf_counter()
            got = window_layers(penalty, window)
            now.append(time.perf_counter() - start)
            start = time.perf_counter()
            window_features(analysis, got[1], window, gt)
            features.append(time.perf_counter() - start)
        same = all(np.array_equal(a, b) for a, b in zip(expected, got, strict=True))
        print(f"| {window} | {median_ms(graph):.0f} | {median_ms(before):.0f} | {median_ms(now):.0f} | "
              f"{median_ms(before) / median_ms(now):.1f}x | {median_ms(features):.0f} | {same} |")


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
    print("| window | with autograd, as in training (ms) | before: scnp no_grad (ms) | stage 1 now (ms) | "
          "before / now | same result |")
    print("|---|---|---|---|---|---|")
    for window in WINDOWS:
        graph, before, now = [], [], []
        for _ in range(repeats):
            start = time.perf_counter()
            expected = reference(window)
            graph.append(time.perf_counter() - start)
            start = time.perf_counter()
            previous = previous_layers(penalty, window)
            before.append(time.perf_counter() - start)
            start = time.perf_counter()
            got = window_layers(penalty, window)
            now.append(time.perf_counter() - start)
        same = all(np.array_equal(a, b) and np.array_equal(a, c) for a, b, c in zip(expected, previous, got,
                                                                                   strict=True))
        print(f"| {window} | {median_ms(graph):.0f} | {median_ms(before):.0f} | {median_ms(now):.0f} | "
              f"{median_ms(before) / median_ms(now):.1f}x | {same} |")


def bench_viewer(logits: np.ndarray, gt: np.ndarray, repeats: int) -> None:
    import napari
    from napari.qt.threading import create_worker
    from qtpy.QtCore import QEventLoop, QTimer

    analysis = analyse(Inputs(image=logits, ground_truth=gt))  # no model: the map is called "logits"
    penalty, limits = analysis.penalties["logits"], symmetric_limits(logits)
    viewer = napari.Viewer(show=True)
    viewer.add_image(logits, name="logits", colormap="RdBu_r", contrast_limits=limits)
    z_tilde_layer = viewer.add_image(logits, name="z~", colormap="RdBu_r", contrast_limits=limits, visible=False)
    difference_layer = viewer.add_image(np.zeros_like(logits), name="z - z~", colormap="PRGn",
                                        contrast_limits=limits)
    viewer.window._qt_window.resize(*WINDOW_SIZE)  # private: napari restores the last session's size otherwise
    canvas = viewer.window._qt_viewer.canvas.native  # private: to force a synchronous repaint
    scheduler = WindowScheduler(SLIDER, prefetch=False)
    pending = {}  # the hidden z~ layer's data, as the widget keeps it until the layer is shown
    running = []

    def timed(function, *args):
        start = time.perf_counter()
        return function(*args), time.perf_counter() - start

    def show(times: dict, start: float, result: tuple) -> None:
        """What the widget does with a stage-1 result: swap the visible layer's data, keep z~, repaint."""
        swap = time.perf_counter()
        difference_layer.data = result[1]
        pending[z_tilde_layer.name] = result[0]
        times["layers"] = time.perf_counter() - start
        times["swap"] = time.perf_counter() - swap
        canvas.repaint()
        times["paint"] = time.perf_counter() - start
        times["repaint"] = time.perf_counter() - swap - times["swap"]

    def run(work, *args, returned, finished=None) -> None:
        worker = create_worker(timed, work, *args, _start_thread=False)
        worker.returned.connect(returned)
        worker.finished.connect(lambda: running.remove(worker))
        if finished is not None:
            worker.finished.connect(finished)
        running.append(worker)  # referenced until it has finished
        worker.start()

    def change(window: int) -> dict:
        """Seconds from the slider to the layer updated, to the canvas repainted and to the features in."""
        loop, times = QEventLoop(), {}
        start = time.perf_counter()

        def pump(*_: object) -> None:
            job = scheduler.next_job()
            if job is None:
                loop.quit()
                return
            run(run_job, job, analysis, gt, returned=lambda result: on_result(job, *result), finished=pump)

        def on_result(job, result, seconds) -> None:
            shown = scheduler.finished(job, result)
            if job.stage == LAYERS:
                times["all layers"] = time.perf_counter() - start  # the last stage 1 so far
            if shown:
                times["stage 1" if job.stage == LAYERS else "stage 2"] = seconds
                if job.stage == LAYERS:
                    show(times, start, result)
                else:
                    times["features"] = time.perf_counter() - start

        cached = scheduler.request(("logits", window))
        if cached is not None:
            show(times, start, cached)
        pump()
        if scheduler.running is not None:
            QTimer.singleShot(120_000, loop.quit)
            loop.exec()
        return times

    def change_before(window: int) -> dict:
        """The previous widget: one worker call computed the operator's z~, z - z~ and both penalty columns,
        then the layers were swapped."""
        loop, times = QEventLoop(), {}
        start = time.perf_counter()

        def previous(window):
            z_tilde, difference = previous_layers(penalty, window)
            columns = (penalty_column(analysis.prediction_features, analysis.prediction, difference, window),
                       penalty_column(analysis.ground_truth_features, gt, difference, window))
            return z_tilde, difference, *columns

        def on_result(result, seconds) -> None:
            times["stage 1"] = seconds
            show(times, start, result)
            loop.quit()

        run(previous, window, returned=lambda result: on_result(*result))
        QTimer.singleShot(120_000, loop.quit)
        loop.exec()
        return times

    change(1)
    keys = ("cold", "cold_paint", "stage1", "stage2", "features", "before", "before_paint", "warm", "warm_paint",
            "swap", "repaint")
    rows = {w: {key: [] for key in keys} for w in WINDOWS}
    for _ in range(repeats):
        for window in WINDOWS:
            scheduler.reset()
            cold = change(window)
            before = change_before(window)
            change(1)
            warm = change(window)  # computed just before: from the cache
            for key, value in (("cold", cold["layers"]), ("cold_paint", cold["paint"]), ("stage1", cold["stage 1"]),
                               ("stage2", cold["stage 2"]), ("features", cold["features"]),
                               ("before", before["layers"]), ("before_paint", before["paint"]),
                               ("warm", warm["layers"]), ("warm_paint", warm["paint"]), ("swap", warm["swap"]),
                               ("repaint", warm["repaint"])):
                rows[window][key].append(value)
    size = canvas.size()
    print(f"\nWindow change in a shown napari {napari.__version__} viewer, canvas {size.width()} x {size.height()} "
          f"(ms, median of {repeats}; budget {BUDGET_MS:.0f} ms): from the slider to the z - z~ layer updated and "
          "to the canvas repainted; plain napari layers driven by the WindowScheduler as the widget drives them")
    print("| window | not yet computed: stage 1 (worker) | layer updated | + repaint | before (one worker call: "
          "operator and penalty columns), + repaint | stage 2 (worker) | features in | already computed: layer "
          "updated | + repaint | napari: data swap | napari: repaint |")
    print("|---|---|---|---|---|---|---|---|---|---|---|")
    for window in WINDOWS:
        r = {key: median_ms(values) for key, values in rows[window].items()}
        print(f"| {window} | {r['stage1']:.0f} | {r['cold']:.0f} | {r['cold_paint']:.0f} | {r['before_paint']:.0f} | "
              f"{r['stage2']:.0f} | {r['features']:.0f} | {r['warm']:.0f} | {r['warm_paint']:.0f} | "
              f"{r['swap']:.0f} | {r['repaint']:.0f} |")
    scheduler.prefetch = True
    scheduler.reset()
    start = time.perf_counter()
    times = change(3)
    print(f"all {len(scheduler.cache)} slider windows ready in the background after a run: their layers in "
          f"{times['all layers']:.1f} s, their features too in {time.perf_counter() - start:.1f} s")
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
