"""``taxon_images_sensor``: after manifests change, download only the classes whose photo set changed.

Each tick fingerprints every class of the current manifests (:func:`bioasset.selection.class_photo_set_hashes`:
the photos, their source URLs and stored sizes) and compares it with the ``photo_set_hash``
metadata of the class's last ``taxon_images`` materialization. A class with no materialization, or
another hash, gets one run; the run key is the key, the hash and the class's last
materialization, so a tick never asks twice for the same work. A run that failed outright is asked
again only when its photo set changes (or by hand).

A run that succeeded with some downloads failed (server errors or timeouts past the retries)
leaves its dataset versions waiting for those photos, so the class is asked again, for those photos
only: ``RETRY_FAILED_AFTER_S`` after that materialization, then twice as long after each further
one, ``MAX_FAILED_RETRIES`` times for one photo set. Each retry's run key names the materialization
it retries.

Up to ``BATCH_OVER`` classes on one tick get a ``taxon_images_job`` run each. More (a new snapshot
touches most classes of a large dataset) go to ``taxon_images_batch_job`` runs of up to
``CLASSES_PER_BATCH`` classes, which pay a run's fixed cost once per batch rather than once per
class; a batch's run key is a digest of its classes' own run keys. Classes of a queued or running
download run (of either job, or launched from the UI) are left to it: a batch materializes its
classes one by one, so the classes still waiting in it would otherwise form new batches on each
tick. A batch that fails outright is not asked again until one of its classes changes, as with a
failed run of one class; the classes a partly failed batch left undone are asked again on the next
tick, in a new request.
"""

from __future__ import annotations

import hashlib
import time
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from dagster import (
    AssetKey,
    AssetRecordsFilter,
    AssetSelection,
    DagsterEventType,
    DagsterInstance,
    DagsterRunStatus,
    DefaultSensorStatus,
    RunRequest,
    RunsFilter,
    SensorEvaluationContext,
    SensorResult,
    sensor,
)

from bioasset.assets.datasets import taxa_partitions
from bioasset.download import Outcome
from bioasset.jobs import taxon_images_job
from bioasset.jobs.taxon_images_batch import batch_keys, batch_run_config, taxon_images_batch_job
from bioasset.resources import WarehouseResource
from bioasset.selection import class_photo_set_hashes, current_manifests, manifest_class_keys, manifest_with_images

TAXON_IMAGES = AssetKey("taxon_images")
DATASET_MANIFEST = AssetKey("dataset_manifest")
DATASET_VERSION = AssetKey("dataset_version")
PHOTO_SET_HASH = "photo_set_hash"
SENSOR_INTERVAL_SECONDS = 120
RETRY_FAILED_AFTER_S = 15 * 60
MAX_FAILED_RETRIES = 3
#: More classes than this on one tick go to taxon_images_batch_job runs ...
BATCH_OVER = 4
#: ... of at most this many classes each (batches run side by side, as the run queue allows).
CLASSES_PER_BATCH = 50
#: On a taxon_images_job run: the failed downloads it tries again. On a batch: how many of its classes are retries.
RETRY_TAG = "bioasset/retry_of_failed_downloads"
BATCH_RETRIES_TAG = "bioasset/classes_retrying_failed_downloads"
#: Runs that may still download: their classes are not asked for again.
UNFINISHED_RUN_STATUSES = [
    DagsterRunStatus.QUEUED, DagsterRunStatus.NOT_STARTED, DagsterRunStatus.STARTING, DagsterRunStatus.STARTED,
    DagsterRunStatus.SUSPENDED, DagsterRunStatus.CANCELING,
]


@dataclass(frozen=True)
class LastDownload:
    """What the last ``taxon_images`` materialization of a class recorded."""

    photo_set_hash: str
    failed: int  # images whose download failed
    storage_id: int
    timestamp: float


def last_downloads(instance: DagsterInstance, keys: set[str] | None = None) -> dict[str, LastDownload]:
    """``taxa`` partition -> its last ``taxon_images`` materialization."""
    latest = instance.get_latest_storage_id_by_partition(TAXON_IMAGES, DagsterEventType.ASSET_MATERIALIZATION, keys)
    if not latest:
        return {}
    records = instance.fetch_materializations(
        AssetRecordsFilter(asset_key=TAXON_IMAGES, storage_ids=list(latest.values())), limit=len(latest)
    ).records
    downloads = {}
    for record in records:
        materialization = record.asset_materialization
        photo_set_hash, failed = _recorded(materialization.metadata if materialization else {})
        if materialization and materialization.partition and photo_set_hash is not None:
            downloads[materialization.partition] = LastDownload(photo_set_hash, failed, record.storage_id, record.timestamp)
    return downloads


