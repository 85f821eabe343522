r"""The inspector's computations: pure NumPy/torch, no napari or Qt (tested without a viewer).

- :class:`Penalty` holds fixed logits and a fixed target and returns the SCNP-penalized
  logits :math:`\tilde z` (:func:`instanseg_scnp.scnp`) for any window; :class:`WindowCache`
  keeps recent windows so moving the slider back costs nothing.
- :func:`shape_features`, :func:`shape_colors`: :func:`instanseg_scnp.metrics.cell_shapes`
  as a napari ``Labels.features`` table, and a colour per cell by a shape column;
  :func:`penalty_column`: each cell's SCNP penalty (:func:`instanseg_scnp.metrics.cell_penalty`)
  as a column of that table.
- :func:`error_map`: the split, merged, fragmented, missed and spurious cells that
  :func:`instanseg_scnp.metrics.classify_errors` names (the definitions, and the
  counts, of :func:`instanseg_scnp.metrics.topology_errors`), painted as one label image.
"""

from __future__ import annotations

import queue
import threading
from collections import OrderedDict
from collections.abc import Mapping
from concurrent.futures import ThreadPoolExecutor
from contextlib import contextmanager
from dataclasses import dataclass, field

import numpy as np
import pandas as pd
import torch
from instanseg_scnp import normalize_window, scnp
from instanseg_scnp.metrics import CellErrors, cell_penalty, cell_shapes, check_labels, classify_errors
from scipy import ndimage

__all__ = [
    "ERROR_CLASSES",
    "PENALTY_COLUMN",
    "ERROR_COLORS",
    "SHAPE_RANGE",
    "Penalty",
    "WindowCache",
    "error_map",
    "histograms",
    "labels_from_logits",
    "map_penalty",
    "crop_penalty",
    "penalty_column",
    "shape_colors",
    "shape_features",
    "CellCrop",
    "cell_crop",
    "column_limits",
    "own_crop",
    "symmetric_limits",
]

ERROR_CLASSES = CellErrors.ERROR_CLASSES
"""Error classes (those of :func:`~instanseg_scnp.metrics.classify_errors`) in the order they are painted (a later
class wins a pixel); layer value = position + 1."""

ERROR_COLORS = {"split": "#e6194b", "merged": "#f58231", "fragmented": "#ffe119", "missed": "#4363d8",
                "spurious": "#911eb4"}

SHAPE_RANGE = (0.0, 1.0)
"""Roundness and circularity are in [0, 1]; colours and histograms use this whole range."""


@dataclass(frozen=True, eq=False)
class _Part:
    """Logits and target as :func:`instanseg_scnp.scnp` sees them, (B, 1, h, w), and where their values go.

    ``pixels`` are flat indices into the image and ``index`` the flat indices into
    ``logits`` that supply them; both None: the part is the whole map (B == 1).
    """

    logits: torch.Tensor
    target: torch.Tensor
    ignore: torch.Tensor | None = None
    pixels: np.ndarray | None = None
    index: torch.Tensor | None = None


BLOCK_ELEMENTS = 2**17
""":class:`Penalty` works through the logits in blocks of about this many elements (rows of a map, or whole
crops), each framed by its window, so that a block's passes stay in a core's cache; the blocks run on
``torch.get_num_threads()`` threads (NumPy releases the GIL)."""

_SLIDER_WINDOW = 15


class _Scratch:
    """One thread's reusable work arrays, by name (grown as needed; reusing them spares the allocations and
    page faults that otherwise cost as much as the arithmetic)."""

    _free: queue.SimpleQueue = queue.SimpleQueue()

    def __init__(self) -> None:
        self._arrays: dict[str, np.ndarray] = {}

    def array(self, name: str, size: int, dtype: type = np.float32) -> np.ndarray:
        """A 1-D work array of ``size`` elements (stale values)."""
        array = self._arrays.get(name)
        if array is None or array.size < size or array.dtype != dtype:
            array = self._arrays[name] = np.empty(max(size, 0 if array is None else array.size), dtype)
        return array[:size]

    @classmethod
    @contextmanager
    def lend(cls):
        """A free scratch (shared by all penalties: one per thread that works at the same time)."""
        try:
            scratch = cls._free.get_nowait()
        except queue.Empty:
            scratch = cls()
        try:
            yield scratch
        finally:
            cls._free.put(scratch)


