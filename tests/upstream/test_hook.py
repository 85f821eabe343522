"""The InstanSeg hook, against upstream InstanSeg's own loss objects (CPU)."""

from __future__ import annotations

import contextlib

import numpy as np
import pandas as pd
import pytest
import torch
from instanseg.utils.loss.instanseg_loss import InstanSeg
from instanseg.utils.model_loader import read_model_args_from_csv
from instanseg.utils.models.InstanSeg_UNet import InstanSeg_UNet
from instanseg.utils.pytorch_utils import instance_wise_edt

import instanseg_scnp
from instanseg_scnp import (
    SCNPTerm,
    install,
    is_installed,
    loss_name,
    make_loss,
    parse_loss_name,
    same_class_max,
    scnp,
    uninstall,
)
from instanseg_scnp._options import MASK_LOSSES, SCNP_TARGETS, SEED_LOSSES, UPSTREAM_MASK_LOSSES


@pytest.fixture(autouse=True, scope="module")
def registered():
    """Upstream's loss class takes the SCNP names, as after ``instanseg_scnp.register()``."""
    instanseg_scnp.register()


@contextlib.contextmanager
def upstream_only():
    """Upstream's own, unwrapped ``update_*`` methods for the duration."""
    uninstall()
    try:
        yield
    finally:
        install()


def upstream_loss(**kwargs) -> InstanSeg:
    with upstream_only():
        return InstanSeg(device="cpu", n_sigma=2, **kwargs)


def disks(shape=(64, 64), centres=((20, 20), (20, 33), (44, 40), (40, 15)), radius=7):
    """Instance labels of touching disks, (1, 1, H, W) int64."""
    yy, xx = np.mgrid[: shape[0], : shape[1]]
    labels = np.zeros(shape, np.int64)
    for k, (cy, cx) in enumerate(centres, start=1):
        labels[(yy - cy) ** 2 + (xx - cx) ** 2 < radius**2] = k
    return torch.from_numpy(labels)[None, None]


