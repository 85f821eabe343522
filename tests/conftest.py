import pytest
import torch


def pytest_addoption(parser):
    parser.addoption(
        "--device", default="cpu", help="torch device the operator tests run on, e.g. cuda (default: cpu)"
    )


@pytest.fixture
def device(request) -> torch.device:
    return torch.device(request.config.getoption("--device"))


@pytest.fixture(params=["separable", "max_pool"])
def engine(request, device, monkeypatch):
    """Run the test with each of the operator's box-max engines on ``device``."""
    from instanseg_scnp import _pooling

    monkeypatch.setitem(_pooling.ENGINES, device.type, getattr(_pooling, f"_{request.param}_engine"))
    return request.param
