r"""SCNP inside InstanSeg's seed loss and instance-mask loss, without forking InstanSeg.

Upstream's loss class, ``instanseg.utils.loss.instanseg_loss.InstanSeg``, builds
its two loss callables from strings in ``update_seed_loss(name)`` and
``update_binary_loss(name)``. :func:`install` wraps those two methods (never
replaces or copies them) so that they also accept SCNP names::

    scnp_<base>                            SCNP, window 3, loss on the penalized logits only
    scnp-w5_<base>                         window 5 (scnp-w3x5_<base>: 3 rows by 5 columns)
    scnp-w5-plain+penalized_<base>         L(z) + L(z~)
    scnp-w5-plain+penalized0.5_<base>      L(z) + 0.5 L(z~)

(``-both`` for ``-plain+penalized`` is still read, from older runs) plus the mask
losses of :mod:`instanseg_scnp.mask_losses` (``cedice``, the SCNP authors'
CEDice, and the paper's cell baselines ``tversky``, ``focal``, ``rwloss``). A
run's ``experiment_log.csv`` that records such names can be re-loaded by
upstream tools once ``instanseg_scnp`` is imported.

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
import math
import re
import warnings
from collections.abc import Callable
from dataclasses import dataclass
from typing import Literal

import torch
import torch.nn.functional as F

with warnings.catch_warnings():  # upstream scripts functions at import; torch >= 2.10 deprecates that
    warnings.filterwarnings("ignore", category=FutureWarning, message=r"`torch\.jit\.script` is deprecated")
    from instanseg.utils.loss.instanseg_loss import InstanSeg
    from instanseg.utils.pytorch_utils import instance_wise_edt

from instanseg_scnp._options import DEPRECATED_MODES, DEPRECATED_TARGETS, MODES, SCNP_TARGETS, look_up_option
from instanseg_scnp.mask_losses import OUR_MASK_LOSSES
from instanseg_scnp.scnp import Window, normalize_window, scnp

__all__ = [
    "MASK_LOSSES",
    "MODES",
    "SCNP_TARGETS",
    "SEED_LOSSES",
    "SCNPTerm",
    "install",
    "is_installed",
    "loss_name",
    "make_loss",
    "parse_loss_name",
    "uninstall",
]

logger = logging.getLogger(__name__)

UPSTREAM_MASK_LOSSES = ("lovasz_hinge", "dice_loss", "dicefocal_loss", "general_dice_loss")
MASK_LOSSES = (*UPSTREAM_MASK_LOSSES, *OUR_MASK_LOSSES)
SEED_LOSSES = ("binary_xloss", "l1_distance", "l2_distance")
# Upstream's two-channel seed loss: accepted as a plain name, not with SCNP.
UPSTREAM_ONLY_SEED_LOSSES = ("distance_and_binary_loss",)

# Upstream's seed regression target: (instance-normalized EDT - 0.5) * 15
# (instanseg/utils/loss/instanseg_loss.py, update_seed_loss), "to mimic the range of CE".
DISTANCE_OFFSET = 0.5
DISTANCE_SCALE = 15

_NAME_PATTERN = re.compile(
    r"^scnp(?:-w(?P<window>\d+(?:x\d+)?))?(?:-(?P<mode>plain\+penalized|both)(?P<weight>\d+(?:\.\d+)?(?:e[+-]?\d+)?)?)?_(?P<base>.+)$"
)
_ORIGINAL = "__instanseg_scnp_original__"


@dataclass(frozen=True)
class SCNPTerm:
    """How SCNP enters one loss term.

    Parameters
    ----------
    window : int or (int, int)
        Odd window size, as in :func:`instanseg_scnp.scnp`.
    mode : {"penalized", "plain+penalized"}
        ``"penalized"``: L(z~) (what the authors ship for InstanSeg);
        ``"plain+penalized"``: L(z) + weight * L(z~). ``"both"`` is a deprecated
        spelling of the latter.
    weight : float
        λ, the weight of the penalized term in mode ``"plain+penalized"``.
    """

    window: Window = 3
    mode: Literal["penalized", "plain+penalized"] = "penalized"
    weight: float = 1.0

    def __post_init__(self) -> None:
        window = normalize_window(self.window, 2)
        object.__setattr__(self, "window", window[0] if window[0] == window[1] else window)
        object.__setattr__(self, "mode", look_up_option(self.mode, MODES, name="mode", aliases=DEPRECATED_MODES))
        if isinstance(self.weight, bool) or not isinstance(self.weight, int | float):
            raise TypeError(f"weight must be a number, got {self.weight!r}")
        if not (math.isfinite(self.weight) and self.weight >= 0):
            raise ValueError(f"weight must be finite and >= 0, got {self.weight!r}")

    def combine(self, plain: Callable[[], torch.Tensor], penalized: Callable[[], torch.Tensor]) -> torch.Tensor:
        """L(z~) in mode "penalized", L(z) + λ·L(z~) in mode "plain+penalized" (L(z) only computed then)."""
        if self.mode == "penalized":
            return penalized()
        return plain() + self.weight * penalized()


def loss_name(base: str, term: SCNPTerm | None = None) -> str:
    """The upstream-compatible name of ``base`` with SCNP ``term`` (or ``base`` itself).

    Examples
    --------
    >>> loss_name("lovasz_hinge", SCNPTerm())
    'scnp_lovasz_hinge'
    >>> loss_name("l1_distance", SCNPTerm(window=5, mode="plain+penalized", weight=0.5))
    'scnp-w5-plain+penalized0.5_l1_distance'
    """
    if term is None:
        return base
    window = term.window if isinstance(term.window, int) else "x".join(map(str, term.window))
    parts = ["scnp"]
    if window != 3:
        parts.append(f"w{window}")
    if term.mode == "plain+penalized":  # repr: an exact round trip of the weight
        parts.append(term.mode if term.weight == 1 else f"{term.mode}{float(term.weight)!r}")
    return "-".join(parts) + "_" + base


def parse_loss_name(name: str) -> tuple[str, SCNPTerm | None]:
    """Split a loss name into the upstream base name and its SCNP term (None if plain).

    Examples
    --------
    >>> parse_loss_name("scnp-w5-plain+penalized0.5_l1_distance")
    ('l1_distance', SCNPTerm(window=5, mode='plain+penalized', weight=0.5))
    >>> parse_loss_name("dice_loss")
    ('dice_loss', None)
    """
    if not isinstance(name, str):
        raise TypeError(f"loss name must be a str, got {type(name).__name__}")
    match = _NAME_PATTERN.match(name)
    if match is None:
        return name, None
    window = match["window"] or "3"
    sizes = tuple(int(w) for w in window.split("x"))
    term = SCNPTerm(
        window=sizes[0] if len(sizes) == 1 else sizes,
        mode="plain+penalized" if match["mode"] else "penalized",
        weight=float(match["weight"]) if match["weight"] else 1.0,
    )
    return match["base"], term


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
    return (instance_wise_edt(y.float(), edt_type="edt") - DISTANCE_OFFSET) * DISTANCE_SCALE


def _penalized_distance_loss(loss: InstanSeg, base_name: str, term: SCNPTerm) -> Callable[..., torch.Tensor]:
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


def _active_term(loss: InstanSeg, which: str, term: SCNPTerm | None, *, applicable: bool = True) -> SCNPTerm | None:
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

    Idempotent; :func:`uninstall` restores upstream's methods. Called by the package
    import, so users never need to.
    """
    for method, wrap in _WRAPPERS.items():
        current = getattr(InstanSeg, method)
        if not hasattr(current, _ORIGINAL):
            wrapper = wrap(current)
            setattr(wrapper, _ORIGINAL, current)
            setattr(InstanSeg, method, wrapper)


