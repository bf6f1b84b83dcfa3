"""The ingest assets in a real Dagster instance, and the warehouse's DuckDB views."""

from __future__ import annotations

import multiprocessing
import subprocess
import sys
import textwrap
import time
from concurrent.futures import ProcessPoolExecutor
from datetime import date
from pathlib import Path

import duckdb
import pytest
from dagster import AssetCheckSeverity, Definitions, instance_for_test, materialize

import inat_fixtures as fx
from bioasset.assets.ingest import INGEST_ASSETS, SNAPSHOT_FILES_STEP
from bioasset.jobs import ingest_snapshot_job
from bioasset.resources import OpenDataBucket, WarehouseResource
from bioasset.warehouse import Warehouse, WarehouseLockedError

LATER = date(2024, 12, 27)


def resources(bucket: Path, warehouse: Path) -> dict:
    return {"open_data": OpenDataBucket(url=str(bucket)), "warehouse": WarehouseResource(path=str(warehouse), memory_limit="256MB")}


def metadata_of(result) -> dict[str, dict]:
    return {
        event.asset_key.path[-1]: {k: v.value for k, v in event.materialization.metadata.items()}
        for event in result.get_asset_materialization_events()
    }


def checks_of(result) -> dict[tuple[str, str], object]:
    return {(e.asset_key.path[-1], e.check_name): e for e in result.get_asset_check_evaluations()}


def query_from_another_process(db: Path, sql: str) -> str:
    """Run ``sql`` on the DuckDB file from a fresh process in another folder (views need absolute paths)."""
    code = f"import duckdb; print(duckdb.connect({str(db)!r}, read_only=True).sql({sql!r}).fetchall())"
    return subprocess.run([sys.executable, "-c", code], cwd="/", capture_output=True, text=True, check=True).stdout.strip()


def test_ingest_end_to_end_then_a_later_snapshot_through_the_job(tmp_path):
    bucket = fx.write_bucket(tmp_path / "bucket")
    extra_photo = (fx.photo_uuid(500), 5000, fx.observation_uuid(0), 1, "png", "CC0", 640, 480, 9)
    fx.write_bucket(bucket, LATER, files={"photos": fx.tsv("photos", fx.PHOTOS + [extra_photo])})
    warehouse = tmp_path / "warehouse"

    with instance_for_test() as instance:
        instance.add_dynamic_partitions("snapshots", [fx.SNAPSHOT_KEY, LATER.isoformat()])
        result = materialize(INGEST_ASSETS, instance=instance, partition_key=fx.SNAPSHOT_KEY, resources=resources(bucket, warehouse))
        assert result.success

        checks = checks_of(result)
        assert sorted(checks) == sorted(
            [(t, "not_empty") for t in ("taxa", "observations", "photos", "observers", "taxonomy", "media")]
            + [("taxonomy", "ancestry_resolves"), ("media", "orphan_photos")]
        )
        assert all(c.passed for c in checks.values())

        metadata = metadata_of(result)
        photos = metadata["photos"]
        assert photos["dagster/row_count"] == len(fx.PHOTOS) and photos["rejected_rows"] == 0
        assert photos["source_bytes"] > 0 and photos["parquet_bytes"] > 0 and photos["elapsed_s"] > 0 and "rows_per_s" in photos
        assert "Morus bassanus" in metadata["media"]["top_taxa"] and metadata["media"]["orphan_photos"] == 0
        assert "| species |" in metadata["taxonomy"]["taxa_per_rank"]
        assert metadata["snapshot_files"]["copied_bytes"] == metadata["snapshot_files"]["tarball_bytes"] > 0
        assert "`media`" in metadata["media"]["views"]

        # A later snapshot through the real job: the views move to it.
        defs = Definitions(assets=INGEST_ASSETS, jobs=[ingest_snapshot_job], resources=resources(bucket, warehouse))
        Definitions.validate_loadable(defs)
        later = defs.resolve_job_def("ingest_snapshot_job").execute_in_process(instance=instance, partition_key=LATER.isoformat())
        assert later.success and all(c.passed for c in later.get_asset_check_evaluations())
        assert len(later.get_asset_check_evaluations()) == 8

    db = warehouse / "bioasset.duckdb"
    assert query_from_another_process(db, "SELECT count(*) FROM media") == f"[({len(fx.PHOTOS) + 1},)]"
    assert query_from_another_process(db, "SELECT name FROM taxonomy WHERE taxon_id = 55627") == "[('Pieris rapae rapae',)]"
    views = {r[0] for r in duckdb.connect(str(db), read_only=True).sql("SELECT view_name FROM duckdb_views() WHERE NOT internal").fetchall()}
    assert {"snapshot_files", "taxa", "observations", "photos", "observers", "taxonomy", "media", "photos_rejects"} <= views
    # each snapshot keeps its own Parquet files
    for key in (fx.SNAPSHOT_KEY, LATER.isoformat()):
        assert (warehouse / "snapshots" / key / "media.parquet").is_file()


