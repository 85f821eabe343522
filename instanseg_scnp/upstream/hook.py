r"""SCNP inside InstanSeg's seed loss and instance-mask loss, without forking InstanSeg.

Upstream's loss class, ``instanseg.utils.loss.instanseg_loss.InstanSeg``, builds
its two loss callables from strings in ``update_seed_loss(name)`` and
``update_binary_loss(name)``. :func:`install` wraps those two methods (never
replaces or copies them) so that they also accept the SCNP names of
:mod:`instanseg_scnp.upstream.names` and the mask losses of
:mod:`instanseg_scnp.upstream.mask_losses` (``cedice``, the SCNP authors'
CEDice, and the paper's cell baselines ``tversky``, ``focal``, ``rwloss``).
Nothing is patched at import: :func:`make_loss` and ``train`` install the hook
on first use, and :func:`register` does it for users who re-load, with
upstream's own tools, a run whose ``experiment_log.csv`` records such names.

Mask loss. For each seed, upstream's pixel classifier gives crop logits
``dist`` (N, 1, ws, ws) and the seed's own nucleus ``crop`` (N, ws, ws); SCNP
runs on ``dist`` with foreground = the seed's nucleus, background = the rest
of the crop, and the chosen loss is computed on the result. Upstream has
already turned unannotated (-1) pixels into background when it cuts the crops,
so in the mask loss they count as background, as they do for the plain loss.

Seed loss. For ``binary_xloss`` SCNP runs on the seed logits with foreground =
label > 0, and unannotated pixels are passed as ``ignore``: the paper's
operator, exactly. ``l1_distance`` and ``l2_distance`` regress the seed
channel :math:`x` to upstream's distance target :math:`t` (per-nucleus
normalized EDT, :math:`t = 15\,(\mathrm{edt} - 0.5)`: -7.5 on background),
which the decoder reads back as :math:`x / 15 + 0.5` and thresholds. Here the
project extends SCNP (this is ours, not the paper's) to the *signed error*
:math:`e = x - t`:

.. math::

    \tilde e_i = \min_{j \in N_w(i),\, y_j = 1} e_j \ \text{if}\ y_i = 1, \qquad
    \tilde e_i = \max_{j \in N_w(i),\, y_j = 0} e_j \ \text{if}\ y_i = 0,

(unannotated pixels are nobody's neighbour), then upstream's L1/L2 loss,
background weight and masking on :math:`t + \tilde e`, i.e. on
:math:`|\tilde e|` or :math:`\tilde e^2`. This is SCNP on :math:`e` read as a
logit: an error that pushes a pixel towards the other class (a nucleus pixel
below its target, a background pixel above -7.5) is what breaks or merges a
seed, and it is spread over every same-class neighbour it reaches, each share
of its gradient flowing back to it. An error in the safe direction (a nucleus
centre above its target, background predicted more confidently than -7.5) is
never propagated, and is hidden wherever a worse neighbour exists. A perfect
map costs 0. Pooling the unsigned loss (a max of :math:`|e|`) would instead
spread safe errors too and push confident pixels back towards the threshold.
"""

from __future__ import annotations

import functools
import inspect
import logging
from collections.abc import Callable
from typing import Any, Literal

import torch
import torch.nn.functional as F

from instanseg_scnp._options import (
    DEPRECATED_TARGETS,
    MASK_LOSSES,
    SCNP_TARGETS,
    SEED_LOSSES,
    UPSTREAM_ONLY_SEED_LOSSES,
    look_up_option,
)
from instanseg_scnp.scnp import Window, scnp
from instanseg_scnp.upstream._compat import upstream
from instanseg_scnp.upstream.mask_losses import OUR_MASK_LOSSES
from instanseg_scnp.upstream.names import SCNPTerm, loss_name, parse_loss_name

__all__ = ["install", "is_installed", "make_loss", "register", "uninstall"]

logger = logging.getLogger(__name__)

# Upstream's seed regression target: (instance-normalized EDT - 0.5) * 15
# (instanseg/utils/loss/instanseg_loss.py, update_seed_loss), "to mimic the range of CE".
DISTANCE_OFFSET = 0.5
DISTANCE_SCALE = 15

_ORIGINAL = "__instanseg_scnp_original__"


