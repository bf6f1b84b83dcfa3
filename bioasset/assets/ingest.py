"""Ingest assets, one partition per snapshot: raw files → typed tables → taxonomy → media.

Thin wrappers: each body finds its paths in the warehouse, calls one or two domain functions
(:mod:`bioasset.ingest`, :mod:`bioasset.taxonomy`, :mod:`bioasset.media`), refreshes the DuckDB
views and reports metadata and check results. Assets hand no values between steps: each writes
``{warehouse}/snapshots/{key}/{asset}.parquet`` and the next one reads it by name.

``snapshot_files`` and the four typed tables are one step (:data:`SNAPSHOT_FILES_STEP`, a subsettable
multi-asset), so that a table is parsed while the next members of the tarball are still being
extracted (:func:`bioasset.ingest.fetch_and_ingest_tables`); each is still its own asset, with its
own materialization, metadata and checks, reported as soon as it is done.
"""

from typing import AbstractSet, Any, Iterable

from dagster import (
    AssetCheckKey,
    AssetCheckResult,
    AssetCheckSeverity,
    AssetCheckSpec,
    AssetExecutionContext,
    AssetSpec,
    MaterializeResult,
    MetadataValue,
    TableColumn,
    TableSchema,
    asset,
    multi_asset,
)

from bioasset.assets.metadata import markdown_table
from bioasset.ingest import (
    SnapshotFiles,
    TableIngest,
    fetch_and_ingest_tables,
    ingest_snapshot_table,
    read_rejects,
    write_snapshot_files_table,
)
from bioasset.inat_format import CORE_TABLES, TABLE_COLUMNS
from bioasset.jobs import INGEST_GROUP
from bioasset.media import build_media
from bioasset.partitions import snapshots_partitions
from bioasset.resources import OpenDataBucket, WarehouseResource
from bioasset.taxonomy import build_taxonomy
from bioasset.warehouse import Warehouse, WarehouseLockedError, parse_snapshot_key

#: Concurrency pool of the DuckDB-heavy steps. With dagster.yaml's `pools: default_limit: 1`, one
#: table is built at a time on the machine (each uses every core and up to `memory_limit`), so
#: parallel partitions stay within the memory bound; raise it with
#: `dagster instance concurrency set warehouse N` on a bigger machine.
WAREHOUSE_POOL = "warehouse"

#: Above this share of photos whose observation is missing, the `orphan_photos` check warns.
ORPHAN_PHOTOS_WARN_RATIO = 0.01

NOT_EMPTY = "not_empty"

#: The step (op) that materializes ``snapshot_files`` and the typed tables together.
SNAPSHOT_FILES_STEP = "snapshot_files_and_tables"


def _table_asset(name: str, *, deps: list, description: str, checks: dict[str, str] | None = None, **options: Any):
    """``@asset`` of one warehouse table of a snapshot, with a ``not_empty`` check and ``checks`` (name: description)."""
    specs = [_not_empty_spec(name)]
    specs += [AssetCheckSpec(check, asset=name, description=text) for check, text in (checks or {}).items()]
    return asset(
        name=name,
        deps=deps,
        partitions_def=snapshots_partitions,
        group_name=INGEST_GROUP,
        kinds={"duckdb", "parquet"},
        check_specs=specs,
        pool=WAREHOUSE_POOL,
        description=description,
        **options,
    )


def _not_empty_spec(table: str) -> AssetCheckSpec:
    return AssetCheckSpec(NOT_EMPTY, asset=table, description=f"The {table} table has rows.")


def _not_empty_result(table: str, rows: int) -> AssetCheckResult:
    return AssetCheckResult(
        asset_key=table,
        check_name=NOT_EMPTY,
        passed=rows > 0,
        severity=AssetCheckSeverity.ERROR,
        metadata={"rows": rows},
        description=None if rows else f"The {table} table of this snapshot is empty.",
    )


def _finish(
    context: AssetExecutionContext,
    wh: Warehouse,
    metadata: dict[str, Any],
    warnings: Iterable[str] = (),
    check_results: Iterable[AssetCheckResult] = (),
    asset_key: str | None = None,
) -> MaterializeResult:
    """Refresh the DuckDB views, log warnings, and build the MaterializeResult (of ``asset_key`` in a multi-asset)."""
    warnings = list(warnings)
    try:
        views = wh.refresh_views()
        metadata["views"] = MetadataValue.md(", ".join(f"`{v}`" for v in sorted(views)) + f" in `{wh.db_path}`")
    except WarehouseLockedError as exc:  # the Parquet is written; the next materialization refreshes the views
        warnings.append(str(exc))
    for warning in warnings:
        context.log.warning(warning)
    if warnings:
        metadata["warnings"] = MetadataValue.md("\n".join(f"- {w}" for w in warnings))
    return MaterializeResult(asset_key=asset_key, metadata=metadata, check_results=list(check_results))


