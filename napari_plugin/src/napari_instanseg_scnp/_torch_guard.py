"""Import the torch stack safely inside a running napari: importing this module does it.

The inspector runs upstream InstanSeg, which imports torchvision, whose ops
import ``torch._dynamo``, which imports triton where it is installed (the CUDA
wheels of torch bring it). Imported after napari has made
its OpenGL canvas on one of Mesa's LLVM-based drivers (llvmpipe, as under Xvfb
or in a VM; radeonsi), triton's own LLVM clashes with Mesa's and the process
dies of a segmentation fault. The plugin needs no triton (it runs on the CPU and
compiles nothing), so when a Qt binding is loaded and the torch stack is not yet,
the stack (:data:`STACK`) is imported with ``import triton`` failing as if it
were not installed. torch remembers that for the rest of the process: only
``torch.compile`` on a GPU needs triton, and importing it there would crash anyway.
"""

from __future__ import annotations

import importlib
import sys

QT_BINDINGS = ("PyQt5", "PyQt6", "PySide2", "PySide6")
STACK = ("torch._dynamo", "torchvision", "instanseg_scnp")
"""What is imported here: ``instanseg_scnp`` itself is light (torch only) and loads
upstream InstanSeg on first use, so the modules that look for triton come first."""


def _import_stack() -> None:
    for name in STACK:
        importlib.import_module(name)


def import_core() -> None:
    """Import :data:`STACK`; with Qt loaded and torch's compiler stack not, without triton."""
    loaded = any(name in sys.modules for name in ("triton", "torch._dynamo"))
    if loaded or not any(name in sys.modules for name in QT_BINDINGS):
        _import_stack()
        return
    sys.modules["triton"] = None  # `import triton` raises ImportError, which torch takes as "not installed"
    try:
        _import_stack()
    finally:
        if "triton" in sys.modules and sys.modules["triton"] is None:
            del sys.modules["triton"]


import_core()
