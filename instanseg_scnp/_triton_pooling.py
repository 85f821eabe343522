r"""SCNP's same-class box extreme as two fused Triton kernels: the CUDA engine.

Why: on GPUs the operator costs kernel launches more than arithmetic; the
``max_pool`` engine runs about a dozen small kernels forward and an
``index_add`` backward, this one kernel each way.

What: for each element :math:`i` that is not ignored, over its box window
:math:`N_w(i)` (2-D, or 3-D with one odd size per axis) clipped at the border,

.. math::

    r_i = \operatorname*{ext}_{j \in N_w(i),\; y_j = y_i,\; j \text{ not ignored}} v_j

where ext is min on the foreground with ``foreground_min`` (SCNP), else max; a
NaN wins, and ignored elements keep their value. The forward starts from the
element's own value and moves only to a strictly better neighbour, so it knows
the source: one int8 offset per pooled axis, 0 where the result is the
element's own value or NaN. The backward gathers: each element adds the
gradients of the window elements whose offsets point at it, in a fixed order
(deterministic, no atomics, no zeroed buffer). Both kernels visit every window
position per element, as ``max_pool`` does. 3-D runs in the same kernels.
"""

from __future__ import annotations

import functools

import torch

from instanseg_scnp._pooling import KernelError

try:
    import triton
    import triton.language as tl
except ImportError as error:  # still importable (doctest collection imports every module); calls raise it
    triton = tl = None
    _MISSING = error

__all__ = ["gather_gradient", "same_class_extreme"]

_TILE = 512
"""Elements per program at most (``BLOCK_S * BLOCK_H * BLOCK_W``), 4 per thread of 4 warps."""

# Each program takes a tile of BLOCK_S slabs (a slab: one z-slice of one (batch, channel)
# plane; 2-D has depth 1) x BLOCK_H rows x BLOCK_W columns, on a 1-D grid. Indices are
# int64, except shifts within a window (int32: rows under 2**31 / 128 elements). Values are
# compared in float32 (exact for float16 and bfloat16) or float64. Only Triton builtins
# are called (tl.full, not tl.zeros): library helpers are jit functions decorated at
# `import triton`, which the interpreter cannot run if TRITON_INTERPRET was set later.