def _shifts(window: int) -> list[int]:
    """The operator's CPU sparse table (``instanseg_scnp._pooling._axis_max``) as shifts: blocks of width
    2**k built by doubling, then the two blocks that cover the window."""
    shifts, span = [], 1
    while 2 * span <= window:
        shifts.append(span)
        span *= 2
    return [*shifts, window - span]


def _window_extreme(extreme: np.ufunc, flat: np.ndarray, shape: tuple[int, int, int], window: tuple[int, int],
                    scratch: _Scratch, name: str) -> np.ndarray:
    """``extreme`` (``np.minimum`` or ``np.maximum``) over the window of every element of a framed stack.

    ``flat`` is the stack of ``shape`` (k, rows, columns) as one contiguous 1-D array;
    the result, (k, rows, columns), holds at [c, i, j] the extreme over rows i..i + wh - 1
    and columns j..j + ww - 1 of stack c, for the i and j whose window lies inside it
    (elsewhere: stale values). Each pass of the sparse table is one ``extreme`` of two
    shifted views of the flat array (by whole rows, then by elements), contiguous and
    so vectorized; a window that reaches across a row or a stack only makes stale values.
    """
    size, source, which = flat.size, flat, 0
    for step, width in ((shape[2], window[0]), (1, window[1])):
        for shift in _shifts(width) if width > 1 else []:
            size -= shift * step
            out = scratch.array(f"{name}{which}", flat.size)
            extreme(source[:size], source[shift * step:shift * step + size], out=out[:size])
            source, which = out, 1 - which
    return source.reshape(shape)


def _candidates(logits: np.ndarray, foreground: np.ndarray, annotated: np.ndarray | None,
                radii: tuple[int, int]) -> np.ndarray:
    """Both classes' candidates (2, B, H + 2 rh, W + 2 rw) in a frame of ``radii``: [0] the foreground's
    logits, +inf elsewhere (never the min), [1] the background's, -inf elsewhere (never the max); the
    other class, unannotated pixels and the frame outside the image are elsewhere."""
    rh, rw = radii
    count, height, width = logits.shape
    out = np.empty((2, count, height + 2 * rh, width + 2 * rw), np.float32)
    out[0], out[1] = np.inf, -np.inf
    inner = out[:, :, rh:rh + height, rw:rw + width]
    background = ~foreground
    if annotated is not None:
        foreground, background = foreground & annotated, background & annotated
    np.copyto(inner[0], logits, where=foreground)
    np.copyto(inner[1], logits, where=background)
    return out


def _penalize_block(candidates: np.ndarray, window: tuple[int, int], corner: tuple[int, int],
                    foreground_bits: np.ndarray, scratch: _Scratch, out: np.ndarray) -> None:
    r""":math:`\tilde z` of a block into ``out`` (k, h, w): the window min of the foreground candidates and
    the window max of the background's (``candidates`` (2, k, rows, columns), contiguous, the window of
    ``out[:, 0, 0]`` at ``corner``), and each element its own class's, chosen on the bits by
    ``foreground_bits`` (int32 (k, h, w), all ones on the foreground: exact for every value, and faster
    than ``np.where``). Unannotated elements are left to the caller."""
    shape, (top, left) = candidates.shape[1:], corner
    count, height, width = out.shape
    foreground, background = (
        _window_extreme(extreme, candidates[c].reshape(-1), shape, window, scratch, name)
        [:, top:top + height, left:left + width].view(np.int32)
        for c, extreme, name in ((0, np.minimum, "min"), (1, np.maximum, "max")))
    chosen = scratch.array("chosen", out.size, np.int32).reshape(out.shape)
    np.bitwise_xor(foreground, background, out=chosen)
    chosen &= foreground_bits
    np.bitwise_xor(chosen, background, out=out.view(np.int32))


