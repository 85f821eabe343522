"""The TIFF reader: images and label images, alone and through napari."""

from __future__ import annotations

import numpy as np
import pytest
import tifffile

from napari_instanseg_scnp._reader import get_reader, read_tiff


@pytest.fixture
def tiffs(tmp_path):
    rng = np.random.default_rng(0)
    files = {
        "image": (tmp_path / "cells.tif", rng.integers(0, 4000, (40, 50), dtype=np.uint16)),
        "rgb": (tmp_path / "he.tiff", rng.integers(0, 255, (40, 50, 3), dtype=np.uint8)),
        "labels": (tmp_path / "cells_labels.tif", rng.integers(0, 5, (40, 50), dtype=np.int32)),
        "masks": (tmp_path / "nuclei-masks.TIF", rng.integers(-1, 5, (40, 50), dtype=np.int16)),
    }
    for path, data in files.values():
        tifffile.imwrite(path, data)
    return files


def test_get_reader_takes_tiffs_only(tiffs, tmp_path):
    assert get_reader(str(tiffs["image"][0])) is read_tiff
    assert get_reader([str(p) for p, _ in tiffs.values()]) is read_tiff
    assert get_reader(str(tmp_path / "image.png")) is None
    assert get_reader([str(tiffs["image"][0]), str(tmp_path / "x.png")]) is None


def test_read_tiff_tells_images_from_labels(tiffs):
    kinds = {}
    for key, (path, data) in tiffs.items():
        [(read, meta, kind)] = read_tiff(str(path))
        np.testing.assert_array_equal(read, data)
        kinds[key] = (kind, meta.get("rgb"))
        assert meta["name"] == path.name.split(".")[0]
    assert kinds == {"image": ("image", False), "rgb": ("image", True), "labels": ("labels", None),
                     "masks": ("labels", None)}


def test_napari_opens_tiffs_with_the_plugin(make_napari_viewer, tiffs):
    viewer = make_napari_viewer()
    layers = viewer.open([str(tiffs["image"][0]), str(tiffs["labels"][0])], plugin="napari-instanseg-scnp")
    assert [type(layer).__name__ for layer in layers] == ["Image", "Labels"]
    assert [layer.name for layer in viewer.layers] == ["cells", "cells_labels"]
