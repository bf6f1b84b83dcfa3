"""Dataset selection: a dataset spec over the newest ``media`` → the dataset's manifest.

Plain Python over DuckDB (no Dagster). :func:`build_manifest` selects one row per photo of the
spec (``MANIFEST_COLUMNS``), assigns splits stably against the previous manifest, and writes
``{warehouse}/datasets/{name}/manifest.parquet`` atomically. Every photo of the root subtree that
does not make it is counted under the first reason that excludes it (``EXCLUSION_REASONS``, in
the order the rules apply):

1. ``not_in_include_taxa``, ``in_exclude_taxa``: outside the spec's subtrees;
2. ``quality_grade``, ``license``: not among the spec's (a license outside the spec never enters);
3. ``inactive_taxon``: the observation's taxon, or its ancestor at the label rank, is inactive (a
   synonym; the export does not say what replaced it, so its photos cannot be labelled);
4. ``above_label_rank``: identified only above the label rank (e.g. to genus for species labels);
5. ``no_extension``, ``no_observer`` (only when splits are grouped by observer): unusable rows;
6. ``max_photos_per_observation``: an observation's photos beyond the cap, lowest position kept;
7. ``min_per_class``: every photo of a class with fewer photos (the class is dropped, reported);
8. ``max_per_class``: photos beyond the cap, taken round-robin over the class's observers, and
   within an observer round-robin over its observations, both in seeded-hash order; photos the
   previous manifest (of the same spec) had in the class come first, so that the capped selection
   is stable across snapshots too;
9. ``too_few_groups``: a class with fewer than three observations (observers) cannot be split.

The manifest file carries the few facts downstream steps need (source, image size, resize,
snapshot, spec hash) in its Parquet key-value metadata (:func:`read_manifest_info`), so image
downloads, the registry and garbage collection need no spec folder.

Images of a dataset are downloaded per label class (the ``taxa`` partitions, keyed
``{taxon_id}-{slug}``): :func:`image_requests` lists what every current manifest needs of a class,
and :func:`photo_set_hashes` fingerprints it, so that only classes whose photo set changed are
downloaded again.
"""

from __future__ import annotations

import hashlib
import io
import json
import os
import re
import time
import unicodedata
import uuid
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, Callable, Mapping

import duckdb
import fsspec
import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq
from PIL import Image, ImageOps

from bioasset.dataset_spec import DatasetSpec, TaxonCandidate, resolve_spec_taxa, spec_hash
from bioasset.download import DownloadItem, DownloadProgress, ImageStore, ItemResult, Outcome, download_images, stored_size_name
from bioasset.inat_format import MAIN_RANKS
from bioasset.manifest_schema import MANIFEST_COLUMNS, SPLITS, VERSION_COLUMNS
from bioasset.media import subtree_media_query
from bioasset.registry import MANIFEST_FILENAME, ManifestDiff, catalog, datasets_dir, diff_manifests, quoted, read_store_files
from bioasset.registry import manifest_path as version_manifest_path
from bioasset.splits import MIN_GROUPS_PER_CLASS, assign_splits
from bioasset.storage import atomic_write_bytes
from bioasset.taxonomy import subtree_predicates
from bioasset.warehouse import Warehouse, sql_string

EXCLUSION_REASONS = (
    "not_in_include_taxa",
    "in_exclude_taxa",
    "quality_grade",
    "license",
    "inactive_taxon",
    "above_label_rank",
    "no_extension",
    "no_observer",
    "max_photos_per_observation",
    "min_per_class",
    "max_per_class",
    "too_few_groups",
)

#: Parquet key-value metadata key of a manifest's :class:`ManifestInfo`.
MANIFEST_INFO_KEY = b"bioasset"

#: A taxa partition key: ``{taxon_id}-{slug}``, at most 64 characters (it also names a journal).
TAXON_KEY = re.compile(r"^([1-9][0-9]{0,9})-[a-z0-9][a-z0-9-]*$")
TAXON_KEY_MAX_LENGTH = 64


class SelectionError(ValueError):
    """A dataset cannot be selected or read: the message names the input, the problem and the fix."""


# ---------------------------------------------------------------------------------------------
# Taxon lookup over the taxonomy table
# ---------------------------------------------------------------------------------------------


class DuckDBTaxonLookup:
    """A :class:`~bioasset.dataset_spec.TaxonLookup` over the ``taxonomy`` table (active taxa)."""

    def __init__(self, con: duckdb.DuckDBPyConnection, taxonomy: str = "taxonomy"):
        self.con = con
        self.taxonomy = taxonomy

    def _candidates(self, where: str, params: list) -> list[TaxonCandidate]:
        ranks = ", ".join(f'"{rank}"' for rank in MAIN_RANKS)
        lineage = f"concat_ws(' > ', {ranks}, CASE WHEN rank NOT IN ({', '.join(map(sql_string, MAIN_RANKS))}) THEN name END)"
        rows = self.con.execute(
            f"SELECT taxon_id, name, rank, path, {lineage} FROM {self.taxonomy} WHERE active AND {where} ORDER BY taxon_id",
            params,
        ).fetchall()
        return [TaxonCandidate(int(i), str(n), str(r), str(p), str(lin or n)) for i, n, r, p, lin in rows]

    def taxa_named(self, name: str) -> list[TaxonCandidate]:
        return self._candidates("lower(name) = lower(?)", [" ".join(name.split())])

    def taxon_with_id(self, taxon_id: int) -> TaxonCandidate | None:
        found = self._candidates("taxon_id = ?", [int(taxon_id)])
        return found[0] if found else None


