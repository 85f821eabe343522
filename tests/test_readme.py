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
    assert len(blocks) >= 4
    namespace: dict = {}
    for block in blocks:
        exec(compile(block, str(README), "exec"), namespace)
    assert namespace["result"].model_path.is_file()  # the training example
    assert namespace["cells"].shape == (1, 1, 256, 256) and namespace["cells"].max() >= 0  # upstream ran the export
    assert namespace["errors"]["beta0_gt"] > 0 and 0 < namespace["scores"]["mean_f1"] < 1  # the metrics example
    assert set(namespace["table"].columns) >= {"circularity", "roundness"}
    assert namespace["z_tilde"].shape == namespace["logits"].shape  # the operator example
    assert namespace["loss"].item() > 0 and namespace["logits"].grad is not None  # ... ran its backward
