r"""Instance-mask losses beyond upstream's: the SCNP paper's CEDice and its cell baselines.

Each loss takes what upstream's ``InstanSeg`` loss passes its ``binary_loss_fn``:
``pred`` (N, 1, ws, ws), the pixel classifier's logits on the crop around each
of N seeds, and ``gt`` (N, ws, ws), that seed's own nucleus in {0, 1}. Like
upstream's ``dice_loss`` (MONAI's Dice with the crops as channels), every loss
is computed per crop and averaged over the crops, so a small nucleus counts as
much as a large one. Only torch, MONAI and scipy are imported here; SCNP is applied
to ``pred`` before these functions are called (:mod:`instanseg_scnp.upstream.hook`).

=============  ==========================================================  =====================
name           per crop                                                    source
=============  ==========================================================  =====================
``cedice``     BCE + 1 - soft Dice                                         SCNP authors' CEDice
``tversky``    1 - TI, TI = TP / (TP + α FP + β FN), α = 0.3, β = 0.7       Salehi et al. 2017
``focal``      mean of -(1 - p_t)^γ log p_t, γ = 2                         Lin et al. 2017
``rwloss``     mean of (1 - σ(z))·M_bg + σ(z)·M_fg, rectified RW maps     Valverde & Tohka 2023
=============  ==========================================================  =====================
"""

from __future__ import annotations

import numpy as np
import torch
import torch.nn.functional as F
from monai.losses import FocalLoss, TverskyLoss
from scipy import ndimage

from instanseg_scnp._options import ADDED_MASK_LOSSES

__all__ = ["OUR_MASK_LOSSES", "cedice_loss", "focal_loss", "rectified_region_wise_maps", "rwloss", "tversky_loss"]

DICE_SMOOTH = 1e-5
"""The SCNP authors' Dice smoothing (numerator and denominator)."""
TVERSKY_ALPHA, TVERSKY_BETA = 0.3, 0.7
FOCAL_GAMMA = 2.0

_TVERSKY = TverskyLoss(sigmoid=True, alpha=TVERSKY_ALPHA, beta=TVERSKY_BETA)
_FOCAL = FocalLoss(gamma=FOCAL_GAMMA, use_softmax=False)


