"""The notebooks run top to bottom, with small parameters, as a new user would run them."""

from __future__ import annotations

from pathlib import Path

import nbformat
import pytest
from nbclient import NotebookClient

NOTEBOOKS = Path(__file__).resolve().parents[1] / "notebooks"
QUICK = {
    "01_scnp_explained": "SIZE = 128\nWINDOWS = (3, 5)",
    "02_train_and_compare": 'TRAIN = {"epochs": 2, "hotstart": 1, "epoch_length": 8, "tile_size": 64, '
                            '"layers": (8, 16), "window_size": 32}',
    "03_real_datasets": 'DEMO = True\nTRAIN = {"epochs": 2, "hotstart": 1, "epoch_length": 8, "tile_size": 64, '
                        '"layers": (8, 16), "window_size": 32, "preset": "demo"}',
}
"""Overrides injected after each notebook's ``parameters`` cell, as papermill does, to fit CI's time."""


def notebook_names():
    return sorted(path.stem for path in NOTEBOOKS.glob("*.ipynb"))


def test_every_notebook_has_quick_parameters():
    assert set(notebook_names()) == set(QUICK)


@pytest.mark.parametrize("name", notebook_names())
def test_notebook_is_stored_without_outputs(name):
    notebook = nbformat.read(NOTEBOOKS / f"{name}.ipynb", as_version=4)
    nbformat.validate(notebook)
    for cell in notebook.cells:
        if cell.cell_type == "code":
            assert cell.outputs == [] and cell.execution_count is None, f"{name}: strip outputs before committing"


@pytest.mark.parametrize("name", notebook_names())
def test_notebook_runs(name, tmp_path):
    notebook = nbformat.read(NOTEBOOKS / f"{name}.ipynb", as_version=4)
    (index,) = [i for i, cell in enumerate(notebook.cells) if "parameters" in cell.metadata.get("tags", [])]
    notebook.cells.insert(index + 1, nbformat.v4.new_code_cell(QUICK[name]))
    NotebookClient(notebook, timeout=600, kernel_name="python3",
                   resources={"metadata": {"path": str(tmp_path)}}).execute()
    errors = [output for cell in notebook.cells if cell.cell_type == "code" for output in cell.outputs
              if output.output_type == "error"]
    assert not errors
