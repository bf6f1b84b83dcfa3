"""The dataset registry: immutable, content-addressed dataset versions and their catalog.

A version is a dataset manifest frozen once its images are complete (``VERSION_COLUMNS``). Its id
is a content hash, so the same content always gets the same id and different content never shares
one. Layout under the warehouse root::

    datasets/{name}/{version}/manifest.parquet         the frozen manifest, one row per image
    datasets/{name}/{version}/dataset_version.parquet  its catalog row (one row)
    datasets/{name}/{version}/card/                    the dataset card (see bioasset.dataset_card)
    datasets/{name}/.freeze.lock                       serializes freezes of one dataset name

A version folder is assembled in ``.tmp/`` and renamed into place whole, and never written again.
The DuckDB view ``dataset_versions`` (in ``bioasset.duckdb``) reads every ``dataset_version.parquet``
through a glob, so a new version shows up in it without rewriting the DuckDB file; the file is
opened only to create that view, under the warehouse's lock.
"""

from __future__ import annotations

import hashlib
import os
import re
import shutil
import time
import uuid
from collections.abc import Iterator
from dataclasses import asdict, dataclass, fields
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

import duckdb
import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq

from bioasset import config
from bioasset.dataset_spec import DATASET_NAME
from bioasset.download.items import ImageStore
from bioasset.inat_format import MAIN_RANKS
from bioasset.manifest_schema import SPLITS, VERSION_COLUMNS
from bioasset.storage import join
from bioasset.warehouse import Warehouse, WarehouseLockedError, file_lock, sql_string

DATASETS_DIR = "datasets"
MANIFEST_FILENAME = "manifest.parquet"
CATALOG_ROW_FILENAME = "dataset_version.parquet"
CARD_DIR = "card"
CATALOG_VIEW = "dataset_versions"
FREEZE_LOCK_FILENAME = ".freeze.lock"

#: Length of the short version id: the first hex digits of the content hash.
VERSION_ID_LENGTH = 12
#: The recipe of the content hash; changing what is hashed must change this line.
CONTENT_HASH_RECIPE = "bioasset-dataset-version-v1: photo_id, label_id, label_name, split, sha256, license\n"
CONTENT_HASH_COLUMNS = ("photo_id", "label_id", "label_name", "split", "sha256", "license")

_VERSION_ID = re.compile(r"^[0-9a-f]{4,64}$")
#: Freezing a large dataset renders its card while holding the per-name lock; wait that long.
FREEZE_LOCK_TIMEOUT_S = 1800.0


class RegistryError(ValueError):
    """A problem with a manifest to freeze, a version reference, or the registry folder."""


# ---------------------------------------------------------------------------------------------
# The catalog row
# ---------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class DatasetVersion:
    """One row of the ``dataset_versions`` catalog. Counts of images, not of manifest rows:
    rows whose image was missing are left out of the version and counted in ``missing_images``.
    ``added``, ``removed``, ``relabelled``, ``resplit`` and ``relicensed`` compare with
    ``parent_version`` (the latest version of the same name when this one was frozen; against
    nothing for the first). ``relicensed`` is None in rows written before it was recorded."""

    name: str
    version: str
    content_hash: str
    sequence: int  # 1 for the first version of a name, then 2, 3, ...
    created: datetime  # UTC
    snapshot: str | None
    spec_hash: str | None
    parent_version: str | None
    label_rank: str | None  # the main rank whose id equals label_id on every row, if any
    class_count: int
    images: int
    train_images: int
    val_images: int
    test_images: int
    added: int
    removed: int
    relabelled: int
    resplit: int
    missing_images: int
    relicensed: int | None  # photos kept under another license (another attribution)

    @property
    def ref(self) -> str:
        return f"{self.name}@{self.version}"

    @property
    def images_per_split(self) -> dict[str, int]:
        return {split: getattr(self, f"{split}_images") for split in SPLITS}

    def to_dict(self) -> dict[str, Any]:
        row = asdict(self)
        row["created"] = self.created.isoformat()
        return row


