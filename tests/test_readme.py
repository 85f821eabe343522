"""The README's Python examples run as written, in order, as a new user would paste them."""

from __future__ import annotations

import re
from pathlib import Path

import pytest

README = Path(__file__).resolve().parents[1] / "README.md"


@pytest.mark.filterwarnings("ignore:`torch.jit.load` is deprecated:FutureWarning")  # upstream's model format
@pytest.mark.filterwarnings("ignore:CUDA is not available:UserWarning")  # upstream's autocast on a CPU machine
@pytest.mark.filterwarnings("ignore:Sparse:UserWarning")  # upstream's postprocessing
def test_readme_python_examples_run(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)  # the examples write runs/
    blocks = re.findall(r"```python\n(.*?)```", README.read_text(), re.S)
    assert len(blocks) >= 3
    namespace: dict = {}
    for block in blocks:
        exec(compile(block, str(README), "exec"), namespace)
    assert namespace["z_tilde"].shape == namespace["logits"].shape
    assert namespace["loss"].item() > 0  # the InstanSeg loss example ran its backward
    assert namespace["errors"]["beta0_gt"] > 0
    assert set(namespace["table"].columns) >= {"circularity", "roundness"}
    assert namespace["result"].model_path.is_file()
    assert namespace["cells"].shape == (1, 1, 256, 256)
