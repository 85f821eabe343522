import numpy as np
import pytest
import tifffile
import torch
from skimage.measure import regionprops

from instanseg_scnp.data import (
    DatasetError,
    channels_last,
    common_pixel_size,
    load_dataset,
    median_diameter,
    synthetic_dataset,
)

RNG = np.random.default_rng(0)


def item(shape=(32, 40), channels=3, **extra):
    masks = np.zeros(shape, np.int32)
    masks[4:12, 5:15] = 3
    masks[20:30, 20:26] = 7
    return {"image": RNG.random((*shape, channels)).astype(np.float32), "nucleus_masks": masks,
            "parent_dataset": "test", "pixel_size": 0.5, **extra}


def dataset(**splits):
    return {"Train": [item(), item()], "Validation": [item()], "Test": [item()], **splits}


def test_load_dataset_reads_pth_with_arrays_and_with_relative_tiff_paths(tmp_path):
    data = dataset()
    torch.save(data, tmp_path / "arrays.pth")
    (tmp_path / "images").mkdir()
    by_path = {split: [] for split in data}
    for split, items in data.items():
        for index, entry in enumerate(items):
            image, masks = f"images/{split}_{index}.tif", f"images/{split}_{index}_masks.tif"
            channels_first = np.moveaxis(entry["image"], -1, 0)
            tifffile.imwrite(tmp_path / image, channels_first, photometric="minisblack")
            tifffile.imwrite(tmp_path / masks, entry["nucleus_masks"])
            by_path[split].append({**entry, "image": image, "nucleus_masks": masks})
    torch.save(by_path, tmp_path / "paths.pth")
    for loaded in (load_dataset(tmp_path / "arrays.pth"), load_dataset(tmp_path / "paths.pth")):
        for split, items in data.items():
            for got, expected in zip(loaded[split], items, strict=True):
                np.testing.assert_array_equal(got["image"], expected["image"])
                np.testing.assert_array_equal(got["nucleus_masks"], expected["nucleus_masks"])
                assert got["nucleus_masks"].dtype == np.int32 and got["parent_dataset"] == "test"


def with_inf_column():
    image = np.full((32, 40, 3), 0.5)
    image[:, 3] = np.inf
    return image


@pytest.mark.parametrize(
    ("data", "match"),
    [
        ([1, 2], r"expected a dict with splits \['Train', 'Validation', 'Test'\], got list"),
        ({"Train": [item()]}, r"no 'Validation' split \(has \['Train'\]\)"),
        (dataset(Validation=[]), "the 'Validation' split is empty"),
        (dataset(Train=[item(), {"image": np.zeros((8, 8, 3))}]), r"Train\[1\]: missing \['nucleus_masks'\]"),
        (dataset(Train=[{**item(), "nucleus_masks": np.zeros((16, 16), np.int32)}]),
         r"Train\[0\]: image has shape \(32, 40, 3\) .* nucleus_masks has shape \(16, 16\)"),
        (dataset(Test=[{**item(), "nucleus_masks": np.zeros((32, 40), np.float32)}]),
         r"Test\[0\]: nucleus_masks must hold integer instance ids, got dtype float32"),
        (dataset(Train=[{**item(), "nucleus_masks": np.full((32, 40), -2)}]), "only use -1 .* found -2"),
        (dataset(Train=[{**item(), "nucleus_masks": np.ones((32, 40), bool)}]),
         "boolean foreground mask; expected integer instance ids"),
        (dataset(Validation=[item(channels=4)]), r"Validation\[0\]: image has 4 channels; expected 1 .* or 3"),
        (dataset(Train=[{**item(), "image": np.zeros((5, 6, 7, 8))}]),
         r"Train\[0\] image: expected an image of shape"),
        (dataset(Train=[{**item(), "image": "missing.tif"}]),
         r"Train\[0\] image: cannot read '.*missing.tif' as a TIFF"),
        (dataset(Train=[{**item(), "image": with_inf_column()}]),
         r"Train\[0\]: image has 96 NaN or infinite pixel value\(s\)"),
        (dataset(Test=[{**item(), "image": np.full((32, 40, 3), np.nan, np.float32)}]),
         r"Test\[0\]: image has 3840 NaN or infinite"),
        (dataset(Train=[{"image": np.zeros((1, 40, 3)), "nucleus_masks": np.zeros((1, 40), np.int32)}]),
         r"Train\[0\]: image is \d+ x \d+ px; expected at least 16 px a side"),
        (dataset(Train=[{"image": np.zeros((0, 0, 3)), "nucleus_masks": np.zeros((0, 0), np.int32)}]),
         r"Train\[0\]: image is 0 x \d+ px"),
        (dataset(Train=[{**item(), "image": np.full((32, 40, 3), "a")}]), r"image must hold real numbers"),
    ],
)
def test_load_dataset_rejects_bad_input_naming_file_split_and_item(tmp_path, data, match):
    torch.save(data, tmp_path / "bad.pth")
    with pytest.raises(DatasetError, match=match) as error:
        load_dataset(tmp_path / "bad.pth")
    assert str(tmp_path / "bad.pth") in str(error.value)