#: Column -> DuckDB type of ``dataset_version.parquet`` and the ``dataset_versions`` view.
CATALOG_COLUMNS: dict[str, str] = {
    "name": "VARCHAR",
    "version": "VARCHAR",
    "content_hash": "VARCHAR",
    "sequence": "INTEGER",
    "created": "TIMESTAMP",  # UTC, without a zone so that every reader sees the same value
    "snapshot": "VARCHAR",
    "spec_hash": "VARCHAR",
    "parent_version": "VARCHAR",
    "label_rank": "VARCHAR",
    "class_count": "INTEGER",
    "images": "BIGINT",
    **{f"{split}_images": "BIGINT" for split in SPLITS},
    "added": "BIGINT",
    "removed": "BIGINT",
    "relabelled": "BIGINT",
    "resplit": "BIGINT",
    "missing_images": "BIGINT",
    "relicensed": "BIGINT",
}
assert tuple(CATALOG_COLUMNS) == tuple(f.name for f in fields(DatasetVersion)), "CATALOG_COLUMNS and DatasetVersion disagree"


def _version_from_row(row: dict[str, Any]) -> DatasetVersion:
    values = {name: row.get(name) for name in CATALOG_COLUMNS}
    created = values["created"]
    values["created"] = created.replace(tzinfo=timezone.utc) if created.tzinfo is None else created.astimezone(timezone.utc)
    return DatasetVersion(**values)


# ---------------------------------------------------------------------------------------------
# Layout
# ---------------------------------------------------------------------------------------------


#: What functions here accept as a warehouse: a Warehouse, its folder, or None (the default one).
WarehouseLike = Warehouse | str | os.PathLike[str] | None


def as_warehouse(warehouse: WarehouseLike) -> Warehouse:
    """A :class:`Warehouse` from itself, a folder, or None (``config.warehouse_dir()``)."""
    if isinstance(warehouse, Warehouse):
        return warehouse
    return Warehouse(config.warehouse_dir() if warehouse is None else warehouse)


def datasets_dir(warehouse: WarehouseLike) -> Path:
    return as_warehouse(warehouse).root / DATASETS_DIR


def version_dir(warehouse: WarehouseLike, name: str, version: str) -> Path:
    return datasets_dir(warehouse) / checked_dataset_name(name) / version


def manifest_path(warehouse: WarehouseLike, version: DatasetVersion) -> Path:
    return version_dir(warehouse, version.name, version.version) / MANIFEST_FILENAME


def card_dir(warehouse: WarehouseLike, version: DatasetVersion) -> Path:
    return version_dir(warehouse, version.name, version.version) / CARD_DIR


def checked_dataset_name(name: str) -> str:
    """The name if it is a valid dataset name (it becomes a folder), else a clear error."""
    if not isinstance(name, str) or not DATASET_NAME.match(name):
        raise RegistryError(
            f"Dataset name {name!r} is not valid. Fix: use 1-64 lowercase letters, digits, '-' or '_', "
            "starting with a letter or digit (the name of the dataset spec)."
        )
    return name


def quoted(column: str) -> str:
    """A column name as a SQL identifier (``order`` is a rank and a keyword)."""
    return '"' + column.replace('"', '""') + '"'


def _catalog_glob(warehouse: Warehouse) -> str:
    return str(datasets_dir(warehouse) / "*" / "*" / CATALOG_ROW_FILENAME)


# ---------------------------------------------------------------------------------------------
# Reading the catalog
# ---------------------------------------------------------------------------------------------


def catalog(warehouse: WarehouseLike = None, name: str | None = None) -> list[DatasetVersion]:
    """Every version (of ``name``, or of all datasets), ordered by name then sequence.

    Reads the Parquet rows directly, never the DuckDB file, so it works while another process
    holds that file."""
    warehouse = as_warehouse(warehouse)
    paths = sorted(datasets_dir(warehouse).glob(f"{checked_dataset_name(name) if name else '*'}/*/{CATALOG_ROW_FILENAME}"))
    if not paths:
        return []
    listing = ", ".join(sql_string(str(path)) for path in paths)
    with duckdb.connect() as con:
        rows = _fetch_dicts(con.execute(f"SELECT * FROM read_parquet([{listing}], union_by_name = true) ORDER BY name, sequence"))
    return [_version_from_row(row) for row in rows]


def _fetch_dicts(cursor: duckdb.DuckDBPyConnection) -> list[dict[str, Any]]:
    columns = [d[0] for d in cursor.description]
    return [dict(zip(columns, row)) for row in cursor.fetchall()]


