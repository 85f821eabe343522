"""prepare_dataset end to end: served or local archive -> verified -> extracted -> converted -> checked -> trainable."""

from __future__ import annotations

import dataclasses
import json
import re

import numpy as np
import pytest
import tifffile
import torch
from _archives import EXPECTED, MEMBERS, files_under
from skimage.measure import regionprops

from instanseg_scnp.cli import main
from instanseg_scnp.data import (
    DATA_DIR_ENV,
    ArchiveError,
    DatasetError,
    DownloadError,
    check_dataset,
    data_root,
    dataset_file,
    load_dataset,
    open_dataset,
    prepare_dataset,
    resolve_data,
)
from instanseg_scnp.data.paths import MANIFEST
from instanseg_scnp.data.prepare import split_names


def leftovers(root):
    """Staging folders and temporary files anywhere under root."""
    return [p for p in root.rglob("*") if (p.name.startswith(".") and p.name.endswith(".tmp")) or
            p.name.startswith("tmp")]


@pytest.mark.parametrize("dataset", ["IHC_TMA", "LyNSeC", "NuInsSeg"])
def test_prepare_dataset_from_the_server_end_to_end(dataset, make_archive, registry, server, tmp_path):
    registry(make_archive(dataset)[1])
    root = tmp_path / "root"
    report = prepare_dataset(dataset, root, base_url=server.url)
    pth = root / dataset / f"{dataset}.pth"
    assert report.path == str(pth) and pth.is_file() and not leftovers(root)
    counts, n_skipped = EXPECTED[dataset]
    assert tuple(report.splits[s].images for s in ("Train", "Validation", "Test")) == counts
    assert len(report.skipped) == n_skipped
    # the items reference TIFFs by relative path, and training's loader reads them
    raw = torch.load(pth, weights_only=False)
    for item in raw["Train"]:
        assert item["image"] == f"images/{item['name']}.tif" and item["nucleus_masks"] == f"masks/{item['name']}.tif"
        assert item["parent_dataset"] == dataset and item["licence"] == "CC BY 4.0" and item["pixel_size"] == 0.25
        assert item["image_modality"] == "Brightfield" and item["stain"] in ("IHC", "H&E")
        assert tifffile.imread(pth.parent / item["image"]).shape[-1] == 3
        assert tifffile.imread(pth.parent / item["nucleus_masks"]).dtype == np.int32
    loaded = load_dataset(pth)
    assert sum(len(v) for v in loaded.values()) == sum(counts)
    manifest = json.loads((pth.parent / MANIFEST).read_text())
    assert manifest["record"] and manifest["checksum_verified"] and manifest["source"].startswith(server.url)
    assert sorted(manifest["splits"]["Test"]) == sorted(item["name"] for item in raw["Test"])


def test_report_against_an_independent_count(make_archive, registry, server, tmp_path):
    registry(make_archive("NuInsSeg")[1])
    report = prepare_dataset("NuInsSeg", tmp_path / "root", base_url=server.url)
    dataset = load_dataset(report.path)
    for split, summary in report.splits.items():
        counts = [len(np.unique(item["nucleus_masks"])) - 1 for item in dataset[split]]
        assert summary.nuclei == sum(counts)
        assert summary.nuclei_per_image == (min(counts), float(np.median(counts)), max(counts))
        assert summary.sizes == {"48x48": len(counts)}
    diameters = [p.equivalent_diameter_area for item in dataset["Train"] for p in regionprops(item["nucleus_masks"])]
    assert report.median_diameter_px == pytest.approx(np.median(diameters))
    assert report.pixel_size == 0.25
    text = report.to_text()
    assert "Train" in text and f"median nucleus diameter (Train) {np.median(diameters):.1f} px" in text
    assert "window" not in text  # no window advice without an experiment behind it
    assert "mouse colon/tissue images/mouse_colon_03.png: no mask" in text
    assert check_dataset(tmp_path / "root" / "NuInsSeg") == report  # --check gives the same report


def test_prepare_dataset_twice_does_nothing_the_second_time(make_archive, registry, server, tmp_path):
    registry(make_archive("LyNSeC")[1])
    root = tmp_path / "root"
    first = prepare_dataset("LyNSeC", root, base_url=server.url)
    stamps = {p: p.stat().st_mtime_ns for p in (root / "LyNSeC").rglob("*")}
    assert prepare_dataset("LyNSeC", root, base_url=server.url) == first
    assert {p: p.stat().st_mtime_ns for p in (root / "LyNSeC").rglob("*")} == stamps
    assert server.requests == ["/lynsec.zip"]


