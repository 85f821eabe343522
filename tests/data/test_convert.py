"""The converters: each dataset's layout, the IHC_TMA channel merge, and clear errors naming the file."""

from __future__ import annotations

import numpy as np
import pytest
from _archives import MEMBERS, SIZE, npy_bytes, nuclei, png_bytes, tif_bytes
from scipy import ndimage

from instanseg_scnp.data import ArchiveError, merge_instance_channels
from instanseg_scnp.data.convert import find_samples, locate_dataset


def extract(folder, members):
    for name, data in members.items():
        (folder / name).parent.mkdir(parents=True, exist_ok=True)
        (folder / name).write_bytes(data)
    return folder


def touching_pairs(shape=(40, 60)):
    """Squares side by side, touching: negative ids 1, 2 and positive ids 1, 2 (colliding), 3."""
    negative, positive = np.zeros(shape, np.int32), np.zeros(shape, np.int32)
    negative[5:15, 5:15], positive[5:15, 15:25] = 1, 1  # negative 1 touches positive 1
    negative[20:30, 30:40], positive[20:30, 40:50] = 2, 2
    positive[25:35, 5:15] = 3  # a third positive nucleus
    return negative, positive


def test_merge_instance_channels_keeps_touching_nuclei_with_colliding_ids_apart():
    negative, positive = touching_pairs()
    merged = merge_instance_channels(negative, positive)
    # oracle: every nucleus is one connected component of its own channel's id
    truth = [component for channel in (negative, positive) for i in np.unique(channel[channel > 0])
             for component in _components(channel == i)]
    assert merged.dtype == np.int32 and merged.max() == len(truth) == 5
    assert sorted(np.unique(merged[merged > 0])) == list(range(1, 6))
    for component in truth:
        (value,) = np.unique(merged[component])
        assert value > 0 and np.array_equal(merged == value, component)
    # the naive merge (max of the channels, then connected components) loses nuclei: the test is not vacuous
    _, count = ndimage.label(np.maximum(negative, positive) > 0)
    assert count < len(truth)


def test_merge_instance_channels_overlap_goes_to_the_later_channel():
    a, b = np.array([[1, 1, 0]]), np.array([[0, 4, 4]])
    assert merge_instance_channels(a, b).tolist() == [[1, 2, 2]]
    assert merge_instance_channels(b, a).tolist() == [[2, 2, 1]]  # ids by channel, then by id


def test_merge_instance_channels_rejects_mismatched_channels():
    with pytest.raises(ValueError, match=r"channels must share one shape, got \(2, 2\) and \(3, 3\)"):
        merge_instance_channels(np.zeros((2, 2)), np.zeros((3, 3)))


@pytest.mark.parametrize("dataset", ["IHC_TMA", "LyNSeC", "NuInsSeg"])
def test_find_samples_reads_each_real_layout(dataset, tmp_path):
    folder = extract(tmp_path, MEMBERS[dataset](np.random.default_rng(0)))
    samples, skipped = find_samples(dataset, folder, archive="archive.zip")
    assert len(samples) == 5 and len({s.name for s in samples}) == 5
    for sample in samples:
        image, masks = sample.read()
        assert image.shape == (SIZE, SIZE, 3) and image.dtype == np.uint8  # IHC_TMA's alpha dropped
        assert masks.shape == (SIZE, SIZE) and masks.dtype == np.int32
        assert sorted(np.unique(masks)) == list(range(masks.max() + 1))  # 0, 1..N
        assert (folder / sample.source).is_file() and sample.metadata["stain"] in ("IHC", "H&E")
    if dataset == "IHC_TMA":
        assert {s.name: s.split for s in samples} == {
            "fold1_0_CDK4": "Train", "fold1_1_D2": "Train", "fold1_2_Ki67": "Train", "fold2_0_P53": "Validation",
            "fold3_0_CD3": "Test"}
        assert [(s.file, s.reason) for s in skipped] == [("IHC_TMA_dataset/masks/orphan.npy",
                                                          "no image with this name in images/")]
    elif dataset == "LyNSeC":
        assert {s.name: s.metadata["stain"] for s in samples} == {
            "0_l1": "IHC", "1_l1": "IHC", "0_l3": "H&E", "1_l3": "H&E", "2_l3": "H&E"}
        assert [s.file for s in skipped] == ["lynsec 2/0_l2.npy"] and "annotated incorrectly" in skipped[0].reason
    else:
        assert {s.metadata["tissue_type"] for s in samples} == {"human bladder", "mouse colon"}
        assert samples[0].name == "human_bladder__human_bladder_01"
        assert [(s.file, s.reason) for s in skipped] == [
            ("mouse colon/tissue images/mouse_colon_03.png",
             "no mask 'mouse colon/label masks modify/mouse_colon_03.tif'")]
    assert all(s.split is None for s in samples) == (dataset != "IHC_TMA")