def dataset_names(warehouse: WarehouseLike = None) -> list[str]:
    return sorted({v.name for v in catalog(warehouse)})


def parse_version_ref(ref: str) -> tuple[str, str | None]:
    """``NAME`` or ``NAME@VERSION`` -> (name, version or None for the latest)."""
    name, _, version = ref.partition("@")
    if not name:
        raise RegistryError(f"Version reference {ref!r} has no dataset name. Fix: write NAME or NAME@VERSION, e.g. demo-insects@3f2a9c0d1e2b.")
    if "@" in ref and not version:
        raise RegistryError(f"Version reference {ref!r} ends with '@'. Fix: add the version after it, or drop the '@' for the latest.")
    return name, (version or None)


def resolve_version(
    warehouse: WarehouseLike, name: str, version: str | None = None
) -> DatasetVersion:
    """The version ``version`` of dataset ``name``: its full id, a unique prefix of at least 4 hex
    digits, or None / ``latest`` for the newest. Errors list the datasets or versions that exist."""
    warehouse = as_warehouse(warehouse)
    versions = catalog(warehouse, name) if DATASET_NAME.match(name or "") else []
    if not versions:
        names = dataset_names(warehouse)
        known = f"datasets in {warehouse.root}: {', '.join(names)}" if names else f"no dataset has a version in {warehouse.root} yet"
        raise RegistryError(
            f"Dataset {name!r} has no versions ({known}). Fix: use one of those names, or materialize "
            f"the dataset_version asset for {name!r} first (check --warehouse)."
        )
    if version in (None, "latest"):
        return versions[-1]
    matches = [v for v in versions if v.version.startswith(version.lower())] if _VERSION_ID.match(version.lower()) else []
    if len(matches) == 1:
        return matches[0]
    listing = ", ".join(f"{v.version} (#{v.sequence}, {v.created:%Y-%m-%d})" for v in reversed(versions))
    problem = f"is ambiguous: it starts {len(matches)} versions" if matches else "does not exist"
    raise RegistryError(
        f"Version {version!r} of dataset {name!r} {problem}. Versions, newest first: {listing}. "
        f"Fix: use one of them (a unique prefix of 4 or more hex digits is enough), or '{name}' for the latest."
    )


def read_manifest(warehouse: WarehouseLike, version: DatasetVersion) -> pa.Table:
    """The frozen manifest of ``version`` (``VERSION_COLUMNS``, ordered by photo_id), e.g. the
    previous version's ``photo_id -> split`` that :mod:`bioasset.splits` keeps stable."""
    return pq.read_table(manifest_path(as_warehouse(warehouse), version))


# ---------------------------------------------------------------------------------------------
# Statistics of one version's manifest
# ---------------------------------------------------------------------------------------------


def class_split_counts(manifest: str | os.PathLike[str]) -> list[dict[str, Any]]:
    """Per class of a frozen manifest (Parquet): label_id, label_name, one count per split and
    the total; largest class first."""
    per_split = ", ".join(f"count(*) FILTER (WHERE split = {sql_string(s)}) AS {s}" for s in SPLITS)
    return query_manifest(
        manifest,
        f"SELECT label_id, any_value(label_name) AS label_name, {per_split}, count(*) AS total "
        "FROM manifest GROUP BY label_id ORDER BY total DESC, label_name, label_id",
    )


def license_counts(manifest: str | os.PathLike[str]) -> list[dict[str, Any]]:
    """Per license of a frozen manifest: images and their share (percent); most used first."""
    return query_manifest(
        manifest,
        "SELECT license, count(*) AS images, round(100.0 * count(*) / sum(count(*)) OVER (), 2) AS percent "
        "FROM manifest GROUP BY license ORDER BY images DESC, license",
    )


def query_manifest(manifest: str | os.PathLike[str], query: str) -> list[dict[str, Any]]:
    """Rows of ``query``, which reads the Parquet file ``manifest`` as the view ``manifest``."""
    with duckdb.connect() as con:
        con.execute(f"CREATE VIEW manifest AS SELECT * FROM read_parquet({sql_string(os.fspath(manifest))})")
        return _fetch_dicts(con.execute(query))


