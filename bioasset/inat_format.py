"""The iNaturalist open-data export format: one description shared by the sample-bucket
generator, the ingestion code and the tests.

Facts (see ../shared/DESIGN.md): tab-separated, header row, no quoting (fields may hold
``'`` and ``"``), NULL is an empty field, booleans are ``true``/``false``, ``rank_level`` is a
float, ancestry is ``/``-separated from 48460 (Life) down to the parent.
"""

from __future__ import annotations

import re
from datetime import date

LIFE_TAXON_ID = 48460
INSECTA_TAXON_ID = 47158

#: Column name -> DuckDB type, in file order. Mirrors inaturalist-open-data's structure.sql.
TABLE_COLUMNS: dict[str, dict[str, str]] = {
    "observations": {
        "observation_uuid": "UUID",
        "observer_id": "INTEGER",
        "latitude": "DOUBLE",
        "longitude": "DOUBLE",
        "positional_accuracy": "INTEGER",
        "taxon_id": "INTEGER",
        "quality_grade": "VARCHAR",
        "observed_on": "DATE",
        "anomaly_score": "DOUBLE",
    },
    "photos": {
        "photo_uuid": "UUID",
        "photo_id": "BIGINT",
        "observation_uuid": "UUID",
        "observer_id": "INTEGER",
        "extension": "VARCHAR",
        "license": "VARCHAR",
        "width": "SMALLINT",
        "height": "SMALLINT",
        "position": "SMALLINT",
    },
    "taxa": {
        "taxon_id": "INTEGER",
        "ancestry": "VARCHAR",
        "rank_level": "DOUBLE",
        "rank": "VARCHAR",
        "name": "VARCHAR",
        "active": "BOOLEAN",
    },
    "observers": {
        "observer_id": "INTEGER",
        "login": "VARCHAR",
        "name": "VARCHAR",
    },
    "projects": {
        "project_id": "INTEGER",
        "title": "VARCHAR",
        "project_type": "VARCHAR",
    },
    "observations_projects": {
        "observation_uuid": "UUID",
        "project_id": "INTEGER",
    },
}

#: Tables the ingestion turns into typed Parquet (the others travel in the tarball only).
CORE_TABLES = ("taxa", "observations", "photos", "observers")

#: Every table of a snapshot tarball, file name = table name + ".csv".
SNAPSHOT_TABLES = tuple(TABLE_COLUMNS)

#: Tables also published gzip-compressed at the bucket root (``{table}.csv.gz``).
ROOT_CSV_TABLES = CORE_TABLES

LICENSES = ("CC0", "CC-BY", "CC-BY-NC", "CC-BY-SA", "CC-BY-ND", "CC-BY-NC-SA", "CC-BY-NC-ND", "PD")
QUALITY_GRADES = ("research", "needs_id", "casual")

#: Image size name -> longest side in pixels (``square`` is a 75x75 crop).
IMAGE_SIZES = {"original": 2048, "large": 1024, "medium": 500, "small": 240, "thumb": 100, "square": 75}

#: The seven main ranks, top down, plus subspecies. Matched on the ``rank`` string.
MAIN_RANKS = ("kingdom", "phylum", "class", "order", "family", "genus", "species")
RANKS_WITH_SUBSPECIES = MAIN_RANKS + ("subspecies",)

METADATA_PREFIX = "metadata"
LATEST_TARBALL = f"{METADATA_PREFIX}/inaturalist-open-data-latest.tar.gz"
_DATED_TARBALL = re.compile(r"inaturalist-open-data-(\d{8})\.tar\.gz$")


def dated_tarball_key(snapshot: date) -> str:
    """Bucket key of the tarball of one snapshot, e.g. ``metadata/inaturalist-open-data-20241127.tar.gz``."""
    return f"{METADATA_PREFIX}/inaturalist-open-data-{snapshot:%Y%m%d}.tar.gz"


def snapshot_dirname(snapshot: date) -> str:
    """The single directory inside a snapshot tarball."""
    return f"inaturalist-open-data-{snapshot:%Y%m%d}"


def parse_dated_tarball_key(key: str) -> date | None:
    """The snapshot date of a dated tarball key, or None if the key is not one."""
    match = _DATED_TARBALL.search(key)
    if not match:
        return None
    stamp = match.group(1)
    return date(int(stamp[:4]), int(stamp[4:6]), int(stamp[6:]))


def snapshot_key(snapshot: date) -> str:
    """Dagster partition key of a snapshot: ``YYYY-MM-DD``."""
    return snapshot.isoformat()


def photo_key(photo_id: int, size: str, extension: str) -> str:
    """Bucket key of one image: ``photos/{photo_id}/{size}.{extension}``."""
    return f"photos/{photo_id}/{size}.{extension}"


def header_line(table: str) -> str:
    return "\t".join(TABLE_COLUMNS[table]) + "\n"
