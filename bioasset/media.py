"""The media table: one row per photo, with its observation, taxon path and observer.

Plain Python over DuckDB and pyarrow (no Dagster). ``media`` is ``photos ⟕ observations ⟕
taxonomy ⟕ observers``, so it has exactly one row per photo; a photo whose observation is missing
from the snapshot (an *orphan*) keeps its row with null observation fields and is counted. The file
is sorted by ``taxon_path`` (then ``photo_id``) and written in row groups of
:data:`MEDIA_ROW_GROUP_SIZE` rows, so a subtree query (:func:`subtree_media_query`) reads only the
row groups whose path range overlaps the subtree. Taxon names and ranks are not repeated on every
photo (join ``taxonomy`` on ``taxon_id``).

This is the heaviest step of ingestion, so it is built in two halves:

- DuckDB joins photos to observations and sorts on ``(path_order, photo_id)``, carrying only
  fixed-width columns. The long strings (the taxon path, the observer's login and name) stay out
  of the sort as row numbers into two small tables, which keeps the sort about half as wide: it
  costs less and spills less (memory stays bounded by DuckDB's ``memory_limit`` at any size).
- The sorted rows stream out as Arrow batches, regrouped into row groups. In each group the taxon
  path becomes a dictionary column over the paths the group uses (the group is sorted, so these
  are few and in order: no path is copied per photo, and the writer does not hash them again); the
  observer's login and name are looked up by row number (``pyarrow.compute.take``). pyarrow
  writes the Parquet file on its own thread while DuckDB produces the next rows. pyarrow's writer
  encodes these rows at about half the CPU cost of DuckDB's ``COPY`` (see docs/benchmarks.md), and
  ``arrow_lossless_conversion`` keeps ``observation_uuid`` a Parquet UUID, so the schema is the same
  as DuckDB would write.
"""

from __future__ import annotations

import time
from collections import Counter
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import Iterable

import duckdb
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq

from bioasset.taxonomy import subtree_predicates, taxon_paths
from bioasset.storage import atomic_path
from bioasset.warehouse import DuckDBSettings, Warehouse, require_table

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

#: Columns whose values repeat within a row group, stored dictionary-encoded; the others (UUIDs,
#: coordinates, ids) gain nothing from a dictionary and are stored plain.
DICTIONARY_COLUMNS = ("taxon_path", "license", "quality_grade", "observer_login", "observer_name", "extension")


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


#: Low-cardinality string columns that travel through the sort as DuckDB ENUM codes (one byte):
#: column -> the table alias it comes from in :func:`sorted_media_rows_query`.
CODED_COLUMNS = {"license": "p", "quality_grade": "o", "extension": "p"}


def media_codes_sql(photos: str, observations: str, taxonomy: str, observers: str) -> list[str]:
    """Statements creating the codes that stand in for media's strings during the sort.

    - ``taxon_rows`` numbers the taxa by path (``path_order``), so sorting photos on it is sorting
      them on the path string; ``observer_rows`` numbers the observers by id (``observer_row``).
      Ties are broken on every column, so a number means the same row in the join and in the
      lookup arrays.
    - One ENUM type per :data:`CODED_COLUMNS` entry (``license_code``, …), made of the values
      present, sorted (so the same snapshot gives the same file, byte for byte); it reaches Arrow as
      a dictionary array, which pyarrow writes without re-encoding.
    """
    tables = {"p": photos, "o": observations}
    return [
        "CREATE TEMP TABLE taxon_rows AS SELECT taxon_id, path, "
        f"(row_number() OVER (ORDER BY path, taxon_id) - 1)::INTEGER AS path_order FROM {taxonomy}",
        "CREATE TEMP TABLE observer_rows AS SELECT observer_id, login, name, "
        f"(row_number() OVER (ORDER BY observer_id, login, name) - 1)::INTEGER AS observer_row FROM {observers}",
    ] + [
        f"CREATE TYPE {column}_code AS ENUM (SELECT DISTINCT {column} FROM {tables[alias]} WHERE {column} IS NOT NULL ORDER BY 1)"
        for column, alias in CODED_COLUMNS.items()
    ]