# ---------------------------------------------------------------------------------------------
# Diff
# ---------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class ClassChange:
    """How one class changed from the old manifest to the new one. A relabelled photo leaves its
    old class (``relabelled_out``) and enters its new one (``relabelled_in``)."""

    label_id: int
    label_name: str
    before: int
    after: int
    added: int
    removed: int
    relabelled_in: int
    relabelled_out: int
    relicensed: int = 0  # photos in both whose license changed (counted in their new class)

    @property
    def changed(self) -> bool:
        """Whether any photo of the class came, went, moved class or changed license."""
        return bool(self.added or self.removed or self.relabelled_in or self.relabelled_out or self.relicensed)


@dataclass(frozen=True)
class ManifestDiff:
    """Photos added, removed, relabelled (other label_id), resplit (other split), with other
    image bytes (other sha256) and relicensed (another license, so another attribution), old ->
    new; per class and in total."""

    added: int
    removed: int
    relabelled: int
    resplit: int
    image_changed: int
    relicensed: int
    classes: tuple[ClassChange, ...]

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


def diff_manifests(con: duckdb.DuckDBPyConnection, old: str | None, new: str) -> ManifestDiff:
    """Compare two manifests, given as relations (table names or ``read_parquet(...)``) that
    ``con`` can read; ``old`` None compares with an empty manifest."""
    columns = "photo_id, label_id, label_name, split, sha256, license"
    old_relation = old or f"(SELECT {columns} FROM {new} WHERE false)"
    con.execute(
        f"""
        CREATE OR REPLACE TEMP TABLE manifest_changes AS
        SELECT o.photo_id AS old_photo, n.photo_id AS new_photo,
               o.label_id AS old_label, o.label_name AS old_name, n.label_id AS new_label, n.label_name AS new_name,
               o.split AS old_split, n.split AS new_split, o.sha256 AS old_sha256, n.sha256 AS new_sha256,
               o.photo_id IS NOT NULL AND n.photo_id IS NOT NULL AND o.license IS DISTINCT FROM n.license AS relicensed
        FROM (SELECT {columns} FROM {old_relation}) o FULL OUTER JOIN (SELECT {columns} FROM {new}) n USING (photo_id)
        """
    )
    totals = con.execute(
        """
        SELECT count(*) FILTER (WHERE old_photo IS NULL),
               count(*) FILTER (WHERE new_photo IS NULL),
               count(*) FILTER (WHERE old_photo IS NOT NULL AND new_photo IS NOT NULL AND old_label IS DISTINCT FROM new_label),
               count(*) FILTER (WHERE old_photo IS NOT NULL AND new_photo IS NOT NULL AND old_split IS DISTINCT FROM new_split),
               count(*) FILTER (WHERE old_photo IS NOT NULL AND new_photo IS NOT NULL AND old_sha256 IS DISTINCT FROM new_sha256),
               count(*) FILTER (WHERE relicensed)
        FROM manifest_changes
        """
    ).fetchone()
    class_rows = con.execute(
        """
        WITH sides AS (
            SELECT old_label AS label_id, old_name AS label_name, 0 AS is_new,
                   new_photo IS NULL AS gone, new_photo IS NOT NULL AND new_label IS DISTINCT FROM old_label AS moved,
                   false AS relicensed
            FROM manifest_changes WHERE old_photo IS NOT NULL
            UNION ALL
            SELECT new_label, new_name, 1, old_photo IS NULL, old_photo IS NOT NULL AND old_label IS DISTINCT FROM new_label,
                   relicensed
            FROM manifest_changes WHERE new_photo IS NOT NULL
        )
        SELECT label_id, arg_max(label_name, is_new) AS label_name,
               count(*) FILTER (WHERE is_new = 0), count(*) FILTER (WHERE is_new = 1),
               count(*) FILTER (WHERE is_new = 1 AND gone), count(*) FILTER (WHERE is_new = 0 AND gone),
               count(*) FILTER (WHERE is_new = 1 AND moved), count(*) FILTER (WHERE is_new = 0 AND moved),
               count(*) FILTER (WHERE relicensed)
        FROM sides GROUP BY label_id ORDER BY label_name, label_id
        """
    ).fetchall()
    return ManifestDiff(*(int(n) for n in totals), classes=tuple(ClassChange(*row) for row in class_rows))


