"""A seeded generator of cell images with exact instance labels, built to be hard on topology.

Every image mixes what makes a segmenter split, merge or fragment cells: touching and
overlapping nuclei (pairs placed closer than their radii), a wide spread of sizes
(log-normal radii), elongated and irregular outlines (ellipses with random harmonics),
dumbbells with thin necks (two lobes joined by a narrow bridge, one cell), low contrast,
blur and noise. Two modalities: ``"fluorescence"`` (one channel, bright nuclei on a dark
background) and ``"brightfield"`` (RGB, H&E-like: hematoxylin nuclei on an eosin
background, through the Beer-Lambert law with Ruifrok's stain vectors).

The labels are painted first and the image is rendered *from* them, so the two always
agree: where a later cell covers an earlier one, the covered part belongs to the later
cell, and a cell cut in two by an overlap keeps only its largest piece.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from scipy import ndimage

from instanseg_scnp._options import look_up_option

__all__ = ["MODALITIES", "SYNTHETIC_PIXEL_SIZE", "SyntheticImage", "synthetic_dataset", "synthetic_image"]

MODALITIES = ("fluorescence", "brightfield")

# Ruifrok & Johnston (2001) optical densities per unit stain, RGB
_HEMATOXYLIN = np.array([0.65, 0.70, 0.29])
_EOSIN = np.array([0.07, 0.99, 0.11])


@dataclass(frozen=True)
class SyntheticImage:
    """One generated image.

    Attributes
    ----------
    image : (H, W, C) float32 ndarray
        Values in [0, 1]; C = 1 (fluorescence) or 3 (brightfield RGB).
    labels : (H, W) int32 ndarray
        Instance ids 1..n, 0 background; every cell is one connected piece.
    classes : (H, W) uint8 ndarray
        Per-pixel class: 0 background, 1 ordinary nucleus, 2 dumbbell (two lobes, thin neck).
    """

    image: np.ndarray
    labels: np.ndarray
    classes: np.ndarray


def _cell_mask(shape, centre, radius, elongation, angle, harmonics, rng) -> np.ndarray:
    """An irregular ellipse: radius modulated by random low harmonics of the polar angle."""
    yy, xx = np.indices(shape, dtype=float)
    dy, dx = yy - centre[0], xx - centre[1]
    cos, sin = np.cos(angle), np.sin(angle)
    u, v = (dx * cos + dy * sin) / elongation, -dx * sin + dy * cos
    theta = np.arctan2(v, u)
    boundary = np.ones(shape)
    for order in range(2, 2 + harmonics):
        boundary += rng.uniform(0, 0.12) * np.cos(order * theta + rng.uniform(0, 2 * np.pi))
    return np.hypot(u, v) < radius * boundary


def _dumbbell_mask(shape, centre, radius, angle, rng) -> np.ndarray:
    """Two lobes joined by a neck one to two pixels wide."""
    yy, xx = np.indices(shape, dtype=float)
    half = radius * rng.uniform(1.2, 1.8)
    offset = np.array([np.sin(angle), np.cos(angle)]) * half
    lobes = [np.hypot(yy - c[0], xx - c[1]) < radius * rng.uniform(0.6, 0.9) for c in (centre + offset, centre - offset)]
    along = (yy - centre[0]) * offset[0] / half + (xx - centre[1]) * offset[1] / half
    across = -(yy - centre[0]) * offset[1] / half + (xx - centre[1]) * offset[0] / half
    neck = (np.abs(along) < half) & (np.abs(across) < rng.uniform(0.5, 1.0))
    return lobes[0] | lobes[1] | neck


def _paint(shape, n_cells, rng) -> tuple[np.ndarray, np.ndarray]:
    """Labels and classes; every third cell is placed against the previous one."""
    labels = np.zeros(shape, np.int32)
    classes = np.zeros(shape, np.uint8)
    centre = rng.uniform(0, shape)
    radius = 0.0
    for label in range(1, n_cells + 1):
        new_radius = float(np.clip(rng.lognormal(np.log(7), 0.45), 3, 24))
        if label % 3 == 0 and radius:  # touching or overlapping its predecessor
            direction = rng.uniform(0, 2 * np.pi)
            centre = centre + (radius + new_radius) * rng.uniform(0.75, 1.0) * np.array([np.sin(direction), np.cos(direction)])
        else:
            centre = rng.uniform(0, shape)
        radius = new_radius
        angle = rng.uniform(0, np.pi)
        # draw in a window around the cell: the longest ellipse reaches 2.8 * 1.36 radii
        extent = int(np.ceil(3.9 * radius)) + 2
        low = np.clip(centre.astype(int) - extent, 0, shape)
        high = np.clip(centre.astype(int) + extent + 1, 0, shape)
        window = (slice(low[0], high[0]), slice(low[1], high[1]))
        local_shape, local_centre = tuple(high - low), centre - low
        if rng.random() < 0.1:
            mask, kind = _dumbbell_mask(local_shape, local_centre, radius, angle, rng), 2
        else:
            elongation = rng.uniform(1.0, 2.8) if rng.random() < 0.3 else rng.uniform(1.0, 1.3)
            harmonics = int(rng.integers(0, 4))
            mask, kind = _cell_mask(local_shape, local_centre, radius, elongation, angle, harmonics, rng), 1
        labels[window][mask] = label
        classes[window][mask] = kind
    return _keep_largest_pieces(labels, classes)


def _keep_largest_pieces(labels, classes) -> tuple[np.ndarray, np.ndarray]:
    """Drop the smaller pieces of cells cut in two by a later cell, and renumber 1..n."""
    structure = ndimage.generate_binary_structure(2, 2)
    kept = np.zeros_like(labels)
    for new, (label, box) in enumerate(
        ((label, box) for label, box in enumerate(ndimage.find_objects(labels), start=1) if box is not None), start=1
    ):
        pieces, n = ndimage.label(labels[box] == label, structure)
        largest = np.argmax(np.bincount(pieces.ravel(), minlength=n + 1)[1:]) + 1
        kept[box][pieces == largest] = new
    classes = np.where(kept > 0, classes, 0).astype(np.uint8)
    return kept, classes


def _render(labels, modality, rng) -> np.ndarray:
    """The image seen through a microscope: per-cell stain, texture, blur and noise."""
    n_cells = int(labels.max())
    amount = np.concatenate([[0.0], rng.uniform(0.15, 1.0, n_cells)])  # some cells barely stand out
    texture = ndimage.gaussian_filter(rng.normal(size=labels.shape), 1.5)
    stain = amount[labels] * (1 + 0.3 * texture / (texture.std() + 1e-12))
    stain = ndimage.gaussian_filter(stain, rng.uniform(0.5, 1.5))  # optics
    if modality == "fluorescence":
        background = 0.05 + 0.05 * ndimage.gaussian_filter(rng.normal(size=labels.shape), 8)
        signal = background + 0.6 * stain
        image = rng.poisson(np.clip(signal, 0, None) * 200) / 200 + rng.normal(0, 0.02, labels.shape)
        image = image[..., None]
    else:
        eosin = 0.25 + 0.1 * ndimage.gaussian_filter(rng.normal(size=labels.shape), 4)
        density = 1.2 * stain[..., None] * _HEMATOXYLIN + eosin[..., None] * _EOSIN
        image = np.exp(-density) + rng.normal(0, 0.02, (*labels.shape, 3))
    return np.clip(image, 0, 1).astype(np.float32)


def synthetic_image(
    shape: tuple[int, int] = (256, 256),
    *,
    density: float = 1.0,
    modality: str = "fluorescence",
    rng: int | np.random.Generator | None = None,
) -> SyntheticImage:
    """Generate one image of nuclei with exact instance labels.

    Parameters
    ----------
    shape : (int, int)
        Image size, each at least 32.
    density : float
        Cells per 1,000 pixels (1.0 puts about 65 cells in 256x256), > 0.
    modality : {"fluorescence", "brightfield"}
        One-channel fluorescence, or H&E-like RGB brightfield.
    rng : int or numpy.random.Generator, optional
        Seed or generator; the same seed gives the same image.

    Examples
    --------
    >>> sample = synthetic_image((64, 64), rng=0)
    >>> sample.image.shape, sample.labels.max() > 0
    ((64, 64, 1), np.True_)
    """
    look_up_option(modality, MODALITIES, name="modality")
    if len(shape) != 2 or any(not isinstance(n, int | np.integer) or n < 32 for n in shape):
        raise ValueError(f"shape must be two ints, each >= 32, got {shape!r}")
    if not (np.isfinite(density) and density > 0):
        raise ValueError(f"density must be a positive number (cells per 1,000 pixels), got {density!r}")
    rng = np.random.default_rng(rng)
    n_cells = max(1, round(density * shape[0] * shape[1] / 1000))
    labels, classes = _paint(tuple(shape), n_cells, rng)
    return SyntheticImage(image=_render(labels, modality, rng), labels=labels, classes=classes)


SYNTHETIC_PIXEL_SIZE = 0.5
"""Nominal pixel size (µm) of the synthetic images: their nuclei, 6-48 px across, are 3-24 µm."""


def synthetic_dataset(
    *,
    n_train: int = 48,
    n_validation: int = 8,
    n_test: int = 8,
    shape: tuple[int, int] = (256, 256),
    rng: int | np.random.Generator | None = 0,
) -> dict[str, list[dict]]:
    """A dataset in InstanSeg's format, half fluorescence and half brightfield.

    Each image draws its density from 0.5-1.5 cells per 1,000 pixels. Items carry
    ``image``, ``nucleus_masks`` and the metadata InstanSeg's loaders read
    (``parent_dataset="synthetic"``, ``pixel_size``, ``image_modality``, ``stain``,
    ``licence``). The same seed gives the same dataset.

    Examples
    --------
    >>> data = synthetic_dataset(n_train=2, n_validation=1, n_test=1, shape=(64, 64))
    >>> [len(data[split]) for split in ("Train", "Validation", "Test")]
    [2, 1, 1]
    >>> data["Train"][1]["image"].shape, data["Train"][1]["image_modality"]
    ((64, 64, 3), 'Brightfield')
    """
    counts = {"Train": n_train, "Validation": n_validation, "Test": n_test}
    for split, count in counts.items():
        if not isinstance(count, int | np.integer) or count < 1:
            raise ValueError(f"n_{split.lower()} must be a positive int, got {count!r}")
    rng = np.random.default_rng(rng)
    dataset = {}
    for split, count in counts.items():
        dataset[split] = []
        for index in range(count):
            modality = MODALITIES[index % 2]
            sample = synthetic_image(shape, density=float(rng.uniform(0.5, 1.5)), modality=modality, rng=rng)
            dataset[split].append({
                "image": sample.image,
                "nucleus_masks": sample.labels,
                "parent_dataset": "synthetic",
                "image_modality": modality.capitalize(),
                "stain": "H&E" if modality == "brightfield" else "DAPI",
                "pixel_size": SYNTHETIC_PIXEL_SIZE,
                "licence": "CC0-1.0",
                "name": f"synthetic_{split.lower()}_{index:03d}",
            })
    return dataset
