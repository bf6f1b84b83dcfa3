"""Ingestion of raw snapshot files and typed tables (bioasset.ingest), on real DuckDB and real files."""

from __future__ import annotations

import gzip
import io
import json
import tarfile
from pathlib import Path

import duckdb
import pytest

from bioasset.inat_format import dated_tarball_key, snapshot_dirname
from bioasset.ingest import (
    HeaderMismatchError,
    IngestError,
    MissingTableError,
    SnapshotNotFoundError,
    SnapshotFiles,
    TableIngest,
    TarStreamReader,
    fetch_and_ingest_tables,
    fetch_snapshot_files,
    ingest_table,
    raw_table_path,
)
from bioasset.storage import filesystem_for
from bioasset.warehouse import Warehouse
from inat_fixtures import OBSERVATIONS, OBSERVERS, SNAPSHOT, TAXA, observation_uuid, snapshot_tarball, tsv, write_bucket

# ---------------------------------------------------------------------------------------------
# typed tables
# ---------------------------------------------------------------------------------------------


def ingest(tmp_path: Path, table: str, data: bytes):
    source = tmp_path / f"{table}.csv"
    source.write_bytes(data)
    warehouse = Warehouse(tmp_path / "warehouse")
    return ingest_table(table, source, tmp_path / f"{table}.parquet", tmp_path / f"{table}_rejects.parquet", warehouse)


def one(query: str) -> tuple:
    return duckdb.sql(query).fetchall()[0]


def rows_of(path: Path, order: str) -> list[tuple]:
    return duckdb.sql(f"SELECT * FROM read_parquet('{path}') ORDER BY {order}").fetchall()


def test_quotes_survive_and_columns_are_typed(tmp_path):
    result = ingest(tmp_path, "observers", tsv("observers", OBSERVERS + [(4, "q'uote", 'He said "hi\' there')]))
    assert (result.rows, result.rejected_rows) == (4, 0)
    assert rows_of(result.path, "observer_id") == [
        (1, "obrien", "Pat O'Brien"),
        (2, "jj", 'Jean "JJ" Doe'),
        (3, "anon", None),  # an empty field is NULL
        (4, "q'uote", 'He said "hi\' there'),
    ]

    taxa = ingest(tmp_path, "taxa", tsv("taxa", TAXA))
    types = dict(duckdb.sql(f"SELECT column_name, column_type FROM (DESCRIBE SELECT * FROM read_parquet('{taxa.path}'))").fetchall())
    assert types == {"taxon_id": "INTEGER", "ancestry": "VARCHAR", "rank_level": "DOUBLE", "rank": "VARCHAR", "name": "VARCHAR", "active": "BOOLEAN"}
    assert one(f"SELECT rank_level, active FROM read_parquet('{taxa.path}') WHERE name = 'Cossina'") == (33.5, True)
    assert one(f"SELECT count(*) FROM read_parquet('{taxa.path}') WHERE NOT active") == (1,)


def test_bad_rows_are_counted_and_kept_with_line_numbers(tmp_path):
    good = OBSERVATIONS[:3]
    u = observation_uuid
    bad_lines = [
        f"{u(50)}\t1\t50.0\t-1.0\t10\t4637\tresearch\t2024-01-01\t0.1\tEXTRA",  # line 5: extra tab at the end
        f"{u(51)}\t1\t50.0\t-1.0\t10\t4637\tresearch\t2024-01-01",  # line 6: a missing tab
        f"{u(52)}\t1\t50.0\t-1.0\t10\t4637\tresearch\t2024-13-45\t0.1",  # line 7: a bad date
        f"{u(53)}\t1\t50.0\t\t-1.0\t10\t4637\tresearch\t2024-01-01\t0.1",  # line 8: extra tab mid-row shifts columns
        f"{u(54)}\t1\tfifty\t-1.0\t10\t4637\tresearch\t2024-01-01\t0.1",  # line 9: unparsable number
        f"not-a-uuid\t1\t50.0\t-1.0\t10\t4637\tresearch\t2024-01-01\t0.1",  # line 10: bad uuid
    ]
    data = tsv("observations", good + bad_lines + [OBSERVATIONS[3]])
    result = ingest(tmp_path, "observations", data)

    assert result.rows == 4
    assert result.rejected_rows == 6
    rejects = {r[0]: r for r in rows_of(result.rejects_path, "line")}
    assert sorted(rejects) == [5, 6, 7, 8, 9, 10]
    assert "TOO MANY COLUMNS" in rejects[5][2]
    assert "MISSING COLUMNS" in rejects[6][2]
    assert rejects[7][2] == "CAST" and "observed_on" in rejects[7][3]
    assert "TOO MANY COLUMNS" in rejects[8][2] or "CAST" in rejects[8][2]
    assert rejects[9][2] == "CAST" and "latitude" in rejects[9][3]
    assert rejects[10][5].startswith("not-a-uuid")  # the raw line is kept
    assert result.rejects_by_reason["CAST"] >= 3
    # every input row is accounted for: good + rejected = data lines
    assert result.rows + result.rejected_rows == len(data.splitlines()) - 1


