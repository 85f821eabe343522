"""napari-instanseg-scnp: inspect SCNP (Same-Class Neighbor Penalization) on InstanSeg models in napari.

SCNP: Valverde, Papadopoulos, Larsen and Dahl, CVPR 2026, arXiv:2603.18671.

The napari parts (the "SCNP inspector" dock widget, the TIFF reader, the sample
data) are contributed through ``napari.yaml`` and imported by napari on use;
this package's import pulls in neither napari nor Qt.
"""

__version__ = "0.1.0"

__all__ = ["__version__"]
