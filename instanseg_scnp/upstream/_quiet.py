"""Quieting upstream InstanSeg where it prints or warns about things a user cannot act on."""

from __future__ import annotations

import contextlib
import io
import warnings
from collections.abc import Iterator

import torch


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