def test_invalid_utf8_is_rejected_not_fatal(tmp_path):
    rows = [TAXA[0], b"777\t48460\t10\tspecies\tBad \xff\xfe name\ttrue", TAXA[1]]
    result = ingest(tmp_path, "taxa", tsv("taxa", rows))
    assert (result.rows, result.rejected_rows) == (2, 1)
    line, _, reasons, columns, _, _ = rows_of(result.rejects_path, "line")[0]
    assert (line, reasons, columns) == (3, "INVALID ENCODING", "name")


@pytest.mark.parametrize("data", [b"", tsv("photos", [])], ids=["zero-bytes", "header-only"])
def test_empty_file_gives_an_empty_typed_table_and_a_warning(tmp_path, data):
    result = ingest(tmp_path, "photos", data)
    assert result.empty and result.rows == 0 and result.rejected_rows == 0
    assert result.warnings and "empty" in result.warnings[0]
    schema = duckdb.sql(f"DESCRIBE SELECT * FROM read_parquet('{result.path}')").fetchall()
    assert [(c[0], c[1]) for c in schema][:2] == [("photo_uuid", "UUID"), ("photo_id", "BIGINT")]
    assert one(f"SELECT count(*) FROM read_parquet('{result.rejects_path}')") == (0,)


def test_missing_file_and_changed_header_name_the_file_and_the_fix(tmp_path):
    warehouse = Warehouse(tmp_path / "warehouse")
    with pytest.raises(MissingTableError, match=r"observers.*does not exist.*Fix: materialize `snapshot_files`"):
        ingest_table("observers", tmp_path / "observers.csv", tmp_path / "o.parquet", tmp_path / "r.parquet", warehouse)
    (tmp_path / "observers.csv").write_text("observer_id\tname\tlogin\n1\ta\tb\n")
    with pytest.raises(HeaderMismatchError, match=r"expected \['observer_id', 'login', 'name'\].*TABLE_COLUMNS\['observers'\]"):
        ingest_table("observers", tmp_path / "observers.csv", tmp_path / "o.parquet", tmp_path / "r.parquet", warehouse)
    assert not (tmp_path / "o.parquet").exists()  # nothing half-written


# ---------------------------------------------------------------------------------------------
# snapshot files
# ---------------------------------------------------------------------------------------------


def fetch(bucket: Path, raw: Path, **options):
    fs, root = filesystem_for(str(bucket))
    return fetch_snapshot_files(fs, root, SNAPSHOT, raw, **options)


def test_snapshot_files_are_extracted_and_verified(tmp_path):
    bucket = write_bucket(tmp_path / "bucket")
    raw = tmp_path / "raw"
    files = fetch(bucket, raw)

    assert set(files.members) == {"taxa", "observations", "photos", "observers", "projects", "observations_projects"}
    assert files.copied_bytes == files.tarball_bytes == (bucket / dated_tarball_key(SNAPSHOT)).stat().st_size
    assert raw_table_path(raw, "taxa").read_bytes() == tsv("taxa", TAXA)
    manifest = json.loads((raw / "manifest.json").read_text())
    assert manifest["complete"] and manifest["members"]["photos"]["bytes"] == files.members["photos"].bytes
    assert not list(raw.glob("*.part"))

    again = fetch(bucket, raw)  # a rerun does no work
    assert (again.copied_bytes, again.extracted_bytes, again.extracted) == (0, 0, [])
    assert sorted(again.skipped) == sorted(files.members)


