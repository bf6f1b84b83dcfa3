"""The media table: one row per photo, with its observation, taxon path and observer.

Plain Python over DuckDB (no Dagster). ``media`` is ``photos ⟕ observations ⟕ taxonomy ⟕
observers``, so it has exactly one row per photo; a photo whose observation is missing from the
snapshot (an *orphan*) keeps its row with null observation fields and is counted. The file is
sorted by ``taxon_path`` (then ``photo_id``) and written in row groups of
:data:`MEDIA_ROW_GROUP_SIZE` rows, so a subtree query (:func:`subtree_media_query`) reads only the
row groups whose path range overlaps the subtree. Taxon names and ranks are not repeated on every
photo (join ``taxonomy`` on ``taxon_id``): that keeps the big sort and the file narrow.
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Iterable

import duckdb

from bioasset.taxonomy import subtree_predicates, taxon_paths
from bioasset.warehouse import Warehouse, require_table, sql_string

#: Rows per Parquet row group of ``media``: small enough that a species' subtree touches one or
#: two groups, large enough that footers and per-group overhead stay negligible (200 groups at 20M).
MEDIA_ROW_GROUP_SIZE = 100_000

MEDIA_COLUMNS = (
    "photo_id", "observation_uuid", "position",
    "taxon_id", "taxon_path",
    "license", "quality_grade", "observed_on", "latitude", "longitude", "positional_accuracy",
    "observer_id", "observer_login", "observer_name",
    "extension", "width", "height",
)  # fmt: skip


@dataclass
class MediaBuild:
    path: Path
    rows: int
    orphan_photos: int  # photos whose observation is not in the snapshot
    photos_without_taxon: int  # photos with an observation but no (known) taxon
    top_taxa: list[tuple[int, str, str, int]] = field(default_factory=list)  # (taxon_id, name, rank, photos)
    photos_per_license: list[tuple[str, int]] = field(default_factory=list)
    elapsed_s: float = 0.0

    @property
    def orphan_ratio(self) -> float:
        return self.orphan_photos / self.rows if self.rows else 0.0

    @property
    def rows_per_s(self) -> float:
        return self.rows / self.elapsed_s if self.elapsed_s > 0 else 0.0


def media_query(photos: str, observations: str, taxonomy: str, observers: str) -> str:
    """SQL of the media table over four relations (table names or ``read_parquet(…)`` calls).

    Rows are sorted by taxon path through ``path_order``, the rank of each path among the taxa: the
    same order as sorting on the path string, but an integer sort key for the big sort.
    """
    return f"""
    SELECT p.photo_id, p.observation_uuid, p.position,
           o.taxon_id, x.path AS taxon_path,
           p.license, o.quality_grade, o.observed_on, o.latitude, o.longitude, o.positional_accuracy,
           coalesce(p.observer_id, o.observer_id) AS observer_id, u.login AS observer_login, u.name AS observer_name,
           p.extension, p.width, p.height
    FROM {photos} p
    LEFT JOIN {observations} o ON o.observation_uuid = p.observation_uuid
    LEFT JOIN (SELECT taxon_id, path, row_number() OVER (ORDER BY path) AS path_order FROM {taxonomy}) x
           ON x.taxon_id = o.taxon_id
    LEFT JOIN {observers} u ON u.observer_id = coalesce(p.observer_id, o.observer_id)
    ORDER BY x.path_order NULLS LAST, p.photo_id
    """


def build_media(
    warehouse: Warehouse,
    photos_path: Path,
    observations_path: Path,
    taxonomy_path: Path,
    observers_path: Path,
    dest: Path,
    *,
    top_n: int = 10,
    row_group_size: int = MEDIA_ROW_GROUP_SIZE,
) -> MediaBuild:
    """Write the ``media`` table, sorted by taxon path, and gather what the UI reports about it."""
    started = time.perf_counter()
    photos, observations, taxonomy, observers = (
        require_table(p) for p in (photos_path, observations_path, taxonomy_path, observers_path)
    )
    with warehouse.connect() as con:
        rows = warehouse.copy_to_parquet(
            con, media_query(photos, observations, taxonomy, observers), dest, row_group_size=row_group_size
        )
        orphans = con.execute(
            f"SELECT count(*) FROM {photos} p ANTI JOIN {observations} o ON o.observation_uuid = p.observation_uuid"
        ).fetchall()[0][0]
        media = f"read_parquet({sql_string(str(dest))})"
        without_taxon = con.execute(f"SELECT count(*) FILTER (WHERE taxon_path IS NULL) FROM {media}").fetchall()[0][0]
        top = con.execute(
            f"SELECT m.taxon_id, x.name, x.rank, m.n FROM (SELECT taxon_id, count(*) AS n FROM {media} "
            f"WHERE taxon_id IS NOT NULL GROUP BY taxon_id ORDER BY n DESC, taxon_id LIMIT {int(top_n)}) m "
            f"LEFT JOIN {taxonomy} x USING (taxon_id) ORDER BY m.n DESC, m.taxon_id"
        ).fetchall()
        licenses = con.execute(
            f"SELECT coalesce(license, '(none)'), count(*) AS n FROM {media} GROUP BY ALL ORDER BY n DESC, 1"
        ).fetchall()
    return MediaBuild(
        path=dest,
        rows=rows,
        orphan_photos=int(orphans),
        photos_without_taxon=int(without_taxon) - int(orphans),
        top_taxa=[(int(i), str(n), str(r), int(c)) for i, n, r, c in top],
        photos_per_license=[(str(k), int(n)) for k, n in licenses],
        elapsed_s=time.perf_counter() - started,
    )


def subtree_media_query(
    con: duckdb.DuckDBPyConnection,
    taxon_ids: int | Iterable[int],
    *,
    media: str = "media",
    taxonomy: str = "taxonomy",
    columns: str = "*",
    where: str | None = None,
) -> str:
    """SQL selecting the media rows in the subtrees of ``taxon_ids`` (each taxon and all below it).

    ``con`` resolves each id to its taxon path in ``taxonomy`` (:class:`~bioasset.taxonomy.UnknownTaxonError`
    names unknown ids); the returned query has literal path ranges, which DuckDB pushes into the
    Parquet scan of ``media``. ``where`` adds a further condition (e.g. ``"license IN ('CC0', 'CC-BY')"``).
    Select by id, not by name: genus names such as *Morus* and *Pieris* exist in two kingdoms.
    """
    predicate = subtree_predicates(taxon_paths(con, taxon_ids, taxonomy=taxonomy).values(), "taxon_path")
    condition = f"{predicate} AND ({where})" if where else predicate
    return f"SELECT {columns} FROM {media} WHERE {condition}"