def test_ihc_tma_sample_merges_the_two_channels_without_merging_nuclei(tmp_path):
    negative, positive = touching_pairs((SIZE, SIZE))
    image = np.full((SIZE, SIZE, 3), 200, np.uint8)
    folder = extract(tmp_path, {"IHC_TMA_dataset/images/fold1_0_CD3.png": png_bytes(image),
                                "IHC_TMA_dataset/masks/fold1_0_CD3.npy": npy_bytes(
                                    np.stack([negative, positive, (negative + positive == 0)]))})
    (sample,), _ = find_samples("IHC_TMA", folder, archive="IHC_TMA_dataset.zip")
    _, masks = sample.read()
    assert np.array_equal(masks, merge_instance_channels(negative, positive)) and masks.max() == 5


@pytest.mark.parametrize(
    ("dataset", "drop", "match"),
    [
        ("IHC_TMA", ("masks/",), r"IHC_TMA_dataset\.zip: not laid out as IHC_TMA's archive: expected "
                                 r"'IHC_TMA_dataset/images/\*\.png' and 'IHC_TMA_dataset/masks/\*\.npy'; it holds "
                                 r"\['IHC_TMA_dataset/'\]"),
        ("LyNSeC", ("lynsec 1", "lynsec 3"), r"lynsec\.zip: not laid out as LyNSeC's archive: expected folders "
                                             r"'lynsec 1' \(IHC\) and 'lynsec 3' \(H&E\)"),
        ("NuInsSeg", ("tissue images",), r"NuInsSeg\.zip: not laid out as NuInsSeg's archive"),
        ("NuInsSeg", ("human bladder/label masks modify",),
         r"NuInsSeg\.zip: folder 'human bladder/label masks modify' is missing"),
    ],
)
def test_bad_layout_names_the_archive_and_what_was_expected(dataset, drop, match, tmp_path):
    folder = extract(tmp_path, MEMBERS[dataset](np.random.default_rng(0), drop=drop))
    archive = {"IHC_TMA": "IHC_TMA_dataset.zip", "LyNSeC": "lynsec.zip", "NuInsSeg": "NuInsSeg.zip"}[dataset]
    with pytest.raises(ArchiveError, match=match):
        find_samples(dataset, folder, archive=archive)


def test_layout_inside_one_wrapping_folder_is_found(tmp_path):
    members = {f"NuInsSeg/{name}": data for name, data in MEMBERS["NuInsSeg"](np.random.default_rng(0)).items()}
    folder = extract(tmp_path, members)
    assert locate_dataset("NuInsSeg", folder, archive="NuInsSeg.zip") == folder / "NuInsSeg"


@pytest.mark.parametrize(
    ("members", "match"),
    [
        ({"t/tissue images/a.png": b"not a png", "t/label masks modify/a.tif": tif_bytes(np.zeros((8, 8), np.uint8))},
         r"NuInsSeg\.zip: t/tissue images/a\.png: cannot read a\.png"),
        ({"t/tissue images/a.png": png_bytes(np.zeros((8, 8, 3), np.uint8)),
          "t/label masks modify/a.tif": tif_bytes(np.zeros((8, 9), np.uint8))},
         r"NuInsSeg\.zip: t/tissue images/a\.png: the image is 8x8 but its mask is 8x9"),
        ({"t/tissue images/a.png": png_bytes(np.zeros((8, 8), np.uint8)),
          "t/label masks modify/a.tif": tif_bytes(np.zeros((8, 8), np.uint8))},
         r"a\.png: image of shape \(8, 8\); expected an RGB or RGBA image"),
        ({"t/tissue images/a.png": png_bytes(np.zeros((8, 8, 3), np.uint8)),
          "t/label masks modify/a.tif": tif_bytes(np.full((8, 8), 0.5, np.float32))},
         r"a\.png: mask holds non-integer values"),
    ],
)
def test_unreadable_or_mismatched_files_are_named(members, match, tmp_path):
    (sample,), _ = find_samples("NuInsSeg", extract(tmp_path, members), archive="NuInsSeg.zip")
    with pytest.raises(ArchiveError, match=match):
        sample.read()


def test_lynsec_sample_needs_rgb_and_ids(tmp_path):
    folder = extract(tmp_path, {"lynsec 1/0_l1.npy": npy_bytes(np.zeros((8, 8, 3)))})
    (sample,), _ = find_samples("LyNSeC", folder, archive="lynsec.zip")
    with pytest.raises(ArchiveError, match=r"lynsec\.zip: lynsec 1/0_l1\.npy: shape \(8, 8, 3\); expected \(H, W, "
                                           r"4 or more\): RGB, then instance ids"):
        sample.read()


def test_lynsec_float_ids_are_renumbered(tmp_path):
    labels = nuclei(np.random.default_rng(1))
    data = np.concatenate([np.full((SIZE, SIZE, 3), 128.0), 7.0 * labels[..., None]], axis=-1)
    (sample,), _ = find_samples("LyNSeC", extract(tmp_path, {"lynsec 3/0_l3.npy": npy_bytes(data)}),
                                archive="lynsec.zip")
    image, masks = sample.read()
    assert image.dtype == np.uint8 and np.array_equal(masks, labels)


def _components(mask):
    labels, count = ndimage.label(mask)
    return [labels == i for i in range(1, count + 1)]
