"""What training borrows from upstream InstanSeg: its network builder, augmentations and validation F1."""

from __future__ import annotations

import numpy as np
import torch

from instanseg_scnp.upstream._compat import upstream
from instanseg_scnp.upstream._quiet import quiet_upstream

__all__ = ["augmenter", "build_model", "validation_f1"]


def build_model(arguments: dict) -> torch.nn.Module:
    """Upstream's network for a run's model arguments (``build_model_from_dict``: the keys of its ``experiment_log.csv``)."""
    with quiet_upstream():
        return upstream().build_model_from_dict(arguments)


def augmenter(tile_size: int, *, train: bool, pixel_size: float | None) -> object:
    """Upstream's "minimal" augmentations for 3-channel tiles of ``tile_size``, its train or test set.

    ``pixel_size`` (µm): rescale to it, as upstream's ``requested_pixel_size``;
    None keeps the images' scale. Called as ``augmenter(image, labels, meta)``.
    """
    parts = upstream()
    dictionary = parts.get_augmentation_dict(3, nuclei_channel=None, amount=0.5, pixel_size=pixel_size,
                                             augmentation_type="minimal")
    return parts.Augmentations(augmentation_dict=dictionary["train" if train else "test"],
                               shape=(tile_size, tile_size), dim_in=3)


def validation_f1(truth: list[np.ndarray], predicted: list[np.ndarray], thresholds: tuple[float, ...]) -> float:
    """Upstream's validation score: F1 of matched cells averaged over the IoU ``thresholds``, pooled over images.

    Upstream's training selects its best epoch by this number; so does ours.
    """
    return float(upstream().robust_average_precision(truth, predicted, threshold=np.array(thresholds)))