def test_snapshot_files_resume_after_an_interruption(tmp_path):
    bucket = write_bucket(tmp_path / "bucket", files={"photos": tsv("photos", [])})
    tarball = (bucket / dated_tarball_key(SNAPSHOT)).read_bytes()
    raw = tmp_path / "raw"
    raw.mkdir()
    (raw / "snapshot.tar.gz.part").write_bytes(tarball[:700])  # a copy interrupted at byte 700

    files = fetch(bucket, raw)
    assert (files.resumed_from, files.copied_bytes) == (700, len(tarball) - 700)
    assert (raw / "snapshot.tar.gz").read_bytes() == tarball

    # An extraction interrupted after some members: only the missing one is written again.
    raw_table_path(raw, "observers").unlink()
    (raw / "observers.csv.part").write_bytes(b"half a file")
    again = fetch(bucket, raw)
    assert again.copied_bytes == 0
    assert again.extracted == ["observers"]
    assert raw_table_path(raw, "observers").read_bytes() == tsv("observers", OBSERVERS)
    assert not (raw / "observers.csv.part").exists()


def test_snapshot_files_restart_a_part_longer_than_the_object(tmp_path):
    bucket = write_bucket(tmp_path / "bucket")
    raw = tmp_path / "raw"
    raw.mkdir()
    (raw / "snapshot.tar.gz.part").write_bytes(b"x" * 10_000_000)
    files = fetch(bucket, raw)
    assert files.resumed_from == 0 and files.copied_bytes == files.tarball_bytes


def test_a_republished_bucket_object_discards_the_partial_copy(tmp_path):
    bucket = write_bucket(tmp_path / "bucket")
    raw = tmp_path / "raw"
    old = (raw / "snapshot.tar.gz").read_bytes() if fetch(bucket, raw) else b""
    (raw / "snapshot.tar.gz").unlink()
    (raw / "snapshot.tar.gz.part").write_bytes(old[:500])  # an interrupted copy of the old object
    write_bucket(bucket, files={"observers": tsv("observers", OBSERVERS[:1])})  # the object changes meanwhile

    files = fetch(bucket, raw)
    assert files.resumed_from == 0 and sorted(files.extracted) == sorted(files.members)
    assert raw_table_path(raw, "observers").read_bytes() == tsv("observers", OBSERVERS[:1])