def test_empty_tables_and_bad_rows_show_in_metadata_and_checks(tmp_path):
    bad_observer = "7\tlogin\tname\tone tab too many"
    bucket = fx.write_bucket(
        tmp_path / "bucket",
        files={"photos": fx.tsv("photos", []), "observers": fx.tsv("observers", fx.OBSERVERS + [bad_observer])},
    )
    with instance_for_test() as instance:
        instance.add_dynamic_partitions("snapshots", [fx.SNAPSHOT_KEY])
        result = materialize(INGEST_ASSETS, instance=instance, partition_key=fx.SNAPSHOT_KEY, resources=resources(bucket, tmp_path / "wh"))
    assert result.success  # bad and empty input never crashes the run

    checks = checks_of(result)
    for table in ("photos", "media"):
        assert not checks[(table, "not_empty")].passed
        assert checks[(table, "not_empty")].severity == AssetCheckSeverity.ERROR
    assert checks[("observers", "not_empty")].passed

    metadata = metadata_of(result)
    assert metadata["photos"]["dagster/row_count"] == 0 and "empty" in metadata["photos"]["warnings"]
    observers = metadata["observers"]
    assert observers["rejected_rows"] == 1 and observers["rejected_by_reason"] == {"TOO MANY COLUMNS": 1}
    assert "| 5 | TOO MANY COLUMNS |" in observers["first_rejects"]  # line 5: header + 3 rows + the bad one


def test_a_missing_table_fails_snapshot_files_with_the_file_and_the_fix(tmp_path):
    bucket = fx.write_bucket(tmp_path / "bucket", omit=["taxa"])
    with instance_for_test() as instance:
        instance.add_dynamic_partitions("snapshots", [fx.SNAPSHOT_KEY])
        result = materialize(
            INGEST_ASSETS, instance=instance, partition_key=fx.SNAPSHOT_KEY, resources=resources(bucket, tmp_path / "wh"), raise_on_error=False
        )
    assert not result.success
    failure = result.get_step_failure_events()[0]
    assert failure.step_key == SNAPSHOT_FILES_STEP
    assert not result.get_asset_materialization_events()  # nothing is reported from an incomplete release
    message = failure.step_failure_data.error.to_string()
    assert "inaturalist-open-data-20241127/taxa.csv" in message and "Fix:" in message


def test_snapshot_files_and_each_table_materialize_on_their_own(tmp_path):
    """The combined step is subsettable: a typed table alone re-parses the files extracted before."""
    bucket = fx.write_bucket(tmp_path / "bucket")
    with instance_for_test() as instance:
        instance.add_dynamic_partitions("snapshots", [fx.SNAPSHOT_KEY])
        run = lambda selection: materialize(  # noqa: E731
            INGEST_ASSETS, selection=selection, instance=instance, partition_key=fx.SNAPSHOT_KEY,
            resources=resources(bucket, tmp_path / "wh"), raise_on_error=False,
        )  # fmt: skip

        too_early = run(["photos"])
        assert not too_early.success
        message = too_early.get_step_failure_events()[0].step_failure_data.error.to_string()
        assert "photos.csv does not exist" in message and "Fix: materialize `snapshot_files`" in message

        files = run(["snapshot_files"])
        assert files.success and set(metadata_of(files)) == {"snapshot_files"} and not checks_of(files)
        assert {"taxa", "observations", "photos", "observers"} <= set(metadata_of(files)["snapshot_files"]["extracted"].split(", "))

        photos = run(["photos"])
        assert photos.success and set(metadata_of(photos)) == {"photos"} and set(checks_of(photos)) == {("photos", "not_empty")}
        assert metadata_of(photos)["photos"]["dagster/row_count"] == len(fx.PHOTOS)


