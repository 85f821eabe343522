"""Quieting upstream InstanSeg where it prints or warns about things a user cannot act on."""

from __future__ import annotations

import contextlib
import io
import warnings
from collections.abc import Iterator

import numpy as np
import torch

MIN_INFERENCE_SIZE = 64
"""Smallest image side upstream's exported model handles: below it (twice its 32 px crop
window) ``InstanSeg_Torchscript`` builds sparse tensors with negative indices, which
corrupts memory (torch does not check sparse invariants by default)."""


@contextlib.contextmanager
def quiet_upstream() -> Iterator[None]:
    """Silence upstream's prints and the warnings of its export and inference paths.

    torch >= 2.10 deprecates ``torch.jit.trace``/``script``, which upstream's model
    format needs; upstream enters a CUDA autocast that warns on CPU-only machines;
    tracing warns about data-dependent shapes in upstream's network; upstream's
    model builder prints; its postprocessing uses sparse tensors, which torch calls
    beta. Other warnings pass through.
    """
    with warnings.catch_warnings(), contextlib.redirect_stdout(io.StringIO()):
        warnings.filterwarnings("ignore", category=FutureWarning, message=r".*torch\.jit")
        warnings.filterwarnings("ignore", category=UserWarning, message=".*CUDA is not available")
        warnings.filterwarnings("ignore", category=torch.jit.TracerWarning)
        warnings.filterwarnings("ignore", category=UserWarning, message="Sparse CSR tensor support is in beta")
        warnings.filterwarnings("ignore", category=UserWarning, message="Sparse invariant checks are implicitly")
        yield


def pad_for_inference(image: np.ndarray) -> tuple[np.ndarray, tuple[slice, slice]]:
    """Reflect-pad an (H, W, C) image to at least :data:`MIN_INFERENCE_SIZE` per side.

    Returns the padded image and the slices that cut its labels back to ``image``'s extent.
    """
    pad = [max(MIN_INFERENCE_SIZE - n, 0) for n in image.shape[:2]]
    before = [p // 2 for p in pad]
    widths = [(b, p - b) for b, p in zip(before, pad, strict=True)] + [(0, 0)] * (image.ndim - 2)
    padded = np.pad(image, widths, mode="symmetric") if any(pad) else image
    crop = tuple(slice(b, b + n) for b, n in zip(before, image.shape[:2], strict=True))
    return padded, crop
