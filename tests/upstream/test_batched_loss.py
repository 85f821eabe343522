"""The batched InstanSeg loss, against upstream's own per-image ``InstanSeg.forward`` (CPU)."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from instanseg.utils.loss.instanseg_loss import InstanSeg, feature_engineering, torch_peak_local_max
from instanseg.utils.loss.lovasz_losses import lovasz_hinge, lovasz_hinge_flat
from instanseg.utils.pytorch_utils import instance_wise_edt
from torch import nn

import instanseg_scnp
from instanseg_scnp.upstream import batched_loss_class, lovasz_hinge_per_crop, make_loss
from instanseg_scnp.upstream.batched_loss import find_peaks, instance_normalized_edt

SIZE = 64
WINDOW = 32
N_SIGMA = 2
CAP = 50


@pytest.fixture(autouse=True, scope="module")
def registered():
    instanseg_scnp.register()


def disks(centres, radius, shape=(SIZE, SIZE)):
    """(H, W) int64 labels of disks, later ones over earlier ones (so they touch and overlap)."""
    yy, xx = np.mgrid[: shape[0], : shape[1]]
    labels = np.zeros(shape, np.int64)
    for k, (cy, cx) in enumerate(centres, start=1):
        labels[(yy - cy) ** 2 + (xx - cx) ** 2 < radius**2] = 3 * k + 4  # not 1..N: upstream relabels
    return torch.from_numpy(labels)


def tiles(count, size, step, offset=4):
    """(H, W) labels of ``count`` squares of side ``size`` on a grid of pitch ``step`` (touching if equal)."""
    labels = torch.zeros(SIZE, SIZE, dtype=torch.int64)
    per_row = (SIZE - offset) // step
    for k in range(count):
        y, x = offset + (k // per_row) * step, offset + (k % per_row) * step
        labels[y : y + size, x : x + size] = k + 1
    return labels


def batch():
    """Labels (B, 1, H, W) and predictions (B, 5, H, W) covering upstream's per-image cases.

    0: touching disks; 1: no instances; 2: sparse (-1 block over cells and background);
    3: one label everywhere; 4: all unannotated; 5: cells but no seed above 0.5;
    6: 16 touching squares with more than 50 peaks; 7: two cells.
    """
    labels = torch.stack([
        disks([(20, 20), (20, 33), (44, 40), (40, 15), (8, 56)], 7),
        torch.zeros(SIZE, SIZE, dtype=torch.int64),
        disks([(16, 16), (16, 29), (40, 40), (50, 12)], 8),
        torch.full((SIZE, SIZE), 5),
        torch.full((SIZE, SIZE), -1),
        disks([(30, 30), (30, 44)], 7),
        tiles(16, 14, 14),
        disks([(32, 32), (32, 46)], 8),
    ])[:, None]
    labels[2, 0, 25:50, 20:60] = -1
    generator = torch.Generator().manual_seed(0)
    prediction = torch.randn(len(labels), 5, SIZE, SIZE, generator=generator) * 2
    prediction[5, -1] = -5 - torch.rand(SIZE, SIZE, generator=generator)
    return prediction, labels


def losses(**kwargs):
    """Upstream's loss and the batched one, sharing one pixel classifier."""
    kwargs = {"n_sigma": N_SIGMA, "window_size": WINDOW} | kwargs
    reference, batched = make_loss(**kwargs), make_loss(batched=True, **kwargs)
    holder = nn.Module()
    torch.manual_seed(0)
    reference.initialize_pixel_classifier(holder)
    batched.initialize_pixel_classifier(holder)
    assert type(reference) is InstanSeg and batched.pixel_classifier is reference.pixel_classifier
    return reference, batched


def value_and_grads(loss, prediction, labels, seed=1):
    prediction = prediction.clone().requires_grad_()
    labels = labels.clone()  # upstream writes into it
    torch.manual_seed(seed)
    value = loss(prediction, labels)
    grads = torch.autograd.grad(value.sum(), [prediction, *loss.pixel_classifier.parameters()], allow_unused=True)
    return value.detach(), [torch.zeros(()) if g is None else g for g in grads], labels, torch.get_rng_state()


def assert_same_loss(reference, batched, prediction, labels, **kwargs):
    expected, expected_grads, expected_labels, expected_rng = value_and_grads(reference, prediction, labels, **kwargs)
    value, grads, labels_after, rng = value_and_grads(batched, prediction, labels, **kwargs)
    torch.testing.assert_close(value, expected, rtol=1e-5, atol=1e-7)
    for grad, expected_grad in zip(grads, expected_grads, strict=True):
        torch.testing.assert_close(grad, expected_grad, rtol=1e-5, atol=1e-5 * float(expected_grad.abs().max()))
    assert torch.equal(labels_after, expected_labels)  # the same in-place write as upstream's
    assert torch.equal(rng, expected_rng)  # the same random draws
    return value, grads


