"""One lookup for string options, with the valid choices and a suggestion in the error."""

from __future__ import annotations

import difflib
from collections.abc import Iterable


def look_up_option(value: object, choices: Iterable[str], *, name: str) -> str:
    """Return ``value`` if it is one of ``choices``; otherwise raise a ValueError naming them.

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
    close = difflib.get_close_matches(str(value), choices, n=1)
    hint = f" (did you mean {close[0]!r}?)" if close else ""
    raise ValueError(f"{name} must be one of {', '.join(map(repr, choices))}, got {value!r}{hint}")
