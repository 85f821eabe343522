"""Download, verification and extraction, against a loopback HTTP server: nothing incomplete is ever kept."""

from __future__ import annotations

import dataclasses
import hashlib
import logging
import zipfile

import pytest
from _archives import files_under, write_zip

from instanseg_scnp.data import REGISTRY, ArchiveError, DownloadError, extract_archive, fetch_archive, verify_archive
from instanseg_scnp.data.download import BASE_URL_ENV, EXTRACTED_FROM, archive_url


def test_registry_holds_the_records_upstream_downloads():
    assert {name: (a.record, a.filename) for name, a in REGISTRY.items()} == {
        "IHC_TMA": (7647846, "IHC_TMA_dataset.zip"), "LyNSeC": (8065174, "lynsec.zip"),
        "NuInsSeg": (10518968, "NuInsSeg.zip")}
    for archive in REGISTRY.values():
        assert archive.url == f"https://zenodo.org/records/{archive.record}/files/{archive.filename}?download=1"
        for value, length in ((archive.md5, 32), (archive.sha256, 64)):
            assert value is None or (len(value) == length and int(value, 16) >= 0)


def test_archive_url_mirror_from_argument_or_environment(monkeypatch):
    archive = REGISTRY["NuInsSeg"]
    monkeypatch.delenv(BASE_URL_ENV, raising=False)
    assert archive_url(archive) == archive.url
    monkeypatch.setenv(BASE_URL_ENV, "http://env.example/data")
    assert archive_url(archive) == "http://env.example/data/NuInsSeg.zip"
    assert archive_url(archive, "http://arg.example/") == "http://arg.example/NuInsSeg.zip"


def test_fetch_archive_downloads_verifies_and_then_reuses(make_archive, server, tmp_path):
    served, entry = make_archive("LyNSeC")
    path = fetch_archive(entry, tmp_path / "cache", base_url=server.url)
    assert path == tmp_path / "cache" / "lynsec.zip" and path.read_bytes() == served.read_bytes()
    assert fetch_archive(entry, tmp_path / "cache", base_url=server.url) == path
    assert server.requests == ["/lynsec.zip"]  # the verified copy is reused, not downloaded again


def test_fetch_archive_checksum_mismatch_keeps_nothing(make_archive, server, tmp_path):
    _, entry = make_archive("LyNSeC")
    wrong = dataclasses.replace(entry, md5="0" * 32)
    with pytest.raises(ArchiveError, match=r"lynsec\.zip downloaded from http://127\.0\.0\.1:\d+/lynsec\.zip is not "
                                           r"the published file: .*does not match.*Nothing was kept"):
        fetch_archive(wrong, tmp_path / "cache", base_url=server.url, retries=0)
    assert files_under(tmp_path / "cache") == []


def test_fetch_archive_size_mismatch_deletes_the_file(make_archive, server, tmp_path):
    _, entry = make_archive("NuInsSeg")
    wrong = dataclasses.replace(entry, size=entry.size + 1, md5=None)
    with pytest.raises(ArchiveError, match=rf"NuInsSeg\.zip: {entry.size} bytes, but NuInsSeg\.zip of Zenodo record "
                                           rf"10518968 has {entry.size + 1}: an incomplete download"):
        fetch_archive(wrong, tmp_path / "cache", base_url=server.url, retries=0)
    assert files_under(tmp_path / "cache") == []


def test_fetch_archive_interrupted_download_is_never_kept_and_the_next_run_succeeds(make_archive, server, tmp_path):
    served, entry = make_archive("IHC_TMA")
    unverifiable = dataclasses.replace(entry, size=None, md5=None)  # only the transfer itself can tell
    server.truncate = 1
    with pytest.raises(DownloadError, match=r"could not download IHC_TMA_dataset\.zip from http://127\.0\.0\.1:\d+/"
                                            r"IHC_TMA_dataset\.zip .*nothing was kept, run again to retry"):
        fetch_archive(unverifiable, tmp_path / "cache", base_url=server.url, retries=0)
    assert files_under(tmp_path / "cache") == []
    assert fetch_archive(entry, tmp_path / "cache", base_url=server.url).read_bytes() == served.read_bytes()