def uninstall() -> None:
    """Restore upstream's ``InstanSeg.update_*`` methods (existing loss objects keep theirs)."""
    for method in _WRAPPERS:
        current = getattr(InstanSeg, method)
        if hasattr(current, _ORIGINAL):
            setattr(InstanSeg, method, getattr(current, _ORIGINAL))


def is_installed() -> bool:
    """Whether :func:`install` is in effect."""
    return all(hasattr(getattr(InstanSeg, method), _ORIGINAL) for method in _WRAPPERS)


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
) -> InstanSeg:
    """Upstream's InstanSeg loss with SCNP wired into the seed and/or mask loss.

    Parameters
    ----------
    seed_loss : {"l1_distance", "l2_distance", "binary_xloss"}
        Upstream's seed loss.
    mask_loss : {"lovasz_hinge", "dice_loss", "dicefocal_loss", "general_dice_loss", "cedice", "tversky", "focal", "rwloss"}
        Upstream's instance-mask loss, or one of :mod:`instanseg_scnp.mask_losses`.
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
    loss = InstanSeg(
        binary_loss_fn_str=loss_name(mask_loss, term if "mask" in scnp else None),
        seed_loss_fn=loss_name(seed_loss, term if "seed" in scnp else None),
        device=device,
        **instanseg_kwargs,
    )
    loss.scnp_in_hotstart = scnp_in_hotstart
    logger.debug("InstanSeg loss: seed %s, mask %s", loss.scnp_seed_loss_name, loss.scnp_mask_loss_name)
    return loss