class _PenalizedMaskLoss:
    """``binary_loss_fn(dist, crop, **kw)`` with SCNP on ``dist`` against ``crop``."""

    def __init__(self, base: Callable[..., torch.Tensor], term: SCNPTerm) -> None:
        self.base, self.term = base, term

    def __call__(self, pred: torch.Tensor, gt: torch.Tensor, **kwargs: object) -> torch.Tensor:
        penalized = _penalized_crops(pred, gt, self.term.window)
        return self.term.combine(lambda: self.base(pred, gt, **kwargs), lambda: self.base(penalized, gt, **kwargs))


def _penalized_crops(pred: torch.Tensor, gt: torch.Tensor, window: Window) -> torch.Tensor:
    """SCNP of crop logits ``pred`` (N, 1, ws, ws), foreground = the seed's nucleus ``gt`` (N, ws, ws)."""
    return scnp(pred, (gt != 0).unsqueeze(1), window)


def _accepting_keywords(fn: Callable[..., torch.Tensor]) -> Callable[..., torch.Tensor]:
    """Let ``fn(pred, gt)`` take the ``sigma=`` keyword upstream's forward always passes.

    Upstream's ``general_dice_loss`` closure has no ``**kwargs``, so upstream's own
    forward raises a TypeError with it; the keyword is unused by every mask loss.
    """
    parameters = inspect.signature(fn).parameters.values()
    if any(p.kind is inspect.Parameter.VAR_KEYWORD for p in parameters):
        return fn

    @functools.wraps(fn)
    def call(pred, gt, **_):
        return fn(pred, gt)

    return call


def _distance_target(y: torch.Tensor) -> torch.Tensor:
    """Upstream's seed regression target for labels ``y``: (instance-normalized EDT - 0.5) * 15."""
    return _scaled_distance(upstream().instance_wise_edt(y.float(), edt_type="edt"))


def _scaled_distance(normalized_edt: torch.Tensor) -> torch.Tensor:
    """The regression target of an instance-normalized EDT, as upstream's ``update_seed_loss``."""
    return (normalized_edt - DISTANCE_OFFSET) * DISTANCE_SCALE


def _seed_loss_map(
    x: torch.Tensor,
    foreground: torch.Tensor,
    target: torch.Tensor | None,
    *,
    base: str,
    term: SCNPTerm | None,
    ignore: torch.Tensor | None = None,
    bg_weight: float | None = None,
) -> torch.Tensor:
    """The per-pixel seed loss, before masking and averaging: one formula for one image or a batch.

    Parameters
    ----------
    x : (B, 1, H, W) torch.Tensor
        Seed logits.
    foreground : (B, 1, H, W) bool torch.Tensor
        label > 0 (unannotated pixels already set to 0, as upstream does).
    target : (B, 1, H, W) torch.Tensor or None
        The distance target (:func:`_scaled_distance`); None for ``binary_xloss``.
    base : {"binary_xloss", "l1_distance", "l2_distance"}
        Upstream's seed loss.
    term : SCNPTerm or None
        SCNP on the logits (``binary_xloss``) or on the signed error ``x - target``
        (distance losses, the module docstring); None: upstream's plain loss.
    ignore : (B, 1, H, W) bool torch.Tensor, optional
        Unannotated pixels: nobody's neighbour in SCNP.
    bg_weight : float, optional
        Upstream's weight of the pixels whose distance target is below 0.
    """
    if base == "binary_xloss":
        labels = foreground.to(x.dtype)
        values = x

        def per_pixel(z):
            return F.binary_cross_entropy_with_logits(z, labels, reduction="none")
    else:
        distance = F.l1_loss if base == "l1_distance" else F.mse_loss
        values = x - target
        zero = torch.zeros_like(values)

        def per_pixel(e):
            return distance(e, zero, reduction="none")
    if term is None:
        loss = per_pixel(values)
    else:
        penalized = scnp(values, foreground, term.window, ignore=ignore)
        loss = term.combine(lambda: per_pixel(values), lambda: per_pixel(penalized))
    if bg_weight is not None and target is not None:
        loss = loss * torch.where(target < 0, bg_weight, 1.0)
    return loss


def _masked_mean(per_pixel: torch.Tensor, mask: torch.Tensor | None,
                 dim: tuple[int, ...] | None = None) -> torch.Tensor:
    """Upstream's seed-loss reduction: the mean over annotated pixels (``mask``; None: all), over ``dim``."""
    if mask is None:
        return per_pixel.mean() if dim is None else per_pixel.mean(dim)
    mask = mask.to(per_pixel.dtype)
    if dim is None:
        return (per_pixel * mask).sum() / mask.sum()
    return (per_pixel * mask).sum(dim) / mask.sum(dim)