def test_fetch_archive_retries_a_cut_transfer(make_archive, server, tmp_path):
    served, entry = make_archive("IHC_TMA")
    server.truncate = 1
    assert fetch_archive(entry, tmp_path / "cache", base_url=server.url, retries=1).read_bytes() == served.read_bytes()
    assert len(server.requests) == 2


def test_fetch_archive_unknown_server_file_is_a_download_error(make_archive, server, tmp_path):
    _, entry = make_archive("IHC_TMA")
    with pytest.raises(DownloadError, match="404"):
        fetch_archive(dataclasses.replace(entry, filename="missing.zip"), tmp_path / "cache", base_url=server.url,
                      retries=0)


def test_verify_archive_checks_size_and_every_known_checksum(make_archive):
    path, entry = make_archive("NuInsSeg")
    data = path.read_bytes()
    verify_archive(dataclasses.replace(entry, sha256=hashlib.sha256(data).hexdigest()), path)
    with pytest.raises(ArchiveError, match=r"sha256 [0-9a-f]{64}, but NuInsSeg\.zip of Zenodo record 10518968 has "
                                           r"sha256 f{64}: a corrupt download or another file"):
        verify_archive(dataclasses.replace(entry, sha256="f" * 64), path)
    with pytest.raises(FileNotFoundError, match=r"archive '.*nowhere\.zip' does not exist"):
        verify_archive(entry, path.with_name("nowhere.zip"))


def test_verify_archive_without_checksum_warns_that_it_is_unverified(make_archive, caplog):
    path, entry = make_archive("NuInsSeg")
    with caplog.at_level(logging.WARNING, logger="instanseg_scnp.data.download"):
        verify_archive(dataclasses.replace(entry, md5=None), path)
    assert "no published checksum of NuInsSeg.zip of Zenodo record 10518968 is known, so its content is " \
           "unverified (its size matches)" in caplog.text


def test_extract_archive_is_atomic_and_skips_a_done_extraction(make_archive, tmp_path):
    path, _ = make_archive("LyNSeC")
    out = extract_archive(path, tmp_path / "raw" / "LyNSeC")
    with zipfile.ZipFile(path) as archive:
        assert sorted(files_under(out)) == sorted([*archive.namelist(), EXTRACTED_FROM])
    stamp = (out / "lynsec 1" / "0_l1.npy").stat().st_mtime_ns
    extract_archive(path, out)
    assert (out / "lynsec 1" / "0_l1.npy").stat().st_mtime_ns == stamp
    assert [p.name for p in (tmp_path / "raw").iterdir()] == ["LyNSeC"]  # no staging folder left


def test_extract_archive_replaces_an_extraction_of_another_archive(make_archive, tmp_path):
    path, _ = make_archive("LyNSeC")
    out = extract_archive(path, tmp_path / "raw")
    write_zip(path, {"lynsec 1/new.npy": b"x"})
    extract_archive(path, out)
    assert files_under(out) == [EXTRACTED_FROM, "lynsec 1/new.npy"]


def test_extract_archive_truncated_zip_names_the_file_and_leaves_nothing(make_archive, tmp_path):
    path, _ = make_archive("NuInsSeg")
    path.write_bytes(path.read_bytes()[: path.stat().st_size // 2])
    with pytest.raises(ArchiveError, match=r"NuInsSeg\.zip: not a complete zip archive .*download it again"):
        extract_archive(path, tmp_path / "raw" / "NuInsSeg")
    assert not (tmp_path / "raw").exists() or files_under(tmp_path / "raw") == []


def test_extract_archive_failed_check_leaves_nothing(make_archive, tmp_path):
    path, _ = make_archive("NuInsSeg")

    def refuse(folder):
        raise ArchiveError("not laid out as expected")

    with pytest.raises(ArchiveError, match="not laid out as expected"):
        extract_archive(path, tmp_path / "raw" / "NuInsSeg", check=refuse)
    assert files_under(tmp_path / "raw") == []


def test_fetch_archive_rejects_negative_retries(tmp_path):
    with pytest.raises(ValueError, match="retries must be an int >= 0, got -1"):
        fetch_archive(REGISTRY["LyNSeC"], tmp_path, retries=-1)
