"""Small hand-made iNaturalist snapshots for the ingest tests.

The taxonomy has the awkward cases on purpose: homonym genera (*Morus* and *Pieris* are both a
plant and an animal genus), a genus placed directly under an order (no family), a 33.5
``rank_level`` (zoosection), a subspecies, and an inactive taxon. Names carry ``'`` and ``"``.
"""

from __future__ import annotations

import io
import tarfile
import uuid
from datetime import date
from pathlib import Path
from typing import Iterable, Sequence

from bioasset.inat_format import TABLE_COLUMNS, dated_tarball_key, snapshot_dirname

SNAPSHOT = date(2024, 11, 27)
SNAPSHOT_KEY = SNAPSHOT.isoformat()

LIFE = 48460
ANIMALIA, PLANTAE = 1, 47126
# animal side
CHORDATA, AVES, SULIFORMES, SULIDAE, MORUS_BIRD, MORUS_BASSANUS, OLD_GANNET = 2, 3, 71261, 4636, 12345, 4637, 99999
ARTHROPODA, INSECTA, LEPIDOPTERA, COSSINA, PAPILIONOIDEA, PIERIDAE = 47120, 47158, 47157, 1000, 47224, 47223
PIERIS_BUTTERFLY, PIERIS_RAPAE, PIERIS_RAPAE_RAPAE = 52464, 55626, 55627
ZYGENTOMA, LEPISMA, LEPISMA_SACCHARINUM = 900, 901, 902  # genus directly under an order
CNIDARIA, AURELIA_AURITA = 23, 2301  # "2" (Chordata) is a string prefix of "23": a trap for naive LIKE '…/2%'

# plant side
TRACHEOPHYTA, MAGNOLIOPSIDA, ROSALES, MORACEAE, MORUS_PLANT, MORUS_ALBA = 211194, 47124, 47132, 47131, 47130, 54800
ERICALES, ERICACEAE, PIERIS_PLANT, PIERIS_JAPONICA = 47128, 47127, 60000, 60001


def _taxon(taxon_id, parent_path, rank_level, rank, name, active=True):
    return (taxon_id, parent_path, rank_level, rank, name, "true" if active else "false")


_A = f"{LIFE}/{ANIMALIA}"
_AV = f"{_A}/{CHORDATA}/{AVES}/{SULIFORMES}/{SULIDAE}"
_IN = f"{_A}/{ARTHROPODA}/{INSECTA}"
_PI = f"{_IN}/{LEPIDOPTERA}/{COSSINA}/{PAPILIONOIDEA}/{PIERIDAE}"
_P = f"{LIFE}/{PLANTAE}/{TRACHEOPHYTA}/{MAGNOLIOPSIDA}"

TAXA = [
    _taxon(LIFE, None, 100, "stateofmatter", "Life"),
    _taxon(ANIMALIA, f"{LIFE}", 70, "kingdom", "Animalia"),
    _taxon(CHORDATA, _A, 60, "phylum", "Chordata"),
    _taxon(AVES, f"{_A}/{CHORDATA}", 50, "class", "Aves"),
    _taxon(SULIFORMES, f"{_A}/{CHORDATA}/{AVES}", 40, "order", "Suliformes"),
    _taxon(SULIDAE, f"{_A}/{CHORDATA}/{AVES}/{SULIFORMES}", 30, "family", "Sulidae"),
    _taxon(MORUS_BIRD, _AV, 20, "genus", "Morus"),
    _taxon(MORUS_BASSANUS, f"{_AV}/{MORUS_BIRD}", 10, "species", "Morus bassanus"),
    _taxon(OLD_GANNET, f"{_AV}/{MORUS_BIRD}", 10, "species", "Sula bassana", active=False),
    _taxon(CNIDARIA, _A, 60, "phylum", "Cnidaria"),
    _taxon(AURELIA_AURITA, f"{_A}/{CNIDARIA}", 10, "species", "Aurelia aurita"),
    _taxon(ARTHROPODA, _A, 60, "phylum", "Arthropoda"),
    _taxon(INSECTA, f"{_A}/{ARTHROPODA}", 50, "class", "Insecta"),
    _taxon(LEPIDOPTERA, _IN, 40, "order", "Lepidoptera"),
    _taxon(COSSINA, f"{_IN}/{LEPIDOPTERA}", 33.5, "zoosection", "Cossina"),
    _taxon(PAPILIONOIDEA, f"{_IN}/{LEPIDOPTERA}/{COSSINA}", 33, "superfamily", "Papilionoidea"),
    _taxon(PIERIDAE, f"{_IN}/{LEPIDOPTERA}/{COSSINA}/{PAPILIONOIDEA}", 30, "family", "Pieridae"),
    _taxon(PIERIS_BUTTERFLY, _PI, 20, "genus", "Pieris"),
    _taxon(PIERIS_RAPAE, f"{_PI}/{PIERIS_BUTTERFLY}", 10, "species", "Pieris rapae"),
    _taxon(PIERIS_RAPAE_RAPAE, f"{_PI}/{PIERIS_BUTTERFLY}/{PIERIS_RAPAE}", 5, "subspecies", "Pieris rapae rapae"),
    _taxon(ZYGENTOMA, _IN, 40, "order", "Zygentoma"),
    _taxon(LEPISMA, f"{_IN}/{ZYGENTOMA}", 20, "genus", "Lepisma"),
    _taxon(LEPISMA_SACCHARINUM, f"{_IN}/{ZYGENTOMA}/{LEPISMA}", 10, "species", "Lepisma saccharinum"),
    _taxon(PLANTAE, f"{LIFE}", 70, "kingdom", "Plantae"),
    _taxon(TRACHEOPHYTA, f"{LIFE}/{PLANTAE}", 60, "phylum", "Tracheophyta"),
    _taxon(MAGNOLIOPSIDA, f"{LIFE}/{PLANTAE}/{TRACHEOPHYTA}", 50, "class", "Magnoliopsida"),
    _taxon(ROSALES, _P, 40, "order", "Rosales"),
    _taxon(MORACEAE, f"{_P}/{ROSALES}", 30, "family", "Moraceae"),
    _taxon(MORUS_PLANT, f"{_P}/{ROSALES}/{MORACEAE}", 20, "genus", "Morus"),
    _taxon(MORUS_ALBA, f"{_P}/{ROSALES}/{MORACEAE}/{MORUS_PLANT}", 10, "species", "Morus alba"),
    _taxon(ERICALES, _P, 40, "order", "Ericales"),
    _taxon(ERICACEAE, f"{_P}/{ERICALES}", 30, "family", "Ericaceae"),
    _taxon(PIERIS_PLANT, f"{_P}/{ERICALES}/{ERICACEAE}", 20, "genus", "Pieris"),
    _taxon(PIERIS_JAPONICA, f"{_P}/{ERICALES}/{ERICACEAE}/{PIERIS_PLANT}", 10, "species", "Pieris japonica"),
]