def _as_channels(pred: torch.Tensor, gt: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """(N, 1, ws, ws) logits and (N, ws, ws) masks as MONAI's (1, N, ws, ws): one channel per crop."""
    return pred[None, :, 0], gt.to(pred.dtype)[None]


def cedice_loss(pred: torch.Tensor, gt: torch.Tensor, **_: object) -> torch.Tensor:
    r"""BCE + soft Dice, per crop: the SCNP authors' CEDice plus the constant 1.

    .. math::

        \mathrm{BCE}(z, y) + 1 - \frac{1}{N} \sum_n
        \frac{2 \sum_i \sigma(z_{ni}) y_{ni} + \epsilon}{\sum_i \sigma(z_{ni}) + \sum_i y_{ni} + \epsilon},
        \qquad \epsilon = 10^{-5},

    BCE averaged over all pixels of all crops. The authors' ``SCNPCEDice``
    (``SCNP/experiments/InstanSeg/compound_losses_scnp.py``) returns the same
    minus 1 (``-mean(Dice)``), so the gradients are equal. One difference: they
    take ``log(p + 1e-15)`` of the sigmoid, which saturates for logits beyond
    about ±34; this uses BCE on the logits, which is exact there and equal
    elsewhere (to ~1e-15 / p).
    """
    target = gt.to(pred.dtype).unsqueeze(1)
    bce = F.binary_cross_entropy_with_logits(pred, target)
    p = torch.sigmoid(pred)
    axes = tuple(range(2, pred.ndim))
    dice = (2 * (p * target).sum(axes) + DICE_SMOOTH) / (p.sum(axes) + target.sum(axes) + DICE_SMOOTH).clamp_min(1e-8)
    return bce + 1 - dice.mean()


def tversky_loss(pred: torch.Tensor, gt: torch.Tensor, **_: object) -> torch.Tensor:
    r"""Tversky loss per crop (MONAI ``TverskyLoss``), averaged over crops.

    .. math::

        1 - \frac{1}{N} \sum_n \frac{TP_n + \epsilon}{TP_n + \alpha FP_n + \beta FN_n + \epsilon},

    with soft counts :math:`TP = \sum \sigma(z) y`, :math:`FP = \sum \sigma(z)(1 - y)`,
    :math:`FN = \sum (1 - \sigma(z)) y`, α = 0.3, β = 0.7 (missed nucleus pixels
    cost more than spurious ones; α = β = 0.5 would be Dice). These are Salehi et
    al.'s values; the SCNP paper's β is not in its public code or project page.
    """
    return _TVERSKY(*_as_channels(pred, gt))


def focal_loss(pred: torch.Tensor, gt: torch.Tensor, **_: object) -> torch.Tensor:
    r"""Binary focal loss (MONAI ``FocalLoss``, γ = 2, no α), the mean over all pixels of all crops.

    .. math::

        -\frac{1}{N |\Omega|} \sum_{n, i} (1 - p_{t})^{\gamma} \log p_{t},
        \qquad p_t = \sigma(z) \text{ if } y = 1 \text{ else } 1 - \sigma(z).

    All crops have the same size, so the mean of per-crop means is this mean.
    """
    return _FOCAL(*_as_channels(pred, gt))


def rectified_region_wise_maps(gt: torch.Tensor) -> torch.Tensor:
    r"""The rectified region-wise (RRW) maps of (N, ws, ws) binary crops, as (N, 2, ws, ws): background, nucleus.

    For class :math:`k` of crop :math:`n`, with :math:`d` the Euclidean distance
    from a pixel of class :math:`k` to the nearest pixel of another class:

    .. math::

        M_{nk}(i) = -\frac{d(i)}{\max_j d(j)} \ \text{inside class } k, \qquad M_{nk}(i) = 1 \ \text{outside},

    so probability on the right class is rewarded most deep inside it, and
    probability on the wrong class costs 1 (Valverde & Tohka 2023; the maximum is
    per crop and class). A class absent from a crop has the map 1 everywhere; one
    filling the crop gets -1 everywhere (our choice: the authors' code leaves that
    case to scipy, which measures to an edge outside the array).
    """
    nucleus = gt.detach().cpu().numpy() != 0
    classes = np.stack([~nucleus, nucleus], axis=1)
    maps = np.ones(classes.shape)
    for n, k in np.ndindex(*classes.shape[:2]):
        inside = classes[n, k]
        if inside.all():  # no other class to be far from
            maps[n, k] = -1
        elif inside.any():
            distance = ndimage.distance_transform_edt(inside)
            maps[n, k][inside] = -distance[inside] / distance.max()
    return torch.from_numpy(maps).to(gt.device)


def rwloss(pred: torch.Tensor, gt: torch.Tensor, **_: object) -> torch.Tensor:
    r"""Region-wise loss with rectified region-wise maps (Valverde & Tohka, Pattern Recognition 2023).

    .. math::

        \frac{1}{2 N |\Omega|} \sum_{n, i} \big[(1 - \sigma(z_{ni})) M_{n0}(i) + \sigma(z_{ni}) M_{n1}(i)\big],

    the mean over crops, both classes and pixels of the class probabilities
    times :func:`rectified_region_wise_maps`, as the authors' ``RWLoss``
    (``nnUNet/training/loss_functions/rwexp_loss.py`` in jmlipman/RegionWiseLoss:
    the mean of softmax times map); for one logit the two-class softmax of
    :math:`(0, z)` is :math:`(1 - \sigma(z), \sigma(z))`. Its minimum is negative.
    """
    p = torch.sigmoid(pred[:, 0])
    maps = rectified_region_wise_maps(gt).to(pred.dtype)
    return torch.stack([(1 - p) * maps[:, 0], p * maps[:, 1]], dim=1).mean()


OUR_MASK_LOSSES = dict(zip(ADDED_MASK_LOSSES, (cedice_loss, tversky_loss, focal_loss, rwloss), strict=True))
"""Mask losses this package adds to upstream's, by name (:data:`instanseg_scnp._options.ADDED_MASK_LOSSES`)."""