def diff_versions(
    warehouse: WarehouseLike, old: DatasetVersion, new: DatasetVersion
) -> ManifestDiff:
    warehouse = as_warehouse(warehouse)
    with duckdb.connect() as con:
        return diff_manifests(
            con,
            f"read_parquet({sql_string(str(manifest_path(warehouse, old)))})",
            f"read_parquet({sql_string(str(manifest_path(warehouse, new)))})",
        )


# ---------------------------------------------------------------------------------------------
# Freezing
# ---------------------------------------------------------------------------------------------

#: What :func:`freeze_version` accepts as a manifest: a table, a data frame, or a Parquet file.
ManifestInput = pa.Table | pd.DataFrame | str | os.PathLike[str]


@dataclass(frozen=True)
class FreezeResult:
    """The frozen version and what this call did. ``created`` is False when the same content was
    frozen before (nothing was written); ``missing_images`` counts this call's excluded rows."""

    version: DatasetVersion
    path: Path
    created: bool
    missing_images: int
    catalog_view_error: str | None = None  # set when the DuckDB view could not be refreshed


def freeze_version(
    warehouse: WarehouseLike,
    name: str,
    manifest: ManifestInput,
    *,
    snapshot: str | None = None,
    spec_hash: str | None = None,
    image_store: ImageStore | str | None = None,
    created: datetime | None = None,
    with_card: bool = True,
) -> FreezeResult:
    """Freeze ``manifest`` (``VERSION_COLUMNS``, image columns filled) as a version of ``name``.

    Rows whose ``image_path`` is null (the image could not be had) are left out and counted; a row
    with an image but no ``sha256`` is refused. Freezing content that is already a version returns
    that version and writes nothing (except its card, if it has none yet and ``with_card``).
    Otherwise the manifest, its catalog row and (``with_card``) its dataset card, with sample
    images read from ``image_store`` (default ``config.image_store_url()``), are written to a new
    folder that appears whole, and the catalog view is created if needed.
    """
    warehouse = as_warehouse(warehouse)
    checked_dataset_name(name)
    with warehouse.connect() as con:
        missing_images = _load_manifest(con, manifest, source=_describe_input(manifest))
        content_hash = _content_hash(con)
        version_id = content_hash[:VERSION_ID_LENGTH]
        target = version_dir(warehouse, name, version_id)
        target.parent.mkdir(parents=True, exist_ok=True)
        deadline = time.monotonic() + FREEZE_LOCK_TIMEOUT_S
        with file_lock(target.parent / FREEZE_LOCK_FILENAME, deadline):
            if target.exists():
                existing = _existing_version(target, content_hash)
                if with_card and not (target / CARD_DIR).exists():
                    _write_card(target / CARD_DIR, existing, target / MANIFEST_FILENAME, image_store)
                return FreezeResult(existing, target, False, missing_images, ensure_catalog_view(warehouse))
            row = _catalog_row(con, warehouse, name, version_id, content_hash, missing_images, snapshot, spec_hash, created)
            _publish(con, warehouse, row, target, image_store, with_card)
    return FreezeResult(row, target, True, missing_images, ensure_catalog_view(warehouse))


def manifest_content_hash(manifest: ManifestInput) -> str:
    """The full content hash a manifest would be frozen under (its version id is the first
    ``VERSION_ID_LENGTH`` hex digits), with the same checks as :func:`freeze_version`."""
    with duckdb.connect() as con:
        _load_manifest(con, manifest, source=_describe_input(manifest))
        return _content_hash(con)


def _describe_input(manifest: ManifestInput) -> str:
    if isinstance(manifest, (str, os.PathLike)):
        return f"manifest {os.fspath(manifest)}"
    return f"manifest ({type(manifest).__name__})"