# ---------------------------------------------------------------------------------------------
# views and the DuckDB file lock
# ---------------------------------------------------------------------------------------------


def _write_table(root: Path, key: str, rows: int) -> None:
    path = Warehouse(root).table_path(key, "taxa")
    path.parent.mkdir(parents=True, exist_ok=True)
    duckdb.sql(f"COPY (SELECT range AS taxon_id FROM range({rows})) TO '{path}' (FORMAT parquet)")


def _refresh(root: str) -> int:
    return len(Warehouse(root).refresh_views(timeout_s=30))


def test_views_point_at_the_latest_snapshot_and_refreshes_queue_on_the_lock(tmp_path):
    _write_table(tmp_path, "2024-01-01", 3)
    _write_table(tmp_path, "2024-02-01", 5)
    # Parallel partitions refreshing at once all succeed (spawned: no fork of a process running DuckDB threads).
    with ProcessPoolExecutor(2, mp_context=multiprocessing.get_context("spawn")) as pool:
        assert list(pool.map(_refresh, [str(tmp_path)] * 4)) == [1] * 4
    warehouse = Warehouse(tmp_path)
    with warehouse.connect_views() as con:
        assert con.sql("SELECT count(*) FROM taxa").fetchall() == [(5,)]

    # A DuckDB CLI left open read-write holds the file: a refresh waits, then names the fix.
    holder = subprocess.Popen(
        [sys.executable, "-c", textwrap.dedent(f"""
            import duckdb, sys, time
            con = duckdb.connect({str(warehouse.db_path)!r})
            print("open", flush=True)
            time.sleep(float(sys.argv[1]))
            con.close()
        """), "1.5"],
        stdout=subprocess.PIPE, text=True,
    )  # fmt: skip
    try:
        assert holder.stdout.readline().strip() == "open"
        with pytest.raises(WarehouseLockedError, match=r"Another process has it open.*Fix: close that connection"):
            warehouse.refresh_views(timeout_s=0.2)
        started = time.monotonic()
        assert "taxa" in warehouse.refresh_views(timeout_s=30)  # retries until the holder lets go
        assert time.monotonic() - started < 30
    finally:
        holder.wait(timeout=30)


def test_the_sample_bucket_ingests_cleanly(tmp_path):
    """Integration with the sample-bucket generator: every row parses, every check passes."""
    from bioasset.media import subtree_media_query
    from bioasset.sample_bucket import generate_sample_bucket

    report = generate_sample_bucket(
        tmp_path / "bucket", seed=0, n_species=6, photos_per_species=4, snapshot_date=fx.SNAPSHOT, sizes=("thumb",), workers=1
    )
    with instance_for_test() as instance:
        instance.add_dynamic_partitions("snapshots", [fx.SNAPSHOT_KEY])
        result = materialize(
            INGEST_ASSETS, instance=instance, partition_key=fx.SNAPSHOT_KEY, resources=resources(report.dest, tmp_path / "wh")
        )
    assert result.success and all(c.passed for c in result.get_asset_check_evaluations())
    metadata = metadata_of(result)
    for table in ("taxa", "observations", "photos", "observers"):
        assert (metadata[table]["dagster/row_count"], metadata[table]["rejected_rows"]) == (report.row_counts[table], 0), table
    assert metadata["media"]["dagster/row_count"] == report.row_counts["photos"]

    with Warehouse(tmp_path / "wh").connect_views() as con:
        for name, ids in report.homonym_genera.items():  # each homonym genus has its own subtree
            kingdoms = [con.sql(f"SELECT kingdom FROM taxonomy WHERE taxon_id = {i}").fetchall()[0][0] for i in ids]
            assert len(set(kingdoms)) == len(ids), (name, kingdoms)
        for species in report.species_ids:
            query = subtree_media_query(con, species, columns="count(*)")
            assert con.sql(query).fetchall()[0][0] >= 1
