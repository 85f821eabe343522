"""Fetch, verify and extract a dataset's archive: pooch for the download, complete-or-absent for every file.

pooch streams the download into a temporary file next to its target, checks its
hash and only then renames it into place, retrying failed attempts; a download
cut off midway never gets the archive's name. The size (when known) and any
second checksum are checked here, and a file that fails is deleted. Extraction
goes to a staging folder that replaces the destination only when every member
is out and the layout checks pass.
"""

from __future__ import annotations

import json
import logging
import os
import zipfile
import zlib
from collections.abc import Callable
from pathlib import Path

import pooch

from instanseg_scnp._files import atomic_directory, write_text_atomic
from instanseg_scnp.data.registry import Archive

logger = logging.getLogger(__name__)

BASE_URL_ENV = "INSTANSEG_SCNP_BASE_URL"
"""An environment variable naming a mirror: ``$INSTANSEG_SCNP_BASE_URL/<file name>`` instead of Zenodo."""
EXTRACTED_FROM = ".extracted-from.json"
"""Written into an extracted folder: the archive it came from, so a changed archive is extracted again."""
HASHES = ("md5", "sha256")


class ArchiveError(ValueError):
    """An archive that is corrupt, incomplete, not the published file, or not laid out as its dataset's.

    The message names the file.
    """


class DownloadError(OSError):
    """A download that failed (network, server); nothing of it was kept, so running again retries it."""


def archive_url(archive: Archive, base_url: str | None = None) -> str:
    """The URL to fetch ``archive`` from: ``base_url/<file name>``, else ``$INSTANSEG_SCNP_BASE_URL/<file name>``,
    else the Zenodo record.

    Examples
    --------
    >>> from instanseg_scnp.data.registry import REGISTRY
    >>> archive_url(REGISTRY["LyNSeC"], "http://mirror.example.org/cells/")
    'http://mirror.example.org/cells/lynsec.zip'
    """
    base_url = base_url or os.environ.get(BASE_URL_ENV)
    return f"{base_url.rstrip('/')}/{archive.filename}" if base_url else archive.url


def fetch_archive(archive: Archive, folder: str | os.PathLike, *, base_url: str | None = None, retries: int = 3,
                  progress: bool = False) -> Path:
    """Download ``archive`` into ``folder`` (unless a verified copy is there) and verify it.

    Parameters
    ----------
    archive : Archive
        What to fetch, with its published size and checksums.
    folder : path
        The download cache; created if needed.
    base_url : str, optional
        A mirror to fetch ``<base_url>/<file name>`` from (see :func:`archive_url`).
    retries : int
        Further attempts after a failed one (pooch waits 1 s, 2 s, ... in between).
    progress : bool
        Show pooch's progress bar.

    Returns
    -------
    Path
        The verified archive.

    Raises
    ------
    ValueError
        ``retries`` is not an int >= 0.
    ArchiveError
        The file does not match its published checksum or size (it is deleted).
    DownloadError
        The download failed; nothing of it was kept.
    """
    import requests  # pooch's own dependency, for its exceptions

    if isinstance(retries, bool) or not isinstance(retries, int) or retries < 0:
        raise ValueError(f"retries must be an int >= 0, got {retries!r}")
    url = archive_url(archive, base_url)
    fetcher = pooch.create(path=folder, base_url="", registry={archive.filename: archive.known_hash},
                           urls={archive.filename: url}, retry_if_failed=retries)
    try:
        path = Path(fetcher.fetch(archive.filename, progressbar=progress))
    except ValueError as error:  # pooch's checksum mismatch; it has deleted the download
        raise ArchiveError(f"{archive.filename} downloaded from {url} is not the published file: {error} "
                           "Nothing was kept.") from error
    except requests.exceptions.RequestException as error:
        raise DownloadError(f"could not download {archive.filename} from {url} ({error}); nothing was kept, "
                            "run again to retry") from error
    checked = archive.known_hash.split(":")[0] if archive.known_hash else None
    try:
        _verify(archive, path, checked=checked)
    except ArchiveError:
        path.unlink(missing_ok=True)
        raise
    return path


def verify_archive(archive: Archive, path: str | os.PathLike) -> None:
    """Check a file against ``archive``'s published size and every published checksum.

    A check whose value is not known is skipped; with no checksum at all a
    warning is logged that the file is unverified.

    Raises
    ------
    FileNotFoundError
        No such file.
    ArchiveError
        Wrong size or checksum.
    """
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"archive {str(path)!r} does not exist")
    _verify(archive, path)


def _verify(archive: Archive, path: Path, *, checked: str | None = None) -> None:
    source = f"{archive.filename} of Zenodo record {archive.record}"
    size = path.stat().st_size
    if archive.size is not None and size != archive.size:
        raise ArchiveError(f"{path}: {size} bytes, but {source} has {archive.size}: an incomplete download "
                           "or another file")
    for algorithm in HASHES:
        expected = getattr(archive, algorithm)
        if expected and algorithm != checked:
            actual = pooch.file_hash(str(path), alg=algorithm)
            if actual != expected.lower():
                raise ArchiveError(f"{path}: {algorithm} {actual}, but {source} has {algorithm} {expected}: "
                                   "a corrupt download or another file")
    if not (archive.md5 or archive.sha256):
        logger.warning("%s: no published checksum of %s is known, so its content is unverified%s", path, source,
                       " (its size matches)" if archive.size is not None else "")


def extract_archive(path: str | os.PathLike, destination: str | os.PathLike, *,
                    check: Callable[[Path], object] | None = None) -> Path:
    """Extract a zip archive into ``destination``, whole or not at all; skip it if already extracted from it.

    Parameters
    ----------
    path : path
        The ``.zip`` file.
    destination : path
        The folder to create (replaced if it was extracted from another archive).
    check : callable, optional
        Called with the staging folder once everything is extracted; an error
        it raises leaves ``destination`` as it was.

    Returns
    -------
    Path
        ``destination``.

    Raises
    ------
    ArchiveError
        Not a zip file, or a truncated or corrupt one.
    """
    path, destination = Path(path), Path(destination)
    stat = path.stat()
    source = {"archive": path.name, "size": stat.st_size, "mtime_ns": stat.st_mtime_ns}
    marker = destination / EXTRACTED_FROM
    if marker.is_file() and json.loads(marker.read_text()) == source:
        logger.info("%s is already extracted in %s", path.name, destination)
        return destination
    logger.info("extracting %s into %s", path, destination)
    destination.parent.mkdir(parents=True, exist_ok=True)
    try:
        with zipfile.ZipFile(path) as archive, atomic_directory(destination, overwrite=True) as staging:
            archive.extractall(staging)  # drops absolute paths and '..' from member names
            if check is not None:
                check(staging)
            write_text_atomic(staging / EXTRACTED_FROM, json.dumps(source))
    except (zipfile.BadZipFile, zlib.error, EOFError) as error:
        raise ArchiveError(f"{path}: not a complete zip archive ({error}); delete it and download it again") \
            from error
    return destination