def crops(n=4, size=24, seed=0):
    """Crop logits (N, 1, ws, ws) and the seed's nucleus masks (N, ws, ws) as upstream passes them."""
    generator = torch.Generator().manual_seed(seed)
    dist = torch.randn(n, 1, size, size, generator=generator)
    yy, xx = torch.meshgrid(torch.arange(size), torch.arange(size), indexing="ij")
    radii = torch.arange(3, 3 + n)[:, None, None]
    crop = (((yy - size // 2) ** 2 + (xx - size // 2) ** 2) < radii**2).float()
    return dist, crop


def seed_inputs(seed=0, sparse=False):
    """Seed logits x (1, H, W), labels y (1, H, W) and the annotated mask, as upstream's forward passes them."""
    generator = torch.Generator().manual_seed(seed)
    y = disks()[0]
    x = torch.randn(y.shape, generator=generator) * 3  # float32, like upstream's targets
    mask = None
    if sparse:
        mask = torch.ones_like(y, dtype=torch.bool)
        mask[:, 30:50, 25:55] = False  # unannotated block, touching cells and background
        y = y.masked_fill(~mask, 0)  # upstream zeroes -1 labels before calling seed_loss
    return x, y, mask


def value_and_grad(fn, x, *args, **kwargs):
    x = x.clone().requires_grad_()
    value = fn(x, *args, **kwargs)
    (grad,) = torch.autograd.grad(value, x)
    return value.detach(), grad


# --- names ---------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("term", "name"),
    [
        (SCNPTerm(), "scnp_dice_loss"),
        (SCNPTerm(window=5), "scnp-w5_dice_loss"),
        (SCNPTerm(window=(3, 5)), "scnp-w3x5_dice_loss"),
        (SCNPTerm(window=9, mode="plain+penalized"), "scnp-w9-plain+penalized_dice_loss"),
        (SCNPTerm(mode="plain+penalized", weight=0.25), "scnp-plain+penalized0.25_dice_loss"),
        (SCNPTerm(mode="plain+penalized", weight=1e-5), "scnp-plain+penalized1e-05_dice_loss"),
        (SCNPTerm(mode="plain+penalized", weight=1 / 3), "scnp-plain+penalized0.3333333333333333_dice_loss"),
        (SCNPTerm(mode="plain+penalized", weight=2e6), "scnp-plain+penalized2000000.0_dice_loss"),
        (SCNPTerm(mode="plain+penalized", weight=1e20), "scnp-plain+penalized1e+20_dice_loss"),
        (None, "dice_loss"),
    ],
)
def test_loss_name_round_trips(term, name):
    assert loss_name("dice_loss", term) == name
    assert parse_loss_name(name) == ("dice_loss", term)


@pytest.mark.parametrize(("old", "term"), [
    ("scnp-both_lovasz_hinge", SCNPTerm(mode="plain+penalized")),
    ("scnp-w5-both0.5_lovasz_hinge", SCNPTerm(window=5, mode="plain+penalized", weight=0.5)),
])
def test_older_runs_loss_names_still_parse(old, term):
    """experiment_log.csv of runs made before the rename says "-both"."""
    assert parse_loss_name(old) == ("lovasz_hinge", term)


@pytest.mark.parametrize(("kwargs", "expected"), [
    ({"scnp": "both"}, ("scnp_l1_distance", "scnp_lovasz_hinge")),
    ({"scnp": "mask", "mode": "both"}, ("l1_distance", "scnp-plain+penalized_lovasz_hinge")),
])
def test_old_spellings_work_with_a_deprecation_warning(kwargs, expected):
    with pytest.warns(FutureWarning, match="is deprecated.*use '(mask\\+seed|plain\\+penalized)'"):
        loss = make_loss(**kwargs)
    assert (loss.scnp_seed_loss_name, loss.scnp_mask_loss_name) == expected


# --- identity at window 1 against upstream's own callables ----------------------------


@pytest.mark.parametrize("mask_loss", UPSTREAM_MASK_LOSSES)
@pytest.mark.parametrize(("mode", "factor"), [("penalized", 1.0), ("plain+penalized", 1.5)])
def test_mask_loss_window_1_is_upstream(mask_loss, mode, factor):
    dist, crop = crops()
    sigma = torch.ones(24, 24)
    ours = make_loss(mask_loss=mask_loss, scnp="mask", window=1, mode=mode, weight=0.5)
    reference = upstream_loss(binary_loss_fn_str=mask_loss)
    value, grad = value_and_grad(ours.binary_loss_fn, dist, crop, sigma=sigma)
    expected, expected_grad = value_and_grad(reference.binary_loss_fn, dist, crop)
    if mode == "penalized":
        assert torch.equal(value, expected)
        assert torch.equal(grad, expected_grad)
    torch.testing.assert_close(value, factor * expected)
    torch.testing.assert_close(grad, factor * expected_grad)


@pytest.mark.parametrize("seed_loss", SEED_LOSSES)
@pytest.mark.parametrize("sparse", [False, True])
@pytest.mark.parametrize("bg_weight", [None, 0.3])
def test_seed_loss_window_1_is_upstream(seed_loss, sparse, bg_weight):
    x, y, mask = seed_inputs(sparse=sparse)
    ours = make_loss(seed_loss=seed_loss, scnp="seed", window=1, bg_weight=bg_weight)
    reference = upstream_loss(seed_loss_fn=seed_loss, bg_weight=bg_weight)
    value, grad = value_and_grad(ours.seed_loss, x, y, mask=mask)
    expected, expected_grad = value_and_grad(reference.seed_loss, x, y, mask=mask)
    assert torch.equal(value, expected)
    assert torch.equal(grad, expected_grad)


@pytest.mark.parametrize("seed_loss", SEED_LOSSES)
@pytest.mark.parametrize("mask_loss", ["lovasz_hinge", "dice_loss"])
def test_scnp_off_is_upstream_in_a_full_forward(seed_loss, mask_loss):
    torch.manual_seed(0)
    model = InstanSeg_UNet(in_channels=3, out_channels=[[2, 2, 1]], layers=[64, 32, 16])
    image = torch.randn(2, 3, 64, 64)
    labels = torch.cat([disks(), disks(centres=((32, 32), (32, 45)), radius=8)])
    values = []
    for loss in (
        make_loss(seed_loss=seed_loss, mask_loss=mask_loss, scnp="off", n_sigma=2),
        make_loss(seed_loss=seed_loss, mask_loss=mask_loss, scnp="mask+seed", window=1, n_sigma=2),
        upstream_loss(seed_loss_fn=seed_loss, binary_loss_fn_str=mask_loss),
    ):
        loss.initialize_pixel_classifier(model)
        torch.manual_seed(1)  # upstream samples seeds with randperm
        values.append(loss(model(image), labels.clone()))
    assert values[0] == values[2]
    assert values[1] == values[2]


# --- penalization -----------------------------------------------------------------------


@pytest.mark.parametrize("mask_loss", MASK_LOSSES)
@pytest.mark.parametrize("window", [3, 7])
def test_mask_loss_penalized_is_at_least_plain(mask_loss, window):
    dist, crop = crops()
    plain = make_loss(mask_loss=mask_loss, scnp="off").binary_loss_fn(dist, crop, sigma=None)
    penalized = make_loss(mask_loss=mask_loss, scnp="mask", window=window).binary_loss_fn(dist, crop, sigma=None)
    assert penalized > plain


@pytest.mark.parametrize("seed_loss", SEED_LOSSES)
@pytest.mark.parametrize("sparse", [False, True])
@pytest.mark.parametrize("bg_weight", [None, 0.3])
def test_seed_loss_plain_plus_penalized_adds_the_terms(seed_loss, sparse, bg_weight):
    x, y, mask = seed_inputs(sparse=sparse)
    plain = make_loss(seed_loss=seed_loss, scnp="off", bg_weight=bg_weight).seed_loss(x, y, mask=mask)
    penalized = make_loss(seed_loss=seed_loss, scnp="seed", bg_weight=bg_weight).seed_loss(x, y, mask=mask)
    both = make_loss(seed_loss=seed_loss, scnp="seed", mode="plain+penalized", weight=0.5,
                     bg_weight=bg_weight).seed_loss(x, y, mask=mask)
    if seed_loss == "binary_xloss":  # BCE is monotone in the logit: SCNP can only add
        assert penalized > plain
    torch.testing.assert_close(both, plain + 0.5 * penalized)


def upstream_distance(y):
    """Upstream's seed target, restated from update_seed_loss: (instance-normalized EDT - 0.5) * 15."""
    return (instance_wise_edt(y.float(), edt_type="edt") - 0.5) * 15


def signed_error_scnp_oracle(x, y, mask, window, bg_weight, squared):
    """The distance-seed SCNP by brute force: each annotated pixel takes the min (nucleus) or max
    (background) signed error x - t over the annotated same-class pixels of its window."""
    t = upstream_distance(y).reshape(x.shape)
    e = (x - t).reshape(-1)
    fg = (y > 0).reshape(-1).numpy()
    annotated = np.ones_like(fg) if mask is None else mask.reshape(-1).numpy()
    height, width = x.shape[-2:]
    e_values = e.detach().numpy()
    source = np.arange(height * width)
    r = window // 2
    for i in range(height):
        for j in range(width):
            k = i * width + j
            if not annotated[k]:
                continue
            best = k
            for a in range(max(0, i - r), min(height, i + r + 1)):
                for b in range(max(0, j - r), min(width, j + r + 1)):
                    n = a * width + b
                    if annotated[n] and fg[n] == fg[k]:
                        worse = e_values[n] < e_values[best] if fg[k] else e_values[n] > e_values[best]
                        best = n if worse else best
            source[k] = best
    e_tilde = e[torch.from_numpy(source)]
    per_pixel = e_tilde**2 if squared else e_tilde.abs()
    weights = torch.ones_like(per_pixel)
    if bg_weight is not None:  # upstream weights every pixel whose target is below 0, the nuclei's rims too
        weights = torch.where(t.reshape(-1) < 0, bg_weight, 1.0)
    keep = torch.from_numpy(annotated.astype(bool)).float()
    return (per_pixel * weights * keep).sum() / keep.sum()


@pytest.mark.parametrize("seed_loss", ["l1_distance", "l2_distance"])
@pytest.mark.parametrize("sparse", [False, True])
@pytest.mark.parametrize("bg_weight", [None, 0.3])
@pytest.mark.parametrize("window", [3, 5])
def test_distance_seed_scnp_matches_brute_force(seed_loss, sparse, bg_weight, window):
    x, y, mask = seed_inputs(sparse=sparse)
    x = x * 2 + upstream_distance(y)[None].reshape(x.shape)  # errors of both signs around the target
    loss = make_loss(seed_loss=seed_loss, scnp="seed", window=window, bg_weight=bg_weight)
    value, grad = value_and_grad(loss.seed_loss, x, y, mask=mask)
    expected, expected_grad = value_and_grad(signed_error_scnp_oracle, x, y, mask, window, bg_weight,
                                             seed_loss == "l2_distance")
    torch.testing.assert_close(value, expected)
    torch.testing.assert_close(grad, expected_grad)


@pytest.mark.parametrize("seed_loss", ["l1_distance", "l2_distance"])
@pytest.mark.parametrize(("where", "error", "propagated"), [
    ((5, 5), -5.0, False),    # background predicted more confidently than its target
    ((20, 20), +5.0, False),  # a nucleus centre above its target
    ((20, 20), -5.0, True),   # a nucleus centre below its target: weakens the seed
    ((5, 5), +5.0, True),     # background above its target: looks like a nucleus
])
def test_distance_seed_scnp_is_one_sided(seed_loss, where, error, propagated):
    """Only errors towards the other class spread to the 3x3 same-class neighbours."""
    y = disks()[0]
    x = upstream_distance(y).reshape(y.shape).clone()
    loss = make_loss(seed_loss=seed_loss, scnp="seed", window=3)
    assert loss.seed_loss(x, y) == 0  # a perfect map costs nothing
    x[(0, *where)] += error
    plain = upstream_loss(seed_loss_fn=seed_loss).seed_loss(x, y)
    penalized = loss.seed_loss(x, y)
    assert plain > 0
    if propagated:  # all nine pixels of the window are of the pixel's class
        torch.testing.assert_close(penalized, 9 * plain)
    else:
        assert penalized == 0


@pytest.mark.parametrize("window", [3, 5])
def test_worst_error_pooling_is_scnp_for_a_monotone_loss(window):
    """The module's derivation: for BCE, pooling the per-pixel loss over same-class
    neighbours equals the per-pixel loss of the SCNP-penalized logits, exactly."""
    z = torch.randn(2, 1, 33, 31, generator=torch.Generator().manual_seed(3)) * 4
    y = (torch.rand(2, 1, 33, 31, generator=torch.Generator().manual_seed(4)) > 0.5).float()
    per_pixel = torch.nn.functional.binary_cross_entropy_with_logits
    pooled = same_class_max(per_pixel(z, y, reduction="none"), y, window)
    assert torch.equal(per_pixel(scnp(z, y, window), y, reduction="none"), pooled)


@pytest.mark.parametrize("seed_loss", SEED_LOSSES)
def test_seed_loss_weak_pixel_collects_one_gradient_per_neighbour(seed_loss):
    """A weak pixel in the middle of a cell is the worst of its 3x3 window: its
    gradient is 9x its plain gradient, one share per neighbour it reaches."""
    y = disks()[0]
    noise = torch.rand(y.shape, generator=torch.Generator().manual_seed(0)) * 0.1
    if seed_loss == "binary_xloss":
        x = torch.where(y > 0, 5.0, -5.0) + noise
    else:  # upstream's regression target, so that every error is small but the weak pixel's
        x = (instance_wise_edt(y.float(), edt_type="edt")[None] - 0.5) * 15 + noise
    x[0, 20, 20] -= 8.0  # the centre of cell 1
    _, plain_grad = value_and_grad(upstream_loss(seed_loss_fn=seed_loss).seed_loss, x, y)
    _, grad = value_and_grad(make_loss(seed_loss=seed_loss, scnp="seed", window=3).seed_loss, x, y)
    assert plain_grad[0, 20, 20] != 0
    torch.testing.assert_close(grad[0, 20, 20], 9 * plain_grad[0, 20, 20])
    assert torch.isfinite(grad).all()
    # its eight neighbours took the weak value, so nothing flows to them from themselves
    window = grad[0, 19:22, 19:22].clone()
    window[1, 1] = 0
    assert window.abs().sum() < 9 * plain_grad[0, 20, 20].abs()


@pytest.mark.parametrize("seed_loss", SEED_LOSSES)
def test_seed_loss_unannotated_pixels_are_no_neighbours(seed_loss):
    """Whatever the model predicts on unannotated pixels cannot change the loss."""
    x, y, mask = seed_inputs(sparse=True)
    loss = make_loss(seed_loss=seed_loss, scnp="seed", window=5)
    wild = x.clone()
    wild[~mask] = torch.linspace(-1e4, 1e4, int((~mask).sum()), dtype=x.dtype)
    assert loss.seed_loss(wild, y, mask=mask) == loss.seed_loss(x, y, mask=mask)


@pytest.mark.parametrize("scnp", SCNP_TARGETS)
def test_full_forward_backward_through_unet(scnp):
    """InstanSeg_UNet + the loss on touching disks, with sparse labels in one image."""
    torch.manual_seed(0)
    model = InstanSeg_UNet(in_channels=3, out_channels=[[2, 2, 1]], layers=[64, 32, 16])
    labels = torch.cat([disks(), disks(centres=((32, 32), (32, 45)), radius=8)])
    labels[1, :, :10] = -1
    image = torch.randn(2, 3, 64, 64)
    values = {}
    for setting in ("off", scnp):
        loss = make_loss(scnp=setting, window=3, n_sigma=2)
        loss.initialize_pixel_classifier(model)
        model.zero_grad()
        torch.manual_seed(1)
        values[setting] = loss(model(image), labels.clone())
        values[setting].backward()
        grads = [p.grad for p in model.parameters() if p.grad is not None]
        assert grads and all(torch.isfinite(g).all() for g in grads)
        assert any(g.abs().sum() > 0 for g in grads)
    if scnp == "off":
        assert values["off"] > 0
    else:  # all of upstream's terms are monotone, so SCNP can only add
        assert values[scnp] > values["off"]


# --- registration with upstream ------------------------------------------------------------


def test_registered_names_work_in_upstream_constructor():
    loss = InstanSeg(binary_loss_fn_str="scnp-w5_dice_loss", seed_loss_fn="scnp-plain+penalized_binary_xloss",
                     device="cpu")
    assert loss.scnp_active == {
        "mask": SCNPTerm(window=5),
        "seed": SCNPTerm(mode="plain+penalized"),
    }
    x, y, _ = seed_inputs()
    plain = upstream_loss(seed_loss_fn="binary_xloss").seed_loss(x, y)
    assert loss.seed_loss(x, y) > 2 * plain  # L(z) + L(z~) with L(z~) > L(z)


@pytest.mark.parametrize("scnp_in_hotstart", [False, True])
def test_scnp_survives_upstreams_hotstart_swap(scnp_in_hotstart):
    loss = make_loss(seed_loss="l1_distance", mask_loss="lovasz_hinge", scnp="mask+seed",
                     scnp_in_hotstart=scnp_in_hotstart)
    x, y, _ = seed_inputs()
    dist, crop = crops()
    plain_seed = upstream_loss(seed_loss_fn="binary_xloss").seed_loss(x, y)
    plain_mask = upstream_loss(binary_loss_fn_str="dice_loss").binary_loss_fn(dist, crop)

    # upstream's scripts/train.py: hotstart epochs, then the configured losses again
    loss.update_seed_loss("binary_xloss")
    loss.update_binary_loss("dice_loss")
    hot_seed, hot_mask = loss.seed_loss(x, y), loss.binary_loss_fn(dist, crop, sigma=None)
    if scnp_in_hotstart:
        assert loss.scnp_seed_loss_name == "scnp_binary_xloss"
        assert hot_seed > plain_seed and hot_mask > plain_mask
    else:
        assert loss.scnp_active == {"mask": None, "seed": None}
        assert hot_seed == plain_seed and hot_mask == plain_mask

    loss.update_seed_loss("scnp_l1_distance")
    loss.update_binary_loss("scnp_lovasz_hinge")
    assert loss.scnp_active == {"mask": SCNPTerm(), "seed": SCNPTerm()}
    loss.update_seed_loss("distance_and_binary_loss")  # upstream-only, never with SCNP
    assert loss.scnp_active["seed"] is None
    loss.update_seed_loss("scnp_l1_distance")
    plain_l1 = upstream_loss(seed_loss_fn="l1_distance").seed_loss(x, y)
    assert loss.seed_loss(x, y) > plain_l1


def test_experiment_log_names_reload_through_upstream(tmp_path):
    """The path of upstream's scripts/test.py: experiment_log.csv -> InstanSeg(...)."""
    log = {"binary_loss_fn": "scnp-w7_cedice", "seed_loss_fn": "scnp_l2_distance", "dim_in": 3, "n_sigma": 2,
           "dim_out": 5, "dim_coords": 2, "norm": "BATCH", "feature_engineering": "0"}
    pd.DataFrame.from_dict(log, orient="index").to_csv(tmp_path / "experiment_log.csv", header=False)
    model_dict = read_model_args_from_csv(tmp_path)
    loss = InstanSeg(binary_loss_fn_str=model_dict["binary_loss_fn"], seed_loss_fn=model_dict["seed_loss_fn"],
                     n_sigma=model_dict["n_sigma"], device="cpu")
    assert (loss.scnp_mask_loss_name, loss.scnp_seed_loss_name) == ("scnp-w7_cedice", "scnp_l2_distance")


def test_install_is_idempotent_and_reversible():
    wrapped = InstanSeg.update_binary_loss
    install()
    assert InstanSeg.update_binary_loss is wrapped
    with upstream_only():
        assert not is_installed()
        with pytest.raises(NotImplementedError):
            InstanSeg(seed_loss_fn="scnp_binary_xloss", device="cpu")
    assert is_installed()
    assert InstanSeg(seed_loss_fn="scnp_binary_xloss", device="cpu").scnp_seed_loss_name == "scnp_binary_xloss"


# --- bad input -------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("kwargs", "error", "match"),
    [
        ({"scnp": "mask2"}, ValueError, r"scnp must be one of 'off', 'mask', 'seed', 'mask\+seed', got 'mask2' \(did you mean 'mask'\?\)"),
        ({"seed_loss": "l1"}, ValueError, "seed_loss must be one of"),
        ({"mask_loss": "binary_xloss"}, ValueError, "mask_loss must be one of .*'cedice'"),
        ({"window": 4}, ValueError, "odd"),
        ({"window": (3, 3, 3)}, ValueError, "one size per spatial dim"),
        ({"mode": "sum"}, ValueError, r"mode must be one of 'penalized', 'plain\+penalized'"),
        ({"weight": -1.0}, ValueError, "weight must be finite and >= 0"),
        ({"weight": "1"}, TypeError, "weight must be a number"),
        ({"seed_loss_fn": "l1_distance"}, TypeError, "pass the loss through seed_loss="),
    ],
)
def test_make_loss_bad_input(kwargs, error, match):
    with pytest.raises(error, match=match):
        make_loss(**kwargs)


def test_update_methods_reject_unknown_names_clearly():
    loss = make_loss()
    with pytest.raises(ValueError, match="mask loss must be one of"):
        loss.update_binary_loss("binary_xloss")  # upstream: UnboundLocalError
    with pytest.raises(ValueError, match="seed loss with SCNP must be one of"):
        loss.update_seed_loss("scnp_distance_and_binary_loss")