# ---------------------------------------------------------------------------------------------
# Layout
# ---------------------------------------------------------------------------------------------


def dataset_manifest_path(warehouse: Warehouse, name: str) -> Path:
    """``{warehouse}/datasets/{name}/manifest.parquet``: the current manifest of a dataset."""
    return datasets_dir(warehouse) / name / MANIFEST_FILENAME


def manifest_class_keys(manifest: str | os.PathLike[str]) -> set[str]:
    """The ``taxa`` partition keys of the classes of one manifest file."""
    with duckdb.connect() as con:
        rows = con.execute(f"SELECT DISTINCT label_id, label_name FROM read_parquet({sql_string(str(manifest))})").fetchall()
    return {taxon_key(int(label_id), str(label_name)) for label_id, label_name in rows}


def current_manifests(warehouse: Warehouse) -> dict[str, Path]:
    """Dataset name -> current manifest, for every dataset with one. A dataset is retired by
    deleting its ``manifest.parquet`` (its frozen versions stay)."""
    return {path.parent.name: path for path in sorted(datasets_dir(warehouse).glob(f"*/{MANIFEST_FILENAME}"))}


def newest_snapshot(warehouse: Warehouse) -> str:
    """The newest snapshot key whose ``media`` and ``taxonomy`` are both built."""
    for key in reversed(warehouse.snapshot_keys()):
        if all(warehouse.table_path(key, table).is_file() for table in ("media", "taxonomy")):
            return key
    raise SelectionError(
        f"No snapshot in the warehouse {warehouse.root} has both media.parquet and taxonomy.parquet. "
        "Fix: ingest a snapshot first (ingest_snapshot_job, or materialize the ingest assets)."
    )


# ---------------------------------------------------------------------------------------------
# What a manifest file says about itself
# ---------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class ManifestInfo:
    """The facts downstream steps need, stored in the manifest's Parquet metadata."""

    dataset: str
    snapshot: str
    spec_hash: str
    source: str
    image_size: str
    resize_shorter_side: int | None
    jpeg_quality: int
    label_rank: str

    @property
    def stored_size(self) -> str:
        """The image store's size folder of this dataset's images (``medium-short256-q90``)."""
        return stored_size_name(self.image_size, self.resize_shorter_side, self.jpeg_quality)

    @classmethod
    def of(cls, spec: DatasetSpec, snapshot: str) -> ManifestInfo:
        resize = spec.resize
        return cls(
            dataset=spec.name,
            snapshot=snapshot,
            spec_hash=spec_hash(spec),
            source=spec.source,
            image_size=spec.image_size,
            resize_shorter_side=resize.shorter_side if resize else None,
            jpeg_quality=resize.jpeg_quality if resize else 90,
            label_rank=spec.label_rank,
        )


def read_manifest_info(path: str | os.PathLike[str]) -> ManifestInfo:
    """The :class:`ManifestInfo` of a manifest written by :func:`build_manifest`."""
    try:
        metadata = pq.read_schema(path).metadata or {}
    except (OSError, pa.ArrowInvalid) as error:
        raise SelectionError(f"Cannot read the manifest {path}: {error}. Fix: re-materialize dataset_manifest.") from error
    if MANIFEST_INFO_KEY not in metadata:
        raise SelectionError(
            f"The manifest {path} has no '{MANIFEST_INFO_KEY.decode()}' metadata, so its image size is unknown. "
            "Fix: re-materialize dataset_manifest for this dataset (manifests are written by bioasset.selection)."
        )
    values = json.loads(metadata[MANIFEST_INFO_KEY])
    return ManifestInfo(**{name: values[name] for name in ManifestInfo.__dataclass_fields__})


# ---------------------------------------------------------------------------------------------
# Building a manifest
# ---------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class DroppedClass:
    label_id: int
    label_name: str
    photos: int
    reason: str  # min_per_class or too_few_groups
    detail: str


@dataclass
class ManifestBuild:
    """What :func:`build_manifest` wrote and why rows are not in it."""

    path: Path
    info: ManifestInfo
    rows: int
    scanned: int  # photos in the root subtree
    #: reason -> photos excluded for it (every reason present, in EXCLUSION_REASONS order)
    excluded: dict[str, int]
    dropped_classes: list[DroppedClass]
    #: label_id, label_name, photos, then one count per split; largest class first
    class_counts: pd.DataFrame
    previous: str | None  # what the splits and the update report compare with (a path), if anything
    update: ManifestDiff | None
    moved_photos: int  # kept photos whose split changed (see bioasset.splits)
    elapsed_s: float = 0.0
    taxon_keys: list[str] = field(default_factory=list)  # the taxa partition key of each class

    @property
    def per_split(self) -> dict[str, int]:
        return {split: int(self.class_counts[split].sum()) for split in SPLITS}

    @property
    def classes(self) -> int:
        return len(self.class_counts)


