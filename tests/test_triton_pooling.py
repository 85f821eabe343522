"""The fused Triton engine: it compiles for a GPU, falls back cleanly, and stays out of ``import instanseg_scnp``.

Its values and gradients are checked against the oracle with every other engine
in ``test_scnp.py`` (the ``engine`` fixture; on CPU through Triton's interpreter).
"""

from __future__ import annotations

import subprocess
import sys
import types

import numpy as np
import pytest
import torch

from instanseg_scnp import _pooling, scnp
from test_scnp import oracle, oracle_grad


def test_import_and_cpu_use_do_not_load_triton():
    code = ("import sys, torch\nfrom instanseg_scnp import scnp\n"
            "z = torch.randn(1, 1, 5, 5, requires_grad=True)\nscnp(z, z > 0, 3).sum().backward()\n"
            "print('triton' in sys.modules)")  # fmt: skip
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=300, check=True)
    assert result.stdout.split() == ["False"]


def test_cuda_prefers_triton_and_falls_back_to_max_pool():
    cuda = _pooling.ENGINES["cuda"]
    assert (cuda.preferred, cuda.fallback) == (_pooling._triton_engine, _pooling._max_pool_engine)


def _check_against_oracle(shape=(2, 2, 6, 7), window=3):
    rng = np.random.default_rng(3)
    z, y, weights = rng.normal(size=shape), rng.random(shape) < 0.5, rng.normal(size=shape)
    expected, src = oracle(z, y, window)
    zt = torch.tensor(z, requires_grad=True)
    out = scnp(zt, torch.tensor(y), window)
    out.backward(torch.tensor(weights))
    np.testing.assert_array_equal(out.detach().numpy(), expected)
    np.testing.assert_allclose(zt.grad.numpy(), oracle_grad(src, weights), rtol=1e-12, atol=1e-12)


def test_fallback_when_triton_is_not_installed(monkeypatch):
    from instanseg_scnp import _triton_pooling  # imported first, so that monkeypatch puts it back afterwards

    monkeypatch.setitem(sys.modules, "triton", None)  # makes `import triton` raise ImportError
    monkeypatch.delitem(sys.modules, _triton_pooling.__name__)  # so that the engine imports it afresh
    monkeypatch.delattr(sys.modules["instanseg_scnp"], "_triton_pooling")
    engine = _pooling._Fallback(_pooling._triton_engine, _pooling._max_pool_engine)
    monkeypatch.setitem(_pooling.ENGINES, "cpu", engine)
    _check_against_oracle()  # no warning: a missing Triton is normal (warnings are errors here)
    assert "triton" in engine.failure
    with pytest.raises(ImportError):  # forced, the Triton engine does not hide it
        _pooling._triton_engine.forward(None, None, None, True, (3, 3), [2, 3], False)


class _Uncompilable:
    """Stands in for a Triton kernel whose compilation fails (no C compiler, unsupported GPU, ...)."""

    fn = types.SimpleNamespace(__name__="_forward_kernel")

    def __init__(self):
        self.calls = 0

    def __getitem__(self, grid):
        def launch(*args, **kwargs):
            self.calls += 1
            raise RuntimeError("Failed to find C compiler")

        return launch


def test_fallback_when_triton_cannot_compile_warns_once(monkeypatch):
    pytest.importorskip("triton")
    from instanseg_scnp import _triton_pooling as triton_pooling

    kernel = _Uncompilable()
    monkeypatch.setattr(triton_pooling, "_kernels", lambda interpret: (kernel, kernel))
    engine = _pooling._Fallback(_pooling._triton_engine, _pooling._max_pool_engine)
    monkeypatch.setitem(_pooling.ENGINES, "cpu", engine)
    with pytest.warns(RuntimeWarning, match="falls back to its slower max_pool engine.*Failed to find C compiler"):
        _check_against_oracle()
    _check_against_oracle((1, 2, 4, 5, 6), (3, 1, 5))  # no second warning, no second try
    assert kernel.calls == 1
    with pytest.raises(_pooling.KernelError, match="_forward_kernel failed: RuntimeError"):
        _pooling._triton_engine.forward(torch.zeros(1, 1, 3, 3), torch.zeros(1, 1, 3, 3, dtype=torch.uint8),
                                        None, True, (3, 3), [2, 3], False)  # fmt: skip


