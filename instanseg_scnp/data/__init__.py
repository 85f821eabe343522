"""Data: the built-in synthetic generator (and, with the dataset issue, the real datasets)."""

from instanseg_scnp.data.synthetic import MODALITIES, SyntheticImage, synthetic_image

__all__ = ["MODALITIES", "SyntheticImage", "synthetic_image"]
