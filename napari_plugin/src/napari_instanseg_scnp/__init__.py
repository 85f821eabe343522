"""napari-instanseg-scnp: inspect SCNP (Same-Class Neighbor Penalization) on InstanSeg models in napari.

The napari parts (the "SCNP inspector" dock widget, the TIFF reader, the sample
data) are contributed through ``napari.yaml`` and imported by napari on use;
this package's import pulls in neither napari nor Qt.
"""

__version__ = "0.1.0"

__all__ = ["__version__"]