def _speed(rows: int, elapsed_s: float) -> dict[str, Any]:
    return {"elapsed_s": round(elapsed_s, 3), "rows_per_s": round(rows / elapsed_s) if elapsed_s > 0 else 0}


# ---------------------------------------------------------------------------------------------


@multi_asset(
    name=SNAPSHOT_FILES_STEP,
    specs=[
        AssetSpec(
            "snapshot_files",
            group_name=INGEST_GROUP,
            kinds={"s3", "parquet"},
            description="The snapshot's metadata files: the dated tarball copied (resumably, size-verified) and "
            "stream-extracted into the warehouse's raw/ folder, one row per file in snapshot_files.parquet.",
        ),
        *(
            AssetSpec(
                table,
                deps=["snapshot_files"],
                group_name=INGEST_GROUP,
                kinds={"duckdb", "parquet"},
                metadata={"dagster/column_schema": TableSchema(columns=[TableColumn(n, t) for n, t in TABLE_COLUMNS[table].items()])},
                description=f"The snapshot's {table}.csv as typed Parquet, parsed by DuckDB (no quoting, explicit types); "
                f"rows that do not parse are kept in {table}_rejects.parquet with their line number and reason.",
            )
            for table in CORE_TABLES
        ),
    ],
    check_specs=[_not_empty_spec(table) for table in CORE_TABLES],
    partitions_def=snapshots_partitions,
    can_subset=True,
    pool=WAREHOUSE_POOL,
    description="Extract the snapshot tarball; parse each typed table as soon as its file is extracted.",
)
def snapshot_files_and_tables(context: AssetExecutionContext, open_data: OpenDataBucket, warehouse: WarehouseResource):
    wh, key = warehouse.warehouse(), context.partition_key
    selected = {asset_key.path[-1] for asset_key in context.selected_asset_keys}
    tables = [table for table in CORE_TABLES if table in selected]
    if "snapshot_files" in selected:
        fs, root = open_data.filesystem()
        done: Iterable[SnapshotFiles | TableIngest] = fetch_and_ingest_tables(fs, root, parse_snapshot_key(key), wh, tables=tables)
    else:  # the tables alone, from the files extracted before
        done = (ingest_snapshot_table(wh, key, table) for table in tables)
    checks = context.selected_asset_check_keys
    for result in done:
        if isinstance(result, SnapshotFiles):
            yield _snapshot_files_result(context, wh, result, write_snapshot_files_table(wh, result, wh.table_path(key, "snapshot_files")))
        else:
            yield _table_result(context, wh, result, checks)


def _snapshot_files_result(context: AssetExecutionContext, wh: Warehouse, files: SnapshotFiles, rows: int) -> MaterializeResult:
    metadata = {
        "dagster/row_count": rows,
        "source": files.source,
        "tarball_bytes": files.tarball_bytes,
        "copied_bytes": files.copied_bytes,
        "resumed_from_byte": files.resumed_from,
        "extracted_bytes": files.extracted_bytes,
        "extracted": ", ".join(files.extracted) or "(none: all verified before)",
        "skipped_verified": ", ".join(files.skipped) or "(none)",
        "bytes": files.total_member_bytes,
        "elapsed_s": round(files.elapsed_s, 3),
        "mb_per_s": round(files.extracted_bytes / 1e6 / files.elapsed_s, 1) if files.elapsed_s > 0 else 0,
        "files": markdown_table(["table", "bytes", "member"], ((m.table, m.bytes, m.member) for m in files.members.values())),
        "path": MetadataValue.path(str(files.tarball_path.parent)),
    }
    warnings = [f"Ignored unexpected tarball members: {', '.join(files.ignored_members)}"] if files.ignored_members else []
    return _finish(context, wh, metadata, warnings, asset_key="snapshot_files")


def _table_result(
    context: AssetExecutionContext, wh: Warehouse, result: TableIngest, checks: AbstractSet[AssetCheckKey]
) -> MaterializeResult:
    table = result.table
    rejected_warning = [f"{result.rejected_rows} rows of {table} rejected; see {result.rejects_path}"] if result.rejected_rows else []
    check_results = [_not_empty_result(table, result.rows)] if _not_empty_spec(table).key in checks else []
    return _finish(context, wh, _table_metadata(result), result.warnings + rejected_warning, check_results, asset_key=table)


