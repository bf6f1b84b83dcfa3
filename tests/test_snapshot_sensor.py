"""inat_snapshot_sensor and `bioasset snapshots check` against a moto S3 server on loopback (and a
local folder), with a real Dagster instance.

Calling a sensor does not apply its dynamic-partition requests, so the tests apply them to the
instance themselves, as the daemon would.
"""

from __future__ import annotations

import gzip
import io
import json
import os
import tarfile
import tempfile
import time
from datetime import date
from pathlib import Path

import pytest
import s3fs
from dagster import Definitions, SensorResult, asset, build_sensor_context, instance_for_test

from bioasset import cli
from bioasset.inat_format import (
    LATEST_TARBALL,
    ROOT_CSV_TABLES,
    dated_tarball_key,
    header_line,
    snapshot_dirname,
)
from bioasset.jobs import INGEST_GROUP, ingest_snapshot_job
from bioasset.partitions import snapshots_partitions
from bioasset.resources import OpenDataBucket
from bioasset.sensors import inat_snapshot_sensor
from bioasset.sensors.snapshot_sensor import DEFAULT_INTERVAL_SECONDS, INTERVAL_ENV, interval_seconds_from_env
from bioasset.snapshots import RESOLVED_BY_ETAG_AND_SIZE, RESOLVED_BY_LAST_MODIFIED, RESOLVED_BY_SIZE
from s3_fixtures import anonymous_s3fs, put_public_object, s3_client, unique_bucket_name, upload_folder_as_bucket

NOVEMBER = date(2024, 11, 27)
DECEMBER = date(2024, 12, 27)


# --- building a bucket ----------------------------------------------------------------------


def tiny_snapshot_tarball(snapshot: date, revision: int = 0) -> bytes:
    """A tiny snapshot tarball, the same bytes for the same arguments: one directory holding a
    header-only taxa.csv (a re-published ``revision`` adds a line)."""
    header = (header_line("taxa") + "\n" * revision).encode()
    tar_bytes = io.BytesIO()
    with tarfile.open(fileobj=tar_bytes, mode="w") as tar:
        member = tarfile.TarInfo(f"{snapshot_dirname(snapshot)}/taxa.csv")
        member.size = len(header)
        tar.addfile(member, io.BytesIO(header))
    return gzip.compress(tar_bytes.getvalue(), mtime=0)


def root_csv_files() -> dict[str, bytes]:
    return {f"{table}.csv.gz": gzip.compress(header_line(table).encode(), mtime=0) for table in ROOT_CSV_TABLES}


def write_release(root: Path, snapshot: date) -> Path:
    """A bucket-shaped folder holding one release: root CSVs, the dated and the latest tarball."""
    (root / "metadata").mkdir(parents=True, exist_ok=True)
    for key, body in root_csv_files().items():
        (root / key).write_bytes(body)
    tarball = tiny_snapshot_tarball(snapshot)
    (root / dated_tarball_key(snapshot)).write_bytes(tarball)
    (root / LATEST_TARBALL).write_bytes(tarball)
    return root


def publish_release(endpoint_url: str, bucket: str, snapshot: date) -> dict:
    """Publish a complete release (upload_folder_as_bucket sends the tarballs last); returns the latest tarball's HEAD."""
    with tempfile.TemporaryDirectory() as folder:
        upload_folder_as_bucket(write_release(Path(folder), snapshot), endpoint_url, bucket)
    return s3_client(endpoint_url).head_object(Bucket=bucket, Key=LATEST_TARBALL)


def publish_root_csvs(endpoint_url: str, bucket: str) -> None:
    for key, body in root_csv_files().items():
        put_public_object(endpoint_url, bucket, key, body)


# --- running the sensor ---------------------------------------------------------------------


@pytest.fixture
def instance():
    with instance_for_test() as dagster_instance:
        yield dagster_instance


def tick(instance, endpoint_url: str, bucket: str, cursor: str | None = None) -> SensorResult:
    """One sensor evaluation with a fresh context and resource, as after a daemon restart."""
    context = build_sensor_context(
        instance=instance,
        cursor=cursor,
        resources={"open_data": OpenDataBucket(url=f"s3://{bucket}", endpoint_url=endpoint_url)},
    )
    result = inat_snapshot_sensor(context)
    assert isinstance(result, SensorResult)
    for request in result.dynamic_partitions_requests or []:
        instance.add_dynamic_partitions(request.partitions_def_name, list(request.partition_keys))
    return result


