import pytest
import torch


def pytest_addoption(parser):
    parser.addoption(
        "--device", default="cpu", help="torch device the operator tests run on, e.g. cuda (default: cpu)"
    )


@pytest.fixture
def device(request) -> torch.device:
    return torch.device(request.config.getoption("--device"))


@pytest.fixture(params=["separable", "max_pool", "triton"])
def engine(request, device, monkeypatch):
    """Run the test with each of the operator's engines on ``device``, forced (no fallback).

    On CPU the Triton kernels run in Triton's interpreter: ``TRITON_INTERPRET`` is
    read when they are decorated, which ``_triton_pooling`` does on first use per mode.
    """
    from instanseg_scnp import _pooling

    if request.param == "triton":
        pytest.importorskip("triton", reason="the triton engine needs Triton (ships with CUDA builds of torch)")
        if device.type == "cpu":
            monkeypatch.setenv("TRITON_INTERPRET", "1")
    monkeypatch.setitem(_pooling.ENGINES, device.type, getattr(_pooling, f"_{request.param}_engine"))
    return request.param