@pytest.mark.parametrize("engine_name", ["separable", "max_pool", "triton"])
def test_scnp_saves_only_int8_offsets_that_point_at_the_source(engine_name, monkeypatch):
    if engine_name == "triton":
        pytest.importorskip("triton")
        monkeypatch.setenv("TRITON_INTERPRET", "1")
    monkeypatch.setitem(_pooling.ENGINES, "cpu", getattr(_pooling, f"_{engine_name}_engine"))
    shape, window = (1, 2, 4, 5, 6), (3, 1, 5)
    rng = np.random.default_rng(5)
    z, y = rng.normal(size=shape), rng.random(shape) < 0.5  # tie-free
    saved = []
    with torch.autograd.graph.saved_tensors_hooks(lambda t: saved.append(t) or t, lambda t: t):
        scnp(torch.tensor(z, requires_grad=True), torch.tensor(y), window)
    assert [(t.dtype, tuple(t.shape)) for t in saved] == [(torch.int8, (2, *shape))]
    _, src = oracle(z, y, window)
    source = np.stack(np.unravel_index(src, shape))[[2, 4]]  # the pooled axes: depth and width
    position = np.stack(np.indices(shape))[[2, 4]]
    np.testing.assert_array_equal(saved[0].numpy(), source - position)


# --- compilation for a GPU, without one ----------------------------------------------------------------


class _CompileOnlyDriver:
    """A Triton driver for an H100-class GPU (sm_90) that can compile but never launch."""

    def get_current_device(self):
        return 0

    def get_current_stream(self, device=None):
        return 0

    def get_current_target(self):
        from triton.backends.compiler import GPUTarget

        return GPUTarget("cuda", 90, 32)


CONFIGS = [  # dtype, shape, window, ignore shape, foreground_min (scnp or same_class_max), track
    (torch.float32, (8, 2, 256, 256), (3, 3), None, True, True),
    (torch.float16, (4, 2, 64, 64), (9, 9), (4, 1, 64, 64), True, True),
    (torch.bfloat16, (1, 1, 1, 1), (3, 3), (1, 1), False, True),
    (torch.float64, (2, 2, 6, 16, 16), (3, 1, 5), (16,), True, True),
    (torch.float32, (2, 2, 8, 16, 16), (5, 5, 5), None, False, False),
]


@pytest.mark.parametrize(("dtype", "shape", "window", "ignore_shape", "foreground_min", "track"), CONFIGS)
def test_kernels_compile_for_sm90(dtype, shape, window, ignore_shape, foreground_min, track, monkeypatch, tmp_path):
    """Compiles both kernels to a cubin (Triton bundles ptxas), catching what the interpreter cannot:
    typing, constexpr and layout errors of the real compiler."""
    triton = pytest.importorskip("triton")
    from triton.backends import backends
    from triton.runtime import driver

    if "nvidia" not in backends:
        pytest.skip("this Triton has no NVIDIA backend")
    from instanseg_scnp import _triton_pooling

    monkeypatch.delenv("TRITON_INTERPRET", raising=False)
    monkeypatch.setenv("TRITON_CACHE_DIR", str(tmp_path))  # compile for real, and leave no cache behind
    monkeypatch.setattr(driver, "_active", _CompileOnlyDriver())
    fresh = _triton_pooling._kernels.__wrapped__(False)  # not the cached kernels, bound to no device yet
    monkeypatch.setattr(_triton_pooling, "_kernels", lambda interpret: fresh)
    assert not triton.knobs.runtime.interpret

    values, foreground = torch.zeros(shape, dtype=dtype), torch.zeros(shape, dtype=torch.uint8)
    ignore = None if ignore_shape is None else torch.zeros(ignore_shape, dtype=torch.bool)
    pooled_dims = [2 + i for i, w in enumerate(window) if w > 1]
    kernel, grid, args, kwargs, (_, offsets) = _triton_pooling._forward_call(
        values, foreground, ignore, foreground_min, window, track
    )
    compiled = kernel.warmup(*args, grid=grid, **kwargs)
    assert "cubin" in compiled.asm
    if track:
        assert offsets.shape == (len(pooled_dims), *shape)
        kernel, grid, args, kwargs, _ = _triton_pooling._backward_call(values, offsets, window)
        assert "cubin" in kernel.warmup(*args, grid=grid, **kwargs).asm