SCNP_SETTINGS = [
    {"scnp": "off"},
    {"scnp": "seed", "window": 3},
    {"scnp": "mask", "window": 3},
    {"scnp": "mask+seed", "window": 5, "mode": "plain+penalized", "weight": 0.5},
]


@pytest.mark.parametrize("seed_loss", ["l1_distance", "l2_distance", "binary_xloss"])
@pytest.mark.parametrize("mask_loss", ["lovasz_hinge", "dice_loss"])
@pytest.mark.parametrize("setting", SCNP_SETTINGS, ids=lambda s: "-".join(map(str, s.values())))
@pytest.mark.parametrize("bg_weight", [None, 0.3])
def test_forward_matches_upstream(seed_loss, mask_loss, setting, bg_weight):
    prediction, labels = batch()
    reference, batched = losses(seed_loss=seed_loss, mask_loss=mask_loss, bg_weight=bg_weight, **setting)
    value, grads = assert_same_loss(reference, batched, prediction, labels)
    assert value > 0 and all(g.abs().sum() > 0 for g in grads)


@pytest.mark.parametrize("mask_loss", ["cedice", "general_dice_loss"])
def test_forward_other_mask_losses_per_image_match_upstream(mask_loss):
    prediction, labels = batch()
    assert_same_loss(*losses(mask_loss=mask_loss, scnp="mask+seed"), prediction, labels)


def test_forward_batch_has_the_cases_it_claims():
    """Image 6 has more than 50 peaks (upstream's subset drawn alike), image 5 none."""
    prediction, labels = batch()
    on_cells = torch.sigmoid(prediction[:, -1]) * (labels[:, 0] > 0)
    counts = torch.bincount(find_peaks(on_cells)[:, 0], minlength=len(labels))
    assert counts[6] > CAP and counts[5] == 0 and counts[0] > 0


def test_forward_cells_and_nuclei_matches_upstream():
    prediction, labels = batch()
    nuclei = labels.roll(1, dims=0)
    reference, batched = losses(scnp="mask+seed", cells_and_nuclei=True)
    two_channels = torch.cat([prediction, prediction.flip(-1)], 1), torch.cat([labels, nuclei], 1)
    assert_same_loss(reference, batched, *two_channels)


def test_forward_zero_instance_weight_matches_upstream():
    """Then upstream adds the seed loss of every annotated image, one-label images included."""
    prediction, labels = batch()
    reference, batched = losses(scnp="seed", instance_weight=0)
    keep = [0, 1, 2, 4, 5]  # upstream's seed target of a one-label image is NaN (its EDT is inf) ...
    assert_same_loss(reference, batched, prediction[keep], labels[keep])
    for loss in (reference, batched):  # ... and so is ours
        assert loss(prediction[[3]], labels[[3]].clone()).isnan()


def test_forward_only_skipped_images_returns_upstreams_zero_map():
    prediction, labels = batch()
    reference, batched = losses(scnp="mask+seed")
    expected, value = (loss(prediction[[3, 4]], labels[[3, 4]].clone()) for loss in (reference, batched))
    assert value.shape == expected.shape == (2, SIZE, SIZE) and not value.any()


def test_forward_upstream_only_seed_loss_falls_back_per_image():
    prediction, labels = batch()
    prediction = torch.cat([prediction[:, :4], prediction[:, 4:].neg(), prediction[:, 4:]], 1)
    reference, batched = losses(scnp="mask", dim_seeds=2)
    for loss in (reference, batched):
        loss.update_seed_loss("distance_and_binary_loss")
    assert_same_loss(reference, batched, prediction, labels)