def _sampled_extreme(extreme: np.ufunc, values: np.ndarray, width: int, step: int, count: int,
                     axis: int) -> np.ndarray:
    """``extreme`` over ``values[k * step : k * step + width]`` along ``axis``, for k < ``count`` (a new array).

    Windows that are narrow for the step take the extreme of ``width`` strided views
    directly (``width - 1`` passes over the sampled output); wide ones first build the
    sparse table (:func:`_shifts`) on every position, then take its last pass at the
    samples only, whichever does fewer element operations.
    """
    def take(array: np.ndarray, start: int, stride: int, n: int) -> np.ndarray:
        index = [slice(None)] * array.ndim
        index[axis] = slice(start, start + (n - 1) * stride + 1, stride)
        return array[tuple(index)]

    if width == 1:
        return take(values, 0, step, count).copy()
    shifts = _shifts(width)
    if width - 2 <= step * (len(shifts) - 1):  # (width - 1) / step passes against len(shifts) - 1 + 1 / step
        out = extreme(take(values, 0, step, count), take(values, 1, step, count))
        for shift in range(2, width):
            extreme(out, take(values, shift, step, count), out=out)
        return out
    source = values
    for shift in shifts[:-1]:
        n = source.shape[axis] - shift
        source = extreme(take(source, 0, 1, n), take(source, shift, 1, n))
    return extreme(take(source, 0, step, count), take(source, shifts[-1], step, count))


def _in_threads(tasks: list) -> None:
    """Run the callables ``tasks`` (each taking a :class:`_Scratch`) on up to ``torch.get_num_threads()``
    threads (in order on one)."""
    threads = min(len(tasks), max(1, torch.get_num_threads()))

    def run(task):
        with _Scratch.lend() as scratch:
            task(scratch)

    if threads <= 1:
        for task in tasks:
            run(task)
        return
    with ThreadPoolExecutor(threads, thread_name_prefix="scnp-penalty") as pool:
        for done in [pool.submit(run, task) for task in tasks]:
            done.result()