OBSERVERS = [
    (1, "obrien", "Pat O'Brien"),
    (2, "jj", 'Jean "JJ" Doe'),
    (3, "anon", None),
]

#: (taxon_id, observer_id, photos) per observation; observation and photo ids follow from the index.
_OBSERVATION_PLAN = [
    (MORUS_BASSANUS, 1, 3),
    (MORUS_BIRD, 2, 1),
    (PIERIS_RAPAE, 1, 2),
    (PIERIS_RAPAE_RAPAE, 2, 1),
    (LEPISMA_SACCHARINUM, 3, 2),
    (MORUS_ALBA, 2, 2),
    (PIERIS_JAPONICA, 1, 1),
    (MORUS_PLANT, 3, 1),
    (AURELIA_AURITA, 2, 1),
    (None, 1, 1),  # an observation without a taxon
]
LICENSES = ("CC0", "CC-BY", "CC-BY-NC", "CC-BY-SA")


def observation_uuid(i: int) -> str:
    return str(uuid.UUID(int=0xA000_0000 + i))


def photo_uuid(i: int) -> str:
    return str(uuid.UUID(int=0xB000_0000 + i))


OBSERVATIONS = [
    (observation_uuid(i), observer, 50.0 + i / 10, -1.5 - i / 10, 10 if i % 2 else None, taxon,
     "research" if i % 3 else "needs_id", f"2024-0{1 + i % 9}-1{i % 10}", 0.25)
    for i, (taxon, observer, _) in enumerate(_OBSERVATION_PLAN)
]  # fmt: skip

PHOTOS = []
for _i, (_taxon_id, _observer, _count) in enumerate(_OBSERVATION_PLAN):
    for _position in range(_count):
        _n = len(PHOTOS)
        PHOTOS.append((photo_uuid(_n), 1000 + _n, observation_uuid(_i), _observer, "jpeg", LICENSES[_n % 4], 2048, 1536, _position))

#: Photos per taxon id (the taxon of each photo's observation).
PHOTOS_PER_TAXON: dict[int | None, int] = {}
for _taxon_id, _observer, _count in _OBSERVATION_PLAN:
    PHOTOS_PER_TAXON[_taxon_id] = PHOTOS_PER_TAXON.get(_taxon_id, 0) + _count

ROWS = {"taxa": TAXA, "observers": OBSERVERS, "observations": OBSERVATIONS, "photos": PHOTOS, "projects": [], "observations_projects": []}


def tsv(table: str, rows: Iterable[Sequence | str]) -> bytes:
    """The iNat TSV of ``rows``: a header, tabs, no quoting, None as an empty field.

    A row given as ``str`` (or ``bytes``) is written as it is, for hand-made bad lines.
    """
    out = io.BytesIO()
    out.write(("\t".join(TABLE_COLUMNS[table]) + "\n").encode())
    for row in rows:
        if isinstance(row, bytes):
            out.write(row + b"\n")
        elif isinstance(row, str):
            out.write(row.encode() + b"\n")
        else:
            out.write(("\t".join("" if v is None else str(v) for v in row) + "\n").encode())
    return out.getvalue()


def snapshot_tarball(
    snapshot: date = SNAPSHOT,
    files: dict[str, bytes] | None = None,
    *,
    omit: Iterable[str] = (),
) -> bytes:
    """The gzip-compressed tarball of a snapshot: ``files`` override the default table contents."""
    contents = {table: tsv(table, rows) for table, rows in ROWS.items()}
    contents.update(files or {})
    for table in omit:
        contents.pop(table, None)
    buffer = io.BytesIO()
    with tarfile.open(fileobj=buffer, mode="w:gz") as archive:
        folder = tarfile.TarInfo(snapshot_dirname(snapshot))
        folder.type = tarfile.DIRTYPE
        archive.addfile(folder)
        for table, data in contents.items():
            info = tarfile.TarInfo(f"{snapshot_dirname(snapshot)}/{table}.csv")
            info.size = len(data)
            archive.addfile(info, io.BytesIO(data))
    return buffer.getvalue()


def write_bucket(root: Path, snapshot: date = SNAPSHOT, **tarball_options) -> Path:
    """A local folder laid out like the bucket, holding the dated tarball of ``snapshot``."""
    path = root / dated_tarball_key(snapshot)
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(snapshot_tarball(snapshot, **tarball_options))
    return root
