"""SCNP operator against a brute-force oracle, its invariants, gradients and errors."""

from __future__ import annotations

import itertools

import numpy as np
import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st
from hypothesis.extra import numpy as hnp

from instanseg_scnp import SCNP, same_class_max, scnp


def oracle(z, y, window, ignore=None, *, foreground_min=True):
    """Plain loops over the definition; returns (values, flat source index)."""
    z = np.asarray(z)
    y = np.asarray(y).astype(bool)
    ignore = np.zeros(z.shape, bool) if ignore is None else np.broadcast_to(np.asarray(ignore), z.shape)
    spatial = z.shape[2:]
    window = (window,) * len(spatial) if isinstance(window, int) else window
    out = z.copy()
    src = np.arange(z.size).reshape(z.shape)
    for b, c in itertools.product(range(z.shape[0]), range(z.shape[1])):
        for p in itertools.product(*map(range, spatial)):
            i = (b, c, *p)
            if ignore[i]:
                continue
            lo = [max(0, q - w // 2) for q, w in zip(p, window)]
            hi = [min(n, q + w // 2 + 1) for q, n, w in zip(p, spatial, window)]
            best, best_j = None, None
            for q in itertools.product(*(range(a, e) for a, e in zip(lo, hi))):
                j = (b, c, *q)
                if ignore[j] or y[j] != y[i]:
                    continue
                v = z[j]
                if best is None or np.isnan(v) or (v < best if (y[i] and foreground_min) else v > best):
                    best, best_j = v, j
                    if np.isnan(v):
                        break
            out[i] = best
            src[i] = np.ravel_multi_index(best_j, z.shape)
    return out, src


def oracle_grad(src, weights):
    grad = np.zeros(weights.size)
    np.add.at(grad, src.ravel(), weights.ravel())
    return grad.reshape(weights.shape)


SHAPES_WINDOWS = [
    ((2, 2, 7, 9), 1),
    ((2, 2, 7, 9), 3),
    ((2, 2, 7, 9), 5),
    ((1, 3, 6, 5), 7),
    ((1, 1, 4, 4), 9),  # window larger than the image
    ((1, 2, 5, 11), (3, 5)),
    ((1, 2, 4, 5, 6), 3),
    ((1, 1, 5, 4, 6), 5),
    ((1, 2, 3, 6, 5), (1, 3, 3)),  # anisotropic voxels
    ((1, 1, 4, 5, 5), (3, 1, 5)),
]


@pytest.mark.parametrize("with_ignore", [False, True])
@pytest.mark.parametrize(("shape", "window"), SHAPES_WINDOWS)
def test_scnp_matches_oracle_values_and_gradient(shape, window, with_ignore, device, engine):
    rng = np.random.default_rng(sum(shape))
    z = rng.normal(size=shape)  # tie-free
    y = rng.random(shape) < 0.5
    ignore = rng.random(shape) < 0.2 if with_ignore else None
    expected, src = oracle(z, y, window, ignore)

    zt = torch.tensor(z, device=device, requires_grad=True)
    ignore_t = None if ignore is None else torch.tensor(ignore, device=device)
    out = scnp(zt, torch.tensor(y, device=device), window, ignore=ignore_t)
    np.testing.assert_array_equal(out.detach().cpu().numpy(), expected)

    weights = rng.normal(size=shape)
    out.backward(torch.tensor(weights, device=device))
    np.testing.assert_allclose(zt.grad.cpu().numpy(), oracle_grad(src, weights), rtol=1e-12, atol=1e-12)


@pytest.mark.parametrize("ignore_shape", [None, (5, 2, 6, 7), (1, 2, 6, 7), (6, 7)])
def test_cpu_engine_in_batch_chunks_matches_oracle(ignore_shape, monkeypatch):
    """A batch larger than the CPU engine's chunk is computed piece by piece: values and gradient unchanged."""
    from instanseg_scnp import _pooling

    monkeypatch.setattr(_pooling, "CPU_CHUNK_ELEMENTS", 2 * 2 * 6 * 7)  # two samples per chunk: 2 + 2 + 1
    batches, candidates = [], _pooling._candidates

    def counted(values, *args):
        batches.append(len(values))
        return candidates(values, *args)

    monkeypatch.setattr(_pooling, "_candidates", counted)
    shape = (5, 2, 6, 7)
    rng = np.random.default_rng(7)
    z, y = rng.normal(size=shape), rng.random(shape) < 0.5
    ignore = None if ignore_shape is None else rng.random(ignore_shape) < 0.2
    expected, src = oracle(z, y, 3, ignore)
    zt = torch.tensor(z, requires_grad=True)
    out = scnp(zt, torch.tensor(y), 3, ignore=None if ignore is None else torch.tensor(ignore))
    np.testing.assert_array_equal(out.detach().numpy(), expected)
    weights = rng.normal(size=shape)
    out.backward(torch.tensor(weights))
    np.testing.assert_allclose(zt.grad.numpy(), oracle_grad(src, weights), rtol=1e-12, atol=1e-12)
    assert batches == [2, 2, 1]


@pytest.mark.parametrize(("shape", "window"), SHAPES_WINDOWS[::2])
def test_same_class_max_matches_oracle(shape, window, device, engine):
    rng = np.random.default_rng(1)
    z = rng.normal(size=shape)
    y = rng.random(shape) < 0.4
    ignore = rng.random(shape[2:]) < 0.2  # broadcast over batch and channel
    expected, _ = oracle(z, y, window, ignore, foreground_min=False)
    out = same_class_max(
        torch.tensor(z, device=device), torch.tensor(y, device=device), window, ignore=torch.tensor(ignore, device=device)
    )
    np.testing.assert_array_equal(out.cpu().numpy(), expected)


@pytest.mark.parametrize("dtype", [torch.float16, torch.bfloat16, torch.float32, torch.float64])
@pytest.mark.parametrize("window", [3, 5])
def test_scnp_exact_with_ties_and_extreme_magnitudes(dtype, window, device, engine):
    rng = np.random.default_rng(7)
    shape = (2, 2, 6, 7)
    big = torch.finfo(dtype).max
    choices = torch.tensor([-big, -1.0, 0.0, 1.0, big], dtype=dtype)
    z = choices[torch.from_numpy(rng.integers(0, 5, size=shape))]  # many ties
    y = rng.random(shape) < 0.5
    expected, _ = oracle(z.double().numpy(), y, window)
    out = scnp(z.to(device), torch.tensor(y, device=device), window)
    assert out.dtype == dtype and out.device.type == device.type
    assert torch.isfinite(out).all()
    np.testing.assert_array_equal(out.double().cpu().numpy(), expected)


@pytest.mark.parametrize("window", [3, (1, 5)])
def test_scnp_infinite_logits_keep_gradients_inside_the_image(window, device, engine):
    """Windows of nothing but -inf, and NaN at the border: sources stay valid pixels."""
    inf, nan = torch.inf, torch.nan
    z = torch.tensor([[[[-inf, 0.0, 1.0, inf], [nan, 2.0, -inf, 3.0]]]], device=device, requires_grad=True)
    y = torch.tensor([[[[0, 1, 1, 1], [1, 1, 0, 0]]]], device=device)
    out = scnp(z, y, window)
    expected, _ = oracle(z.detach().cpu().numpy(), y.cpu().numpy(), window)
    np.testing.assert_array_equal(out.detach().cpu().numpy(), expected)
    out.backward(torch.ones_like(out))
    assert z.grad.sum() == out.numel()  # every output's gradient landed on a pixel
    assert z.grad[0, 0, 0, 0] >= 1  # the -inf background pixel is its own source


def test_scnp_lone_infinite_pixel_is_its_own_source(device, engine):
    z = torch.tensor([[[[0.0, -torch.inf, 1.0]]]], device=device, requires_grad=True)
    y = torch.tensor([[[[1, 0, 1]]]], device=device)
    scnp(z, y, 3).sum().backward()
    assert z.grad.tolist() == [[[[1.0, 1.0, 1.0]]]]


@pytest.mark.parametrize("window", [3, (1, 5, 3)])
def test_scnp_without_gradient_gives_the_same_values(window, device, engine):
    """Without autograd the engines skip source tracking; the values must not change."""
    shape = (2, 2, 9, 11) if isinstance(window, int) else (1, 2, 4, 9, 11)
    z = torch.randn(*shape, device=device)
    y = torch.rand(*shape, device=device) > 0.5
    ignore = torch.rand(*shape, device=device) > 0.8
    with torch.no_grad():
        fast = scnp(z, y, window, ignore=ignore)
    assert torch.equal(fast, scnp(z.clone().requires_grad_(), y, window, ignore=ignore).detach())


def test_scnp_bool_target_with_odd_bytes():
    """Bools viewed from other bytes (e.g. numpy ``.view(bool)``) still mean True."""
    z = torch.tensor([[[[1.0, 2.0, 3.0]]]])
    y = torch.tensor([2, 0, 2], dtype=torch.uint8).view(torch.bool).view(1, 1, 1, 3)
    assert scnp(z, y, 3).tolist() == scnp(z, y.clone() != 0, 3).tolist() == [[[[1.0, 2.0, 3.0]]]]


def test_scnp_target_as_numbers_equals_bool_target():
    z = torch.randn(2, 2, 8, 8)
    y = torch.rand(2, 2, 8, 8) > 0.5
    assert torch.equal(scnp(z, y.float()), scnp(z, y))
    assert torch.equal(scnp(z, y.long()), scnp(z, y))


def test_scnp_nan_propagates_to_same_class_neighbours(device, engine):
    z = torch.zeros(1, 1, 5, 5, device=device)
    z[0, 0, 2, 2] = torch.nan
    y = torch.ones(1, 1, 5, 5, dtype=torch.bool, device=device)
    y[0, 0, 0, :] = False
    out = scnp(z, y, 3)
    expected_nan = torch.zeros(5, 5, dtype=torch.bool)
    expected_nan[1:4, 1:4] = True
    assert torch.equal(torch.isnan(out[0, 0]).cpu(), expected_nan)


@pytest.mark.parametrize("ignore_shape", [(5,), (2, 1, 1, 1, 5), (1, 2, 3, 1, 1), (4, 1)])
def test_scnp_ignore_broadcasts_along_any_axis_with_a_strided_target(ignore_shape, device, engine):
    rng = np.random.default_rng(len(ignore_shape))
    shape = (2, 2, 3, 4, 5)
    z, y, ignore = rng.normal(size=shape), rng.random(shape) < 0.5, rng.random(ignore_shape) < 0.3
    expected, _ = oracle(z, y, (3, 1, 5), ignore)
    target = torch.tensor(y.swapaxes(3, 4).copy(), device=device).transpose(3, 4)  # not contiguous
    out = scnp(torch.tensor(z, device=device), target, (3, 1, 5), ignore=torch.tensor(ignore, device=device))
    np.testing.assert_array_equal(out.cpu().numpy(), expected)


def test_scnp_empty_batch(device, engine):
    z = torch.zeros(0, 2, 5, 5, device=device, requires_grad=True)
    out = scnp(z, z > 0, 3)
    out.sum().backward()
    assert out.shape == z.grad.shape == z.shape


def test_scnp_ignored_pixels_keep_their_value_and_are_no_neighbours():
    z = torch.tensor([[[[5.0, -9.0, 4.0]]]])
    y = torch.tensor([[[[1, 1, 1]]]])
    ignore = torch.tensor([[[[False, True, False]]]])
    out = scnp(z, y, 3, ignore=ignore)
    assert out.tolist() == [[[[5.0, -9.0, 4.0]]]]


@pytest.mark.parametrize(("shape", "window"), [((1, 2, 5, 6), 3), ((1, 1, 3, 4, 5), (3, 1, 3))])
def test_scnp_gradcheck(shape, window, device, engine):
    z = torch.randn(*shape, dtype=torch.float64, device=device, requires_grad=True)
    y = torch.rand(*shape, device=device) > 0.5
    # in Triton's interpreter (slow), check random projections of the Jacobian instead of all of it
    fast = engine == "triton" and device.type == "cpu"
    assert torch.autograd.gradcheck(lambda t: scnp(t, y, window), (z,), fast_mode=fast)


def test_scnp_module_equals_functional():
    z, y = torch.randn(2, 3, 9, 9), torch.rand(2, 3, 9, 9) > 0.5
    ignore = torch.rand(1, 1, 9, 9) > 0.8
    assert torch.equal(SCNP(window=5)(z, y, ignore), scnp(z, y, 5, ignore=ignore))
    assert repr(SCNP((1, 3, 3))) == "SCNP(window=(1, 3, 3))"


def test_scnp_output_follows_input_and_does_not_modify_it():
    z = torch.randn(1, 1, 6, 6).transpose(2, 3)  # non-contiguous
    before = z.clone()
    y = torch.rand(1, 1, 6, 6) > 0.5
    out = scnp(z, y, 3)
    assert torch.equal(z, before)
    assert out.shape == z.shape and out.dtype == z.dtype
    np.testing.assert_array_equal(out.numpy(), oracle(z.numpy(), y.numpy(), 3)[0])


# --- properties ------------------------------------------------------------------

logit_arrays = hnp.arrays(
    np.float32,
    st.tuples(st.integers(1, 2), st.integers(1, 2), st.integers(1, 7), st.integers(1, 7)),
    elements=st.floats(-1e6, 1e6, width=32),
)


def test_scnp_properties(engine):
    # Triton's interpreter runs kernels op by op in Python: fewer examples there
    @settings(max_examples=15 if engine == "triton" else 60, deadline=None)
    @given(z=logit_arrays, seed=st.integers(0, 2**32 - 1), window=st.sampled_from([3, 5, 7]))
    def check(z, seed, window):
        y = np.random.default_rng(seed).random(z.shape) < 0.5
        zt, yt = torch.from_numpy(z), torch.from_numpy(y)
        assert torch.equal(scnp(zt, yt, 1), zt)
        out = scnp(zt, yt, window)
        assert (out[yt] <= zt[yt]).all()
        assert (out[~yt] >= zt[~yt]).all()
        larger = scnp(zt, yt, window + 2)
        assert (larger[yt] <= out[yt]).all()
        assert (larger[~yt] >= out[~yt]).all()

    check()


# --- bad input ---------------------------------------------------------------------

Z = torch.zeros(1, 1, 4, 4)
Y = torch.zeros(1, 1, 4, 4, dtype=torch.bool)


@pytest.mark.parametrize(
    ("kwargs", "error", "match"),
    [
        ({"logits": torch.zeros(1, 1, 4, 4, dtype=torch.int64)}, TypeError, "logits must be a floating-point"),
        ({"logits": np.zeros((1, 1, 4, 4))}, TypeError, "logits must be a floating-point"),
        ({"logits": torch.zeros(3, 4, 4), "target": torch.zeros(3, 4, 4)}, ValueError, r"4 or 5 dims.*\(3, 4, 4\)"),
        ({"target": torch.zeros(1, 1, 4, 5)}, ValueError, r"target must have the logits' shape \(1, 1, 4, 4\)"),
        ({"target": torch.full((1, 1, 4, 4), 2.0)}, ValueError, "target must be binary"),
        ({"window": 4}, ValueError, "odd"),
        ({"window": 0}, ValueError, "odd and between 1 and 255"),
        ({"window": -3}, ValueError, "odd and between 1 and 255"),
        ({"window": 3.0}, TypeError, "odd int"),
        ({"window": True}, TypeError, "odd int"),
        ({"window": 257}, ValueError, "between 1 and 255"),
        ({"window": (3, 3, 3)}, ValueError, r"one size per spatial dim \(2\)"),
        ({"ignore": torch.zeros(1, 1, 4, 4)}, TypeError, "ignore must be a bool"),
        ({"ignore": torch.zeros(1, 1, 3, 4, dtype=torch.bool)}, ValueError, "ignore must broadcast"),
    ],
)
def test_scnp_bad_input(kwargs, error, match):
    args = {"logits": Z, "target": Y, "window": 3, "ignore": None} | kwargs
    with pytest.raises(error, match=match):
        scnp(args["logits"], args["target"], args["window"], ignore=args["ignore"])


@pytest.mark.parametrize("window", [2, "3", (3, 4)])
def test_scnp_module_rejects_bad_window(window):
    with pytest.raises((TypeError, ValueError), match="window"):
        SCNP(window)
