"""Same-class sliding-window max with a compact custom backward: SCNP's engine.

For every element, the max of its *same-class* neighbours in a box window
(clipped at the border), and one int8 offset per spatial axis saying where that
max came from: the backward sends the gradient there. ``max_pool`` would
keep int64 flat indices instead (8 bytes per element and pool).

Three engines (:class:`Engine`, chosen per device type by :data:`ENGINES`):

- on CPU, separable sparse tables: a box is a product of 1-D windows, so the box
  max is a chain of 1-D maxes, one per axis, each in ``floor(log2 w) + 1``
  elementwise steps (blocks of width ``2**k <= w`` built by doubling; two blocks
  cover the window). Each step carries the source coordinates found so far as
  positions modulo 256 (uint8), so it needs no index arithmetic;
- on CUDA, two fused Triton kernels (``_triton_pooling``), one forward and one
  backward, where Triton imports and compiles; else, and on other devices, one
  ``max_pool`` kernel with indices, whose launch costs less on GPUs than the
  separable engine's many small kernels.

The first two see excluded elements (other class, ignored, outside the image) as
``-inf``, which never win over a candidate; every element is a candidate of its
own window.
"""

from __future__ import annotations

import functools
import logging
import math
import warnings
from collections.abc import Callable
from typing import NamedTuple

import torch
import torch.nn.functional as F

__all__ = ["ENGINES", "MAX_WINDOW", "Engine", "KernelError", "SameClassMax"]

logger = logging.getLogger(__name__)

MAX_WINDOW = 255
"""Largest window size per axis: source positions are tracked modulo 256."""

_POSITION_MODULUS = 256


def _positions(length: int, dim: int, ndim: int, device: torch.device) -> torch.Tensor:
    """Positions ``0..length-1`` modulo 256 as uint8, shaped to broadcast along ``dim``."""
    shape = [1] * ndim
    shape[dim] = length
    return (torch.arange(length, device=device) % _POSITION_MODULUS).to(torch.uint8).view(shape)


def _axis_max(
    values: torch.Tensor, sources: torch.Tensor | None, dim: int, window: int, *, track: bool = True
) -> tuple[torch.Tensor, torch.Tensor | None]:
    """Sliding max of width ``window`` along ``dim`` of ``values``, padded by ``window // 2``.

    ``sources`` (k, *values.shape), uint8, are the positions chosen by earlier
    axes; they travel with the winning element. Returns the maxima, shorter by
    ``window - 1`` along ``dim``, and the sources with this axis's position
    appended (None unless ``track``). NaN wins (``torch.maximum``); ties keep the
    earlier element.
    """
    if track:
        positions = _positions(values.shape[dim], dim, values.ndim, values.device)
        positions = positions.expand(values.shape).unsqueeze(0)
        sources = positions if sources is None else torch.cat([sources, positions.expand(1, *sources.shape[1:])])

    def combine(values, sources, shift, length):
        """Max of the blocks starting at ``i`` and ``i + shift``, for ``i < length``."""
        first, second = values.narrow(dim, 0, length), values.narrow(dim, shift, length)
        if not track:
            return torch.maximum(first, second), None
        take_second = (second > first).view(torch.uint8)
        first_source = sources.narrow(dim + 1, 0, length)
        second_source = sources.narrow(dim + 1, shift, length)
        # uint8 arithmetic wraps modulo 256, so this picks exactly one of the two
        return torch.maximum(first, second), first_source + take_second * (second_source - first_source)

    span = 1
    while 2 * span <= window:
        values, sources = combine(values, sources, span, values.shape[dim] - span)
        span *= 2
    # For an odd window > 1, span < window, and blocks at i and i + window - span cover it.
    length = values.shape[dim] - window + span
    return combine(values, sources, window - span, length)