def test_seeded_split_is_deterministic_and_recorded(make_archive, registry, server, tmp_path):
    registry(make_archive("LyNSeC")[1])
    for root in ("a", "b"):
        prepare_dataset("LyNSeC", tmp_path / root, base_url=server.url)
    splits = [json.loads((tmp_path / root / "LyNSeC" / MANIFEST).read_text())["splits"] for root in ("a", "b")]
    assert splits[0] == splits[1]
    manifest = json.loads((tmp_path / "a" / "LyNSeC" / MANIFEST).read_text())
    assert manifest["split_method"].startswith("seeded 80/10/10")
    assert split_names(["c", "a", "b", "d", "e"]) == split_names(["e", "d", "c", "b", "a"])


def test_prepare_dataset_from_archive(make_archive, registry, tmp_path):
    path, entry = make_archive("IHC_TMA", folder="by-hand")
    registry(entry)
    report = prepare_dataset("IHC_TMA", tmp_path / "root", from_archive=path)
    assert report.split_method.startswith("official: file name prefixes fold1/fold2/fold3")
    assert not (tmp_path / "root" / "downloads").exists()


def test_prepare_dataset_from_a_wrong_archive_leaves_nothing(make_archive, registry, tmp_path):
    path, entry = make_archive("IHC_TMA", folder="by-hand")
    registry(dataclasses.replace(entry, md5="0" * 32))
    with pytest.raises(ArchiveError, match=r"IHC_TMA_dataset\.zip: md5 [0-9a-f]{32}, but IHC_TMA_dataset\.zip of "
                                           r"Zenodo record 7647846 has md5 0{32}"):
        prepare_dataset("IHC_TMA", tmp_path / "root", from_archive=path)
    assert not (tmp_path / "root").exists() or files_under(tmp_path / "root") == []


def test_checksum_mismatch_from_the_server_leaves_nothing(make_archive, registry, server, tmp_path):
    registry(dataclasses.replace(make_archive("NuInsSeg")[1], md5="0" * 32))
    with pytest.raises(ArchiveError, match=r"NuInsSeg\.zip downloaded from .* is not the published file"):
        prepare_dataset("NuInsSeg", tmp_path / "root", base_url=server.url, retries=0)
    assert files_under(tmp_path / "root") == []


def test_interrupted_download_leaves_nothing_and_the_next_run_succeeds(make_archive, registry, server, tmp_path):
    registry(make_archive("NuInsSeg")[1])
    server.truncate = 1
    with pytest.raises(DownloadError, match="nothing was kept, run again to retry"):
        prepare_dataset("NuInsSeg", tmp_path / "root", base_url=server.url, retries=0)
    assert files_under(tmp_path / "root") == []
    assert prepare_dataset("NuInsSeg", tmp_path / "root", base_url=server.url).splits["Train"].images == 3


def test_bad_layout_names_the_file_and_leaves_no_dataset(make_archive, registry, server, tmp_path):
    registry(make_archive("IHC_TMA", drop=("masks/",))[1])
    with pytest.raises(ArchiveError, match=r"IHC_TMA_dataset\.zip: not laid out as IHC_TMA's archive"):
        prepare_dataset("IHC_TMA", tmp_path / "root", base_url=server.url)
    assert files_under(tmp_path / "root") == ["downloads/IHC_TMA_dataset.zip"]  # verified: kept; nothing else
    assert not (tmp_path / "root" / "raw" / "IHC_TMA").exists() and not (tmp_path / "root" / "IHC_TMA").exists()


def test_unreadable_image_names_the_file_and_leaves_no_dataset(make_archive, registry, server, tmp_path):
    members = MEMBERS["LyNSeC"](np.random.default_rng(0))
    members["lynsec 3/1_l3.npy"] = b"garbage"
    registry(make_archive("LyNSeC", members=members)[1])
    with pytest.raises(ArchiveError, match=r"lynsec\.zip: lynsec 3/1_l3\.npy: cannot read 1_l3\.npy"):
        prepare_dataset("LyNSeC", tmp_path / "root", base_url=server.url)
    assert not (tmp_path / "root" / "LyNSeC").exists() and not leftovers(tmp_path / "root")


def test_unverified_download_that_is_no_zip_is_deleted(make_archive, registry, server, tmp_path):
    path, entry = make_archive("NuInsSeg")
    path.write_bytes(b"<html>not the archive</html>")
    registry(dataclasses.replace(entry, size=None, md5=None))
    with pytest.raises(ArchiveError, match=r"NuInsSeg\.zip: not a complete zip archive"):
        prepare_dataset("NuInsSeg", tmp_path / "root", base_url=server.url)
    assert files_under(tmp_path / "root") == []  # the next run downloads it again


def test_a_foreign_folder_is_never_replaced(tmp_path):
    (tmp_path / "NuInsSeg").mkdir()
    (tmp_path / "NuInsSeg" / "notes.txt").write_text("mine")
    with pytest.raises(FileExistsError, match="exists but holds no prepared NuInsSeg dataset"):
        prepare_dataset("NuInsSeg", tmp_path)
    assert (tmp_path / "NuInsSeg" / "notes.txt").read_text() == "mine"