def build_manifest(warehouse: Warehouse, spec: DatasetSpec, *, open_data_url: str, snapshot: str | None = None) -> ManifestBuild:
    """Select the photos of ``spec`` from ``snapshot`` (default: the newest built one) and write
    the dataset's manifest atomically. ``open_data_url`` is the bucket the ``source_url`` column
    points into (``s3://inaturalist-open-data``, or a folder laid out like it). The previous
    manifest of the dataset (or else its latest frozen version) keeps splits stable and is the
    baseline of the update report."""
    started = time.perf_counter()
    snapshot = snapshot or newest_snapshot(warehouse)
    info = ManifestInfo.of(spec, snapshot)
    dest = dataset_manifest_path(warehouse, spec.name)
    previous = _previous_manifest(warehouse, spec.name)
    with warehouse.connect() as con:
        for table in ("media", "taxonomy"):
            path = warehouse.table_path(snapshot, table)
            if not path.is_file():
                raise SelectionError(f"Snapshot {snapshot} has no {table} table ({path}). Fix: ingest that snapshot first.")
            con.execute(f"CREATE VIEW {table} AS SELECT * FROM read_parquet({sql_string(str(path))})")
        excluded, scanned = _select(con, spec)
        previous_splits = _read_previous(con, previous)
        dropped = _apply_class_limits(con, spec, excluded, keep_previous=_same_spec(previous, info))
        moved = _assign_splits(con, spec, previous_splits, excluded, dropped)
        table = con.sql(_manifest_query(spec, open_data_url)).to_arrow_table()
        if table.num_rows == 0:
            reasons = ", ".join(f"{reason}: {n}" for reason, n in excluded.items() if n) or "the root subtree has no photos"
            raise SelectionError(
                f"No photo of {snapshot} passes {spec.source_path} ({scanned} photos in the subtree of root_taxon; excluded by "
                f"{reasons}). Fix: widen the spec (licenses, quality_grades, include_taxa, min_per_class); "
                "the previous manifest is kept."
            )
        _write_parquet(table, dest, info)
        new = f"read_parquet({sql_string(str(dest))})"
        # The registry's diff also compares image hashes, which a manifest does not have yet.
        update = None if previous is None else diff_manifests(con, "previous_manifest", f"(SELECT *, NULL::VARCHAR AS sha256 FROM {new})")
        class_counts = _class_counts(con, new)
    return ManifestBuild(
        path=dest,
        info=info,
        rows=table.num_rows,
        scanned=scanned,
        excluded=excluded,
        dropped_classes=sorted(dropped, key=lambda d: (d.reason, d.label_name, d.label_id)),
        class_counts=class_counts,
        previous=str(previous) if previous else None,
        update=update,
        moved_photos=moved,
        elapsed_s=time.perf_counter() - started,
        taxon_keys=[taxon_key(i, n) for i, n in zip(class_counts["label_id"], class_counts["label_name"])],
    )


def _same_spec(previous: Path | None, info: ManifestInfo) -> bool:
    """Whether ``previous`` was selected by the same spec (a new snapshot, not a new spec)."""
    if previous is None:
        return False
    try:
        return read_manifest_info(previous).spec_hash == info.spec_hash
    except SelectionError:
        return False  # a frozen version's copy may lack the manifest metadata: start afresh


def _previous_manifest(warehouse: Warehouse, name: str) -> Path | None:
    current = dataset_manifest_path(warehouse, name)
    if current.is_file():
        return current
    versions = catalog(warehouse, name)
    return version_manifest_path(warehouse, versions[-1]) if versions else None


def _select(con: duckdb.DuckDBPyConnection, spec: DatasetSpec) -> tuple[dict[str, int], int]:
    """Create ``eligible``: the root subtree's photos that pass the per-photo rules, each with its
    label and rank path; count the others by reason."""
    taxa = resolve_spec_taxa(spec, DuckDBTaxonLookup(con))
    rank = spec.label_rank
    rank_columns = ", ".join(f't."{r}", t.{r}_id' for r in MAIN_RANKS)
    in_list = lambda values: ", ".join(sql_string(v) for v in values)  # noqa: E731
    rules = []
    if taxa.include:
        rules.append(("not_in_include_taxa", f"NOT {subtree_predicates([t.path for t in taxa.include])}"))
    if taxa.exclude:
        rules.append(("in_exclude_taxa", subtree_predicates([t.path for t in taxa.exclude])))
    rules += [
        ("quality_grade", f"quality_grade IS NULL OR quality_grade NOT IN ({in_list(spec.quality_grades)})"),
        ("license", f"license IS NULL OR license NOT IN ({in_list(spec.licenses)})"),
        ("inactive_taxon", "NOT coalesce(taxon_active, false) OR NOT coalesce(label_active, true)"),
        ("above_label_rank", "label_id IS NULL"),
        ("no_extension", "extension IS NULL OR extension = ''"),
    ]
    if spec.split.group_by == "observer":
        rules.append(("no_observer", "observer_id IS NULL"))
    reason = "CASE " + " ".join(f"WHEN {condition} THEN {sql_string(name)}" for name, condition in rules) + " END"
    subtree = subtree_media_query(con, taxa.root.taxon_id)
    con.execute(
        f"""
        CREATE TEMP TABLE scoped AS
        SELECT m.photo_id, m.observation_uuid::VARCHAR AS observation_uuid, m.position,
               m.observer_id, m.observer_login, m.observer_name, m.taxon_id, m.taxon_path,
               m.license, m.quality_grade, m.observed_on, m.extension,
               t.active AS taxon_active, t.{rank}_id AS label_id, t."{rank}" AS label_name, l.active AS label_active,
               {rank_columns}
        FROM ({subtree}) m
        JOIN taxonomy t ON t.taxon_id = m.taxon_id
        LEFT JOIN taxonomy l ON l.taxon_id = t.{rank}_id
        """
    )
    con.execute(f"CREATE TEMP TABLE classified AS SELECT *, {reason} AS excluded_by FROM scoped")
    counts = dict(con.execute("SELECT excluded_by, count(*) FROM classified WHERE excluded_by IS NOT NULL GROUP BY ALL").fetchall())
    # Photos of one observation beyond the cap; the first positions are the ones observers lead with.
    cap = spec.max_photos_per_observation or 2**31 - 1
    con.execute(
        f"""
        CREATE TEMP TABLE eligible AS
        SELECT * FROM (
            SELECT * EXCLUDE (excluded_by),
                   row_number() OVER (PARTITION BY observation_uuid ORDER BY position NULLS LAST, photo_id) AS photo_turn
            FROM classified WHERE excluded_by IS NULL)
        """
    )
    counts["max_photos_per_observation"] = con.execute(f"SELECT count(*) FROM eligible WHERE photo_turn > {cap}").fetchone()[0]
    con.execute(f"DELETE FROM eligible WHERE photo_turn > {cap}")
    scanned = con.execute("SELECT count(*) FROM scoped").fetchone()[0]
    return {name: int(counts.get(name, 0)) for name in EXCLUSION_REASONS}, int(scanned)


