"""The torch stack imported inside a Qt process without triton (see napari_instanseg_scnp._torch_guard)."""

from __future__ import annotations

import importlib.util
import subprocess
import sys

import pytest

SCRIPT = """
import sys
import PyQt6.QtCore
import napari_instanseg_scnp._torch_guard
import torch.utils._triton
assert "instanseg_scnp" in sys.modules
assert "triton" not in sys.modules and not torch.utils._triton.has_triton_package()
print("ok")
"""


@pytest.mark.skipif(importlib.util.find_spec("triton") is None, reason="triton is not installed")
def test_guard_keeps_triton_out_once_qt_is_loaded():
    result = subprocess.run([sys.executable, "-c", SCRIPT], capture_output=True, text=True, timeout=300)
    assert result.returncode == 0 and result.stdout.strip() == "ok", result.stderr[-2000:]


def test_guard_imports_normally_without_qt():
    script = "import sys, napari_instanseg_scnp._torch_guard; print('instanseg_scnp' in sys.modules)"
    result = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, timeout=300)
    assert result.stdout.strip() == "True", result.stderr[-2000:]
