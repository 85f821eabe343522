r"""Same-Class Neighbor Penalization (SCNP), the logit transform and its module.

SCNP (Valverde, Papadopoulos, Larsen and Dahl, CVPR 2026, arXiv:2603.18671)
replaces every logit by the *worst* logit among its same-class neighbours
before an ordinary loss is computed, so a weak pixel is penalized once for every neighbour it reaches.
It is a training-time transform only; inference is unchanged.
"""

from __future__ import annotations

import numbers
from collections.abc import Sequence

import torch
from torch import nn

from instanseg_scnp._pooling import MAX_WINDOW, SameClassMax

__all__ = ["SCNP", "normalize_window", "same_class_max", "scnp"]

Window = int | Sequence[int]


def normalize_window(window: Window, spatial_dims: int, *, name: str = "window") -> tuple[int, ...]:
    """Return ``window`` as one odd positive int per spatial axis, or raise.

    Examples
    --------
    >>> normalize_window(3, 2)
    (3, 3)
    >>> normalize_window((1, 3, 3), 3)
    (1, 3, 3)
    """
    sizes = (window,) * spatial_dims if _is_int(window) else window
    if not isinstance(sizes, Sequence) or not all(_is_int(w) for w in sizes):
        raise TypeError(
            f"{name} must be an odd int or a tuple of {spatial_dims} odd ints, got {window!r}"
        )
    if len(sizes) != spatial_dims:
        raise ValueError(
            f"{name} must have one size per spatial dim ({spatial_dims}), got {len(sizes)}: {window!r}"
        )
    if any(w < 1 or w % 2 == 0 or w > MAX_WINDOW for w in sizes):
        raise ValueError(
            f"{name} sizes must be odd and between 1 and {MAX_WINDOW} (the window is centred), got {window!r}"
        )
    return tuple(int(w) for w in sizes)


def _is_int(value: object) -> bool:
    return isinstance(value, numbers.Integral) and not isinstance(value, bool)


def _check_inputs(
    values: torch.Tensor, target: torch.Tensor, ignore: torch.Tensor | None, window: Window
) -> tuple[torch.Tensor, torch.Tensor | None, tuple[int, ...]]:
    """Validate the shared arguments; return the bool target, ignore and window."""
    if not isinstance(values, torch.Tensor) or not values.is_floating_point():
        kind = values.dtype if isinstance(values, torch.Tensor) else type(values).__name__
        raise TypeError(f"logits must be a floating-point torch.Tensor, got {kind}")
    if values.ndim not in (4, 5):
        raise ValueError(
            f"expected logits with 4 or 5 dims (B, C, H, W) or (B, C, D, H, W), got shape {tuple(values.shape)}"
        )
    if not isinstance(target, torch.Tensor):
        raise TypeError(f"target must be a torch.Tensor, got {type(target).__name__}")
    if target.shape != values.shape:
        raise ValueError(
            f"target must have the logits' shape {tuple(values.shape)}, got {tuple(target.shape)}"
        )
    if target.dtype != torch.bool and (target.is_complex() or not ((target == 0) | (target == 1)).all()):
        raise ValueError("target must be binary (bool, or numbers that are all 0 or 1)")
    target = target.to(values.device) != 0  # also makes every bool byte 0 or 1
    if ignore is not None:
        if not isinstance(ignore, torch.Tensor) or ignore.dtype != torch.bool:
            kind = ignore.dtype if isinstance(ignore, torch.Tensor) else type(ignore).__name__
            raise TypeError(f"ignore must be a bool torch.Tensor, got {kind}")
        try:
            broadcast = torch.broadcast_shapes(ignore.shape, values.shape)
        except RuntimeError:
            broadcast = None
        if broadcast != values.shape:
            raise ValueError(
                f"ignore must broadcast to the logits' shape {tuple(values.shape)}, got {tuple(ignore.shape)}"
            )
        ignore = ignore.to(values.device) != 0
    return target, ignore, normalize_window(window, values.ndim - 2)


def same_class_max(
    values: torch.Tensor,
    target: torch.Tensor,
    window: Window = 3,
    *,
    ignore: torch.Tensor | None = None,
) -> torch.Tensor:
    r"""Give every element the largest value among its same-class neighbours.

    Parameters
    ----------
    values : (B, C, H, W) or (B, C, D, H, W) torch.Tensor
        Floating-point values, e.g. a per-pixel loss map.
    target : torch.Tensor
        Same shape as ``values``; binary (bool or 0/1). Classes are
        ``target == 1`` and ``target == 0``.
    window : int or tuple of int
        Odd window size, or one odd size per spatial axis.
    ignore : torch.Tensor, optional
        Bool mask broadcastable to ``values``; ignored elements are nobody's
        neighbour and keep their value.

    Returns
    -------
    torch.Tensor
        :math:`\max_{j \in N_w(i),\, y_j = y_i} v_j`, same shape and dtype as ``values``.

    Examples
    --------
    >>> v = torch.tensor([[[[0.0, 5.0, 1.0, 2.0]]]])
    >>> y = torch.tensor([[[[1, 1, 0, 0]]]])
    >>> same_class_max(v, y, window=3)
    tensor([[[[5., 5., 2., 2.]]]])
    """
    target, ignore, window = _check_inputs(values, target, ignore, window)
    return SameClassMax.apply(values.contiguous(), target, ignore, window, False)