def test_load_dataset_rejects_missing_and_unreadable_files(tmp_path):
    with pytest.raises(DatasetError, match="does not exist"):
        load_dataset(tmp_path / "nothing.pth")
    (tmp_path / "junk.pth").write_text("not a torch file")
    with pytest.raises(DatasetError, match="cannot read it as a torch-saved InstanSeg dataset"):
        load_dataset(tmp_path / "junk.pth")


@pytest.mark.parametrize(
    ("shape", "channel_axis"), [((9, 11), None), ((9, 11, 3), 2), ((3, 9, 11), 0), ((1, 9, 11), 0)]
)
def test_channels_last(shape, channel_axis):
    image = np.arange(np.prod(shape)).reshape(shape)
    planes = [image] if channel_axis is None else [image.take(c, axis=channel_axis) for c in range(shape[channel_axis])]
    out = channels_last(image)
    assert out.shape == (9, 11, len(planes))
    for c, plane in enumerate(planes):
        np.testing.assert_array_equal(out[..., c], plane)


def test_median_diameter_against_regionprops():
    data = synthetic_dataset(n_train=3, n_validation=1, n_test=1, shape=(96, 96), rng=1)
    areas = [region.area for entry in data["Train"] for region in regionprops(entry["nucleus_masks"])]
    assert median_diameter(data) == pytest.approx(2 * np.sqrt(np.median(areas) / np.pi))


def test_common_pixel_size_only_when_shared():
    assert common_pixel_size(dataset()) == 0.5
    assert common_pixel_size(dataset(Train=[item(), item(pixel_size=0.25)])) is None
    assert common_pixel_size(dataset(Train=[{k: v for k, v in item().items() if k != "pixel_size"}])) is None


def test_synthetic_dataset_is_seeded_and_in_instanseg_format():
    first, again = (synthetic_dataset(n_train=2, n_validation=1, n_test=1, shape=(64, 64), rng=3) for _ in range(2))
    other = synthetic_dataset(n_train=2, n_validation=1, n_test=1, shape=(64, 64), rng=4)
    np.testing.assert_array_equal(first["Train"][0]["image"], again["Train"][0]["image"])
    assert not np.array_equal(first["Train"][0]["nucleus_masks"], other["Train"][0]["nucleus_masks"])
    assert [entry["image_modality"] for entry in first["Train"]] == ["Fluorescence", "Brightfield"]
    assert first["Train"][1]["image"].shape == (64, 64, 3) and first["Train"][0]["image"].shape == (64, 64, 1)
    loaded = load_dataset(first)  # passes the format's own checks
    assert loaded["Test"][0]["pixel_size"] == 0.5
    with pytest.raises(ValueError, match="n_validation must be a positive int, got 0"):
        synthetic_dataset(n_validation=0)
