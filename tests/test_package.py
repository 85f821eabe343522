"""The package's import is light and has no side effects; the public API is what ``__all__`` says."""

from __future__ import annotations

import subprocess
import sys

import pytest

import instanseg_scnp

HEAVY = ("instanseg", "monai", "matplotlib", "seaborn", "pandas", "scipy", "napari")


def _loaded_after(code: str) -> set[str]:
    """Top-level modules of :data:`HEAVY` in ``sys.modules`` after running ``code`` in a fresh interpreter."""
    script = (f"import sys\n{code}\n"
              f"print(' '.join(sorted({{m.split('.')[0] for m in sys.modules}} & set({HEAVY!r}))), file=sys.stderr)")
    result = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, timeout=300, check=True)
    return set(result.stderr.split())


def test_import_loads_nothing_heavy_and_patches_nothing():
    assert _loaded_after("import instanseg_scnp") == set()
    # upstream's loss class is untouched until the hook is asked for
    code = ("import instanseg_scnp\nfrom instanseg.utils.loss.instanseg_loss import InstanSeg\n"
            "print(hasattr(InstanSeg.update_binary_loss, '__instanseg_scnp_original__'))\n"
            "instanseg_scnp.register()\n"
            "print(hasattr(InstanSeg.update_binary_loss, '__instanseg_scnp_original__'))")
    result = subprocess.run([sys.executable, "-W", "ignore", "-c", code], capture_output=True, text=True,
                            timeout=300, check=True)
    assert result.stdout.split() == ["False", "True"]


def test_help_loads_nothing_heavy():
    code = ("from instanseg_scnp.cli import main\n"
            "try:\n    main(['train', '--help'])\nexcept SystemExit:\n    pass")
    assert _loaded_after(code) == set()


def test_public_names_resolve_and_are_sorted():
    assert instanseg_scnp.__all__ == sorted(instanseg_scnp.__all__)
    for name in instanseg_scnp.__all__:
        assert getattr(instanseg_scnp, name) is not None
    assert instanseg_scnp.make_loss is instanseg_scnp.upstream.make_loss
    with pytest.raises(AttributeError, match="has no attribute 'nothing'"):
        instanseg_scnp.nothing  # noqa: B018