def assert_requests(result: SensorResult, key: str) -> None:
    assert result.skip_reason is None
    assert [(r.partition_key, r.run_key) for r in result.run_requests] == [(key, key)]
    [add] = result.dynamic_partitions_requests
    assert (add.partitions_def_name, list(add.partition_keys)) == ("snapshots", [key])


def assert_skips(result: SensorResult, *reason_words: str) -> str:
    assert not result.run_requests and not result.dynamic_partitions_requests
    assert result.skip_reason is not None
    message = result.skip_reason.skip_message
    for word in reason_words:
        assert word in message, message
    return message


def test_uploaded_bucket_serves_gzip_bytes_as_stored(moto_s3, s3_bucket, tmp_path):
    keys = upload_folder_as_bucket(write_release(tmp_path, NOVEMBER), moto_s3, s3_bucket)

    assert keys[-2:] == [dated_tarball_key(NOVEMBER), LATEST_TARBALL]
    head = s3_client(moto_s3).head_object(Bucket=s3_bucket, Key="taxa.csv.gz")
    assert (head["ContentEncoding"], head["ContentType"]) == ("gzip", "text/csv")
    reader = anonymous_s3fs(moto_s3)
    assert reader.cat_file(f"{s3_bucket}/taxa.csv.gz") == (tmp_path / "taxa.csv.gz").read_bytes()
    assert reader.cat_file(f"{s3_bucket}/{LATEST_TARBALL}") == tiny_snapshot_tarball(NOVEMBER)


# --- the sensor -----------------------------------------------------------------------------


def test_first_snapshot_adds_partition_and_requests_ingest(moto_s3, s3_bucket, instance):
    latest = publish_release(moto_s3, s3_bucket, NOVEMBER)

    result = tick(instance, moto_s3, s3_bucket)

    assert_requests(result, "2024-11-27")
    assert json.loads(result.cursor) == {
        "etag": latest["ETag"].strip('"'),
        "size": latest["ContentLength"],
        "last_modified": latest["LastModified"].isoformat(),
        "snapshot": "2024-11-27",
    }
    assert instance.get_dynamic_partitions("snapshots") == ["2024-11-27"]


def test_repeated_ticks_and_a_restart_request_nothing_twice(moto_s3, s3_bucket, instance):
    publish_release(moto_s3, s3_bucket, NOVEMBER)
    first = tick(instance, moto_s3, s3_bucket)
    assert_requests(first, "2024-11-27")

    again = tick(instance, moto_s3, s3_bucket, cursor=first.cursor)
    assert_skips(again, "unchanged", "2024-11-27 was already requested")
    assert again.cursor == first.cursor

    # A restart: a new process has no s3fs instance (nor its listing cache), only the stored cursor.
    s3fs.S3FileSystem.clear_instance_cache()
    after_restart = tick(instance, moto_s3, s3_bucket, cursor=again.cursor)
    assert_skips(after_restart, "unchanged")
    assert after_restart.cursor == first.cursor
    assert instance.get_dynamic_partitions("snapshots") == ["2024-11-27"]


def test_second_snapshot_published_later_is_requested(moto_s3, s3_bucket, instance):
    publish_release(moto_s3, s3_bucket, NOVEMBER)
    first = tick(instance, moto_s3, s3_bucket)

    publish_release(moto_s3, s3_bucket, DECEMBER)
    second = tick(instance, moto_s3, s3_bucket, cursor=first.cursor)

    assert_requests(second, "2024-12-27")
    assert json.loads(second.cursor)["snapshot"] == "2024-12-27"
    assert_skips(tick(instance, moto_s3, s3_bucket, cursor=second.cursor), "unchanged")
    assert sorted(instance.get_dynamic_partitions("snapshots")) == ["2024-11-27", "2024-12-27"]


def test_republished_tarball_of_the_same_snapshot_is_not_requested_again(moto_s3, s3_bucket, instance):
    publish_release(moto_s3, s3_bucket, NOVEMBER)
    first = tick(instance, moto_s3, s3_bucket)

    republished = tiny_snapshot_tarball(NOVEMBER, revision=1)
    put_public_object(moto_s3, s3_bucket, dated_tarball_key(NOVEMBER), republished)
    put_public_object(moto_s3, s3_bucket, LATEST_TARBALL, republished)
    result = tick(instance, moto_s3, s3_bucket, cursor=first.cursor)

    assert_skips(result, "changed", "still resolves to snapshot 2024-11-27", "launch ingest_snapshot_job")
    assert json.loads(result.cursor)["size"] == len(republished)  # the next tick sees it as unchanged
    assert_skips(tick(instance, moto_s3, s3_bucket, cursor=result.cursor), "unchanged")