def _recorded(metadata: Mapping[str, Any]) -> tuple[str | None, int]:
    """The photo set hash (None if absent) and the failed downloads a taxon_images materialization recorded."""
    value, failed = metadata.get(PHOTO_SET_HASH), metadata.get(Outcome.FAILED.value)
    return (str(value.value) if value is not None else None), (int(failed.value) if failed is not None else 0)


def failed_retries_so_far(instance: DagsterInstance, key: str, photo_set_hash: str) -> int:
    """How many materializations of ``key`` for this photo set already ended with failed downloads,
    less the first: the retries made so far."""
    records = instance.fetch_materializations(
        AssetRecordsFilter(asset_key=TAXON_IMAGES, asset_partitions=[key]), limit=MAX_FAILED_RETRIES + 2
    ).records  # newest first
    streak = 0
    for record in records:
        recorded_hash, failed = _recorded(record.asset_materialization.metadata if record.asset_materialization else {})
        if recorded_hash != photo_set_hash or not failed:
            break
        streak += 1
    return max(0, streak - 1)


def due_failed_retries(
    instance: DagsterInstance, downloads: dict[str, LastDownload], now: float
) -> tuple[list[str], list[str]]:
    """Classes whose last download left failed images: those whose next retry is due (see the
    module notes), and those with no retry left."""
    due, spent = [], []
    for key, download in sorted(downloads.items()):
        if not download.failed:
            continue
        retries = failed_retries_so_far(instance, key, download.photo_set_hash)
        if retries >= MAX_FAILED_RETRIES:
            spent.append(key)
        elif now - download.timestamp >= RETRY_FAILED_AFTER_S * 2**retries:
            due.append(key)
    return due, spent


@dataclass(frozen=True)
class ClassRun:
    """One class the sensor asks to download, with the run key that asks only once."""

    key: str
    run_key: str
    retry_of_failed: int = 0  # failed downloads this run tries again (0: the photo set changed)


def run_requests(classes: list[ClassRun]) -> list[RunRequest]:
    """One taxon_images_job run per class, or, for more than BATCH_OVER classes, batch runs."""
    if len(classes) <= BATCH_OVER:
        return [
            RunRequest(job_name=taxon_images_job.name, partition_key=c.key, run_key=c.run_key,
                       tags={RETRY_TAG: str(c.retry_of_failed)} if c.retry_of_failed else {})
            for c in classes
        ]
    requests = []
    for start in range(0, len(classes), CLASSES_PER_BATCH):
        batch = classes[start : start + CLASSES_PER_BATCH]
        digest = hashlib.sha256("\n".join(c.run_key for c in batch).encode()).hexdigest()[:24]
        retries = sum(1 for c in batch if c.retry_of_failed)
        requests.append(RunRequest(
            job_name=taxon_images_batch_job.name,
            run_key=f"batch:{digest}",
            run_config=batch_run_config([c.key for c in batch]),
            tags={"bioasset/classes": str(len(batch)), "bioasset/first_class": batch[0].key,
                  **({BATCH_RETRIES_TAG: str(retries)} if retries else {})},
        ))
    return requests


def classes_in_flight(instance: DagsterInstance) -> set[str]:
    """``taxa`` partitions that a queued or running run may still download: taxon_images_job and
    UI runs of the asset (by their partition), and taxon_images_batch_job runs (by their keys)."""
    busy: set[str] = set()
    for run in instance.get_runs(RunsFilter(statuses=UNFINISHED_RUN_STATUSES)):
        if run.job_name == taxon_images_batch_job.name:
            busy.update(batch_keys(run.run_config))
        elif run.job_name == taxon_images_job.name or TAXON_IMAGES in (run.asset_selection or ()):
            # A job's run may carry no asset selection of its own (the job's whole selection).
            if partition := run.tags.get("dagster/partition"):
                busy.add(partition)
    return busy