def _table_metadata(result: TableIngest) -> dict[str, Any]:
    metadata: dict[str, Any] = {
        "dagster/row_count": result.rows,
        "rejected_rows": result.rejected_rows,
        "rejected_by_reason": dict(result.rejects_by_reason),
        "source_bytes": result.source_bytes,
        "parquet_bytes": result.parquet_bytes,
        "mb_per_s": round(result.source_bytes / 1e6 / result.elapsed_s, 1) if result.elapsed_s > 0 else 0,
        "path": MetadataValue.path(str(result.path)),
        "rejects_path": MetadataValue.path(str(result.rejects_path)),
        **_speed(result.rows + result.rejected_rows, result.elapsed_s),
    }
    if result.rejected_rows:
        metadata["first_rejects"] = markdown_table(
            ["line", "error", "columns", "message"],
            ((r["line"], r["error_types"], r["columns"] or "", (r["error_message"] or "")[:120]) for r in read_rejects(result.rejects_path)),
        )
    return metadata


@_table_asset(
    "taxonomy",
    deps=["taxa"],
    checks={"ancestry_resolves": "Every id in every ancestry is a taxon of the snapshot."},
    description="Every taxon with the name and id of its kingdom, phylum, class, order, family, genus, species "
    "and subspecies (matched on the rank string; a missing rank is null), its path, and its active flag.",
)
def taxonomy(context: AssetExecutionContext, warehouse: WarehouseResource) -> MaterializeResult:
    wh, key = warehouse.warehouse(), context.partition_key
    result = build_taxonomy(wh, wh.table_path(key, "taxa"), wh.table_path(key, "taxonomy"))
    metadata = {
        "dagster/row_count": result.rows,
        "inactive_taxa": result.inactive,
        "taxa_with_unresolved_ancestry": result.unresolved_taxa,
        "duplicate_taxon_ids": result.duplicate_taxon_ids,
        "parquet_bytes": result.path.stat().st_size,
        "taxa_per_rank": markdown_table(["rank", "taxa"], result.taxa_per_rank[:20]),
        "path": MetadataValue.path(str(result.path)),
        **_speed(result.rows, result.elapsed_s),
    }
    ancestry = AssetCheckResult(
        check_name="ancestry_resolves",
        passed=result.unresolved_taxa == 0,
        severity=AssetCheckSeverity.ERROR,
        metadata={
            "taxa_with_unresolved_ancestry": result.unresolved_taxa,
            "examples": markdown_table(["taxon_id", "ancestry"], result.unresolved_examples),
        },
    )
    warnings = [f"{result.duplicate_taxon_ids} duplicate taxon ids in taxa"] if result.duplicate_taxon_ids else []
    return _finish(context, wh, metadata, warnings, [_not_empty_result("taxonomy", result.rows), ancestry])


@_table_asset(
    "media",
    deps=["photos", "observations", "taxonomy", "observers"],
    checks={"orphan_photos": f"At most {ORPHAN_PHOTOS_WARN_RATIO:.0%} of photos point to an observation missing from the snapshot."},
    description="One row per photo with its observation, taxon path, license, observer and size, sorted by "
    "taxon path so that subtree queries read only the row groups they need.",
)
def media(context: AssetExecutionContext, warehouse: WarehouseResource) -> MaterializeResult:
    wh, key = warehouse.warehouse(), context.partition_key
    result = build_media(
        wh, *(wh.table_path(key, t) for t in ("photos", "observations", "taxonomy", "observers")), wh.table_path(key, "media")
    )
    metadata = {
        "dagster/row_count": result.rows,
        "orphan_photos": result.orphan_photos,
        "photos_without_taxon": result.photos_without_taxon,
        "parquet_bytes": result.path.stat().st_size,
        "top_taxa": markdown_table(["taxon_id", "name", "rank", "photos"], result.top_taxa),
        "photos_per_license": markdown_table(["license", "photos"], result.photos_per_license),
        "path": MetadataValue.path(str(result.path)),
        **_speed(result.rows, result.elapsed_s),
    }
    orphans = AssetCheckResult(
        check_name="orphan_photos",
        passed=result.orphan_ratio <= ORPHAN_PHOTOS_WARN_RATIO,
        severity=AssetCheckSeverity.WARN,
        metadata={"orphan_photos": result.orphan_photos, "orphan_ratio": round(result.orphan_ratio, 6)},
    )
    return _finish(context, wh, metadata, [], [_not_empty_result("media", result.rows), orphans])


INGEST_ASSETS = [snapshot_files_and_tables, taxonomy, media]
