import subprocess
import sys

import pytest
import torch

from instanseg_scnp.data import synthetic_dataset

_TINY = ["--preset", "demo", "--epochs", "3", "--hotstart", "1", "--epoch-length", "8", "--batch-size", "2", "--tile-size", "64",
        "--layers", "8", "16", "--window-size", "32", "--device", "cpu"]
"""A run that takes seconds: CLI flags shared by the training tests."""


@pytest.fixture(scope="session")
def tiny_data(tmp_path_factory):
    """A small InstanSeg .pth dataset on disk."""
    path = tmp_path_factory.mktemp("data") / "tiny_dataset.pth"
    torch.save(synthetic_dataset(n_train=4, n_validation=2, n_test=2, shape=(96, 96), rng=0), path)
    return path


@pytest.fixture(scope="session")
def tiny_flags():
    return list(_TINY)


def _run_cli(*args, check=True, **kwargs):
    result = subprocess.run([sys.executable, "-m", "instanseg_scnp", *map(str, args)],
                            capture_output=True, text=True, **kwargs)
    if check and result.returncode != 0:
        raise AssertionError(f"exit {result.returncode}\n{result.stdout}\n{result.stderr}")
    return result


@pytest.fixture(scope="session")
def run_cli():
    """``run_cli(*args, check=True)``: ``python -m instanseg_scnp ARGS`` in a fresh process."""
    return _run_cli
