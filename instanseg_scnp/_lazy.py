"""Package attributes that load their module on first access (keeps ``import instanseg_scnp`` light)."""

from __future__ import annotations

import importlib
from collections.abc import Callable, Mapping


def lazy_exports(package: str, names: Mapping[str, str],
                 eager: Mapping[str, object] | None = None) -> tuple[list[str], Callable, Callable]:
    """``__all__``, ``__getattr__`` and ``__dir__`` for ``package`` whose ``names`` live in submodules.

    ``names`` maps an exported name to its module, relative to ``package``
    (``".synthetic"``) or absolute; ``eager`` holds the names the package
    imports itself. Usage, in a package's ``__init__.py``::

        __all__, __getattr__, __dir__ = lazy_exports(__name__, {"train": ".loop"})
    """
    exported = sorted({*names, *(eager or {})})

    def __getattr__(name: str) -> object:
        if name in names:
            value = getattr(importlib.import_module(names[name], package), name)
            setattr(importlib.import_module(package), name, value)  # once loaded, a plain attribute
            return value
        raise AttributeError(f"module {package!r} has no attribute {name!r}")

    def __dir__() -> list[str]:
        return exported

    return exported, __getattr__, __dir__