def test_a_corrupt_copy_is_discarded_with_a_clear_error(tmp_path):
    bucket = write_bucket(tmp_path / "bucket")
    good = (bucket / dated_tarball_key(SNAPSHOT)).read_bytes()
    damaged = bytearray(good)
    damaged[len(good) // 2] ^= 0xFF  # same size, wrong bytes: the gzip CRC catches it
    (bucket / dated_tarball_key(SNAPSHOT)).write_bytes(bytes(damaged))
    raw = tmp_path / "raw"
    with pytest.raises(IngestError, match=r"corrupt.*removed.*Fix: re-run"):
        fetch(bucket, raw)
    assert not (raw / "snapshot.tar.gz").exists()

    (bucket / dated_tarball_key(SNAPSHOT)).write_bytes(good)  # the bucket is fixed: the rerun recovers
    assert fetch(bucket, raw).copied_bytes == len(good)


def test_missing_tarball_and_missing_table_are_clear_errors(tmp_path):
    with pytest.raises(SnapshotNotFoundError, match=r"No snapshot tarball at .*inaturalist-open-data-20241127\.tar\.gz.*Fix"):
        fetch(tmp_path, tmp_path / "raw")

    bucket = write_bucket(tmp_path / "bucket", omit=["observers"])
    with pytest.raises(MissingTableError, match=rf"{snapshot_dirname(SNAPSHOT)}/observers\.csv.*Fix"):
        fetch(bucket, tmp_path / "raw")
    assert raw_table_path(tmp_path / "raw", "taxa").exists()  # what was there is verified and kept


def fetch_and_ingest(bucket: Path, warehouse: Warehouse) -> list[SnapshotFiles | TableIngest]:
    fs, root = filesystem_for(str(bucket))
    return list(fetch_and_ingest_tables(fs, root, SNAPSHOT, warehouse))


def test_tables_are_parsed_as_their_files_land(tmp_path):
    bad_observer = "7\tlogin\tname\tone tab too many"
    bucket = write_bucket(tmp_path / "bucket", files={"observers": tsv("observers", OBSERVERS + [bad_observer])})
    warehouse = Warehouse(tmp_path / "warehouse")
    done = fetch_and_ingest(bucket, warehouse)
    assert isinstance(done[0], SnapshotFiles) and set(done[0].members) >= {"taxa", "observations", "photos", "observers"}
    tables = {result.table: result for result in done[1:]}
    assert sorted(tables) == ["observations", "observers", "photos", "taxa"]
    assert (tables["taxa"].rows, tables["observers"].rejected_rows) == (len(TAXA), 1)
    key = SNAPSHOT.isoformat()
    assert rows_of(warehouse.table_path(key, "observers"), "observer_id") == rows_of(tables["observers"].path, "observer_id")
    assert one(f"SELECT line FROM read_parquet('{warehouse.rejects_path(key, 'observers')}')") == (len(OBSERVERS) + 2,)

    with pytest.raises(MissingTableError, match=r"photos\.csv.*Fix"):  # the same error as fetch_snapshot_files
        fetch_and_ingest(write_bucket(tmp_path / "incomplete", omit=["photos"]), Warehouse(tmp_path / "early"))


def test_each_member_is_handed_over_before_the_next_one_is_extracted(tmp_path):
    """What lets fetch_and_ingest_tables parse one table while the next is extracted."""
    bucket = write_bucket(tmp_path / "bucket")
    raw = tmp_path / "raw"
    seen: list[tuple[str, list[str]]] = []
    hand_over = lambda member: seen.append((member.table, sorted(p.stem for p in raw.glob("*.csv"))))  # noqa: E731
    files = fetch(bucket, raw, on_member=hand_over)
    order = list(files.members)  # tarball order
    assert [table for table, _ in seen] == order
    assert all(on_disk == sorted(order[: i + 1]) for i, (_, on_disk) in enumerate(seen))

    raw_table_path(raw, "photos").unlink()  # a rerun hands over the verified members first, then the re-extracted one
    seen.clear()
    fetch(bucket, raw, on_member=hand_over)
    handed = [table for table, _ in seen]
    assert sorted(handed[:-1]) == sorted(t for t in order if t != "photos") and handed[-1] == "photos"


def test_a_table_that_fails_to_parse_does_not_stop_the_others(tmp_path):
    header_changed = b"observer_id\tlogin\tnickname\n1\ta\tb\n"
    bucket = write_bucket(tmp_path / "bucket", files={"observers": header_changed})
    warehouse = Warehouse(tmp_path / "warehouse")
    fs, root = filesystem_for(str(bucket))
    done: list = []
    with pytest.raises(HeaderMismatchError, match=r"observers\.csv.*Fix"):
        for result in fetch_and_ingest_tables(fs, root, SNAPSHOT, warehouse):
            done.append(result)
    assert sorted(r.table for r in done[1:]) == ["observations", "photos", "taxa"]


@pytest.mark.parametrize("fmt", [tarfile.GNU_FORMAT, tarfile.PAX_FORMAT, tarfile.USTAR_FORMAT])
def test_tar_reader_handles_long_names_in_every_format(fmt):
    long_name = "d/" + "n" * 150 + ("é" if fmt == tarfile.PAX_FORMAT else "") + ".csv"
    members = {"a/x.csv": b"first", long_name: b"y" * 1500, "a/z.csv": b""}
    if fmt == tarfile.USTAR_FORMAT:
        members.pop(long_name)
    buffer = io.BytesIO()
    with tarfile.open(fileobj=buffer, mode="w", format=fmt) as archive:
        archive.addfile(tarfile.TarInfo("a"))  # a zero-size entry before the files
        for name, data in members.items():
            info = tarfile.TarInfo(name)
            info.size = len(data)
            archive.addfile(info, io.BytesIO(data))
    buffer.seek(0)
    reader = TarStreamReader(io.BufferedReader(buffer), chunk_size=1024)
    seen = {}
    for member in reader:
        if member.name in ("a/x.csv", long_name):  # leave a/z.csv unread: the reader skips it
            out = io.BytesIO()
            assert reader.copy_member(out) == member.size
            seen[member.name] = out.getvalue()
    assert seen == {k: v for k, v in members.items() if k != "a/z.csv"}


def test_snapshot_files_from_s3_keep_the_stored_gzip_bytes(tmp_path, moto_s3, s3_bucket):
    from s3_fixtures import anonymous_s3fs, put_public_object

    tarball = snapshot_tarball()
    head = put_public_object(moto_s3, s3_bucket, dated_tarball_key(SNAPSHOT), tarball)
    assert head.get("ContentEncoding") == "gzip"
    files = fetch_snapshot_files(anonymous_s3fs(moto_s3), s3_bucket, SNAPSHOT, tmp_path / "raw", chunk_size=512)
    assert files.source == f"s3://{s3_bucket}/{dated_tarball_key(SNAPSHOT)}"
    assert (tmp_path / "raw" / "snapshot.tar.gz").read_bytes() == tarball
    assert gzip.decompress(tarball)[:100] != tarball[:100]  # it really is the gzip stream, as stored
    assert raw_table_path(tmp_path / "raw", "observers").read_bytes() == tsv("observers", OBSERVERS)