def _apply_class_limits(
    con: duckdb.DuckDBPyConnection, spec: DatasetSpec, excluded: dict[str, int], *, keep_previous: bool
) -> list[DroppedClass]:
    """Drop classes under ``min_per_class``; cap classes over ``max_per_class`` (see the module notes).

    With ``keep_previous`` (a previous manifest of the same spec in ``previous_manifest``), the
    photos it had in a class come first, so a capped class keeps them while they stay eligible and
    new photos only fill the room left: otherwise every new observer would push out chosen photos,
    val and test ones included. A changed spec (seed, cap, ...) selects afresh."""
    small = con.execute(
        f"SELECT label_id, any_value(label_name), count(*) AS n FROM eligible GROUP BY label_id HAVING n < {spec.min_per_class}"
    ).fetchall()
    dropped = [
        DroppedClass(int(i), str(name), int(n), "min_per_class", f"{n} photos < min_per_class {spec.min_per_class}")
        for i, name, n in small
    ]
    excluded["min_per_class"] = sum(d.photos for d in dropped)
    con.execute(f"DELETE FROM eligible WHERE label_id IN (SELECT unnest({[d.label_id for d in dropped]}::INTEGER[]))")
    if spec.max_per_class is None:
        return dropped
    seed = sql_string(f"{spec.seed}:")
    chosen_before = (
        "EXISTS (SELECT 1 FROM previous_manifest p WHERE p.photo_id = eligible.photo_id AND p.label_id = eligible.label_id)"
        if keep_previous else "false"
    )
    con.execute(
        f"""
        CREATE TEMP TABLE turns AS
        WITH hashed AS (
            SELECT photo_id, label_id, observer_id, observation_uuid, photo_turn, {chosen_before} AS chosen_before,
                   md5({seed} || 'observer:' || coalesce(observer_id::VARCHAR, '')) AS observer_hash,
                   md5({seed} || 'observation:' || observation_uuid) AS observation_hash
            FROM eligible),
        observation_turns AS (
            SELECT *, dense_rank() OVER (PARTITION BY label_id, observer_id ORDER BY observation_hash, observation_uuid) AS observation_turn
            FROM hashed),
        observer_turns AS (
            -- An observer's photos in round-robin order over its observations.
            SELECT *, row_number() OVER (PARTITION BY label_id, observer_id ORDER BY photo_turn, observation_turn) AS observer_turn
            FROM observation_turns)
        -- The class's photos in round-robin order over its observers.
        SELECT photo_id, row_number() OVER (
                   PARTITION BY label_id
                   ORDER BY chosen_before DESC, observer_turn, observer_hash, observer_id, observation_turn, photo_id) AS class_turn
        FROM observer_turns
        """
    )
    over = f"photo_id IN (SELECT photo_id FROM turns WHERE class_turn > {spec.max_per_class})"
    excluded["max_per_class"] = con.execute(f"SELECT count(*) FROM eligible WHERE {over}").fetchone()[0]
    con.execute(f"DELETE FROM eligible WHERE {over}")
    return dropped


def _read_previous(con: duckdb.DuckDBPyConnection, previous: Path | None) -> pd.DataFrame | None:
    """Load the previous manifest into ``previous_manifest`` (it may be the file about to be
    replaced) and return its splits."""
    if previous is None:
        return None
    con.execute(
        "CREATE TEMP TABLE previous_manifest AS SELECT photo_id, label_id, label_name, split, NULL::VARCHAR AS sha256, license "
        f"FROM read_parquet({sql_string(str(previous))})"
    )
    return con.execute("SELECT photo_id, split FROM previous_manifest").fetchdf()


def _assign_splits(
    con: duckdb.DuckDBPyConnection,
    spec: DatasetSpec,
    previous: pd.DataFrame | None,
    excluded: dict[str, int],
    dropped: list[DroppedClass],
) -> int:
    """Create ``assigned`` (photo_id, split) with :func:`bioasset.splits.assign_splits`."""
    group = "observation_uuid" if spec.split.group_by == "observation" else "observer_id::VARCHAR"
    photos = con.execute(f"SELECT photo_id, label_id AS label, {group} AS group_key FROM eligible ORDER BY photo_id").fetchdf()
    result = assign_splits(photos, ratios=spec.split.ratios, seed=spec.seed, previous=previous)
    names = dict(con.execute("SELECT label_id, any_value(label_name) FROM eligible GROUP BY ALL").fetchall())
    photo_counts = photos["label"].value_counts()
    for label, groups in result.dropped_classes:
        n = int(photo_counts[label])
        detail = f"{groups} {spec.split.group_by}(s) < {MIN_GROUPS_PER_CLASS}: too few to put one in each split"
        dropped.append(DroppedClass(int(label), str(names[label]), n, "too_few_groups", detail))
        excluded["too_few_groups"] += n
    assigned = result.assignments.assign(split=result.assignments["split"].astype(str))
    con.register("assigned_frame", assigned)
    con.execute("CREATE TEMP TABLE assigned AS SELECT * FROM assigned_frame")
    con.unregister("assigned_frame")
    return result.moved_photos


