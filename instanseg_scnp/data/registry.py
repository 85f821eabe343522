"""Where the three public datasets come from: Zenodo records, file names, sizes and checksums, nothing else.

Every value below was looked up, not guessed; where a value could not be
confirmed it is None, and :func:`~instanseg_scnp.data.download.verify_archive`
logs that the file goes unverified on that count. Sources:

- Record ids and file names: upstream InstanSeg's own loaders
  (``instanseg/utils/data_download.py`` in instanseg-torch 0.1.2).
- SHA-256 of ``IHC_TMA_dataset.zip`` and ``lynsec.zip``: torch-em's loaders of
  the same Zenodo files (``torch_em/data/datasets/histopathology/srsanet.py``
  and ``lynsec.py`` in constantinpape/torch-em), which check them after every
  download.
- Size of ``NuInsSeg.zip``: the size Zenodo's API reports for the file, as
  recorded by a third-party dataset manifest (1,627,427,342 bytes).
- Zenodo's own MD5s (``https://zenodo.org/api/records/<id>``) could not be read
  from here (no internet), so every ``md5`` is None; fill them in from the API
  when you can, and the download is checked against them as well.
"""

from __future__ import annotations

from dataclasses import dataclass

ZENODO = "https://zenodo.org"


@dataclass(frozen=True)
class Archive:
    """One downloadable archive of a dataset, as its Zenodo record publishes it.

    Examples
    --------
    >>> REGISTRY["NuInsSeg"].url
    'https://zenodo.org/records/10518968/files/NuInsSeg.zip?download=1'
    >>> REGISTRY["LyNSeC"].known_hash[:7]
    'sha256:'
    """

    dataset: str
    record: int
    filename: str
    size: int | None = None
    """Bytes, or None if not confirmed."""
    md5: str | None = None
    """Hex MD5 as Zenodo publishes it, or None if not confirmed."""
    sha256: str | None = None
    """Hex SHA-256, or None if not confirmed."""

    @property
    def url(self) -> str:
        """The file on Zenodo."""
        return f"{ZENODO}/records/{self.record}/files/{self.filename}?download=1"

    @property
    def doi(self) -> str:
        """The record's DOI."""
        return f"10.5281/zenodo.{self.record}"

    @property
    def known_hash(self) -> str | None:
        """The checksum in pooch's ``alg:hex`` form (MD5 first, as Zenodo publishes it), or None."""
        if self.md5:
            return f"md5:{self.md5}"
        return f"sha256:{self.sha256}" if self.sha256 else None


REGISTRY: dict[str, Archive] = {
    archive.dataset: archive
    for archive in (
        Archive("IHC_TMA", 7647846, "IHC_TMA_dataset.zip",
                size=None,  # not confirmed
                md5=None,  # not confirmed
                sha256="9dcc1c94b5d8af5383d3c91141617b1621904ee9bd6f69d2223e7f4363cc80d9"),  # torch-em srsanet.py
        Archive("LyNSeC", 8065174, "lynsec.zip",
                size=None,  # not confirmed
                md5=None,  # not confirmed
                sha256="14b9b5a9c39cb41afc7f31de5a995cefff0947c215e14ab9c7a463f32fbbf4b6"),  # torch-em lynsec.py
        Archive("NuInsSeg", 10518968, "NuInsSeg.zip",
                size=1627427342,  # Zenodo API size, via a third-party manifest
                md5=None,  # not confirmed
                sha256=None),  # not confirmed: the download is checked by size only
    )
}
"""The archives by dataset name."""

DATASETS = tuple(REGISTRY)
"""The names ``prepare`` and ``--data`` accept: 'IHC_TMA', 'LyNSeC', 'NuInsSeg'."""
