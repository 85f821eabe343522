"""The mask losses this package adds, against their published formulas restated here."""

from __future__ import annotations

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from instanseg_scnp import make_loss
from instanseg_scnp.upstream.mask_losses import (
    OUR_MASK_LOSSES,
    cedice_loss,
    focal_loss,
    rectified_region_wise_maps,
    rwloss,
    tversky_loss,
)


def crops(n=6, size=24, seed=0, scale=3.0):
    """Crop logits (N, 1, ws, ws) and each seed's nucleus (N, ws, ws), disks of growing radius."""
    generator = torch.Generator().manual_seed(seed)
    dist = torch.randn(n, 1, size, size, generator=generator, dtype=torch.float64) * scale
    yy, xx = torch.meshgrid(torch.arange(size), torch.arange(size), indexing="ij")
    radii = torch.arange(3, 3 + n)[:, None, None]
    crop = (((yy - size // 2) ** 2 + (xx - size // 2) ** 2) < radii**2).double()
    return dist, crop


def value_and_grad(fn, x, *args):
    x = x.clone().requires_grad_()
    value = fn(x, *args)
    (grad,) = torch.autograd.grad(value, x)
    return value.detach(), grad


def authors_scnp_cedice(net_output, target, rf=3):
    """``SCNPCEDice.forward`` of SCNP/experiments/InstanSeg/compound_losses_scnp.py in
    jmlipman/SCNP-SameClassNeighborPenalization, restated for (N, 1, H, W) logits: SCNP by two
    max-pools with a +-9999 fill, the sigmoid, CE with log(p + 1e-15) averaged over the batch and
    pixels, and minus the mean over crops of the per-crop Dice (1e-5 smoothing, clipped at 1e-8)."""
    target = target.unsqueeze(1)
    pad = rf // 2
    fg = -F.max_pool2d(-(net_output * target + 9999 * (1 - target)), rf, 1, pad)
    bg = F.max_pool2d(net_output * (1 - target) - 9999 * target, rf, 1, pad)
    p = torch.sigmoid(fg * target + bg * (1 - target))
    dice = (2 * (p * target).sum((2, 3)) + 1e-5) / torch.clip(target.sum((2, 3)) + p.sum((2, 3)) + 1e-5, 1e-8)
    ce = -torch.mean(target * torch.log(p + 1e-15) + (1 - target) * torch.log(1 - p + 1e-15), dim=(0, 2, 3)).sum()
    return ce - dice.mean()


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_scnp_cedice_is_the_authors_plus_one(seed):
    dist, crop = crops(seed=seed)
    loss = make_loss(mask_loss="cedice", scnp="mask", window=3)
    value, grad = value_and_grad(lambda d: loss.binary_loss_fn(d, crop, sigma=None), dist)
    expected, expected_grad = value_and_grad(lambda d: authors_scnp_cedice(d, crop), dist)
    torch.testing.assert_close(value, expected + 1, rtol=0, atol=1e-10)
    torch.testing.assert_close(grad, expected_grad, rtol=1e-4, atol=1e-10)


def test_cedice_dice_is_per_crop_so_small_misses_count():
    """One large nucleus right and five small ones missed: per-crop Dice loss ~5/6, not the
    ~0.3 a Dice pooled over all crops would give."""
    size = 48
    yy, xx = torch.meshgrid(torch.arange(size), torch.arange(size), indexing="ij")
    radii = torch.tensor([20, 3, 3, 3, 3, 3])[:, None, None]
    crop = (((yy - size // 2) ** 2 + (xx - size // 2) ** 2) < radii**2).double()
    dist = torch.full((6, 1, size, size), -20.0, dtype=torch.float64)
    dist[0, 0] = torch.where(crop[0] > 0, 20.0, -20.0)
    p = torch.sigmoid(dist[:, 0])
    per_crop = [(2 * (p[n] * crop[n]).sum() + 1e-5) / (p[n].sum() + crop[n].sum() + 1e-5) for n in range(6)]
    pooled = (2 * (p * crop).sum() + 1e-5) / (p.sum() + crop.sum() + 1e-5)
    bce = F.binary_cross_entropy_with_logits(dist[:, 0], crop)
    dice_part = cedice_loss(dist, crop) - bce
    torch.testing.assert_close(dice_part, 1 - sum(per_crop) / 6)
    assert dice_part > 0.8 and 1 - pooled < 0.35


def test_cedice_stays_finite_where_the_authors_log_saturates():
    dist, crop = crops(scale=60.0)
    value, grad = value_and_grad(cedice_loss, dist, crop)
    assert torch.isfinite(value) and torch.isfinite(grad).all()


def test_tversky_matches_its_definition_per_crop():
    dist, crop = crops()
    p = torch.sigmoid(dist[:, 0])
    tp = (p * crop).sum((1, 2))
    fp = (p * (1 - crop)).sum((1, 2))
    fn = ((1 - p) * crop).sum((1, 2))
    expected = 1 - ((tp + 1e-5) / (tp + 0.3 * fp + 0.7 * fn + 1e-5)).mean()
    torch.testing.assert_close(tversky_loss(dist, crop), expected)


def test_tversky_costs_missed_pixels_more_than_spurious_ones():
    crop = torch.zeros(1, 16, 16, dtype=torch.float64)
    crop[0, 4:12, 4:12] = 1
    missed = torch.where(crop > 0, 10.0, -10.0)[:, None].clone()
    spurious = missed.clone()
    missed[0, 0, 4:6, 4:12] = -10.0    # 16 nucleus pixels missed
    spurious[0, 0, 0:2, 4:12] = 10.0   # 16 background pixels claimed
    assert tversky_loss(missed, crop) > tversky_loss(spurious, crop)


def test_focal_matches_its_definition():
    dist, crop = crops()
    p = torch.sigmoid(dist[:, 0])
    p_t = torch.where(crop > 0, p, 1 - p)
    expected = (-((1 - p_t) ** 2) * torch.log(p_t)).mean()
    torch.testing.assert_close(focal_loss(dist, crop), expected, check_dtype=False)  # MONAI computes in float32


@pytest.mark.parametrize("name", sorted(OUR_MASK_LOSSES))
@pytest.mark.parametrize("scnp", ["off", "mask"])
def test_our_mask_losses_train_with_and_without_scnp(name, scnp):
    """Each loss, with and without SCNP, lowers itself under a few gradient steps."""
    dist, crop = crops()
    loss = make_loss(mask_loss=name, scnp=scnp)
    logits = dist.clone().requires_grad_()
    optimizer = torch.optim.Adam([logits], lr=0.5)
    values = []
    for _ in range(20):
        optimizer.zero_grad()
        value = loss.binary_loss_fn(logits, crop, sigma=None)
        value.backward()
        optimizer.step()
        values.append(value.item())
    assert np.isfinite(values).all() and values[-1] < 0.5 * values[0]


def brute_force_rrw_maps(gt):
    """RRW maps by their definition: for class k, minus the distance to the nearest pixel of the
    other class over its largest value inside class k, and 1 outside class k."""
    n, height, width = gt.shape
    maps = np.ones((n, 2, height, width))
    points = np.stack(np.meshgrid(np.arange(height), np.arange(width), indexing="ij"), -1).reshape(-1, 2)
    for crop in range(n):
        nucleus = gt[crop].numpy().reshape(-1) > 0
        for k, inside in enumerate((~nucleus, nucleus)):
            if inside.any() and (~inside).any():
                gaps = points[inside][:, None, :] - points[~inside][None, :, :]
                distance = np.sqrt((gaps**2).sum(-1)).min(1)
                maps[crop, k].reshape(-1)[inside] = -distance / distance.max()
    return maps


def test_rrw_maps_match_their_definition():
    _, crop = crops(n=3, size=16)
    crop[2, 0:3, 0:16] = 1  # a second region of the nucleus class, touching the border
    np.testing.assert_allclose(rectified_region_wise_maps(crop).numpy(), brute_force_rrw_maps(crop), rtol=1e-6)


def test_rwloss_matches_its_definition():
    dist, crop = crops(n=4, size=16)
    maps = torch.from_numpy(brute_force_rrw_maps(crop))
    p = torch.sigmoid(dist[:, 0])
    expected = ((1 - p) * maps[:, 0] + p * maps[:, 1]).sum() / (2 * p.numel())
    torch.testing.assert_close(rwloss(dist, crop), expected)


def test_rwloss_rewards_depth_and_charges_wrong_pixels():
    """A perfect crop scores the (negative) mean depth; a wrong pixel anywhere costs the same."""
    _, crop = crops(n=1, size=16)
    perfect = torch.where(crop > 0, 30.0, -30.0)[:, None].double()
    maps = brute_force_rrw_maps(crop)
    expected = (maps[:, 1][crop.numpy() > 0].sum() + maps[:, 0][crop.numpy() == 0].sum()) / (2 * crop.numel())
    assert rwloss(perfect, crop).item() == pytest.approx(expected, abs=1e-9) and expected < 0
    wrong = perfect.clone()
    wrong[0, 0, 0, 0] = 30.0  # a background corner called nucleus: + (1 - M_bg) / (2 |Omega|)
    assert rwloss(wrong, crop).item() == pytest.approx(expected + (1 - maps[0, 0, 0, 0]) / (2 * crop.numel()))