def _attribution_sql() -> str:
    """iNaturalist's attribution: ``© name, some rights reserved (CC-BY)``; for CC0
    ``name, no rights reserved (CC0)``; for PD ``name, no known copyright restrictions (PD)``.
    The name is the observer's, else their login, else ``iNaturalist user {id}``."""
    name = "coalesce(nullif(trim(observer_name), ''), nullif(trim(observer_login), ''), 'iNaturalist user ' || observer_id::VARCHAR)"
    return (
        f"CASE license WHEN 'CC0' THEN {name} || ', no rights reserved (CC0)' "
        f"WHEN 'PD' THEN {name} || ', no known copyright restrictions (PD)' "
        f"ELSE '© ' || {name} || ', some rights reserved (' || license || ')' END"
    )


def _manifest_query(spec: DatasetSpec, open_data_url: str) -> str:
    base = open_data_url.rstrip("/")
    values = {
        "attribution": _attribution_sql(),
        "image_size": sql_string(spec.image_size),
        "source_url": f"{sql_string(base + '/photos/')} || e.photo_id::VARCHAR || '/' || {sql_string(spec.image_size)} || '.' || e.extension",
        "split": "a.split",
    }
    columns = ", ".join(f'CAST({values.get(c, f"e.{quoted(c)}")} AS {t}) AS {quoted(c)}' for c, t in MANIFEST_COLUMNS.items())
    return f"SELECT {columns} FROM eligible e JOIN assigned a USING (photo_id) ORDER BY e.label_id, e.photo_id"


def _write_parquet(table: pa.Table, dest: Path, info: ManifestInfo) -> None:
    """Write ``table`` with ``info`` in its metadata: temp file, then rename."""
    dest.parent.mkdir(parents=True, exist_ok=True)
    metadata = {**(table.schema.metadata or {}), MANIFEST_INFO_KEY: json.dumps(asdict(info)).encode()}
    tmp = dest.with_name(f".{dest.name}.tmp-{uuid.uuid4().hex[:8]}")
    try:
        pq.write_table(table.replace_schema_metadata(metadata), tmp, compression="zstd")
        os.replace(tmp, dest)
    finally:
        tmp.unlink(missing_ok=True)


def _class_counts(con: duckdb.DuckDBPyConnection, manifest: str) -> pd.DataFrame:
    per_split = ", ".join(f"count(*) FILTER (WHERE split = {sql_string(s)}) AS {s}" for s in SPLITS)
    return con.execute(
        f"SELECT label_id, any_value(label_name) AS label_name, count(*) AS photos, {per_split} "
        f"FROM {manifest} GROUP BY label_id ORDER BY photos DESC, label_name, label_id"
    ).fetchdf()


# ---------------------------------------------------------------------------------------------
# Taxa partitions and what each needs downloaded
# ---------------------------------------------------------------------------------------------


def taxon_key(taxon_id: int, name: str) -> str:
    """The ``taxa`` partition key of a class: ``{taxon_id}-{slug}``, e.g. ``47208-popillia-japonica``."""
    ascii_name = unicodedata.normalize("NFKD", str(name)).encode("ascii", "ignore").decode()
    slug = re.sub(r"[^a-z0-9]+", "-", ascii_name.lower()).strip("-") or "taxon"
    prefix = f"{int(taxon_id)}-"
    return prefix + slug[: TAXON_KEY_MAX_LENGTH - len(prefix)].rstrip("-")


def taxon_id_of_key(key: str) -> int:
    """The taxon id of a ``taxa`` partition key, or a clear error."""
    match = TAXON_KEY.match(key or "")
    if not match or len(key) > TAXON_KEY_MAX_LENGTH:
        raise SelectionError(
            f"Taxa partition key {key!r} is not '{{taxon_id}}-{{slug}}' (e.g. '47208-popillia-japonica'). "
            "Fix: use the keys dataset_manifest adds; they are listed in its `taxon_keys` metadata."
        )
    return int(match.group(1))


#: Columns of :func:`image_requests`, one row per (class, photo, stored size).
REQUEST_COLUMNS = (
    "label_id", "label_name", "photo_id", "source", "image_size", "resize_shorter_side", "jpeg_quality",
    "stored_size", "extension", "source_url", "datasets",
)  # fmt: skip


def _manifests_union(warehouse: Warehouse, taxon_id: int | None) -> str | None:
    """SQL: the rows of every current manifest (of one class, or all) with their dataset's image
    settings; None when there is no manifest."""
    parts = []
    for name, path in current_manifests(warehouse).items():
        info = read_manifest_info(path)
        where = f"WHERE label_id = {int(taxon_id)}" if taxon_id is not None else ""
        resize = "NULL" if info.resize_shorter_side is None else str(int(info.resize_shorter_side))
        parts.append(
            f"SELECT label_id, label_name, photo_id, {sql_string(info.source)} AS source, image_size, "
            f"{resize}::INTEGER AS resize_shorter_side, {int(info.jpeg_quality)} AS jpeg_quality, "
            f"{sql_string(info.stored_size)} AS stored_size, extension, source_url, {sql_string(name)} AS dataset "
            f"FROM read_parquet({sql_string(str(path))}) {where}"
        )
    return " UNION ALL ".join(parts) or None


