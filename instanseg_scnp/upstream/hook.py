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
        penalized = scnp(pred, (gt != 0).unsqueeze(1), self.term.window)
        return self.term.combine(lambda: self.base(pred, gt, **kwargs), lambda: self.base(penalized, gt, **kwargs))


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


def _penalized_xloss(base: Callable[..., torch.Tensor], term: SCNPTerm) -> Callable[..., torch.Tensor]:
    """Upstream's BCE seed loss on SCNP-penalized seed logits (foreground = label > 0)."""

    def seed_loss(x, y, mask=None):
        ignore = None if mask is None else ~mask[None]
        penalized = scnp(x[None], (y > 0)[None], term.window, ignore=ignore)[0]
        return term.combine(lambda: base(x, y, mask), lambda: base(penalized, y, mask))

    return seed_loss


def _distance_target(y: torch.Tensor) -> torch.Tensor:
    """Upstream's seed regression target for labels ``y``: (instance-normalized EDT - 0.5) * 15."""
    return (upstream().instance_wise_edt(y.float(), edt_type="edt") - DISTANCE_OFFSET) * DISTANCE_SCALE


def _penalized_distance_loss(loss: Any, base_name: str, term: SCNPTerm) -> Callable[..., torch.Tensor]:
    """Upstream's distance seed loss on the signed-error SCNP of the module docstring."""
    per_pixel_loss = F.l1_loss if base_name == "l1_distance" else F.mse_loss

    def seed_loss(x, y, mask=None):
        target = _distance_target(y)[None]
        error = x - target
        ignore = None if mask is None else ~mask[None]
        penalized = scnp(error[None], (y > 0)[None], term.window, ignore=ignore)[0]
        zero = torch.zeros_like(error)
        per_pixel = term.combine(lambda: per_pixel_loss(error, zero, reduction="none"),
                                 lambda: per_pixel_loss(penalized, zero, reduction="none"))
        if loss.bg_weight is not None:
            per_pixel = per_pixel * torch.where(target < 0, loss.bg_weight, 1.0)
        if mask is None:
            return per_pixel.mean()
        mask = mask.float()
        return (per_pixel * mask).sum() / mask.sum()

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
        if term is not None and base == "binary_xloss":
            self.seed_loss = _penalized_xloss(self.seed_loss, term)
        elif term is not None:
            self.seed_loss = _penalized_distance_loss(self, base, term)
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
    **instanseg_kwargs
        Passed to ``InstanSeg(...)``, e.g. ``n_sigma``, ``window_size``, ``bg_weight``.

    Returns
    -------
    instanseg.utils.loss.instanseg_loss.InstanSeg
        An ordinary upstream loss object; its ``scnp_mask_loss_name`` and
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
    loss = upstream().InstanSegLoss(
        binary_loss_fn_str=loss_name(mask_loss, term if "mask" in scnp else None),
        seed_loss_fn=loss_name(seed_loss, term if "seed" in scnp else None),
        device=device,
        **instanseg_kwargs,
    )
    loss.scnp_in_hotstart = scnp_in_hotstart
    logger.debug("InstanSeg loss: seed %s, mask %s", loss.scnp_seed_loss_name, loss.scnp_mask_loss_name)
    return loss