def sorted_media_rows_query(photos: str, observations: str) -> str:
    """SQL of media's rows in file order, with ``path_order`` and ``observer_row`` in place of the
    taxon path and the observer's login and name, ENUM codes for :data:`CODED_COLUMNS`, and an
    ``orphan`` flag. Needs the tables and types of :func:`media_codes_sql`."""
    coded = {column: f"{alias}.{column}::{column}_code AS {column}" for column, alias in CODED_COLUMNS.items()}
    return f"""
    SELECT p.photo_id, p.observation_uuid, p.position, o.taxon_id, x.path_order,
           {coded["license"]}, {coded["quality_grade"]}, o.observed_on, o.latitude, o.longitude, o.positional_accuracy,
           coalesce(p.observer_id, o.observer_id) AS observer_id, u.observer_row,
           {coded["extension"]}, p.width, p.height, (o.observation_uuid IS NULL)::TINYINT AS orphan
    FROM {photos} p
    LEFT JOIN {observations} o ON o.observation_uuid = p.observation_uuid
    LEFT JOIN taxon_rows x ON x.taxon_id = o.taxon_id
    LEFT JOIN observer_rows u ON u.observer_id = coalesce(p.observer_id, o.observer_id)
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
        con.execute("SET arrow_lossless_conversion = true")  # UUIDs come out as arrow.uuid, not text
        for statement in media_codes_sql(photos, observations, taxonomy, observers):
            con.execute(statement)
        lookups = _Lookups(
            paths=_arrow_column(con, "SELECT path FROM taxon_rows ORDER BY path_order"),
            logins=_arrow_column(con, "SELECT login FROM observer_rows ORDER BY observer_row"),
            names=_arrow_column(con, "SELECT name FROM observer_rows ORDER BY observer_row"),
        )
        reader = con.sql(sorted_media_rows_query(photos, observations)).to_arrow_reader(row_group_size)
        stats = _write_media(reader, lookups, dest, row_group_size, warehouse.settings)
        top = con.execute(
            f"""SELECT c.taxon_id, x.name, x.rank, c.n
                FROM (SELECT unnest($ids) AS taxon_id, unnest($counts) AS n) c
                LEFT JOIN (SELECT taxon_id, any_value(name) AS name, any_value(rank) AS rank FROM {taxonomy} GROUP BY taxon_id) x
                       USING (taxon_id)
                ORDER BY c.n DESC, c.taxon_id LIMIT {int(top_n)}""",
            {"ids": list(stats.taxa), "counts": list(stats.taxa.values())},
        ).fetchall()
    return MediaBuild(
        path=dest,
        rows=stats.rows,
        orphan_photos=stats.orphans,
        photos_without_taxon=stats.without_path - stats.orphans,
        top_taxa=[(int(i), str(n), str(r), int(c)) for i, n, r, c in top],
        photos_per_license=sorted(stats.licenses.items(), key=lambda item: (-item[1], item[0])),
        elapsed_s=time.perf_counter() - started,
    )


@dataclass
class _Lookups:
    """The long strings of media, indexed by the row numbers the sort carries."""

    paths: pa.Array
    logins: pa.Array
    names: pa.Array

    def media_group(self, rows: pa.Table) -> pa.Table:
        """One row group of sorted rows in ``MEDIA_COLUMNS`` form (row numbers replaced by their strings)."""
        observer_row = rows.column("observer_row")
        strings = {
            "taxon_path": self._path_dictionary(rows.column("path_order").combine_chunks()),
            "observer_login": pc.take(self.logins, observer_row),
            "observer_name": pc.take(self.names, observer_row),
        }
        return pa.table([strings[c] if c in strings else rows.column(c) for c in MEDIA_COLUMNS], names=list(MEDIA_COLUMNS))

    def _path_dictionary(self, path_order: pa.Array) -> pa.DictionaryArray:
        """The group's taxon paths as a dictionary array of the paths it uses.

        The paths are not copied once per photo (a path is ~60 bytes and most photos share one),
        and the Parquet writer takes the dictionary as it is instead of hashing every string. The
        group is sorted, so its distinct path numbers come out of ``unique`` in path order.
        """
        used = pc.unique(path_order).drop_null()
        return pa.DictionaryArray.from_arrays(pc.index_in(path_order, value_set=used), pc.take(self.paths, used))

    def schema(self, rows: pa.Schema) -> pa.Schema:
        types = {
            "taxon_path": pa.dictionary(pa.int32(), self.paths.type),
            "observer_login": self.logins.type,
            "observer_name": self.names.type,
        }
        return pa.schema([pa.field(c, types[c]) if c in types else rows.field(c) for c in MEDIA_COLUMNS])


@dataclass
class _MediaStats:
    """What the UI reports about media, counted while the rows stream past."""

    rows: int = 0
    orphans: int = 0
    without_path: int = 0  # orphans included
    licenses: Counter = field(default_factory=Counter)
    taxa: Counter = field(default_factory=Counter)

    def add(self, rows: pa.Table) -> None:
        self.rows += rows.num_rows
        self.orphans += int(pc.sum(rows.column("orphan")).as_py() or 0)
        self.without_path += rows.column("path_order").null_count
        for entry in pc.value_counts(rows.column("license")).to_pylist():
            self.licenses["(none)" if entry["values"] is None else entry["values"]] += entry["counts"]
        for entry in pc.value_counts(rows.column("taxon_id").drop_null()).to_pylist():
            self.taxa[entry["values"]] += entry["counts"]


def _write_media(reader: pa.RecordBatchReader, lookups: _Lookups, dest: Path, row_group_size: int, settings: DuckDBSettings) -> _MediaStats:
    """Stream the sorted rows into ``dest`` (atomically) in row groups of ``row_group_size``; returns their counts.

    The writing thread encodes row group *n* while this one looks up the strings of the next group
    and DuckDB produces its rows: pyarrow and DuckDB both release the GIL. (The writer is the
    slowest of the three: about 4 of media's 12 CPU seconds at 10M photos, on one thread.)
    """
    stats = _MediaStats()
    schema = lookups.schema(reader.schema)

    with atomic_path(dest) as tmp, ThreadPoolExecutor(1, thread_name_prefix="media-writer") as pool:
        # No Arrow schema in the footer: readers see plain strings for the dictionary-coded columns,
        # as in a file DuckDB writes.
        with pq.ParquetWriter(
            tmp, schema, compression=settings.parquet_compression, compression_level=settings.zstd_level,
            use_dictionary=list(DICTIONARY_COLUMNS), store_schema=False,
        ) as writer:
            pending: Future | None = None
            for rows in _row_groups(reader, reader.schema, row_group_size):
                stats.add(rows)
                group = lookups.media_group(rows)
                if pending is not None:
                    pending.result()
                pending = pool.submit(writer.write_table, group, row_group_size=row_group_size)
            if pending is not None:
                pending.result()
    return stats


def _row_groups(batches: Iterable[pa.RecordBatch], schema: pa.Schema, size: int) -> Iterable[pa.Table]:
    """Tables of exactly ``size`` rows (the last one smaller) from batches of any sizes."""
    held: list[pa.RecordBatch] = []
    rows = 0
    for batch in batches:
        held.append(batch)
        rows += batch.num_rows
        while rows >= size:
            table = pa.Table.from_batches(held, schema)
            yield table.slice(0, size)
            rest = table.slice(size)
            held, rows = rest.to_batches(), rest.num_rows
    if rows:
        yield pa.Table.from_batches(held, schema)


def _arrow_column(con: duckdb.DuckDBPyConnection, query: str) -> pa.Array:
    return con.sql(query).to_arrow_table().column(0).combine_chunks()


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
