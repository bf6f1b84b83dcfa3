"""``inat_snapshot_sensor``: a new iNaturalist metadata snapshot → a ``snapshots`` partition and
an ``ingest_snapshot_job`` run. The logic lives in :mod:`bioasset.snapshots`."""

from __future__ import annotations

import os

from dagster import RunRequest, SensorEvaluationContext, SensorResult, sensor

from bioasset.jobs import ingest_snapshot_job
from bioasset.partitions import snapshots_partitions
from bioasset.resources import OpenDataBucket
from bioasset.snapshots import SnapshotCursor, decide, observe_bucket

INTERVAL_ENV = "BIOASSET_SNAPSHOT_SENSOR_INTERVAL_SECONDS"
DEFAULT_INTERVAL_SECONDS = 3600


def interval_seconds_from_env() -> int:
    """The sensor's minimum interval: ``BIOASSET_SNAPSHOT_SENSOR_INTERVAL_SECONDS``, default one hour."""
    text = os.environ.get(INTERVAL_ENV, "").strip()
    if not text:
        return DEFAULT_INTERVAL_SECONDS
    if not text.isdigit() or int(text) < 1:
        raise ValueError(
            f"{INTERVAL_ENV}={text!r} is not a whole number of seconds of at least 1. "
            f"Fix: set it to e.g. 3600, or unset it for the default of {DEFAULT_INTERVAL_SECONDS}."
        )
    return int(text)


@sensor(
    job=ingest_snapshot_job,
    minimum_interval_seconds=interval_seconds_from_env(),
    description=(
        "Watches metadata/inaturalist-open-data-latest.tar.gz in the open-data bucket; on a new, fully "
        f"published snapshot it adds a `snapshots` partition and requests ingest_snapshot_job. Interval: {INTERVAL_ENV}."
    ),
)
def inat_snapshot_sensor(context: SensorEvaluationContext, open_data: OpenDataBucket) -> SensorResult:
    """Request ``ingest_snapshot_job`` for each new snapshot of the open-data bucket.

    Each tick HEADs ``metadata/inaturalist-open-data-latest.tar.gz``. A new ETag and size (size and
    mtime in a local folder) adds the snapshot's key ``YYYY-MM-DD`` to the dynamic partitions
    ``snapshots`` and requests the job with ``run_key`` = that key, so repeated ticks and restarts
    never launch a snapshot twice. It skips, saying why, while the release is half-published (a
    root ``{table}.csv.gz`` newer than the latest tarball). The cursor is JSON:
    ``{"etag", "size", "last_modified", "snapshot"}``.

    The minimum interval is read when the definitions load, from the environment variable
    ``BIOASSET_SNAPSHOT_SENSOR_INTERVAL_SECONDS`` (default 3600, one hour).
    ``bioasset snapshots check`` shows what the next tick would see.
    """
    fs, root = open_data.filesystem()
    observation = observe_bucket(fs, root, url=open_data.resolved_url())
    decision = decide(observation, SnapshotCursor.from_json(context.cursor))
    cursor = decision.cursor.to_json() if decision.cursor else None
    if decision.snapshot_key is None:
        return SensorResult(skip_reason=decision.reason, cursor=cursor)
    key = decision.snapshot_key
    context.log.info(decision.reason)
    return SensorResult(
        run_requests=[RunRequest(partition_key=key, run_key=key)],
        dynamic_partitions_requests=[snapshots_partitions.build_add_request([key])],
        cursor=cursor,
    )