def _load_manifest(con: duckdb.DuckDBPyConnection, manifest: ManifestInput, *, source: str) -> int:
    """Check ``manifest`` and put its rows with images into the temp table ``frozen``, typed as
    ``VERSION_COLUMNS`` and ordered by photo_id. Returns how many rows had no image."""
    if isinstance(manifest, (str, os.PathLike)):
        if not Path(manifest).is_file():
            raise RegistryError(f"{source} does not exist. Fix: pass the dataset_manifest Parquet file with its image columns.")
        con.execute(f"CREATE OR REPLACE TEMP VIEW incoming AS SELECT * FROM read_parquet({sql_string(os.fspath(manifest))})")
    else:
        con.register("incoming", manifest)
    present = {row[0] for row in con.execute("DESCRIBE incoming").fetchall()}
    absent = [column for column in VERSION_COLUMNS if column not in present]
    if absent:
        raise RegistryError(
            f"{source} lacks the columns {', '.join(absent)}. Fix: freeze the manifest after its images are "
            "downloaded, with every column of bioasset.manifest_schema.VERSION_COLUMNS."
        )
    typed = ", ".join(f"CAST({quoted(c)} AS {t}) AS {quoted(c)}" for c, t in VERSION_COLUMNS.items())
    try:
        con.execute(f"CREATE OR REPLACE TEMP TABLE typed AS SELECT {typed}, row_number() OVER () AS input_row FROM incoming")
    except duckdb.ConversionException as error:
        raise RegistryError(
            f"{source} has a value that does not fit its column's type: {error}. Fix: give every column the "
            "type of bioasset.manifest_schema.VERSION_COLUMNS."
        ) from None
    _refuse_bad_rows(con, source)
    missing_images = con.execute("SELECT count(*) FROM typed WHERE image_path IS NULL").fetchone()[0]
    columns = ", ".join(map(quoted, VERSION_COLUMNS))
    con.execute(f"CREATE OR REPLACE TEMP TABLE frozen AS SELECT {columns} FROM typed WHERE image_path IS NOT NULL ORDER BY photo_id")
    if con.execute("SELECT count(*) FROM frozen").fetchone()[0] == 0:
        raise RegistryError(
            f"{source} has no row with an image ({missing_images} rows, all with image_path null). "
            "Fix: download the dataset's images (taxon_images) before freezing a version."
        )
    return int(missing_images)


def _refuse_bad_rows(con: duckdb.DuckDBPyConnection, source: str) -> None:
    """Raise one error listing every kind of bad row, with up to five input row numbers each."""
    splits = ", ".join(sql_string(s) for s in SPLITS)
    checks = (
        ("photo_id IS NULL", "have no photo_id", "every row needs the photo's id"),
        ("label_id IS NULL OR label_name IS NULL", "have no label_id or label_name", "drop photos without a label at the spec's rank"),
        (f"split IS NULL OR split NOT IN ({splits})", f"have a split other than {', '.join(SPLITS)}", "assign splits with bioasset.splits"),
        (
            "image_path IS NOT NULL AND (sha256 IS NULL OR NOT regexp_full_match(sha256, '[0-9a-f]{64}'))",
            "have an image_path but no sha256 (64 lower-case hex digits)",
            "re-run the image download so that every stored image is verified, or set image_path to null for images that could not be had",
        ),
        (
            "image_path IS NOT NULL AND (image_path LIKE '/%' OR image_path LIKE '%..%' OR image_path LIKE '%://%')",
            "have an image_path that is not a plain path inside the image store",
            "store image_path relative to the image store root",
        ),
        (
            "photo_id IN (SELECT photo_id FROM typed GROUP BY photo_id HAVING count(*) > 1)",
            "repeat a photo_id",
            "keep one row per photo",
        ),
    )
    problems = []
    for condition, problem, fix in checks:
        count, rows = con.execute(
            f"SELECT count(*), list(input_row ORDER BY input_row)[1:5] FROM typed WHERE {condition}"
        ).fetchone()
        if count:
            problems.append(f"{count} rows {problem} (input rows {', '.join(map(str, rows))}{', ...' if count > 5 else ''}). Fix: {fix}.")
    if problems:
        raise RegistryError(f"Cannot freeze {source}:\n  - " + "\n  - ".join(problems))


def _content_hash(con: duckdb.DuckDBPyConnection) -> str:
    """sha256 over the hashed columns of ``frozen``, one tab-separated line per photo in photo_id
    order, so the row order of the input does not matter."""
    digest = hashlib.sha256(CONTENT_HASH_RECIPE.encode())
    cursor = con.execute(f"SELECT {', '.join(CONTENT_HASH_COLUMNS)} FROM frozen ORDER BY photo_id")
    while rows := cursor.fetchmany(50_000):
        digest.update("".join("\t".join(map(str, values)) + "\n" for values in rows).encode())
    return digest.hexdigest()