def image_requests(warehouse: Warehouse, taxon_id: int | None = None) -> pd.DataFrame:
    """What the current manifests need downloaded (of one class, or of all): ``REQUEST_COLUMNS``,
    one row per class, photo and stored size, with the datasets that want it; ordered by class and photo."""
    rows = _manifests_union(warehouse, taxon_id)
    if rows is None:
        return pd.DataFrame({column: [] for column in REQUEST_COLUMNS})
    with duckdb.connect() as con:
        return con.execute(
            f"""
            SELECT label_id, min(label_name) AS label_name, photo_id, source, any_value(image_size) AS image_size,
                   any_value(resize_shorter_side) AS resize_shorter_side, any_value(jpeg_quality) AS jpeg_quality,
                   stored_size, any_value(extension) AS extension, min(source_url) AS source_url,
                   string_agg(DISTINCT dataset, ',' ORDER BY dataset) AS datasets
            FROM ({rows})
            GROUP BY label_id, photo_id, source, stored_size
            ORDER BY label_id, photo_id, stored_size
            """
        ).fetchdf()


def photo_set_hashes(requests: pd.DataFrame) -> dict[str, str]:
    """``taxa`` partition key -> sha256 of the class's photo set (photo, source URL, stored size)
    in ``requests`` (:func:`image_requests`): equal hashes mean nothing new to download."""
    if requests.empty:
        return {}
    with duckdb.connect() as con:
        con.register("requests", requests)
        return _photo_set_hashes(con, "requests")


def class_photo_set_hashes(warehouse: Warehouse) -> dict[str, str]:
    """:func:`photo_set_hashes` of every class of the current manifests, without building the
    requests in Python (a sensor calls this on every tick)."""
    rows = _manifests_union(warehouse, None)
    if rows is None:
        return {}
    with duckdb.connect() as con:
        # The same rows as image_requests has, so that both give the same hashes.
        return _photo_set_hashes(
            con,
            f"(SELECT label_id, min(label_name) AS label_name, photo_id, stored_size, min(source_url) AS source_url "
            f"FROM ({rows}) GROUP BY label_id, photo_id, source, stored_size)",
        )


def _photo_set_hashes(con: duckdb.DuckDBPyConnection, requests: str) -> dict[str, str]:
    rows = con.execute(
        f"""
        SELECT label_id, min(label_name),
               sha256(string_agg(photo_id::VARCHAR || chr(9) || source_url || chr(9) || stored_size, chr(10)
                                 ORDER BY photo_id, stored_size, source_url))
        FROM {requests} GROUP BY label_id ORDER BY label_id
        """
    ).fetchall()
    return {taxon_key(label_id, name): digest for label_id, name, digest in rows}


# ---------------------------------------------------------------------------------------------
# Downloading one class: the images index
# ---------------------------------------------------------------------------------------------

#: ``{warehouse}/taxon_images/{key}.parquet``: one row per (photo, stored size) of a class.
TAXON_IMAGES_DIR = "taxon_images"
IMAGES_INDEX_COLUMNS: dict[str, str] = {
    "photo_id": "BIGINT",
    "size": "VARCHAR",  # the store's size folder, e.g. medium or medium-short256-q90
    "image_path": "VARCHAR",  # relative to the image store root; null unless the image is verified
    "sha256": "VARCHAR",
    "width": "INTEGER",
    "height": "INTEGER",
    "outcome": "VARCHAR",  # bioasset.download.Outcome
    "reason": "VARCHAR",  # why an image is not there (missing, failed, quarantined, invalid)
}
#: Outcomes whose image is in the store and verified.
VERIFIED_OUTCOMES = (Outcome.FETCHED.value, Outcome.SKIPPED.value)
SAMPLE_GRID_IMAGES = 8
SAMPLE_GRID_CELL = 64


def images_index_path(warehouse: Warehouse, key: str) -> Path:
    return warehouse.root / TAXON_IMAGES_DIR / f"{key}.parquet"


def sample_grid_path(warehouse: Warehouse, key: str) -> Path:
    return warehouse.root / TAXON_IMAGES_DIR / f"{key}.png"


@dataclass
class TaxonImagesBuild:
    """What :func:`download_taxon_images` did for one class."""

    key: str
    datasets: list[str]
    sizes: list[str]
    photo_set_hash: str
    counts: dict[str, int]  # outcome -> images (every outcome present)
    bytes_downloaded: int
    bytes_stored: int
    retries: int
    elapsed_s: float
    index_path: Path
    grid_path: Path | None
    grid_png: bytes | None
    stale_temp_files_removed: int = 0  # left in the store by a killed earlier run

    @property
    def images(self) -> int:
        return sum(self.counts.values())

    @property
    def images_per_s(self) -> float:
        return self.counts[Outcome.FETCHED.value] / self.elapsed_s if self.elapsed_s > 0 else 0.0