def _offsets(sources: torch.Tensor, dims: list[int], window: tuple[int, ...], spatial_start: int) -> torch.Tensor:
    """Turn source positions (mod 256, one per pooled dim) into signed int8 offsets."""
    offsets = []
    for source, dim in zip(sources, dims):
        w = window[dim - spatial_start]
        start = _positions(source.shape[dim], dim, source.ndim, source.device)
        offsets.append((source - start).to(torch.int16) - w // 2)  # uint8 wraps mod 256
    return torch.stack(offsets).to(torch.int8)


_BITS = {torch.float64: torch.int64, torch.float32: torch.int32, torch.float16: torch.int16, torch.bfloat16: torch.int16}


def _select(condition: torch.Tensor, if_true: torch.Tensor, if_false: torch.Tensor) -> torch.Tensor:
    """``torch.where`` for a uint8 0/1 ``condition``, done on the float bits.

    Bitwise, so exact for every value (inf and NaN included), and several times
    faster than ``torch.where`` on CPU, which is not vectorized there.
    """
    bits = _BITS[if_false.dtype]
    mask = -condition.to(bits)  # all ones where true
    true_bits, false_bits = if_true.view(bits), if_false.view(bits)
    return (false_bits ^ ((true_bits ^ false_bits) & mask)).view(if_false.dtype)


def _candidates(values, foreground, annotated, foreground_min, radii) -> torch.Tensor:
    """Both classes' candidates stacked on a new leading axis, inside a ``-inf`` frame of ``radii``.

    ``[0]``: foreground values (negated for ``foreground_min``), ``[1]``: background
    values; everything else, ignored elements included, is ``-inf``.
    """
    spatial_start = values.ndim - len(radii)
    frame = [*values.shape[:spatial_start]] + [n + 2 * r for n, r in zip(values.shape[spatial_start:], radii)]
    candidates = values.new_full([2, *frame], -torch.inf)
    inner = candidates[(slice(None),) * (spatial_start + 1) + tuple(slice(r, -r or None) for r in radii)]
    foreground_valid, background_valid = foreground, 1 - foreground
    if annotated is not None:
        foreground_valid, background_valid = foreground_valid & annotated, background_valid & annotated
    excluded = torch.tensor(-torch.inf, dtype=values.dtype, device=values.device)
    inner[0] = _select(foreground_valid, -values if foreground_min else values, excluded)
    inner[1] = _select(background_valid, values, excluded)
    return candidates


def _separable_maxima(values, foreground, annotated, foreground_min, window, pooled_dims, track):
    """Chained 1-D sparse-table maxes: few, cheap elementwise passes (best on CPU).

    Returns both classes' maxima (2, ...) and, if ``track``, each element's
    own-class source offsets (len(pooled_dims), ...), int8; else None.
    """
    spatial_start = values.ndim - len(window)
    pooled = _candidates(values, foreground, annotated, foreground_min, [w // 2 for w in window])
    sources = None
    for dim in pooled_dims:
        pooled, sources = _axis_max(pooled, sources, dim + 1, window[dim - spatial_start], track=track)
    if not track:
        return pooled, None
    sources = sources[:, 0] * foreground + sources[:, 1] * (1 - foreground)
    return pooled, _offsets(sources, pooled_dims, window, spatial_start)


def _max_pool_maxima(values, foreground, annotated, foreground_min, window, pooled_dims, track):
    """One ``max_pool`` kernel with indices, turned into int8 offsets (for GPUs,
    where the separable engine's many small kernels cost more in launches than in work)."""
    spatial_start = values.ndim - len(window)
    spatial_shape = values.shape[spatial_start:]
    candidates = _candidates(values, foreground, annotated, foreground_min, [0] * len(window))
    pool = F.max_pool2d if len(window) == 2 else F.max_pool3d
    padding = [w // 2 for w in window]
    if not track:
        return pool(candidates.flatten(0, 1), window, stride=1, padding=padding).view(candidates.shape), None
    pooled, index = pool(candidates.flatten(0, 1), window, stride=1, padding=padding, return_indices=True)
    pooled, index = pooled.view(candidates.shape), index.view(candidates.shape)
    index = torch.where(foreground.bool(), index[0], index[1])  # flat index within each (b, c) plane
    offsets = []
    for dim in pooled_dims:
        axis = dim - spatial_start
        stride = math.prod(spatial_shape[axis + 1 :])
        position = torch.arange(spatial_shape[axis], device=values.device).view(-1, *[1] * (len(window) - axis - 1))
        offsets.append((index // stride) % spatial_shape[axis] - position)
    return pooled, torch.stack(offsets).to(torch.int8)


def _two_class_forward(maxima, values, foreground, ignore, foreground_min, window, pooled_dims, track):
    """An engine's forward from ``maxima``, which pools both classes' candidates at once."""
    annotated = None if ignore is None else 1 - ignore.view(torch.uint8)
    pooled, offsets = maxima(values, foreground, annotated, foreground_min, window, pooled_dims, track)
    if foreground_min:
        pooled[0].neg_()
    result = _select(foreground, pooled[0], pooled[1])
    if annotated is not None:
        result = _select(annotated, result, values)
    if track:
        # Where the output is the element's own value (ignored elements, ties with
        # itself, windows of nothing but -inf) or NaN, the element itself is a valid
        # source; this also keeps every source inside the image.
        offsets *= ((result != values) & (result == result)).view(torch.int8)
    return result, offsets


def _scatter_gradient(grad_output, offsets, window, pooled_dims):
    """An engine's backward: ``index_add`` each output's gradient onto its source."""
    grad_output = grad_output.contiguous()
    strides = grad_output.stride()
    index_dtype = torch.int32 if grad_output.numel() < 2**31 else torch.int64
    shift = sum(offset.to(index_dtype) * strides[dim] for offset, dim in zip(offsets, pooled_dims))
    source = shift.view(-1) + torch.arange(grad_output.numel(), device=grad_output.device, dtype=index_dtype)
    grad_input = torch.zeros_like(grad_output)
    grad_input.view(-1).index_add_(0, source, grad_output.view(-1))
    return grad_input


class KernelError(RuntimeError):
    """An engine's kernels cannot run on this machine (e.g. Triton cannot compile here)."""


class Engine(NamedTuple):
    """How :class:`SameClassMax` is computed on one device type.

    ``forward(values, foreground, ignore, foreground_min, window, pooled_dims, track)``
    returns the result and, if ``track``, the int8 source offsets
    (len(pooled_dims), *values.shape), 0 where an element is its own source; else
    None. ``foreground`` is uint8 0/1, ``ignore`` bool (broadcastable) or None.
    ``backward(grad_output, offsets, window, pooled_dims)`` returns the gradient of
    ``values``. Both raise :class:`KernelError` (or ImportError) when they cannot run.
    """

    forward: Callable
    backward: Callable


def _fused_kernels():
    """``_triton_pooling``, imported on first use so that ``import instanseg_scnp`` never imports Triton."""
    try:
        from instanseg_scnp import _triton_pooling
    except ImportError:
        raise
    except Exception as error:  # a broken install can fail in other ways
        raise KernelError(f"importing Triton failed: {type(error).__name__}: {error}") from error
    return _triton_pooling


def _triton_forward(*args):
    return _fused_kernels().same_class_extreme(*args)


def _triton_backward(*args):
    return _fused_kernels().gather_gradient(*args)


CPU_CHUNK_ELEMENTS = 2**19
"""The CPU engine works through the batch in pieces of about this many elements, so that its
passes stay in cache: 1.4x faster on 400 crops of 128 x 128 (2 Intel Xeon cores), same result."""


def _in_batch_chunks(forward: Callable) -> Callable:
    """``forward`` run on consecutive slices of the batch (dim 0) of at most :data:`CPU_CHUNK_ELEMENTS`
    elements (at least one sample), results concatenated: the same values and offsets, as the
    samples are independent."""

    def chunked(values, foreground, ignore, foreground_min, window, pooled_dims, track):
        per_chunk = max(1, CPU_CHUNK_ELEMENTS * max(1, values.shape[0]) // max(1, values.numel()))
        if values.shape[0] <= per_chunk:
            return forward(values, foreground, ignore, foreground_min, window, pooled_dims, track)
        pieces = []
        for start in range(0, values.shape[0], per_chunk):
            rows = slice(start, start + per_chunk)
            per_sample = ignore is not None and ignore.ndim == values.ndim and ignore.shape[0] > 1
            piece_ignore = ignore[rows] if per_sample else ignore
            pieces.append(forward(values[rows], foreground[rows], piece_ignore, foreground_min, window,
                                  pooled_dims, track))
        results, offsets = zip(*pieces)
        return torch.cat(results), (torch.cat(offsets, dim=1) if track else None)

    return chunked


_separable_engine = Engine(_in_batch_chunks(functools.partial(_two_class_forward, _separable_maxima)),
                           _scatter_gradient)
_max_pool_engine = Engine(functools.partial(_two_class_forward, _max_pool_maxima), _scatter_gradient)
_triton_engine = Engine(_triton_forward, _triton_backward)


class _Fallback:
    """An engine that runs ``preferred`` until it fails to import or compile, then ``fallback`` for good.

    A missing Triton is normal (logged); one that is installed but fails warns once.
    """

    def __init__(self, preferred: Engine, fallback: Engine) -> None:
        self.preferred, self.fallback = preferred, fallback
        self.failure: str | None = None

    def forward(self, *args):
        return self._run("forward", args)

    def backward(self, *args):
        return self._run("backward", args)

    def _run(self, step: str, args: tuple):
        if self.failure is None:
            try:
                return getattr(self.preferred, step)(*args)
            except ImportError as error:
                self.failure = str(error)
                logger.info("SCNP runs its max_pool engine on CUDA: Triton is not available (%s)", error)
            except KernelError as error:
                self.failure = str(error)
                warnings.warn(
                    f"SCNP's fused Triton kernels cannot run here, so it falls back to its slower max_pool engine "
                    f"on CUDA (same results); fix or uninstall Triton to silence this. {error}",
                    RuntimeWarning,
                    stacklevel=2,
                )
        return getattr(self.fallback, step)(*args)


ENGINES: dict[str, Engine | _Fallback] = {
    "cpu": _separable_engine,
    "cuda": _Fallback(_triton_engine, _max_pool_engine),
}
"""Engine per device type; other device types use ``_max_pool_engine``. Tests swap entries to force one."""


class SameClassMax(torch.autograd.Function):
    """Per element, the max of ``values`` over its same-class window neighbours.

    Foreground elements take the max over foreground neighbours, background
    elements over background neighbours; ignored elements keep their value and
    are nobody's neighbour. With ``foreground_min`` the foreground takes the
    *min* instead (SCNP). Only int8 source offsets are saved for backward.
    """

    @staticmethod
    def forward(ctx, values, foreground, ignore, window, foreground_min):
        spatial_start = values.ndim - len(window)
        pooled_dims = [spatial_start + i for i, w in enumerate(window) if w > 1]
        ctx.pooled_dims, ctx.window = pooled_dims, window
        if not pooled_dims:
            return values.clone()
        ctx.engine = ENGINES.get(values.device.type, _max_pool_engine)
        track = ctx.needs_input_grad[0]  # sources only matter for backward
        result, offsets = ctx.engine.forward(
            values, foreground.view(torch.uint8), ignore, foreground_min, window, pooled_dims, track
        )
        if track:
            ctx.save_for_backward(offsets)
        return result

    @staticmethod
    @torch.autograd.function.once_differentiable
    def backward(ctx, grad_output):
        if not ctx.pooled_dims:
            return grad_output, None, None, None, None
        (offsets,) = ctx.saved_tensors
        return ctx.engine.backward(grad_output, offsets, ctx.window, ctx.pooled_dims), None, None, None, None