def _scnp_seed_loss(loss: Any, base: str, term: SCNPTerm) -> Callable[..., torch.Tensor]:
    """Upstream's ``seed_loss(x, y, mask=None)`` for one image, with SCNP ``term`` (:func:`_seed_loss_map`)."""

    def seed_loss(x, y, mask=None):
        target = None if base == "binary_xloss" else _distance_target(y)[None, None]
        ignore = None if mask is None else ~mask[None]
        per_pixel = _seed_loss_map(x[None], (y > 0)[None], target, base=base, term=term, ignore=ignore,
                                   bg_weight=loss.bg_weight)[0]
        return _masked_mean(per_pixel, mask)

    return seed_loss


def _active_term(loss: Any, which: str, term: SCNPTerm | None, *, applicable: bool = True) -> SCNPTerm | None:
    """The SCNP term to apply after an ``update_*`` call, and remember SCNP names.

    A plain name keeps the last SCNP term only when ``loss.scnp_in_hotstart`` is
    set: that is how upstream's hotstart swaps to plain losses and back. Set it to
    False before calling a plain name to switch SCNP off for good.
    """
    configured = loss.__dict__.setdefault("scnp_configured", {})
    active = loss.__dict__.setdefault("scnp_active", {"mask": None, "seed": None})
    if term is not None:
        configured[which] = term
    elif applicable and getattr(loss, "scnp_in_hotstart", False):
        term = configured.get(which)
    active[which] = term if applicable else None
    return active[which]


def _wrap_update_binary_loss(original):
    @functools.wraps(original)
    def update_binary_loss(self, binary_loss_fn_str):
        base, term = parse_loss_name(binary_loss_fn_str)
        look_up_option(base, MASK_LOSSES, name="mask loss")
        if base in OUR_MASK_LOSSES:
            self.binary_loss_fn = OUR_MASK_LOSSES[base]
        else:
            original(self, base)
            self.binary_loss_fn = _accepting_keywords(self.binary_loss_fn)
        term = _active_term(self, "mask", term)
        if term is not None:
            self.binary_loss_fn = _PenalizedMaskLoss(self.binary_loss_fn, term)
        self.scnp_mask_loss_name = loss_name(base, term)

    return update_binary_loss


def _wrap_update_seed_loss(original):
    @functools.wraps(original)
    def update_seed_loss(self, seed_loss_fn):
        base, term = parse_loss_name(seed_loss_fn)
        if term is None:
            look_up_option(base, SEED_LOSSES + UPSTREAM_ONLY_SEED_LOSSES, name="seed loss")
        else:
            look_up_option(base, SEED_LOSSES, name="seed loss with SCNP")
        original(self, base)
        term = _active_term(self, "seed", term, applicable=base in SEED_LOSSES)
        if term is not None:
            self.seed_loss = _scnp_seed_loss(self, base, term)
        self.scnp_seed_loss_name = loss_name(base, term)

    return update_seed_loss


_WRAPPERS = {"update_binary_loss": _wrap_update_binary_loss, "update_seed_loss": _wrap_update_seed_loss}


def install() -> None:
    """Register the SCNP loss names with upstream's ``InstanSeg.update_*`` methods.

    Idempotent; :func:`uninstall` restores upstream's methods. :func:`make_loss`
    and ``train`` call it; :func:`register` is its public name for users.
    """
    loss_class = upstream().InstanSegLoss
    for method, wrap in _WRAPPERS.items():
        current = getattr(loss_class, method)
        if not hasattr(current, _ORIGINAL):
            wrapper = wrap(current)
            setattr(wrapper, _ORIGINAL, current)
            setattr(loss_class, method, wrapper)


def register() -> None:
    """Teach upstream InstanSeg the SCNP loss names, for re-loading runs with upstream's own tools.

    Upstream builds its losses from the names a run's ``experiment_log.csv``
    records (``scnp-w5_lovasz_hinge``, ``cedice``, ...); after ``register()``
    its loss class accepts them. Training through this package does it by
    itself. Same as :func:`install`.
    """
    install()


def uninstall() -> None:
    """Restore upstream's ``InstanSeg.update_*`` methods (existing loss objects keep theirs)."""
    loss_class = upstream().InstanSegLoss
    for method in _WRAPPERS:
        current = getattr(loss_class, method)
        if hasattr(current, _ORIGINAL):
            setattr(loss_class, method, getattr(current, _ORIGINAL))