def download_taxon_images(
    warehouse: Warehouse,
    store: ImageStore,
    key: str,
    *,
    progress: Callable[[DownloadProgress], None] | None = None,
    source_options: Mapping[str, Any] | None = None,
    concurrency: int = 16,
    max_rate: float | None = None,
    max_retries: int = 5,
    timeout_s: float = 30.0,
) -> TaxonImagesBuild:
    """Download every image the current manifests need of the class ``key`` (each needed size
    and resize) into ``store`` with the engine, journal = ``key``: images already stored and
    verified are not fetched again. Writes the class's images index and a sample grid."""
    started = time.perf_counter()
    requests = image_requests(warehouse, taxon_id_of_key(key))
    index_rows: list[dict[str, Any]] = []
    reports = []
    for (source, stored_size), group in requests.groupby(["source", "stored_size"], sort=True):
        first = group.iloc[0]
        resize = None if pd.isna(first["resize_shorter_side"]) else int(first["resize_shorter_side"])
        items = [
            DownloadItem(int(p), str(u), str(s), str(e))
            for p, u, s, e in zip(group["photo_id"], group["source_url"], group["image_size"], group["extension"])
        ]
        report = download_images(
            items, store, source=str(source), resize_shorter_side=resize, jpeg_quality=int(first["jpeg_quality"]),
            journal=key, progress=progress, source_options=source_options, concurrency=concurrency,
            max_rate=max_rate, max_retries=max_retries, timeout_s=timeout_s,
        )  # fmt: skip
        reports.append(report)
        index_rows += [_index_row(result, str(stored_size), store) for result in report.results]
    index_path = images_index_path(warehouse, key)
    index = pd.DataFrame(index_rows, columns=list(IMAGES_INDEX_COLUMNS))
    with warehouse.connect() as con:
        con.register("index_rows", index)
        typed = ", ".join(f"CAST({c} AS {t}) AS {c}" for c, t in IMAGES_INDEX_COLUMNS.items())
        warehouse.copy_to_parquet(con, f"SELECT {typed} FROM index_rows ORDER BY photo_id, size", index_path)
    grid = _sample_grid(store, sorted((row["photo_id"], row["image_path"]) for row in index_rows if row["image_path"]))
    grid_path = None
    if grid is not None:
        grid_path = sample_grid_path(warehouse, key)
        atomic_write_bytes(fsspec.filesystem("file"), str(grid_path), grid)
    counts = {outcome.value: sum(r.counts[outcome.value] for r in reports) for outcome in Outcome}
    return TaxonImagesBuild(
        key=key,
        datasets=sorted({d for value in requests["datasets"] for d in str(value).split(",")}),
        sizes=sorted(requests["stored_size"].unique().tolist()),
        photo_set_hash=photo_set_hashes(requests).get(key, _EMPTY_SET_HASH),
        counts=counts,
        bytes_downloaded=sum(r.bytes_downloaded for r in reports),
        bytes_stored=sum(r.bytes_stored for r in reports),
        retries=sum(r.retries for r in reports),
        elapsed_s=time.perf_counter() - started,
        index_path=index_path,
        grid_path=grid_path,
        grid_png=grid,
        stale_temp_files_removed=sum(r.stale_temp_files_removed for r in reports),
    )


_EMPTY_SET_HASH = hashlib.sha256(b"").hexdigest()


def _index_row(result: ItemResult, stored_size: str, store: ImageStore) -> dict[str, Any]:
    verified = result.outcome.value in VERIFIED_OUTCOMES and result.path is not None
    return {
        "photo_id": int(result.item.photo_id),
        "size": stored_size,
        "image_path": result.path[len(store.root.rstrip("/")) + 1 :] if verified else None,
        "sha256": result.sha256 if verified else None,
        "width": result.width if verified else None,
        "height": result.height if verified else None,
        "outcome": result.outcome.value,
        "reason": None if verified else result.reason,
    }


def _sample_grid(store: ImageStore, photos: list[tuple[int, str]]) -> bytes | None:
    """A PNG row of up to SAMPLE_GRID_IMAGES thumbnails (the lowest photo ids), or None."""
    paths = [path for _, path in photos[:SAMPLE_GRID_IMAGES]]
    if not paths:
        return None
    contents = read_store_files(store, paths)
    cell = SAMPLE_GRID_CELL
    canvas = Image.new("RGB", (len(paths) * cell, cell), "white")
    for position, path in enumerate(paths):
        content = contents[path]
        if isinstance(content, Exception):
            continue  # a grey gap: the grid is a preview, the index says what is there
        try:
            with Image.open(io.BytesIO(content)) as image:
                canvas.paste(ImageOps.fit(image.convert("RGB"), (cell, cell)), (position * cell, 0))
        except (OSError, ValueError):
            continue
    buffer = io.BytesIO()
    canvas.save(buffer, format="PNG", optimize=True)
    return buffer.getvalue()


# ---------------------------------------------------------------------------------------------
# A manifest with its images: what the registry freezes
# ---------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class ImagesCompleteness:
    """How the rows of a manifest stand against the images index."""

    rows: int
    verified: int
    #: outcome -> rows whose image the download reported as not to be had (missing, failed, ...)
    unavailable: dict[str, int]
    not_downloaded: int  # rows no download has reported on yet
    not_downloaded_keys: list[str]  # the taxa partitions to materialize for them
    failed_keys: list[str] = field(default_factory=list)  # the taxa partitions to materialize again

    @property
    def failed(self) -> int:
        """Rows whose download failed (server errors or timeouts past the retries, a store that
        would not take the write): worth another try, unlike a photo deleted upstream or a corrupt one."""
        return self.unavailable.get(Outcome.FAILED.value, 0)

    @property
    def complete(self) -> bool:
        """Every row has its image, or a download that found it gone (missing) or bad (quarantined,
        invalid); failed downloads are not complete."""
        return self.not_downloaded == 0 and self.failed == 0

    def refusal(self, name: str, *, allow_failed: bool = False) -> str | None:
        """Why the dataset ``name`` cannot be frozen yet, with what to run; None when it can. With
        ``allow_failed``, failed downloads do not hold it back (they count as missing)."""
        def some(keys: list[str]) -> str:
            return ", ".join(keys[:10]) + (" ..." if len(keys) > 10 else "")

        if self.not_downloaded:
            return (
                f"{self.not_downloaded} of the {self.rows} photos of {name} have no download yet, in "
                f"{len(self.not_downloaded_keys)} classes. Fix: materialize taxon_images for "
                f"{some(self.not_downloaded_keys)} (or switch on taxon_images_sensor), then materialize this again."
            )
        if self.failed and not allow_failed:
            return (
                f"{self.failed} of the {self.rows} photos of {name} failed to download (server errors or timeouts "
                f"past the retries), in {len(self.failed_keys)} classes. Fix: materialize taxon_images for "
                f"{some(self.failed_keys)} again (it fetches only those photos), or run this with "
                "freeze_with_failed_downloads: true to freeze without them (counted as missing)."
            )
        return None


