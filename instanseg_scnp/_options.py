"""String options shared by the loss hook, the config, the CLI, the plugin and the tables, and one lookup for them.

Dependency-free on purpose: the CLI's ``--help`` and the config read the choices
here without importing torch, upstream InstanSeg or MONAI.
"""

from __future__ import annotations

import difflib
import warnings
from collections.abc import Iterable, Mapping

SCNP_TARGETS = ("off", "mask", "seed", "mask+seed")
"""Which loss terms get SCNP."""
MODES = ("penalized", "plain+penalized")
"""How SCNP enters a term: L(z~) alone, or L(z) + weight * L(z~)."""
UPSTREAM_MASK_LOSSES = ("lovasz_hinge", "dice_loss", "dicefocal_loss", "general_dice_loss")
"""Upstream InstanSeg's instance-mask losses."""
ADDED_MASK_LOSSES = ("cedice", "tversky", "focal", "rwloss")
"""Instance-mask losses this package adds (:mod:`instanseg_scnp.upstream.mask_losses`)."""
MASK_LOSSES = (*UPSTREAM_MASK_LOSSES, *ADDED_MASK_LOSSES)
SEED_LOSSES = ("binary_xloss", "l1_distance", "l2_distance")
"""Upstream's seed losses that take SCNP."""
UPSTREAM_ONLY_SEED_LOSSES = ("distance_and_binary_loss",)
"""Upstream's two-channel seed loss: accepted as a plain name, not with SCNP."""
EXPORT_FORMATS = ("torchscript", "bioimageio")
"""What ``export`` writes: upstream's TorchScript file, or a bioimage.io package of it."""
DEPRECATED_TARGETS = {"both": "mask+seed"}
DEPRECATED_MODES = {"both": "plain+penalized"}
"""Spellings of earlier versions, still accepted with a FutureWarning."""


def look_up_option(value: object, choices: Iterable[str], *, name: str,
                   aliases: Mapping[str, str] | None = None) -> str:
    """Return ``value`` if it is one of ``choices``; otherwise raise a ValueError naming them.

    ``aliases`` maps deprecated spellings to their choice: such a value is
    accepted with a ``FutureWarning`` (a warning meant for end users) and the
    choice is returned.

    Examples
    --------
    >>> look_up_option("mask", ("off", "mask"), name="scnp")
    'mask'
    >>> look_up_option("mas", ("off", "mask"), name="scnp")
    Traceback (most recent call last):
    ...
    ValueError: scnp must be one of 'off', 'mask', got 'mas' (did you mean 'mask'?)
    """
    choices = tuple(choices)
    if value in choices:
        return value
    if aliases and isinstance(value, str) and value in aliases:
        warnings.warn(f"{name}={value!r} is deprecated and will be removed; use {aliases[value]!r}",
                      FutureWarning, stacklevel=3)
        return aliases[value]
    close = difflib.get_close_matches(str(value), choices, n=1)
    hint = f" (did you mean {close[0]!r}?)" if close else ""
    raise ValueError(f"{name} must be one of {', '.join(map(repr, choices))}, got {value!r}{hint}")


NO_SCNP = "no SCNP"
"""The label of the SCNP-off setting, the baseline."""


def is_baseline(label: str) -> bool:
    """Whether a :func:`scnp_label` or :func:`setting_label` names the SCNP-off setting."""
    return label.startswith(NO_SCNP)


def baselines_first(label: str) -> tuple[bool, str]:
    """Sort key for setting labels: the SCNP-off settings first, then by name."""
    return not is_baseline(label), label


def scnp_label(scnp: str, window: object, mode: str) -> str:
    """SCNP settings in words, for tables and plots: ``"no SCNP"``, ``"SCNP mask+seed w5 plain+penalized"``.

    Examples
    --------
    >>> scnp_label("off", 3, "penalized"), scnp_label("mask", 3, "plain+penalized")
    ('no SCNP', 'SCNP mask w3 plain+penalized')
    """
    if scnp == "off":
        return NO_SCNP
    return f"SCNP {scnp} w{window} {mode}"


def setting_label(scnp: str, window: object, mode: str, seed_loss: str, mask_loss: str) -> str:
    """What a run trained with, for tables and plots: :func:`scnp_label` and the two losses.

    Examples
    --------
    >>> setting_label("mask", 3, "penalized", "l1_distance", "cedice")
    'SCNP mask w3 penalized (l1_distance + cedice)'
    """
    return f"{scnp_label(scnp, window, mode)} ({seed_loss} + {mask_loss})"
