"""Training recipes: the values a ``TrainConfig`` takes for the settings you leave out.

``demo``
    Five to six minutes on two CPU cores on the synthetic data: an 8-16-32-64 UNet
    (a quarter of upstream's widths), 44 short epochs, 128 px tiles. Its F1 is bound
    by compute: half the epochs (three minutes) reach 0.63-0.68 on the test split, and
    nothing tried at that cost reached 0.7 (docs/training.md). A run with the
    16-32-64-128 UNet took 1.5 times as long per epoch for the same F1 (paired over five
    seeds, docs/training.md). The seed loss is a distance map (``l1_distance``),
    the only seed output upstream's decoder reads correctly (it takes the seed
    channel ``x`` as ``x / 15 + 0.5``). The UNet uses upstream's ``INSTANCE``
    norm, which leaves the output layer unnormalized: with ``BATCH`` the seed
    channel leaves through a BatchNorm whose one scale Adam grows by about the
    learning rate per step, too slowly in a few hundred steps to reach the
    distance target's ±7.5. The pixel classifier is 10 wide, twice upstream's: at
    upstream's 5 it learned little in one seed of five in this budget (its instance
    masks spilled over the neighbours, F1@0.5 0.33); at 10 every seed of five trains
    (docs/training.md).
``upstream``
    Upstream InstanSeg's ``scripts/train.py`` defaults (instanseg-torch 0.1.2):
    ``l1_distance`` seed and ``lovasz_hinge`` mask loss, Adam at 1e-3 without a
    schedule, batch 3, 256 px tiles, 10 hotstart epochs, 128 px crops around each
    seed, a 32-64-128-256 UNet, a pixel classifier 5 wide, 500 epochs of 1,000
    tiles. The test suite checks these against upstream's own argument parser.
``paper``
    ``upstream`` with what the SCNP authors ship for InstanSeg
    (``SCNP/experiments/InstanSeg`` in jmlipman/SCNP-SameClassNeighborPenalization):
    the CEDice mask loss on SCNP-penalized logits only, window 3. The paper does
    not publish InstanSeg's epochs or model selection; this keeps upstream's
    (500 x 1,000 tiles, best validation F1).

Every preset trains with SCNP on the mask loss, window 3, penalized logits only
(``--scnp off`` gives the baseline). An explicit setting always wins over the
preset; ``config.json`` records the preset and every resolved value.
"""

from __future__ import annotations

from instanseg_scnp._options import look_up_option

__all__ = ["PRESETS", "default_preset", "preset_values"]

_SCNP = {"scnp": "mask", "scnp_window": 3, "scnp_mode": "penalized"}

_UPSTREAM = {
    "epochs": 500, "epoch_length": 1000, "batch_size": 3, "tile_size": 256, "lr": 1e-3, "lr_schedule": "constant",
    "seed_loss": "l1_distance", "mask_loss": "lovasz_hinge", "hotstart": 10, "layers": (32, 64, 128, 256),
    "window_size": 128, "norm": "BATCH", "mlp_width": 5, **_SCNP,
}

PRESETS: dict[str, dict[str, object]] = {
    "demo": {
        "epochs": 44, "epoch_length": 96, "batch_size": 4, "tile_size": 128, "lr": 3e-3, "lr_schedule": "cosine",
        "seed_loss": "l1_distance", "mask_loss": "dice_loss", "hotstart": 2, "layers": (8, 16, 32, 64),
        "window_size": 64, "norm": "INSTANCE", "mlp_width": 10, **_SCNP,
    },
    "upstream": _UPSTREAM,
    "paper": {**_UPSTREAM, "mask_loss": "cedice", **_SCNP},
}
"""The values of the settings each preset decides (the same keys in every preset)."""


def default_preset(data: str) -> str:
    """``demo`` for the built-in synthetic data, ``upstream`` for any real dataset."""
    return "demo" if data == "synthetic" else "upstream"


def preset_values(preset: str) -> dict[str, object]:
    """A copy of ``PRESETS[preset]``, with a clear error for an unknown name."""
    return dict(PRESETS[look_up_option(preset, PRESETS, name="preset")])