@dataclass(eq=False)
class _Plan:
    """A part as NumPy arrays for :meth:`Penalty.compute`, made once per penalty.

    ``logits``, ``foreground`` and ``annotated`` (None: all annotated) are (B, h, w).
    A map (B == 1, written to the image as it is) keeps its ``candidates`` framed by
    ``radius`` and its ``foreground_bits`` between windows; crops are framed block by
    block, and ``owned[j]`` holds the image pixels whose value comes from the crops of
    block j and their flat indices into those crops.
    """

    logits: np.ndarray
    foreground: np.ndarray
    annotated: np.ndarray | None
    candidates: np.ndarray | None = None
    foreground_bits: np.ndarray | None = None
    radius: int = -1
    per_block: int = 1
    owned: list[tuple[np.ndarray, np.ndarray]] | None = None

    @classmethod
    def of(cls, part: _Part) -> _Plan:
        logits = np.ascontiguousarray(part.logits.detach().cpu()[:, 0].numpy(), dtype=np.float32)
        foreground = np.ascontiguousarray((part.target != 0).cpu()[:, 0].numpy())
        annotated = None
        if part.ignore is not None:
            ignore = torch.broadcast_to(part.ignore.cpu(), part.logits.shape)[:, 0].numpy()
            annotated = np.ascontiguousarray(~ignore)
        plan = cls(logits, foreground, annotated)
        if part.pixels is None and len(logits) != 1:
            raise ValueError(f"a part without pixels is one whole map (B == 1), got {len(logits)} maps")
        if part.pixels is not None:
            count, height, width = logits.shape
            plan.per_block = max(1, BLOCK_ELEMENTS // (height * width))
            per_block = plan.per_block * height * width
            index = np.asarray(part.index, dtype=np.int64)
            block = index // per_block
            order = np.argsort(block.astype(np.uint16) if count < 2**16 else block, kind="stable")
            bounds = np.searchsorted(block[order], np.arange(-(-count // plan.per_block) + 1))
            pixels, local = np.asarray(part.pixels, dtype=np.int64)[order], (index - block * per_block)[order]
            plan.owned = [(pixels[lo:hi], local[lo:hi]) for lo, hi in zip(bounds[:-1], bounds[1:], strict=True)]
        return plan

    def frame(self, radius: int) -> None:
        """Keep a map's candidates framed by at least ``radius``."""
        if self.owned is None and self.radius < radius:
            self.candidates = _candidates(self.logits, self.foreground, self.annotated, (radius, radius))
            self.foreground_bits = np.negative(self.foreground, dtype=np.int32)
            self.radius = radius

    def map_tasks(self, window: tuple[int, int], z_tilde: np.ndarray, shown: np.ndarray,
                  difference: np.ndarray | None) -> list:
        """Tasks that write a map's z~ (and z - z~) rows, block by block.

        A block is whole rows of the framed candidates, so that it is contiguous: its
        rows and those its windows reach (the frame's full width; the columns beyond
        the window's own frame only cost a little work).
        """
        rh, rw = window[0] // 2, window[1] // 2
        radius, candidates, bits = self.radius, self.candidates, self.foreground_bits  # as they are now
        height, width = z_tilde.shape
        columns = candidates.shape[-1]
        rows = max(1, BLOCK_ELEMENTS // columns)
        annotated = self.annotated

        def rows_task(start: int, stop: int):
            def task(scratch: _Scratch) -> None:
                block = candidates[:, :, radius - rh + start:radius + stop + rh]
                _penalize_block(block, window, (0, radius - rw), bits[:, start:stop], scratch,
                                z_tilde[None, start:stop])
                if annotated is not None:
                    np.copyto(z_tilde[start:stop], shown[start:stop], where=~annotated[0, start:stop])
                if difference is not None:
                    with np.errstate(invalid="ignore"):  # inf - inf where a logit is infinite: NaN, no warning
                        np.subtract(shown[start:stop], z_tilde[start:stop], out=difference[start:stop],
                                    dtype=np.float32)
            return task

        return [rows_task(start, min(start + rows, height)) for start in range(0, height, rows)]

    def sample_tasks(self, window: tuple[int, int], step: int, z_tilde: np.ndarray, shown: np.ndarray,
                     difference: np.ndarray) -> list:
        """Tasks that write a map's z~ and z - z~ at every ``step``-th pixel of each axis, block by block.

        ``z_tilde`` and ``difference`` are (ceil(H / step), ceil(W / step)); the extremes
        are taken on the framed candidates at the sampled pixels only (rows, then columns).
        """
        (wh, ww), radius = window, self.radius
        rh, rw = wh // 2, ww // 2
        height, width = self.logits.shape[1:]
        count_rows, count_columns = z_tilde.shape
        rows = max(1, BLOCK_ELEMENTS // (self.candidates.shape[-1] * step))
        candidates, foreground, annotated = self.candidates[:, 0], self.foreground[0], self.annotated

        def rows_task(first: int, last: int):
            def task(_scratch: _Scratch) -> None:
                top = radius - rh + first * step
                block = candidates[:, top:top + (last - first - 1) * step + wh, radius - rw:radius + width + rw]
                least, most = (
                    _sampled_extreme(extreme, _sampled_extreme(extreme, block[c], wh, step, last - first, 0),
                                     ww, step, count_columns, 1)
                    for c, extreme in ((0, np.minimum), (1, np.maximum)))
                pixels = (slice(first * step, (last - 1) * step + 1, step), slice(None, None, step))
                np.copyto(least, most, where=~foreground[pixels])
                if annotated is not None:
                    np.copyto(least, shown[pixels], where=~annotated[0][pixels])
                z_tilde[first:last] = least
                with np.errstate(invalid="ignore"):  # inf - inf where a logit is infinite: NaN, no warning
                    np.subtract(shown[pixels], least, out=difference[first:last], dtype=np.float32)
            return task

        return [rows_task(first, min(first + rows, count_rows)) for first in range(0, count_rows, rows)]

    def crop_tasks(self, window: tuple[int, int], z_tilde: np.ndarray) -> list:
        """Tasks that penalize the crops block by block and write the pixels they own into ``z_tilde``."""
        radii, flat = (window[0] // 2, window[1] // 2), z_tilde.reshape(-1)

        def crops_task(first: int, pixels: np.ndarray, local: np.ndarray):
            def task(scratch: _Scratch) -> None:
                crops = slice(first, first + self.per_block)
                logits, foreground = self.logits[crops], self.foreground[crops]
                annotated = None if self.annotated is None else self.annotated[crops]
                out = scratch.array("crops", logits.size).reshape(logits.shape)
                _penalize_block(_candidates(logits, foreground, annotated, radii), window, (0, 0),
                                np.negative(foreground, dtype=np.int32), scratch, out)
                if annotated is not None:
                    np.copyto(out, logits, where=~annotated)
                flat[pixels] = out.reshape(-1)[local]
            return task

        return [crops_task(j * self.per_block, pixels, local) for j, (pixels, local) in enumerate(self.owned)
                if len(pixels)]


@dataclass(frozen=True, eq=False)
class Penalty:
    r"""SCNP of fixed logits against a fixed binary target, for any window.

    ``shown`` is the (H, W) map of the logits :math:`z` on the image; the parts hold
    what the operator runs on (the map itself, or the instance-mask crops).

    The values are :func:`instanseg_scnp.scnp`'s under ``torch.no_grad`` (tested equal),
    computed here in NumPy by the operator's CPU algorithm (a sparse-table window max
    of both classes' candidates), with what every window shares made once
    (:meth:`prepare`; a map's candidates framed for the slider's largest window) and
    the image worked through in cache-sized blocks on ``torch.get_num_threads()``
    threads. Like the operator's own kernels, it does not promise which of two equal
    maxima -0.0 and +0.0 is kept, nor a NaN's bits.
    """

    shown: np.ndarray
    parts: tuple[_Part, ...]
    _plans: list = field(default_factory=list, init=False, repr=False)
    _lock: threading.Lock = field(default_factory=threading.Lock, init=False, repr=False)

    def prepare(self, window: int = _SLIDER_WINDOW) -> Penalty:
        """Make, once, what all windows up to ``window`` share (the first window otherwise does); returns self."""
        radius = max(normalize_window(window, 2)) // 2
        with self._lock:
            if not self._plans:
                self._plans.extend(_Plan.of(part) for part in self.parts)
            for plan in self._plans:
                plan.frame(radius)
        return self

    def penalized(self, window: int) -> np.ndarray:
        r""":math:`\tilde z` on the image for an odd ``window``, (H, W) float32 (a new array)."""
        return self._compute(window, with_difference=False)[0]

    def difference(self, z_tilde: np.ndarray) -> np.ndarray:
        r""":math:`z - \tilde z`: > 0 on the target's foreground, < 0 on its background, where the penalty bites."""
        return np.subtract(self.shown, z_tilde, dtype=np.float32)

    def compute(self, window: int) -> tuple[np.ndarray, np.ndarray]:
        r""":math:`\tilde z` and :math:`z - \tilde z` for ``window`` (what one slider position shows)."""
        return self._compute(window, with_difference=True)

    @property
    def can_sample(self) -> bool:
        """:meth:`sample` works: the penalty is of one whole map (not of instance-mask crops)."""
        return len(self.parts) == 1 and self.parts[0].pixels is None

    def sample(self, window: int, step: int) -> tuple[np.ndarray, np.ndarray]:
        r""":math:`\tilde z` and :math:`z - \tilde z` at every ``step``-th pixel of each axis, computed there only.

        Equal to ``[::step, ::step]`` of :meth:`compute`'s two maps, for less work (the
        extremes are taken at the samples only): what a zoomed-out screen can show of a
        large map, before the whole map is in. Maps only (:attr:`can_sample`).
        """
        if not self.can_sample:
            raise ValueError("sampling works on the penalty of one map, not on instance-mask crops")
        if isinstance(step, bool) or not isinstance(step, (int, np.integer)) or step < 1:
            raise ValueError(f"step must be a positive integer, got {step!r}")
        sizes = normalize_window(window, 2)
        self.prepare(max(sizes))
        height, width = self.shown.shape
        z_tilde = np.empty((-(-height // step), -(-width // step)), np.float32)
        difference = np.empty_like(z_tilde)
        _in_threads(self._plans[0].sample_tasks(sizes, int(step), z_tilde, self.shown, difference))
        return z_tilde, difference

    def _compute(self, window: int, with_difference: bool) -> tuple[np.ndarray, np.ndarray | None]:
        sizes = normalize_window(window, 2)
        self.prepare(max(sizes))
        z_tilde = np.empty(self.shown.shape, np.float32)
        difference = np.empty_like(z_tilde) if with_difference else None
        is_map = len(self._plans) == 1 and self._plans[0].owned is None
        if is_map:
            _in_threads(self._plans[0].map_tasks(sizes, z_tilde, self.shown, difference))
            return z_tilde, difference
        z_tilde[...] = self.shown
        _in_threads([task for plan in self._plans for task in plan.crop_tasks(sizes, z_tilde)])
        if difference is not None:
            with np.errstate(invalid="ignore"):
                np.subtract(self.shown, z_tilde, out=difference, dtype=np.float32)
        return z_tilde, difference


def _check_target(gt: np.ndarray, shape: tuple[int, ...]) -> np.ndarray:
    return check_labels(gt, name="the ground truth", ndims=(2,), shape=tuple(shape), shape_of="the logits",
                        allow_unannotated=True)


def map_penalty(logits: np.ndarray, gt: np.ndarray) -> Penalty:
    """Penalty of a (H, W) logit map against the foreground of ground-truth labels (-1: unannotated)."""
    logits = np.ascontiguousarray(logits, dtype=np.float32)
    if logits.ndim != 2:
        raise ValueError(f"logits must be a 2-D map (H, W), got shape {logits.shape}")
    gt = _check_target(gt, logits.shape)
    unannotated = gt < 0
    part = _Part(logits=torch.from_numpy(logits)[None, None], target=torch.from_numpy(gt > 0)[None, None],
                 ignore=torch.from_numpy(unannotated)[None, None] if unannotated.any() else None)
    return Penalty(shown=logits, parts=(part,)).prepare()


def crop_penalty(crops, shown: np.ndarray, pick: torch.Tensor, gt: np.ndarray) -> Penalty:
    """Penalty of instance-mask crops, each against the ground-truth cell under its seed, as in training.

    Upstream's loss gives each crop the one-hot mask of the ground-truth instance
    at its seed; a seed on background gets an empty mask (all background). Each
    crop is penalized on its own, with the window clipped at the crop's border,
    and each pixel of the assembled map reads the penalized logit of the crop that
    owns it. ``crops`` is a :class:`instanseg_scnp.upstream.InstanceCrops`;
    ``shown`` and ``pick`` come from its ``assemble()``.
    """
    gt = _check_target(gt, crops.shape)
    labels = torch.from_numpy(np.where(gt > 0, gt, 0).astype(np.int64))
    n_crops = len(crops.logits)
    at_seed = labels[crops.seeds[:, 0], crops.seeds[:, 1]] if n_crops else torch.zeros(0, dtype=torch.long)
    rows, cols = crops.coordinates()
    target = (labels[rows, cols] == at_seed[:, None, None]) & (at_seed[:, None, None] > 0)
    pixels = torch.nonzero(pick >= 0).squeeze(1)
    part = _Part(logits=crops.logits, target=target[:, None], pixels=pixels.numpy(), index=pick[pixels])
    return Penalty(shown=shown, parts=(part,)).prepare()


class WindowCache:
    """Recent results by key, e.g. ``(map, window) -> (z~, z - z~)``, within a byte budget.

    The least recently used entries go first; the newest one always stays.

    Examples
    --------
    >>> cache = WindowCache(max_bytes=100)
    >>> cache.put(3, (np.zeros(10),))  # 80 bytes
    >>> cache.put(5, (np.zeros(10),))
    >>> 3 in cache, 5 in cache
    (False, True)
    """

    def __init__(self, max_bytes: int = 512 * 2**20) -> None:
        self.max_bytes = max_bytes
        self._entries: OrderedDict = OrderedDict()

    def __contains__(self, key: object) -> bool:
        return key in self._entries

    def __len__(self) -> int:
        return len(self._entries)

    def get(self, key: object) -> tuple[np.ndarray, ...] | None:
        if key in self._entries:
            self._entries.move_to_end(key)
        return self._entries.get(key)

    def put(self, key: object, arrays: tuple[np.ndarray, ...]) -> None:
        self._entries[key] = tuple(arrays)
        self._entries.move_to_end(key)
        while len(self._entries) > 1 and self.nbytes > self.max_bytes:
            self._entries.popitem(last=False)

    @property
    def nbytes(self) -> int:
        return sum(array.nbytes for arrays in self._entries.values() for array in arrays)

    def clear(self) -> None:
        self._entries.clear()


def symmetric_limits(values: np.ndarray, percentile: float = 99.5) -> tuple[float, float]:
    """Contrast limits (-m, m) around 0 for a diverging colormap, m the ``percentile`` of |values| (> 0).

    Examples
    --------
    >>> symmetric_limits(np.array([-4.0, 1.0, 2.0]), percentile=100)
    (-4.0, 4.0)
    >>> symmetric_limits(np.zeros(3))
    (-1.0, 1.0)
    """
    finite = np.abs(values[np.isfinite(values)])
    m = float(np.percentile(finite, percentile)) if finite.size else 0.0
    m = m if m > 0 else 1.0
    return (-m, m)


def labels_from_logits(logits: np.ndarray, threshold: float = 0.0) -> np.ndarray:
    """Cells of a logit map with no model: connected components (8-connected) of ``logits > threshold``.

    Examples
    --------
    >>> labels_from_logits(np.array([[1.0, -1.0, 2.0], [1.0, -1.0, -1.0]]))
    array([[1, 0, 2],
           [1, 0, 0]], dtype=int32)
    """
    labels, _ = ndimage.label(np.asarray(logits) > threshold, structure=np.ones((3, 3), bool))
    return labels.astype(np.int32)


def shape_features(labels: np.ndarray) -> pd.DataFrame:
    """:func:`instanseg_scnp.metrics.cell_shapes` with napari's ``index`` column (the label value) first."""
    table = cell_shapes(np.asarray(labels))
    table.insert(0, "index", table["label"].to_numpy())
    return table


PENALTY_COLUMN = "scnp_penalty"
"""The features column of each cell's mean |z - z~| over the cell and a one-window ring around it."""


def penalty_column(features: pd.DataFrame, labels: np.ndarray, difference: np.ndarray, window: int) -> np.ndarray:
    """Each row's :func:`instanseg_scnp.metrics.cell_penalty` of ``difference`` (z - z~ at ``window``), in the
    order of ``features["index"]`` (NaN for a label not in ``labels``)."""
    penalties = cell_penalty(difference, labels, window)
    return np.array([penalties.get(int(label), np.nan) for label in features["index"]], dtype=float)


def shape_colors(features: pd.DataFrame, column: str, cmap: str = "viridis",
                 limits: tuple[float, float] = SHAPE_RANGE) -> dict:
    """RGBA per label from ``features[column]`` over ``limits`` (a ``DirectLabelColormap`` dict).

    Background (0) is transparent; labels without a row, or with no value (NaN), get
    grey (key ``None``). Shapes use :data:`SHAPE_RANGE`; the SCNP penalty, whose
    scale depends on the logits, uses :func:`column_limits`.
    """
    from matplotlib import colormaps

    if column not in features:
        raise ValueError(f"no column {column!r} in the features; have {list(features.columns)}")
    low, high = limits
    values = features[column].to_numpy(float)
    colors = colormaps[cmap](np.clip((values - low) / ((high - low) or 1.0), 0, 1))
    grey = np.array([0.5, 0.5, 0.5, 1.0])
    mapping = {int(label): color if np.isfinite(value) else grey
               for label, value, color in zip(features["index"], values, colors, strict=True)}
    return {None: grey, 0: np.zeros(4), **mapping}


def column_limits(column: str, *tables: pd.DataFrame | None) -> tuple[float, float]:
    """The colour range of ``column``: :data:`SHAPE_RANGE` for shapes, else 0 to the largest finite value.

    Examples
    --------
    >>> column_limits("scnp_penalty", pd.DataFrame({"scnp_penalty": [0.5, 2.0, np.nan]}))
    (0.0, 2.0)
    """
    if column != PENALTY_COLUMN:
        return SHAPE_RANGE
    values = np.concatenate([table[column].to_numpy(float) for table in tables
                             if table is not None and column in table] or [np.empty(0)])
    values = values[np.isfinite(values)]
    high = float(values.max()) if values.size else 0.0
    return (0.0, high if high > 0 else 1.0)


def histograms(values: Mapping[str, np.ndarray], bins: int = 20, limits: tuple[float, float] = SHAPE_RANGE
               ) -> tuple[np.ndarray, dict[str, np.ndarray]]:
    """Bin edges on ``limits`` and the fraction of each series' cells per bin (NaNs dropped).

    One set of edges for every series, so that models and ground truth can be drawn on one axis; a
    series with no (finite) value gets zeros.

    Examples
    --------
    >>> edges, fractions = histograms({"a": np.array([0.1, 0.9]), "b": np.array([])}, bins=2)
    >>> edges.tolist(), fractions["a"].tolist(), fractions["b"].tolist()
    ([0.0, 0.5, 1.0], [0.5, 0.5], [0.0, 0.0])
    """
    edges = np.linspace(*limits, bins + 1)

    def fractions(series):
        series = np.asarray(series, float)
        counts = np.histogram(series[np.isfinite(series)], edges)[0].astype(float)
        return counts / counts.sum() if counts.sum() else counts

    return edges, {name: fractions(series) for name, series in values.items()}


def error_map(gt: np.ndarray, pred: np.ndarray) -> tuple[np.ndarray, dict[str, int]]:
    """A label image of the error cells (value = position in :data:`ERROR_CLASSES` + 1) and the counts.

    The cells are those :func:`instanseg_scnp.metrics.classify_errors` names. Split
    and missed cells are painted with their gt pixels, the others with their
    predicted pixels (:attr:`instanseg_scnp.metrics.CellErrors.SIDES`), in the
    order of :data:`ERROR_CLASSES` (a later class wins).

    Examples
    --------
    >>> out, counts = error_map(np.array([[1, 1, 1, 1, 0, 2]]), np.array([[3, 3, 4, 4, 0, 0]]))
    >>> out.tolist(), counts["split"], counts["missed"]
    ([[1, 1, 1, 1, 0, 4]], 1, 1)
    """
    errors = classify_errors(gt, pred)
    images = {"gt": np.asarray(gt), "pred": np.asarray(pred)}
    out = np.zeros(np.shape(gt), np.uint8)
    for value, name in enumerate(ERROR_CLASSES, start=1):
        ids = getattr(errors, name)
        if len(ids):
            out[np.isin(images[CellErrors.SIDES[name]], ids)] = value
    return out, {name: len(getattr(errors, name)) for name in ERROR_CLASSES}


@dataclass(frozen=True, eq=False)
class CellCrop:
    r"""One predicted cell's own instance-mask logits: the crop of the seed that made it.

    ``logits`` is the pixel classifier's (S, S) crop around ``seed`` (image
    coordinates), placed at ``top_left``; ``penalized`` (:math:`\tilde z`) and
    ``difference`` (:math:`z - \tilde z`) are SCNP of the crop against the
    ground-truth cell under the seed, as training sees it (None without a ground
    truth).
    """

    label: int
    seed: tuple[int, int]
    top_left: tuple[int, int]
    logits: np.ndarray
    penalized: np.ndarray | None = None
    difference: np.ndarray | None = None


def own_crop(crops, pick: torch.Tensor, prediction: np.ndarray, label: int) -> int | None:
    """Index of the crop that made predicted cell ``label``, None if no crop reaches it.

    Upstream gives each pixel to the crop with the highest probability (``pick``,
    from ``InstanceCrops.assemble``); the cell's own crop is, among the crops whose
    seed lies in the cell, the one owning most of its pixels (any crop owning its
    pixels when no seed lies in it, e.g. after upstream merged two instances).
    """
    inside = np.flatnonzero(np.asarray(prediction).reshape(-1) == label)
    owners = pick[torch.from_numpy(inside)] if inside.size else pick[:0]
    owners = owners[owners >= 0] // (crops.size * crops.size)
    if owners.numel() == 0:
        return None
    votes = torch.bincount(owners, minlength=len(crops.logits)).double()
    seeds = crops.seeds
    seeded = torch.from_numpy(np.asarray(prediction)[seeds[:, 0].numpy(), seeds[:, 1].numpy()] == label)
    if bool((seeded & (votes > 0)).any()):
        votes = torch.where(seeded, votes, -1.0)
    return int(torch.argmax(votes))


def cell_crop(crops, pick: torch.Tensor, prediction: np.ndarray, label: int, window: int,
              ground_truth: np.ndarray | None = None) -> CellCrop | None:
    """:class:`CellCrop` of predicted cell ``label`` at SCNP ``window``; None if no crop made it."""
    index = own_crop(crops, pick, prediction, label)
    if index is None:
        return None
    logits = crops.logits[index:index + 1]
    seed = tuple(int(v) for v in crops.seeds[index])
    top_left = tuple(int(v) for v in crops.top_left[index])
    shown = logits[0, 0].numpy()
    if ground_truth is None:
        return CellCrop(int(label), seed, top_left, shown)
    gt = np.where(np.asarray(ground_truth) > 0, ground_truth, 0)
    rows, cols = crops.coordinates(index, index + 1)
    cell = gt[seed]
    target = torch.from_numpy((gt[rows.numpy(), cols.numpy()] == cell) & (cell > 0))[:, None]
    with torch.no_grad():  # unannotated pixels are background here, as upstream's mask loss sets them
        z_tilde = scnp(logits, target, window)[0, 0].numpy()
    return CellCrop(int(label), seed, top_left, shown, z_tilde, np.subtract(shown, z_tilde, dtype=np.float32))
