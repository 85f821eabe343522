"""The names of SCNP losses: ``scnp-w5-plain+penalized0.5_l1_distance`` and its parts.

A loss name is how a run's settings reach upstream InstanSeg (its loss class
builds its losses from strings, and its ``experiment_log.csv`` records them), so
the grammar is fixed::

    scnp_<base>                            SCNP, window 3, loss on the penalized logits only
    scnp-w5_<base>                         window 5 (scnp-w3x5_<base>: 3 rows by 5 columns)
    scnp-w5-plain+penalized_<base>         L(z) + L(z~)
    scnp-w5-plain+penalized0.5_<base>      L(z) + 0.5 L(z~)

(``-both`` for ``-plain+penalized`` is still read, from older runs.) Pure
Python: nothing here imports upstream.
"""

from __future__ import annotations

import math
import re
from collections.abc import Callable
from dataclasses import dataclass
from typing import Literal

import torch

from instanseg_scnp._options import DEPRECATED_MODES, MODES, look_up_option
from instanseg_scnp.scnp import Window, normalize_window

__all__ = ["SCNPTerm", "loss_name", "parse_loss_name"]

_NAME_PATTERN = re.compile(
    r"^scnp(?:-w(?P<window>\d+(?:x\d+)?))?(?:-(?P<mode>plain\+penalized|both)(?P<weight>\d+(?:\.\d+)?(?:e[+-]?\d+)?)?)?_(?P<base>.+)$"
)


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