def _forward_kernel(
    values, foreground, ignore, result, offset_d, offset_h, offset_w,
    n_slabs, n_channels, depth, height, width, ignore_b, ignore_c, ignore_d, ignore_h, ignore_w, tiles_h, tiles_w,
    RD: tl.constexpr, RH: tl.constexpr, RW: tl.constexpr, COMPARE: tl.constexpr,
    FOREGROUND_MIN: tl.constexpr, HAS_IGNORE: tl.constexpr, TRACK: tl.constexpr,
    BLOCK_S: tl.constexpr, BLOCK_H: tl.constexpr, BLOCK_W: tl.constexpr,
):  # fmt: skip
    tile = tl.program_id(0)
    slabs = tile // (tiles_h * tiles_w) * BLOCK_S + tl.arange(0, BLOCK_S)[:, None, None]  # plane * depth + z
    ys = (tile // tiles_w) % tiles_h * BLOCK_H + tl.arange(0, BLOCK_H)[None, :, None]
    xs = tile % tiles_w * BLOCK_W + tl.arange(0, BLOCK_W)[None, None, :]
    z = slabs % depth
    stride_d = height.to(tl.int64) * width
    here = (slabs < n_slabs) & (ys < height) & (xs < width)
    centre = slabs.to(tl.int64) * stride_d + ys.to(tl.int64) * width + xs
    own = tl.load(values + centre, mask=here).to(COMPARE)
    own_class = tl.load(foreground + centre, mask=here)
    active = here
    if HAS_IGNORE:
        plane = slabs // depth
        ignore_d = ignore_d.to(tl.int64)
        own_ignore = (
            ignore + (plane // n_channels).to(tl.int64) * ignore_b + (plane % n_channels).to(tl.int64) * ignore_c
            + z * ignore_d + ys.to(tl.int64) * ignore_h + xs * ignore_w
        )  # fmt: skip
        active &= tl.load(own_ignore, mask=here, other=1) == 0
    values += centre
    foreground += centre
    if FOREGROUND_MIN:
        takes_min = own_class != 0
    best = own
    # the source as one index into the window, row-major over (dz, dy, dx); SELF is the centre
    SELF: tl.constexpr = (RD * (2 * RH + 1) + RH) * (2 * RW + 1) + RW
    source = tl.full([BLOCK_S, BLOCK_H, BLOCK_W], SELF, tl.int32)
    for dz in range(-RD, RD + 1):
        z_inside = active & (z + dz >= 0) & (z + dz < depth)
        for dy in range(-RH, RH + 1):
            y_inside = z_inside & (ys + dy >= 0) & (ys + dy < height)
            row = dz * stride_d + dy * width
            for dx in range(-RW, RW + 1):
                x = xs + dx
                inside = y_inside & (x >= 0) & (x < width)
                shift = row + dx
                candidate = tl.load(values + shift, mask=inside).to(COMPARE)
                same = inside & (tl.load(foreground + shift, mask=inside) == own_class)
                if HAS_IGNORE:
                    same &= tl.load(own_ignore + (dz * ignore_d + dy * ignore_h + dx * ignore_w), mask=inside) == 0
                if FOREGROUND_MIN:
                    wins = tl.where(takes_min, candidate < best, candidate > best)
                else:
                    wins = candidate > best
                better = same & (wins | (candidate != candidate))  # NaN wins
                best = tl.where(better, candidate, best)
                if TRACK:
                    source = tl.where(better, ((dz + RD) * (2 * RH + 1) + dy + RH) * (2 * RW + 1) + dx + RW, source)
    tl.store(result + centre, best.to(result.dtype.element_ty), mask=here)
    if TRACK:
        # Only strict improvements move the source, so it is the centre wherever the
        # result is the element's own value; a NaN result's gradient stays here too.
        source = tl.where(best == best, source, SELF)
        if RD > 0:
            tl.store(offset_d + centre, (source // ((2 * RH + 1) * (2 * RW + 1)) - RD).to(tl.int8), mask=here)
        if RH > 0:
            tl.store(offset_h + centre, (source // (2 * RW + 1) % (2 * RH + 1) - RH).to(tl.int8), mask=here)
        if RW > 0:
            tl.store(offset_w + centre, (source % (2 * RW + 1) - RW).to(tl.int8), mask=here)


def _backward_kernel(
    grad_output, grad_input, offset_d, offset_h, offset_w, n_slabs, depth, height, width, tiles_h, tiles_w,
    RD: tl.constexpr, RH: tl.constexpr, RW: tl.constexpr, ACCUMULATE: tl.constexpr,
    BLOCK_S: tl.constexpr, BLOCK_H: tl.constexpr, BLOCK_W: tl.constexpr,
):  # fmt: skip
    tile = tl.program_id(0)
    slabs = tile // (tiles_h * tiles_w) * BLOCK_S + tl.arange(0, BLOCK_S)[:, None, None]
    ys = (tile // tiles_w) % tiles_h * BLOCK_H + tl.arange(0, BLOCK_H)[None, :, None]
    xs = tile % tiles_w * BLOCK_W + tl.arange(0, BLOCK_W)[None, None, :]
    z = slabs % depth
    stride_d = height.to(tl.int64) * width
    here = (slabs < n_slabs) & (ys < height) & (xs < width)
    centre = slabs.to(tl.int64) * stride_d + ys.to(tl.int64) * width + xs
    grad_output += centre
    offset_d += centre
    offset_h += centre
    offset_w += centre
    total = tl.full([BLOCK_S, BLOCK_H, BLOCK_W], 0, ACCUMULATE)
    for dz in range(-RD, RD + 1):
        z_inside = here & (z + dz >= 0) & (z + dz < depth)
        for dy in range(-RH, RH + 1):
            y_inside = z_inside & (ys + dy >= 0) & (ys + dy < height)
            row = dz * stride_d + dy * width
            for dx in range(-RW, RW + 1):
                # the neighbour j = i + d sends its gradient here when its offset is -d
                x = xs + dx
                points_here = y_inside & (x >= 0) & (x < width)
                shift = row + dx
                if RD > 0:
                    points_here &= tl.load(offset_d + shift, mask=points_here) == -dz
                if RH > 0:
                    points_here &= tl.load(offset_h + shift, mask=points_here) == -dy
                if RW > 0:
                    points_here &= tl.load(offset_w + shift, mask=points_here) == -dx
                total += tl.load(grad_output + shift, mask=points_here, other=0).to(ACCUMULATE)
    tl.store(grad_input + centre, total.to(grad_input.dtype.element_ty), mask=here)


@functools.cache
def _kernels(interpret: bool) -> tuple:
    """The (forward, backward) kernels, decorated on first use (``triton.jit`` reads
    ``TRITON_INTERPRET`` then, so tests can switch the interpreter on); cached per mode."""
    del interpret  # the cache key; triton.jit reads the setting itself
    if triton is None:
        raise ImportError(f"SCNP's Triton engine needs Triton: {_MISSING}") from _MISSING
    sizes = ["n_slabs", "depth", "height", "width", "tiles_h", "tiles_w"]  # a size of 1 stays a runtime int
    return (
        triton.jit(_forward_kernel, do_not_specialize=["n_channels", *sizes, "ignore_b", "ignore_c", "ignore_d",
                                                       "ignore_h", "ignore_w"]),
        triton.jit(_backward_kernel, do_not_specialize=sizes),
    )  # fmt: skip


def _interpreting() -> bool:
    """Whether ``TRITON_INTERPRET`` is on now (read from the environment on every call)."""
    return triton is not None and triton.knobs.runtime.interpret


def _layout(shape: torch.Size, window: tuple[int, ...]) -> tuple[tuple[int, ...], dict, tuple[int], dict]:
    """(slabs, depth, height, width), the radii as constexprs, the grid, and the tiling.

    A slab is one z-slice of one (batch, channel) plane (2-D: depth 1, radius 0);
    a tile is up to ``_TILE`` elements: rows of up to 64, then rows, then slabs.
    """
    depth, height, width = (1, *shape[2:]) if len(shape) == 4 else shape[2:]
    slabs = shape[0] * shape[1] * depth
    radii = ((0,) if len(window) == 2 else ()) + tuple(w // 2 for w in window)
    block_w = min(_power_of_2_at_least(width), 64)
    block_h = min(_power_of_2_at_least(height), _TILE // block_w)
    block_s = min(_power_of_2_at_least(slabs), _TILE // (block_w * block_h))
    tiles_h, tiles_w = -(-height // block_h), -(-width // block_w)
    grid = (-(-slabs // block_s) * tiles_h * tiles_w,)
    tiling = {"tiles_h": tiles_h, "tiles_w": tiles_w, "BLOCK_S": block_s, "BLOCK_H": block_h, "BLOCK_W": block_w,
              "num_warps": max(1, min(4, block_s * block_h * block_w // 128))}  # fmt: skip
    return (slabs, depth, height, width), dict(zip(("RD", "RH", "RW"), radii)), grid, tiling


def _wide(dtype: torch.dtype):
    """Kernels compare and accumulate in float32 (exact for float16 and bfloat16), float64 in float64."""
    return tl.float64 if dtype == torch.float64 else tl.float32


def _power_of_2_at_least(n: int) -> int:
    return 1 << max(n - 1, 0).bit_length()


def _axes(offsets: torch.Tensor | None, radii: dict, placeholder: torch.Tensor) -> list[torch.Tensor]:
    """Per axis (d, h, w), its slice of ``offsets`` where the axis is pooled, else ``placeholder``."""
    slices = iter(() if offsets is None else offsets)
    return [next(slices) if offsets is not None and radius > 0 else placeholder for radius in radii.values()]


def _forward_call(values, foreground, ignore, foreground_min, window, track):
    """(kernel, grid, args, kwargs, (result, offsets)) of one forward launch; see :func:`same_class_extreme`."""
    kernel, _ = _kernels(_interpreting())
    shape, radii, grid, tiling = _layout(values.shape, window)
    foreground = foreground.contiguous()
    result = torch.empty_like(values)
    offsets = None
    if track:
        offsets = values.new_empty((sum(r > 0 for r in radii.values()), *values.shape), dtype=torch.int8)
    if ignore is None:
        ignore_strides = (0,) * 5
    else:
        ignore = ignore.view(torch.uint8).expand(values.shape)
        ignore_strides = ignore.stride() if len(window) == 3 else (*ignore.stride()[:2], 0, *ignore.stride()[2:])
    args = (values, foreground, foreground if ignore is None else ignore, result,
            *_axes(offsets, radii, foreground), shape[0], values.shape[1], *shape[1:], *ignore_strides)  # fmt: skip
    kwargs = {**radii, "COMPARE": _wide(values.dtype), "FOREGROUND_MIN": bool(foreground_min),
              "HAS_IGNORE": ignore is not None, "TRACK": bool(track), **tiling}  # fmt: skip
    return kernel, grid, args, kwargs, (result, offsets)


def _backward_call(grad_output, offsets, window):
    """(kernel, grid, args, kwargs, grad_input) of one backward launch; see :func:`gather_gradient`."""
    _, kernel = _kernels(_interpreting())
    shape, radii, grid, tiling = _layout(grad_output.shape, window)
    grad_input = torch.empty_like(grad_output)
    args = (grad_output, grad_input, *_axes(offsets, radii, offsets), *shape)
    kwargs = {**radii, "ACCUMULATE": _wide(grad_output.dtype), **tiling}
    return kernel, grid, args, kwargs, grad_input


def _launch(kernel, grid, args, kwargs) -> None:
    """Run ``kernel`` on the device of ``args[0]``; a failure to compile or launch raises :class:`KernelError`."""
    if grid[0] == 0:  # nothing to compute; CUDA refuses empty grids
        return
    try:
        if args[0].is_cuda:
            with torch.cuda.device(args[0].device):
                kernel[grid](*args, **kwargs)
        else:
            kernel[grid](*args, **kwargs)
    except torch.OutOfMemoryError:
        raise
    except Exception as error:  # Triton raises many kinds: CompilationError, PTXASError, RuntimeError, ...
        raise KernelError(f"Triton kernel {kernel.fn.__name__} failed: {type(error).__name__}: {error}") from error


def same_class_extreme(values, foreground, ignore, foreground_min, window, pooled_dims, track):
    """The engine's forward: the result and, if ``track``, the int8 offsets (len(pooled_dims), ...), else None.

    ``values``: contiguous (B, C, H, W) or (B, C, D, H, W); ``foreground``: uint8
    0/1 of that shape; ``ignore``: bool, broadcastable to it, or None. The pooled
    dims are those with a window size above 1.
    """
    kernel, grid, args, kwargs, (result, offsets) = _forward_call(
        values, foreground, ignore, foreground_min, window, track
    )
    _launch(kernel, grid, args, kwargs)
    return result, offsets


def gather_gradient(grad_output, offsets, window, pooled_dims):
    """The engine's backward: each element's gradient, gathered from the outputs it is the source of."""
    kernel, grid, args, kwargs, grad_input = _backward_call(grad_output.contiguous(), offsets, window)
    _launch(kernel, grid, args, kwargs)
    return grad_input