def test_half_published_release_waits_for_the_new_tarball(moto_s3, s3_bucket, instance):
    publish_release(moto_s3, s3_bucket, NOVEMBER)
    first = tick(instance, moto_s3, s3_bucket)
    time.sleep(1.1)  # moto's LastModified has one-second resolution
    publish_root_csvs(moto_s3, s3_bucket)  # the next release has started: tables up, tarball not yet

    waiting = tick(instance, moto_s3, s3_bucket, cursor=first.cursor)
    message = assert_skips(waiting, "half-published", "taxa.csv.gz", LATEST_TARBALL)
    assert waiting.cursor == first.cursor, message

    # Even a sensor that never saw November waits rather than ingest a snapshot mid-release.
    assert_skips(tick(instance, moto_s3, s3_bucket), "half-published")

    tarball = tiny_snapshot_tarball(DECEMBER)
    put_public_object(moto_s3, s3_bucket, dated_tarball_key(DECEMBER), tarball)
    put_public_object(moto_s3, s3_bucket, LATEST_TARBALL, tarball)
    assert_requests(tick(instance, moto_s3, s3_bucket, cursor=first.cursor), "2024-12-27")


def test_snapshot_date_falls_back_to_last_modified(moto_s3, s3_bucket, instance):
    publish_root_csvs(moto_s3, s3_bucket)
    latest = put_public_object(moto_s3, s3_bucket, LATEST_TARBALL, tiny_snapshot_tarball(NOVEMBER))  # no dated key

    result = tick(instance, moto_s3, s3_bucket)

    assert_requests(result, latest["LastModified"].date().isoformat())


def test_dated_tarball_matched_by_size_when_etags_differ(moto_s3, s3_bucket, instance):
    """A multipart upload's ETag is not the MD5 of the bytes, so a latest tarball copied from it
    has another ETag; the only dated tarball of the same size still names the snapshot."""
    publish_root_csvs(moto_s3, s3_bucket)
    tarball = tiny_snapshot_tarball(NOVEMBER)
    client = s3_client(moto_s3)
    upload = client.create_multipart_upload(Bucket=s3_bucket, Key=dated_tarball_key(NOVEMBER), ACL="public-read")
    part = client.upload_part(Bucket=s3_bucket, Key=dated_tarball_key(NOVEMBER), UploadId=upload["UploadId"], PartNumber=1, Body=tarball)
    client.complete_multipart_upload(
        Bucket=s3_bucket,
        Key=dated_tarball_key(NOVEMBER),
        UploadId=upload["UploadId"],
        MultipartUpload={"Parts": [{"ETag": part["ETag"], "PartNumber": 1}]},
    )
    put_public_object(moto_s3, s3_bucket, LATEST_TARBALL, tarball)

    assert_requests(tick(instance, moto_s3, s3_bucket), "2024-11-27")


def test_empty_bucket_skips_and_says_how_to_fix(moto_s3, s3_bucket, instance):
    assert_skips(tick(instance, moto_s3, s3_bucket), f"No {LATEST_TARBALL} in s3://{s3_bucket}", "Fix:")


def test_invalid_cursor_says_how_to_fix(moto_s3, s3_bucket, instance):
    publish_release(moto_s3, s3_bucket, NOVEMBER)
    with pytest.raises(ValueError, match="clear the cursor of inat_snapshot_sensor"):
        tick(instance, moto_s3, s3_bucket, cursor="not json")


def test_interval_comes_from_the_environment(monkeypatch):
    monkeypatch.delenv(INTERVAL_ENV, raising=False)
    assert interval_seconds_from_env() == DEFAULT_INTERVAL_SECONDS == 3600
    monkeypatch.setenv(INTERVAL_ENV, "120")
    assert interval_seconds_from_env() == 120
    monkeypatch.setenv(INTERVAL_ENV, "hourly")
    with pytest.raises(ValueError, match=INTERVAL_ENV):
        interval_seconds_from_env()