def is_installed() -> bool:
    """Whether :func:`install` is in effect."""
    return all(hasattr(getattr(upstream().InstanSegLoss, method), _ORIGINAL) for method in _WRAPPERS)


def make_loss(
    *,
    seed_loss: str = "l1_distance",
    mask_loss: str = "lovasz_hinge",
    scnp: Literal["off", "mask", "seed", "mask+seed"] = "mask",
    window: Window = 3,
    mode: Literal["penalized", "plain+penalized"] = "penalized",
    weight: float = 1.0,
    scnp_in_hotstart: bool = False,
    device: str | torch.device = "cpu",
    batched: bool = False,
    **instanseg_kwargs: object,
) -> Any:
    """Upstream's InstanSeg loss with SCNP wired into the seed and/or mask loss.

    Parameters
    ----------
    seed_loss : {"l1_distance", "l2_distance", "binary_xloss"}
        Upstream's seed loss.
    mask_loss : {"lovasz_hinge", "dice_loss", "dicefocal_loss", "general_dice_loss", "cedice", "tversky", "focal", "rwloss"}
        Upstream's instance-mask loss, or one of :mod:`instanseg_scnp.upstream.mask_losses`.
    scnp : {"off", "mask", "seed", "mask+seed"}
        Which terms get SCNP (``"both"``: deprecated spelling of ``"mask+seed"``).
    window, mode, weight
        As in :class:`SCNPTerm`.
    scnp_in_hotstart : bool
        Keep SCNP when upstream's hotstart swaps to its plain losses
        (``binary_xloss`` seed, ``dice_loss`` mask).
    device : str or torch.device
        Where upstream puts the pixel classifier (upstream defaults to "cuda").
    batched : bool
        Return the subclass of :func:`~instanseg_scnp.upstream.batched_loss.batched_loss_class`,
        whose ``forward`` computes the same loss and gradient (to float rounding)
        for the whole batch at once instead of looping over the images in Python
        (fewer kernel launches and host syncs: what bounds a GPU step; ``train``
        uses it). Off by default: upstream's own forward is then
        reproduced bit for bit and draws the same random instance subsets for
        images with more than 50 instances, which the batched one draws differently.
    **instanseg_kwargs
        Passed to ``InstanSeg(...)``, e.g. ``n_sigma``, ``window_size``, ``bg_weight``.

    Returns
    -------
    instanseg.utils.loss.instanseg_loss.InstanSeg
        An ordinary upstream loss object (with ``batched=True``: of a subclass that
        overrides only ``forward``); its ``scnp_mask_loss_name`` and
        ``scnp_seed_loss_name`` are the names to log.

    Notes
    -----
    Upstream's ``forward(prediction, instances)`` sets the ``-1`` (unannotated)
    labels of ``instances`` to 0 *in place*; pass a copy if you reuse the tensor.

    Examples
    --------
    >>> loss = make_loss(scnp="mask+seed", window=5)
    >>> loss.scnp_seed_loss_name, loss.scnp_mask_loss_name
    ('scnp-w5_l1_distance', 'scnp-w5_lovasz_hinge')
    """
    install()
    scnp = look_up_option(scnp, SCNP_TARGETS, name="scnp", aliases=DEPRECATED_TARGETS)
    look_up_option(seed_loss, SEED_LOSSES, name="seed_loss")
    look_up_option(mask_loss, MASK_LOSSES, name="mask_loss")
    term = SCNPTerm(window=window, mode=mode, weight=weight)
    for key in ("binary_loss_fn_str", "seed_loss_fn"):
        if key in instanseg_kwargs:
            raise TypeError(f"pass the loss through seed_loss= / mask_loss=, not {key}=")
    if batched:
        from instanseg_scnp.upstream.batched_loss import batched_loss_class

        loss_class = batched_loss_class()
    else:
        loss_class = upstream().InstanSegLoss
    loss = loss_class(
        binary_loss_fn_str=loss_name(mask_loss, term if "mask" in scnp else None),
        seed_loss_fn=loss_name(seed_loss, term if "seed" in scnp else None),
        device=device,
        **instanseg_kwargs,
    )
    loss.scnp_in_hotstart = scnp_in_hotstart
    logger.debug("InstanSeg loss: seed %s, mask %s", loss.scnp_seed_loss_name, loss.scnp_mask_loss_name)
    return loss