def test_unknown_dataset_name_lists_the_choices():
    with pytest.raises(ValueError, match=r"dataset must be one of 'IHC_TMA', 'LyNSeC', 'NuInsSeg', got 'nuinsseg' "
                                         r"\(did you mean 'NuInsSeg'\?\)"):
        prepare_dataset("nuinsseg")


def test_names_resolve_under_the_root_argument_or_environment(make_archive, registry, server, tmp_path, monkeypatch):
    registry(make_archive("LyNSeC")[1])
    root = tmp_path / "root"
    monkeypatch.setenv(DATA_DIR_ENV, str(root))
    assert data_root() == root and dataset_file("LyNSeC") == root / "LyNSeC" / "LyNSeC.pth"
    with pytest.raises(DatasetError, match=r"dataset 'LyNSeC' is not prepared under .*root: run `instanseg-scnp "
                                           r"prepare LyNSeC --root DIR`"):
        open_dataset("LyNSeC")
    prepare_dataset("LyNSeC", base_url=server.url)  # into $INSTANSEG_SCNP_DATA_DIR
    assert resolve_data("LyNSeC") == str(root / "LyNSeC" / "LyNSeC.pth")
    assert set(open_dataset("LyNSeC", required=("Train", "Validation", "Test"))) == {"Train", "Validation", "Test"}
    monkeypatch.delenv(DATA_DIR_ENV)
    assert resolve_data("LyNSeC", root=root) == str(root / "LyNSeC" / "LyNSeC.pth")


def test_cli_prepare_and_check(make_archive, registry, server, tmp_path, capsys):
    registry(make_archive("NuInsSeg")[1])
    root = tmp_path / "root"
    assert main(["prepare", "NuInsSeg", "--root", str(root), "--base-url", server.url, "-q"]) == 0
    printed = capsys.readouterr().out
    assert printed.startswith(f"NuInsSeg: {root / 'NuInsSeg' / 'NuInsSeg.pth'}") and "median nucleus diameter" in printed
    assert main(["prepare", "--check", str(root / "NuInsSeg")]) == 0
    assert capsys.readouterr().out == printed
    assert main(["prepare", "--check", "NuInsSeg", "--root", str(root)]) == 0
    assert capsys.readouterr().out == printed


@pytest.mark.parametrize(
    ("argv", "status", "message"),
    [
        (["prepare"], 2, r"name the dataset to prepare \(IHC_TMA, LyNSeC, NuInsSeg or all\), or pass --check DIR"),
        (["prepare", "all", "--from-archive", "x.zip"], 2, "--from-archive is one dataset's archive"),
        (["prepare", "NuInsSeg", "--check", "somewhere"], 2, "--check DIR only validates a prepared dataset"),
        (["prepare", "--check", "nowhere"], 2, r"'nowhere' is neither a prepared dataset"),
        (["prepare", "LyNSeC", "--from-archive", "missing.zip"], 2, r"archive '.*missing\.zip' does not exist"),
    ],
)
def test_cli_prepare_bad_input_is_one_line(argv, status, message, capsys, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    assert main([*argv, "--root", str(tmp_path)]) == status
    error = capsys.readouterr().err
    assert re.search(message, error) and "Traceback" not in error, error


def test_cli_prepare_download_failure_is_exit_status_1(make_archive, registry, server, tmp_path, capsys):
    registry(make_archive("LyNSeC")[1])
    server.truncate = 1
    assert main(["prepare", "LyNSeC", "--root", str(tmp_path), "--base-url", server.url, "--retries", "0", "-q"]) == 1
    assert "instanseg-scnp prepare: error: could not download lynsec.zip" in capsys.readouterr().err


def test_train_finds_a_prepared_dataset_by_name(make_archive, registry, server, tmp_path):
    from instanseg_scnp.training import TrainConfig, train

    registry(make_archive("NuInsSeg", size=64)[1])
    root = tmp_path / "root"
    prepare_dataset("NuInsSeg", root, base_url=server.url)
    config = TrainConfig(data="NuInsSeg", data_root=root, out=tmp_path / "run", epochs=1, hotstart=0, epoch_length=2,
                         batch_size=2, tile_size=64, layers=(8, 16), window_size=32, device="cpu")
    result = train(config)
    saved = json.loads((tmp_path / "run" / "config.json").read_text())
    assert saved["config"]["data"] == "NuInsSeg" and saved["config"]["data_root"] == str(root)
    assert saved["derived"]["data"] == str(root / "NuInsSeg" / "NuInsSeg.pth")  # absolute: resume works anywhere
    assert saved["derived"]["pixel_size"] == 0.25 and result.model_path.is_file()
