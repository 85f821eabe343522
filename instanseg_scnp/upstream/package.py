"""The TorchScript weights of a bioimage.io model package: a folder or a ``.zip`` with an ``rdf.yaml``.

A package's ``rdf.yaml`` names its TorchScript file in ``weights: torchscript:
source:`` (upstream's released InstanSeg models and ``instanseg-scnp export
--format bioimageio`` both name ``instanseg.pt``), with its SHA-256 where given,
which is checked. Inference (:func:`~instanseg_scnp.upstream.load_model`) and
fine-tuning (``train --init``) read packages through this module.
"""

from __future__ import annotations

import hashlib
import zipfile
from pathlib import Path, PurePosixPath

from instanseg_scnp._files import sha256_of
from instanseg_scnp._logs import first_line

__all__ = ["RDF", "PackageError", "is_package_zip", "package_folder_weights", "package_zip_weights"]

RDF = "rdf.yaml"
"""The description file of a bioimage.io model package."""


class PackageError(ValueError):
    """A bioimage.io package whose TorchScript weights cannot be read; the message names the file."""


def is_package_zip(path: str | Path) -> bool:
    """Whether ``path`` is a zip archive holding an ``rdf.yaml`` (TorchScript files are zip archives too)."""
    path = Path(path)
    if not path.is_file() or not zipfile.is_zipfile(path):
        return False
    with zipfile.ZipFile(path) as archive:
        return any(PurePosixPath(name).name == RDF for name in archive.namelist())


def package_folder_weights(folder: str | Path) -> tuple[Path, str]:
    """The TorchScript file that the ``rdf.yaml`` of the package ``folder`` names, and its SHA-256 (checked)."""
    rdf = Path(folder) / RDF
    source, expected = _torchscript_source(rdf.read_text(encoding="utf-8"), str(rdf))
    file = rdf.parent / source
    if not file.is_file():
        raise PackageError(f"{str(rdf)!r} names TorchScript weights {source!r}, which {str(file)!r} does not hold")
    sha256 = sha256_of(file)
    _check_sha256(str(file), sha256, expected)
    return file, sha256


def package_zip_weights(path: str | Path) -> tuple[str, bytes]:
    """``(ZIP!member, bytes)`` of the TorchScript file that the ``rdf.yaml`` of the package ``path`` names.

    The shallowest ``rdf.yaml`` in the archive is the package's; its SHA-256 is checked.
    """
    path = Path(path)
    try:
        with zipfile.ZipFile(path) as archive:
            rdfs = sorted((name for name in archive.namelist() if PurePosixPath(name).name == RDF),
                          key=lambda name: name.count("/"))
            if not rdfs:
                raise PackageError(f"{str(path)!r} is not a bioimage.io package: it holds no {RDF}")
            source, expected = _torchscript_source(archive.read(rdfs[0]).decode("utf-8"), f"{path}!{rdfs[0]}")
            member = str(PurePosixPath(rdfs[0]).parent / source).removeprefix("./")
            try:
                data = archive.read(member)
            except KeyError:
                raise PackageError(f"{str(path)!r}: its {RDF} names TorchScript weights {source!r}, which the "
                                   "package does not hold") from None
    except (zipfile.BadZipFile, OSError, EOFError, UnicodeDecodeError) as error:
        raise PackageError(f"{str(path)!r} is not a readable bioimage.io package ({first_line(error)})") from error
    _check_sha256(f"{path}!{member}", hashlib.sha256(data).hexdigest(), expected)
    return f"{path}!{member}", data


def _torchscript_source(text: str, where: str) -> tuple[str, str | None]:
    """The file an ``rdf.yaml`` names in ``weights: torchscript: source:``, and its SHA-256 if given."""
    import yaml

    try:
        entry = yaml.safe_load(text)["weights"]["torchscript"]
        source = entry["source"]
    except (yaml.YAMLError, TypeError, KeyError) as error:
        raise PackageError(f"{where!r} names no TorchScript weights (weights: torchscript: source:): "
                           f"{first_line(error)}") from error
    if not isinstance(source, str) or "://" in source:
        raise PackageError(f"{where!r}: its TorchScript weights {source!r} are not a file of the package; "
                           "download the package as a .zip and pass that")
    return source, entry.get("sha256")


def _check_sha256(name: str, actual: str, expected: str | None) -> None:
    if expected is not None and actual != expected:
        raise PackageError(f"{name!r} has SHA-256 {actual}, but its {RDF} says {expected}; was it truncated or "
                           "replaced?")
