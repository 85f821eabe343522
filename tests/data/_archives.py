"""Tiny archives in each dataset's real layout (the tests build them; nothing is downloaded)."""

from __future__ import annotations

import io
import zipfile
from pathlib import Path

import imageio.v3 as imageio
import numpy as np
import tifffile

SIZE = 48
"""Side of the tiny images."""


def nuclei(rng: np.random.Generator, shape=(SIZE, SIZE), count=5, radius=(3, 6)) -> np.ndarray:
    """Non-overlapping discs labelled 1..count (fewer if they do not fit)."""
    labels = np.zeros(shape, np.int32)
    yy, xx = np.mgrid[: shape[0], : shape[1]]
    label = 0
    for _ in range(count * 20):
        if label == count:
            break
        r = rng.uniform(*radius)
        cy, cx = rng.uniform(r, shape[0] - r), rng.uniform(r, shape[1] - r)
        disc = np.hypot(yy - cy, xx - cx) <= r
        if not labels[disc].any():
            label += 1
            labels[disc] = label
    return labels


def he_image(labels: np.ndarray, rng: np.random.Generator, channels: int = 3) -> np.ndarray:
    """Pink background, purple nuclei, uint8."""
    image = np.empty((*labels.shape, channels), np.uint8)
    image[...] = (235, 200, 220, 255)[:channels]
    image[labels > 0, :3] = (120, 60, 160)
    noise = rng.integers(0, 10, image[..., :3].shape, dtype=np.uint8)
    image[..., :3] = image[..., :3] - noise
    return image


def png_bytes(image: np.ndarray) -> bytes:
    return imageio.imwrite("<bytes>", image, extension=".png")


def npy_bytes(array: np.ndarray) -> bytes:
    buffer = io.BytesIO()
    np.save(buffer, array)
    return buffer.getvalue()


def tif_bytes(array: np.ndarray) -> bytes:
    buffer = io.BytesIO()
    tifffile.imwrite(buffer, array)
    return buffer.getvalue()


def ihc_tma_members(rng, size=SIZE, *, drop=()) -> dict[str, bytes]:
    """IHC_TMA_dataset/images/*.png + masks/*.npy, (3, H, W): negative ids, positive ids (colliding), not-nucleus."""
    members = {}
    for stem in ("fold1_0_CDK4", "fold1_1_D2", "fold1_2_Ki67", "fold2_0_P53", "fold3_0_CD3"):
        both = nuclei(rng, (size, size), count=6)
        negative = np.where(both % 2 == 1, (both + 1) // 2, 0)   # ids 1, 2, 3 ...
        positive = np.where((both > 0) & (both % 2 == 0), both // 2, 0)  # ids 1, 2, 3 again
        mask = np.stack([negative, positive, (both == 0).astype(np.int32)]).astype(np.int32)
        members[f"IHC_TMA_dataset/images/{stem}.png"] = png_bytes(he_image(both, rng, channels=4))  # RGBA
        members[f"IHC_TMA_dataset/masks/{stem}.npy"] = npy_bytes(mask)
    members["IHC_TMA_dataset/masks/orphan.npy"] = npy_bytes(np.zeros((3, size, size), np.int32))
    return {k: v for k, v in members.items() if not any(d in k for d in drop)}


def lynsec_members(rng, size=SIZE, *, drop=()) -> dict[str, bytes]:
    """'lynsec 1' (IHC), 'lynsec 2' (excluded), 'lynsec 3' (H&E): *.npy of (H, W, 5) float: RGB, ids, class."""
    members = {}
    for folder, stems in (("lynsec 1", ("0_l1", "1_l1")), ("lynsec 2", ("0_l2",)),
                          ("lynsec 3", ("0_l3", "1_l3", "2_l3"))):
        for stem in stems:
            labels = nuclei(rng, (size, size))
            data = np.concatenate([he_image(labels, rng), labels[..., None], (labels > 0)[..., None]], axis=-1)
            members[f"{folder}/{stem}.npy"] = npy_bytes(data.astype(np.float64))
    return {k: v for k, v in members.items() if not any(d in k for d in drop)}


def nuinsseg_members(rng, size=SIZE, *, drop=()) -> dict[str, bytes]:
    """'<tissue>/tissue images/*.png' + '<tissue>/label masks modify/*.tif', and a folder the converter ignores."""
    members = {}
    for tissue, stems in (("human bladder", ("human_bladder_01", "human_bladder_02", "human_bladder_03")),
                          ("mouse colon", ("mouse_colon_01", "mouse_colon_02"))):
        for stem in stems:
            labels = nuclei(rng, (size, size))
            members[f"{tissue}/tissue images/{stem}.png"] = png_bytes(he_image(labels, rng))
            members[f"{tissue}/label masks modify/{stem}.tif"] = tif_bytes(labels.astype(np.uint16))
            members[f"{tissue}/mask binary/{stem}.png"] = png_bytes(((labels > 0) * 255).astype(np.uint8))
    members["mouse colon/tissue images/mouse_colon_03.png"] = png_bytes(he_image(nuclei(rng, (size, size)), rng))
    return {k: v for k, v in members.items() if not any(d in k for d in drop)}


MEMBERS = {"IHC_TMA": ihc_tma_members, "LyNSeC": lynsec_members, "NuInsSeg": nuinsseg_members}
EXPECTED = {  # (Train, Validation, Test) images, skipped files
    "IHC_TMA": ((3, 1, 1), 1),
    "LyNSeC": ((3, 1, 1), 1),
    "NuInsSeg": ((3, 1, 1), 1),
}


def write_zip(path: Path, members: dict[str, bytes]) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    with zipfile.ZipFile(path, "w", zipfile.ZIP_DEFLATED) as archive:
        for name, data in members.items():
            archive.writestr(name, data)
    return path



def files_under(folder: Path) -> list[str]:
    return sorted(str(p.relative_to(folder)) for p in folder.rglob("*") if p.is_file())