def _existing_version(target: Path, content_hash: str) -> DatasetVersion:
    rows = stored_catalog_row(target)
    if rows.content_hash != content_hash:
        # Only a 48-bit prefix collision can get here: refuse rather than mix two contents.
        raise RegistryError(
            f"Version folder {target} holds content with hash {rows.content_hash}, not {content_hash}: the short "
            f"ids collide. Fix: nothing was written; report this, as the id length ({VERSION_ID_LENGTH}) must grow."
        )
    return rows


def stored_catalog_row(folder: Path) -> DatasetVersion:
    """The catalog row stored in one version folder."""
    with duckdb.connect() as con:
        rows = _fetch_dicts(con.execute(f"SELECT * FROM read_parquet({sql_string(str(folder / CATALOG_ROW_FILENAME))})"))
    return _version_from_row(rows[0])


def _catalog_row(
    con: duckdb.DuckDBPyConnection,
    warehouse: Warehouse,
    name: str,
    version_id: str,
    content_hash: str,
    missing_images: int,
    snapshot: str | None,
    spec_hash: str | None,
    created: datetime | None,
) -> DatasetVersion:
    previous = catalog(warehouse, name)
    parent = previous[-1] if previous else None
    old = f"read_parquet({sql_string(str(manifest_path(warehouse, parent)))})" if parent else None
    diff = diff_manifests(con, old, "frozen")
    per_split = ", ".join(f"count(*) FILTER (WHERE split = {sql_string(s)})" for s in SPLITS)
    class_count, images, *split_counts = con.execute(f"SELECT count(DISTINCT label_id), count(*), {per_split} FROM frozen").fetchone()
    moment = (created or datetime.now(timezone.utc)).astimezone(timezone.utc)
    return DatasetVersion(
        name=name, version=version_id, content_hash=content_hash, sequence=(previous[-1].sequence + 1) if previous else 1,
        created=moment, snapshot=snapshot, spec_hash=spec_hash,
        parent_version=parent.version if parent else None, label_rank=_label_rank(con),
        class_count=class_count, images=images, **{f"{s}_images": n for s, n in zip(SPLITS, split_counts)},
        added=diff.added, removed=diff.removed, relabelled=diff.relabelled, resplit=diff.resplit, missing_images=missing_images,
        relicensed=diff.relicensed,
    )


def _label_rank(con: duckdb.DuckDBPyConnection) -> str | None:
    """The main rank at which every label sits (its ``{rank}_id`` is the label_id on every row)."""
    checks = ", ".join(f"bool_and({rank}_id IS NOT DISTINCT FROM label_id)" for rank in MAIN_RANKS)
    matches = con.execute(f"SELECT {checks} FROM frozen").fetchone()
    return next((rank for rank, ok in zip(MAIN_RANKS, matches) if ok), None)


def _publish(
    con: duckdb.DuckDBPyConnection, warehouse: Warehouse, row: DatasetVersion, target: Path,
    image_store: ImageStore | str | None, with_card: bool,
) -> None:
    """Write the version into a temporary folder, then rename it to ``target`` in one step."""
    staging = warehouse.root / ".tmp" / f"dataset-version-{uuid.uuid4().hex}"
    staging.mkdir(parents=True)
    try:
        warehouse.copy_to_parquet(con, f"SELECT {', '.join(map(quoted, VERSION_COLUMNS))} FROM frozen ORDER BY photo_id", staging / MANIFEST_FILENAME)
        values = ", ".join(f"CAST(${c} AS {t}) AS {c}" for c, t in CATALOG_COLUMNS.items())
        params = {**asdict(row), "created": row.created.replace(tzinfo=None)}
        warehouse.copy_to_parquet(con, f"SELECT {values}", staging / CATALOG_ROW_FILENAME, params=params)
        if with_card:
            _write_card(staging / CARD_DIR, row, staging / MANIFEST_FILENAME, image_store)
        os.rename(staging, target)  # a folder rename never replaces a non-empty folder
    finally:
        shutil.rmtree(staging, ignore_errors=True)