def scnp(
    logits: torch.Tensor,
    target: torch.Tensor,
    window: Window = 3,
    *,
    ignore: torch.Tensor | None = None,
) -> torch.Tensor:
    r"""Same-Class Neighbor Penalization of logits.

    Parameters
    ----------
    logits : (B, C, H, W) or (B, C, D, H, W) torch.Tensor
        Raw logits, float16/bfloat16/float32/float64.
    target : torch.Tensor
        One-hot or binary target, same shape as ``logits`` (bool or 0/1).
    window : int or tuple of int
        Odd neighbourhood size :math:`w`, or one odd size per spatial axis
        (for anisotropic voxels). ``1`` is the identity.
    ignore : torch.Tensor, optional
        Bool mask broadcastable to ``logits`` marking unannotated pixels: they
        are neither foreground nor background neighbours, and their output
        equals their input.

    Returns
    -------
    torch.Tensor
        The penalized logits :math:`\tilde z`, same shape, dtype and device.

    Raises
    ------
    TypeError
        ``logits`` not floating point, ``ignore`` not bool, ``window`` not int(s).
    ValueError
        Wrong number of dims, shape mismatch, non-binary target, even or
        non-positive window, wrong number of window sizes.

    Notes
    -----
    For each channel :math:`k` and pixel :math:`i` with window :math:`N_w(i)`
    (clipped at the border, always containing :math:`i`):

    .. math::

        \tilde z_{ki} = \begin{cases}
            \min_{j \in N_w(i),\, y_{kj} = 1} z_{kj} & y_{ki} = 1 \\
            \max_{j \in N_w(i),\, y_{kj} = 0} z_{kj} & y_{ki} = 0
        \end{cases}

    so :math:`\tilde z \le z` on foreground and :math:`\tilde z \ge z` on
    background. The gradient of :math:`\tilde z_{ki}` goes to the selected
    :math:`z_{kj}`; on ties, to one of the tied pixels (the pixel itself if it
    is one; otherwise which one depends on the engine, CPU or GPU). A NaN logit
    makes every same-class output whose window holds it NaN, and the gradient
    of a NaN output goes to the pixel itself. Only int8 source offsets (one per
    spatial axis) are saved for backward.

    References
    ----------
    .. [1] J. M. Valverde, D. Papadopoulos, R. Larsen and A. B. Dahl, "Same-Class
       Neighbor Penalization", CVPR 2026, arXiv:2603.18671.

    Examples
    --------
    >>> z = torch.tensor([[[[2.0, -1.0, 3.0, 0.5, -2.0]]]], requires_grad=True)
    >>> y = torch.tensor([[[[1, 1, 1, 0, 0]]]])
    >>> z_tilde = scnp(z, y, window=3)
    >>> z_tilde
    tensor([[[[-1.0000, -1.0000, -1.0000,  0.5000,  0.5000]]]],
           grad_fn=<SameClassMaxBackward>)
    >>> z_tilde.sum().backward()
    >>> z.grad
    tensor([[[[0., 3., 0., 2., 0.]]]])
    """
    target, ignore, window = _check_inputs(logits, target, ignore, window)
    return SameClassMax.apply(logits.contiguous(), target, ignore, window, True)


class SCNP(nn.Module):
    """Module form of :func:`scnp`; stores the window.

    Examples
    --------
    >>> penalize = SCNP(window=3)
    >>> z = torch.randn(2, 1, 8, 8)
    >>> y = torch.rand(2, 1, 8, 8) > 0.5
    >>> torch.equal(penalize(z, y), scnp(z, y, window=3))
    True
    """

    def __init__(self, window: Window = 3) -> None:
        super().__init__()
        normalize_window(window, len(window) if isinstance(window, Sequence) else 1)
        self.window = window

    def forward(
        self, logits: torch.Tensor, target: torch.Tensor, ignore: torch.Tensor | None = None
    ) -> torch.Tensor:
        return scnp(logits, target, self.window, ignore=ignore)

    def extra_repr(self) -> str:
        return f"window={self.window!r}"