@sensor(
    jobs=[taxon_images_job, taxon_images_batch_job],
    minimum_interval_seconds=SENSOR_INTERVAL_SECONDS,
    default_status=DefaultSensorStatus.STOPPED,
    description="Requests taxon_images for each class whose photo set in the current dataset manifests differs from "
    "its last download (new, removed or relabelled photos, or another image size); unchanged classes get no run. "
    f"A class whose last run left failed downloads is asked again for them, at most {MAX_FAILED_RETRIES} times: "
    f"{RETRY_FAILED_AFTER_S // 60} min after that run, then twice as long after each further one. More than "
    f"{BATCH_OVER} classes at once go to taxon_images_batch_job runs of up to {CLASSES_PER_BATCH} classes.",
)
def taxon_images_sensor(context: SensorEvaluationContext, warehouse: WarehouseResource) -> SensorResult:
    wanted = class_photo_set_hashes(warehouse.warehouse())
    if not wanted:
        return SensorResult(skip_reason="No dataset manifest yet: materialize dataset_manifest first.")
    have = last_downloads(context.instance, set(wanted))
    busy = classes_in_flight(context.instance)
    changed = sorted(key for key, digest in wanted.items() if key not in have or have[key].photo_set_hash != digest)
    unchanged = {key: download for key, download in have.items() if wanted.get(key) == download.photo_set_hash}
    retry, spent = due_failed_retries(context.instance, unchanged, time.time())
    if waiting := sorted(busy & set(changed + retry)):
        context.log.info(
            f"{len(waiting)} classes are in queued or running download runs already: {', '.join(waiting[:20])}. "
            "If such a run is not really going (its process died), terminate it in the UI so they are asked again."
        )
        changed, retry = [k for k in changed if k not in busy], [k for k in retry if k not in busy]
    if spent:
        context.log.warning(
            f"{len(spent)} classes still have failed downloads after {MAX_FAILED_RETRIES} retries: {', '.join(spent[:20])}. "
            "Fix: check the source, then materialize taxon_images for them by hand (or freeze without them)."
        )
    if not changed and not retry:
        return SensorResult(skip_reason=f"The photo sets of all {len(wanted)} classes are downloaded"
                            + (f" or being downloaded ({len(waiting)})." if waiting else "."))
    existing = set(context.instance.get_dynamic_partitions(taxa_partitions.name))
    new_keys = [key for key in changed if key not in existing]
    if changed:
        context.log.info(f"{len(changed)} of {len(wanted)} classes changed: {', '.join(changed[:20])}")
    if retry:
        context.log.info(f"{len(retry)} classes again for their failed downloads: {', '.join(retry[:20])}")
    # Keyed by the photo set and the class's last materialization: asked once per change, and
    # again for a set it had before (A -> B -> A) even if A's first run failed outright.
    classes = [ClassRun(key, f"{key}:{wanted[key][:16]}:{have[key].storage_id if key in have else 0}") for key in changed]
    classes += [ClassRun(key, f"{key}:{wanted[key][:16]}:retry-{have[key].storage_id}", have[key].failed) for key in retry]
    return SensorResult(
        run_requests=run_requests(classes),
        dynamic_partitions_requests=[taxa_partitions.build_add_request(new_keys)] if new_keys else [],
    )


def _latest_storage_ids(instance: DagsterInstance, asset: AssetKey, partitions: set[str]) -> dict[str, int]:
    """Partition -> the storage id of its latest materialization of ``asset``: one query for all."""
    if not partitions:
        return {}
    return instance.get_latest_storage_id_by_partition(asset, DagsterEventType.ASSET_MATERIALIZATION, partitions)


# Without the asset's images_match_version check: it reads every image of every dataset, not a
# cost for each automatic freeze.
@sensor(
    asset_selection=AssetSelection.assets(DATASET_VERSION).without_checks(),
    minimum_interval_seconds=SENSOR_INTERVAL_SECONDS,
    default_status=DefaultSensorStatus.STOPPED,
    description="Freezes a dataset version once its images are complete: requests dataset_version for each dataset "
    "whose manifest or class downloads were materialized after its last version, when no photo of its manifest "
    "waits for a download or has a failed one.",
)
def dataset_version_sensor(context: SensorEvaluationContext, warehouse: WarehouseResource) -> SensorResult:
    wh = warehouse.warehouse()
    partitions_def = context.repository_def.assets_defs_by_key[DATASET_VERSION].partitions_def
    datasets = set(partitions_def.get_partition_keys()) if partitions_def else set()
    requests, waiting = [], []
    # A manifest left by a spec that is gone has no partition to run.
    class_keys = {name: manifest_class_keys(manifest) for name, manifest in current_manifests(wh).items() if name in datasets}
    # First the event log (cheap), one query per asset: is anything upstream newer than the last version?
    manifest_ids = _latest_storage_ids(context.instance, DATASET_MANIFEST, set(class_keys))
    version_ids = _latest_storage_ids(context.instance, DATASET_VERSION, set(class_keys))
    image_ids = _latest_storage_ids(context.instance, TAXON_IMAGES, set().union(*class_keys.values()))
    for name, keys in class_keys.items():
        upstream = max([manifest_ids.get(name, 0), *(image_ids.get(key, 0) for key in keys)])
        if upstream <= version_ids.get(name, 0):
            continue
        completeness = manifest_with_images(wh, name)[1]
        if not completeness.complete:
            waiting.append(f"{name} ({completeness.not_downloaded} photos not downloaded, {completeness.failed} failed)")
            continue
        # Keyed by the newest upstream materialization: one request per change, even if that run fails.
        requests.append(RunRequest(partition_key=name, run_key=f"{name}:{upstream}"))
    if waiting:
        context.log.info(f"Waiting for images: {'; '.join(waiting)}")
    if not requests:
        return SensorResult(skip_reason="No dataset has new complete images to freeze"
                            + (f"; waiting: {'; '.join(waiting)}" if waiting else "."))
    return SensorResult(run_requests=requests)