def test_sensor_loads_with_the_ingest_job():
    @asset(group_name=INGEST_GROUP, partitions_def=snapshots_partitions)
    def snapshot_files() -> None: ...

    Definitions.validate_loadable(
        Definitions(
            assets=[snapshot_files],
            jobs=[ingest_snapshot_job],
            sensors=[inat_snapshot_sensor],
            resources={"open_data": OpenDataBucket()},
        )
    )


# --- bioasset snapshots check ---------------------------------------------------------------


def run_check(capsys, *args: str) -> tuple[int, str]:
    code = cli.main(["snapshots", "check", *args])
    return code, capsys.readouterr().out


def test_check_command_against_s3(moto_s3, s3_bucket, capsys):
    latest = publish_release(moto_s3, s3_bucket, NOVEMBER)
    url_args = ("--url", f"s3://{s3_bucket}", "--endpoint-url", moto_s3)

    code, out = run_check(capsys, *url_args, "--json")
    report = json.loads(out)
    assert code == 0
    assert report["latest"]["etag"] == latest["ETag"].strip('"')
    assert report["latest"]["size"] == latest["ContentLength"]
    assert report["latest"]["last_modified"] == latest["LastModified"].isoformat()
    assert (report["snapshot"], report["resolved_by"]) == ("2024-11-27", RESOLVED_BY_ETAG_AND_SIZE)
    assert report["dated_tarball"].endswith(dated_tarball_key(NOVEMBER))
    assert (report["half_published"], report["new"]) == (False, True)

    code, out = run_check(capsys, *url_args, "--cursor", json.dumps(report["cursor"]))
    assert code == 0
    assert "snapshot:        2024-11-27, from the dated tarball with the same ETag and size" in out
    assert "half-published:  no" in out
    assert "new:             no, against the cursor" in out


def test_check_command_against_a_local_folder(tmp_path, capsys):
    write_release(tmp_path, NOVEMBER)

    code, out = run_check(capsys, "--url", str(tmp_path), "--json")
    report = json.loads(out)
    assert code == 0
    assert report["latest"]["etag"] is None  # a folder has no ETags: size + mtime identify it
    assert (report["snapshot"], report["resolved_by"], report["new"]) == ("2024-11-27", RESOLVED_BY_SIZE, True)

    latest_mtime = (tmp_path / LATEST_TARBALL).stat().st_mtime
    os.utime(tmp_path / "taxa.csv.gz", (latest_mtime + 60, latest_mtime + 60))
    code, out = run_check(capsys, "--url", str(tmp_path), "--cursor", json.dumps(report["cursor"]))
    assert code == 0
    assert "half-published:  yes" in out
    assert "sensor would:    skip: Release half-published" in out


def test_check_command_without_a_latest_tarball(tmp_path, capsys):
    (tmp_path / "metadata").mkdir()
    (tmp_path / "metadata" / "notes.txt").write_text("not a tarball")
    code, out = run_check(capsys, "--url", str(tmp_path))
    assert code == 1
    assert f"No {LATEST_TARBALL} in {tmp_path}" in out


def test_check_command_names_the_fix_for_a_bad_cursor(tmp_path, capsys):
    with pytest.raises(SystemExit) as exit_info:
        cli.main(["snapshots", "check", "--url", str(tmp_path), "--cursor", "{}"])
    assert exit_info.value.code == 2
    assert "bioasset snapshots check --json" in capsys.readouterr().err


def test_check_command_explains_access_denied(moto_s3, capsys):
    private_bucket = unique_bucket_name("private")
    client = s3_client(moto_s3)
    client.create_bucket(Bucket=private_bucket)
    client.put_object(Bucket=private_bucket, Key=LATEST_TARBALL, Body=tiny_snapshot_tarball(NOVEMBER))

    code = cli.main(["snapshots", "check", "--url", f"s3://{private_bucket}", "--endpoint-url", moto_s3])

    assert code == 1
    error = capsys.readouterr().err
    assert f"Access denied reading {private_bucket}/{LATEST_TARBALL}" in error and "Fix:" in error


def test_last_modified_fallback_resolves_a_local_folder_without_dated_tarballs(tmp_path, capsys):
    write_release(tmp_path, NOVEMBER)
    (tmp_path / dated_tarball_key(NOVEMBER)).unlink()
    code, out = run_check(capsys, "--url", str(tmp_path), "--json")
    report = json.loads(out)
    assert report["resolved_by"] == RESOLVED_BY_LAST_MODIFIED
    assert report["snapshot"] == report["latest"]["last_modified"][:10]