def manifest_with_images(warehouse: Warehouse, name: str) -> tuple[pa.Table, ImagesCompleteness, ManifestInfo]:
    """The current manifest of ``name`` joined with the images index (``VERSION_COLUMNS``;
    ``image_path`` null where no verified image is), and how complete it is."""
    path = dataset_manifest_path(warehouse, name)
    if not path.is_file():
        raise SelectionError(f"Dataset {name!r} has no manifest at {path}. Fix: materialize dataset_manifest[{name}] first.")
    info = read_manifest_info(path)
    index_files = sorted((warehouse.root / TAXON_IMAGES_DIR).glob("*.parquet"))
    with warehouse.connect() as con:
        if index_files:
            listing = ", ".join(sql_string(str(p)) for p in index_files)
            # The file name is the class key, {taxon_id}-{slug}: which class's download a row reports.
            con.execute(
                f"CREATE VIEW images_index AS SELECT *, regexp_extract(filename, '(\\d+)-[^/]*\\.parquet$', 1)::BIGINT "
                f"AS index_label FROM read_parquet([{listing}], union_by_name = true, filename = true)"
            )
        else:
            empty = ", ".join(f"NULL::{t} AS {c}" for c, t in IMAGES_INDEX_COLUMNS.items())
            con.execute(f"CREATE VIEW images_index AS SELECT {empty}, NULL::BIGINT AS index_label WHERE false")
        # A photo may be in several classes' indexes (a genus and a species dataset, or the class it
        # had before a relabel): a verified image wins; else the word of its own class's download,
        # which is the one its runs update; else a definitive outcome over a failed one.
        con.execute(
            f"""
            CREATE TEMP TABLE joined AS
            SELECT m.*, b.image_path, b.sha256, b.width, b.height, b.outcome
            FROM read_parquet({sql_string(str(path))}) m
            LEFT JOIN (SELECT * FROM images_index WHERE size = {sql_string(info.stored_size)}) b USING (photo_id)
            QUALIFY row_number() OVER (
                PARTITION BY m.photo_id
                ORDER BY b.image_path IS NULL, b.index_label IS DISTINCT FROM m.label_id,
                         b.outcome = {sql_string(Outcome.FAILED.value)}, b.outcome) = 1
            """
        )
        columns = ", ".join(f'CAST("{c}" AS {t}) AS "{c}"' for c, t in VERSION_COLUMNS.items())
        table = con.sql(f"SELECT {columns} FROM joined ORDER BY photo_id").to_arrow_table()
        rows, verified, not_downloaded = con.execute(
            "SELECT count(*), count(image_path), count(*) FILTER (WHERE outcome IS NULL) FROM joined"
        ).fetchone()
        unavailable = dict(
            con.execute("SELECT outcome, count(*) FROM joined WHERE image_path IS NULL AND outcome IS NOT NULL GROUP BY ALL").fetchall()
        )

        def class_keys(where: str) -> list[str]:
            """The taxa partitions of the rows that match ``where``."""
            rows = con.execute(
                f"SELECT label_id, min(label_name) FROM joined WHERE {where} GROUP BY label_id ORDER BY label_id"
            ).fetchall()
            return [taxon_key(i, n) for i, n in rows]

        not_downloaded_keys = class_keys("outcome IS NULL")
        failed_keys = class_keys(f"image_path IS NULL AND outcome = {sql_string(Outcome.FAILED.value)}")
    completeness = ImagesCompleteness(
        rows=int(rows),
        verified=int(verified),
        unavailable={k: int(v) for k, v in sorted(unavailable.items())},
        not_downloaded=int(not_downloaded),
        not_downloaded_keys=not_downloaded_keys,
        failed_keys=failed_keys,
    )
    return table, completeness, info


def absent_store_files(store: ImageStore, image_paths: list[str]) -> list[str]:
    """The ``image_paths`` (relative to the store root) that are not in the store, found by
    listing each size folder once rather than asking for every file."""
    by_folder: dict[str, set[str]] = {}
    for path in image_paths:
        folder, _, name = path.rpartition("/")
        by_folder.setdefault(folder, set()).add(name)
    absent = []
    root = store.root.rstrip("/")
    for folder, names in sorted(by_folder.items()):
        try:
            present = {entry.rsplit("/", 1)[-1] for entry in store.fs.ls(f"{root}/{folder}", detail=False)}
        except FileNotFoundError:
            present = set()
        absent += [f"{folder}/{name}" for name in sorted(names - present)]
    return absent
