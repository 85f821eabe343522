"""Files that are either complete or absent (write to a temporary name, then rename), and JSON read and written
strictly."""

from __future__ import annotations

import contextlib
import fnmatch
import hashlib
import json
import math
import os
import shutil
from collections.abc import Collection, Iterator
from pathlib import Path


@contextlib.contextmanager
def atomic_path(path: str | os.PathLike) -> Iterator[Path]:
    """Yield a temporary path next to ``path``; on success rename it onto ``path``.

    The rename is atomic on POSIX and Windows when both names share a folder, so a
    reader (or a run killed mid-write) never sees a half-written file. On error the
    temporary file is removed and ``path`` is left as it was.

    Examples
    --------
    >>> import tempfile
    >>> target = Path(tempfile.mkdtemp()) / "out.txt"
    >>> with atomic_path(target) as tmp:
    ...     _ = tmp.write_text("done")
    >>> target.read_text()
    'done'
    """
    path = Path(path)
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    try:
        yield tmp
        with open(tmp, "rb+") as handle:
            os.fsync(handle.fileno())
        os.replace(tmp, path)
    finally:
        tmp.unlink(missing_ok=True)


def write_text_atomic(path: str | os.PathLike, text: str) -> None:
    """Write ``text`` to ``path`` through :func:`atomic_path`."""
    with atomic_path(path) as tmp:
        tmp.write_text(text)


def check_replaceable(path: str | os.PathLike, *, overwrite: bool, ours: Collection[str] | None = None) -> None:
    """Raise ``FileExistsError`` unless ``path`` may be written: absent, or ``overwrite`` and ours to replace.

    With ``ours`` (the names, or patterns, this project writes in such a folder), an existing
    folder is replaced only when every entry in it is one of them: ``--overwrite``
    never deletes a user's file that happens to sit in an output folder.
    """
    path = Path(path)
    if not path.exists():
        return
    if not overwrite:
        raise FileExistsError(f"{str(path)!r} exists; pass --overwrite (overwrite=True) to replace it")
    if ours is None:
        return
    if not path.is_dir():
        raise FileExistsError(f"{str(path)!r} is a file, not a folder this project wrote; --overwrite replaces only "
                              "such folders: choose another output")
    unexpected = foreign_entries(path, ours)
    if unexpected:
        raise FileExistsError(f"{str(path)!r} holds files this project did not write ({', '.join(unexpected)}); "
                              "--overwrite replaces only its own output folders: move them or choose another output")


def foreign_entries(folder: str | os.PathLike, ours: Collection[str]) -> list[str]:
    """The names in ``folder`` that match none of ``ours`` (names or :mod:`fnmatch` patterns), sorted."""
    return sorted(entry.name for entry in Path(folder).iterdir()
                  if not any(fnmatch.fnmatchcase(entry.name, pattern) for pattern in ours))


def strict_json(data: object) -> str:
    """``data`` as strict JSON (RFC 8259): NaN and ±inf, which it cannot hold, become ``null``.

    Examples
    --------
    >>> json.loads(strict_json({"f1": float("nan"), "scores": [1.0, float("inf")]}))
    {'f1': None, 'scores': [1.0, None]}
    """

    def finite(value: object) -> object:
        if isinstance(value, float) and not math.isfinite(value):
            return None
        if isinstance(value, dict):
            return {key: finite(item) for key, item in value.items()}
        if isinstance(value, (list, tuple)):
            return [finite(item) for item in value]
        return value

    return json.dumps(finite(data), indent=2, allow_nan=False)


def sha256_of(path: str | os.PathLike) -> str:
    """The SHA-256 of a file's bytes, read in 1 MiB blocks (big dataset files need not fit in memory)."""
    digest = hashlib.sha256()
    with open(path, "rb") as handle:
        for block in iter(lambda: handle.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def read_json(path: str | os.PathLike) -> object:
    """The JSON in ``path``; a missing, unreadable or corrupt file raises ``ValueError`` naming it."""
    path = Path(path)
    try:
        return json.loads(path.read_text())
    except FileNotFoundError:
        raise FileNotFoundError(f"{str(path)!r} does not exist") from None
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as error:
        raise ValueError(f"{str(path)!r} is not readable JSON ({error}); was it truncated or edited?") from None


@contextlib.contextmanager
def atomic_directory(path: str | os.PathLike, *, overwrite: bool = False,
                     ours: Collection[str] | None = None) -> Iterator[Path]:
    """Yield an empty staging folder next to ``path``; on success it replaces ``path`` whole.

    An existing ``path`` is refused unless ``overwrite`` (and, with ``ours``, unless
    it holds only those names: :func:`check_replaceable`); on error the staging
    folder is removed and ``path`` is left as it was.
    """
    path = Path(path)
    check_replaceable(path, overwrite=overwrite, ours=ours)
    staging = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    shutil.rmtree(staging, ignore_errors=True)
    staging.mkdir(parents=True)
    try:
        yield staging
        if path.exists():
            shutil.rmtree(path)
        staging.rename(path)
    finally:
        shutil.rmtree(staging, ignore_errors=True)