def _write_card(folder: Path, row: DatasetVersion, manifest: Path, image_store: ImageStore | str | None) -> None:
    # Imported here: the card builds on this module, and matplotlib is slow to import.
    from bioasset.dataset_card import write_card

    write_card(folder, row, manifest, image_store=image_store)


# ---------------------------------------------------------------------------------------------
# The DuckDB view
# ---------------------------------------------------------------------------------------------


def ensure_catalog_view(warehouse: WarehouseLike, *, timeout_s: float | None = None) -> str | None:
    """Create the ``dataset_versions`` view in ``bioasset.duckdb``, under the warehouse's lock.

    The view reads every catalog row through a glob, so it needs creating only once; it is
    re-created after each freeze all the same, which also repairs it. Returns None, or why the
    DuckDB file could not be opened (a DuckDB CLI or notebook holds it): one attempt, no retries,
    because the version is stored either way and shows in ``catalog()`` and the CLI at once."""
    warehouse = as_warehouse(warehouse)
    if not any(datasets_dir(warehouse).glob(f"*/*/{CATALOG_ROW_FILENAME}")):
        return None  # a view over a glob that matches nothing cannot be created
    deadline = time.monotonic() + (warehouse.view_lock_timeout_s if timeout_s is None else timeout_s)
    try:
        with file_lock(warehouse.lock_path, deadline), duckdb.connect(str(warehouse.db_path)) as con:
            con.execute(
                f"CREATE OR REPLACE VIEW {CATALOG_VIEW} AS "
                f"SELECT * FROM read_parquet({sql_string(_catalog_glob(warehouse))}, union_by_name = true)"
            )
    except (WarehouseLockedError, duckdb.IOException) as error:
        return (
            f"The {CATALOG_VIEW} view in {warehouse.db_path} was not created: {error}. The version is stored all the "
            "same. Fix: close the other connection to that file; the next freeze (or ensure_catalog_view) creates the view."
        )
    return None


# ---------------------------------------------------------------------------------------------
# Image store access (cards and exports)
# ---------------------------------------------------------------------------------------------


#: Manifest rows per batch when images are read with them (one ``fs.cat`` call per batch, which
#: s3fs fetches concurrently).
IMAGE_READ_BATCH = 64


def manifest_batches(
    manifest: str | os.PathLike[str], columns: str, order: str, *, where: str = "TRUE", size: int = IMAGE_READ_BATCH
) -> Iterator[list[dict[str, Any]]]:
    """The rows of a version manifest (``columns``, filtered by ``where``, in ``order``) in
    batches of ``size`` dicts, streamed rather than loaded whole."""
    with duckdb.connect() as con:
        cursor = con.execute(
            f"SELECT {columns} FROM read_parquet({sql_string(os.fspath(manifest))}) WHERE {where} ORDER BY {order}"
        )
        names = [d[0] for d in cursor.description]
        while rows := cursor.fetchmany(size):
            yield [dict(zip(names, row)) for row in rows]


def as_image_store(store: ImageStore | str | os.PathLike[str] | None) -> ImageStore:
    """An :class:`ImageStore` from itself, a URL, or None (``config.image_store_url()``); an
    ``s3://`` URL uses the endpoint of ``BIOASSET_S3_ENDPOINT_URL`` when it is set."""
    if isinstance(store, ImageStore):
        return store
    return ImageStore(config.image_store_url() if store is None else os.fspath(store), endpoint_url=config.s3_endpoint_url())


def read_store_files(store: ImageStore, image_paths: list[str]) -> dict[str, bytes | Exception]:
    """The bytes of each ``image_path`` (relative to the store root), or the error reading it.

    One ``fs.cat`` call for the list, which s3fs fetches concurrently."""
    full = {join(store.root, path): path for path in image_paths}
    found = store.fs.cat(list(full), on_error="return") if full else {}
    # fsspec may key its answer by paths without the protocol, or not list a missing file.
    by_stripped = {store.fs._strip_protocol(key): value for key, value in found.items()}
    return {
        relative: by_stripped.get(store.fs._strip_protocol(path), FileNotFoundError(path))
        for path, relative in full.items()
    }