def test_instance_cap_keeps_exactly_cap_instances():
    """64 separate squares, one peak each: 50 crops, a random subset (upstream draws another)."""
    labels = tiles(64, 3, 7, offset=3)[None, None]
    prediction = torch.randn(1, 5, SIZE, SIZE, generator=torch.Generator().manual_seed(0))
    prediction[:, -1] += 2
    assert len(labels.unique()) - 1 == 64
    reference, batched = losses()
    inputs = []  # the pixel classifier's input, (crops * ws * ws, features)
    reference.pixel_classifier.register_forward_hook(lambda module, args, out: inputs.append(args[0]))
    for loss, seed in ((reference, 1), (batched, 1), (batched, 2), (batched, 3)):
        torch.manual_seed(seed)
        loss(prediction, labels.clone())
    assert [len(x) // WINDOW**2 for x in inputs] == [CAP] * 4
    first_pixels = {tuple(x[:: WINDOW**2, 0].tolist()) for x in inputs[1:]}
    assert len(first_pixels) == 3  # another subset for another seed


def test_batched_loss_class_is_a_cached_subclass():
    cls = batched_loss_class()
    assert cls is batched_loss_class() and issubclass(cls, InstanSeg)
    assert cls.forward is not InstanSeg.forward and cls.update_seed_loss is InstanSeg.update_seed_loss
    assert cls.__name__ == "BatchedInstanSegLoss"
    from instanseg_scnp.upstream import batched_loss

    assert batched_loss.BatchedInstanSegLoss is cls  # where pickle looks for it
    loss = make_loss(batched=True, scnp="mask", window=5)
    assert type(loss) is cls and loss.scnp_mask_loss_name == "scnp-w5_lovasz_hinge"


def test_forward_rejects_mismatched_shapes():
    prediction, labels = batch()
    _, batched = losses()
    with pytest.raises(ValueError, match=r"\(B, C, H, W\).*got \(8, 5, 64, 64\) and \(7, 1, 64, 64\)"):
        batched(prediction, labels[1:])


# --- the parts ----------------------------------------------------------------------------


def random_crops(n=9, size=12, seed=0):
    """Crop logits (N, ws, ws) and masks with an empty, a full and partial foregrounds."""
    generator = torch.Generator().manual_seed(seed)
    logits = torch.randn(n, size, size, generator=generator) * 2
    masks = (torch.rand(n, size, size, generator=generator) < torch.rand(n, 1, 1, generator=generator)).float()
    masks[0], masks[1] = 0, 1
    return logits, masks


def test_lovasz_hinge_per_crop_matches_upstream():
    logits, masks = random_crops()
    ours = logits.clone().requires_grad_()
    theirs = logits.clone().requires_grad_()
    per_crop = lovasz_hinge_per_crop(ours, masks)
    expected = torch.stack([lovasz_hinge_flat(z.flatten(), y.flatten()) for z, y in zip(theirs, masks, strict=True)])
    torch.testing.assert_close(per_crop, expected)
    torch.testing.assert_close(per_crop[0], torch.relu(1 + logits[0]).max())  # no foreground: the worst error
    torch.testing.assert_close(per_crop[1], torch.relu(1 - logits[1]).mean())  # all foreground: the mean hinge
    mean, upstream_mean = per_crop.mean(), lovasz_hinge(theirs, masks, per_image=True)
    torch.testing.assert_close(mean, upstream_mean)
    (grad,), (expected_grad,) = torch.autograd.grad(mean, ours), torch.autograd.grad(upstream_mean, theirs)
    torch.testing.assert_close(grad, expected_grad)


def test_lovasz_hinge_per_crop_rejects_mismatched_shapes():
    with pytest.raises(ValueError, match=r"one shape \(N, \.\.\.\), got \(2, 3\) and \(2, 4\)"):
        lovasz_hinge_per_crop(torch.zeros(2, 3), torch.zeros(2, 4))


def test_instance_normalized_edt_matches_upstream():
    _, labels = batch()
    labels = labels[[0, 1, 2, 5, 6, 7], 0].clamp_min(0)
    expected = torch.stack([instance_wise_edt(y[None].float(), edt_type="edt") for y in labels])
    assert torch.equal(instance_normalized_edt(labels), expected)


def test_find_peaks_matches_upstream_on_plateaus():
    values = torch.rand(3, 40, 40, generator=torch.Generator().manual_seed(0)).mul(4).round().div(4)  # many ties
    peaks = find_peaks(values)
    for b, image in enumerate(values):
        expected = torch_peak_local_max(image, neighbourhood_size=3, minimum_value=0.5)
        assert torch.equal(peaks[peaks[:, 0] == b, 1:], expected.long())


def test_feature_engineering_on_stacked_images_equals_per_image_calls():
    """What the batched forward relies on: images stacked along rows, crop rows offset by b * H."""
    generator = torch.Generator().manual_seed(0)
    maps, sigma = torch.randn(3, 2, 20, 16, generator=generator), torch.randn(3, 2, 20, 16, generator=generator)
    centres = torch.randn(3, 2, generator=generator)
    mesh = torch.stack(torch.meshgrid(torch.arange(8), torch.arange(8), indexing="ij")).flatten(1)
    mesh = mesh + torch.tensor([[12], [8]])
    per_image = torch.cat([feature_engineering(maps[b], centres[b : b + 1], sigma[b], 4, mesh) for b in range(3)])
    stacked_mesh = torch.cat([mesh + torch.tensor([[b * 20], [0]]) for b in range(3)], 1)
    stacked = feature_engineering(maps.transpose(0, 1).reshape(2, 60, 16), centres,
                                  sigma.transpose(0, 1).reshape(2, 60, 16), 4, stacked_mesh)
    assert torch.equal(stacked, per_image)
