"""The README's Python examples run as written, in order, as a new user would paste them."""

from __future__ import annotations

import re
from pathlib import Path

README = Path(__file__).resolve().parents[1] / "README.md"


def test_readme_python_examples_run():
    blocks = re.findall(r"```python\n(.*?)```", README.read_text(), re.S)
    assert len(blocks) >= 3
    namespace: dict = {}
    for block in blocks:
        exec(compile(block, str(README), "exec"), namespace)
    assert namespace["z_tilde"].shape == namespace["logits"].shape
    assert namespace["loss"].item() > 0  # the InstanSeg loss example ran its backward
    assert namespace["errors"]["beta0_gt"] > 0
    assert set(namespace["table"].columns) >= {"circularity", "roundness"}
