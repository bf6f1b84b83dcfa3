"""``taxon_images_sensor``: after manifests change, download only the classes whose photo set changed.

Each tick fingerprints every class of the current manifests (:func:`bioasset.selection.class_photo_set_hashes`:
the photos, their source URLs and stored sizes) and compares it with the ``photo_set_hash``
metadata of the class's last ``taxon_images`` materialization. A class with no materialization, or
another hash, gets one run; the run key is the key and the hash, so a tick never asks twice for
the same work, and a class that failed is asked again only when its photo set changes (or by hand).
"""

from __future__ import annotations

from dagster import (
    AssetKey,
    AssetRecordsFilter,
    DagsterEventType,
    DagsterInstance,
    DefaultSensorStatus,
    RunRequest,
    SensorEvaluationContext,
    SensorResult,
    sensor,
)

from bioasset.assets.datasets import taxa_partitions
from bioasset.jobs import taxon_images_job
from bioasset.resources import WarehouseResource
from bioasset.selection import class_photo_set_hashes

TAXON_IMAGES = AssetKey("taxon_images")
PHOTO_SET_HASH = "photo_set_hash"
SENSOR_INTERVAL_SECONDS = 120


def materialized_photo_set_hashes(instance: DagsterInstance, keys: set[str] | None = None) -> dict[str, str]:
    """``taxa`` partition -> ``photo_set_hash`` of its last ``taxon_images`` materialization."""
    latest = instance.get_latest_storage_id_by_partition(TAXON_IMAGES, DagsterEventType.ASSET_MATERIALIZATION, keys)
    if not latest:
        return {}
    records = instance.fetch_materializations(
        AssetRecordsFilter(asset_key=TAXON_IMAGES, storage_ids=list(latest.values())), limit=len(latest)
    ).records
    hashes = {}
    for record in records:
        materialization = record.asset_materialization
        value = materialization.metadata.get(PHOTO_SET_HASH) if materialization else None
        if materialization and materialization.partition and value is not None:
            hashes[materialization.partition] = str(value.value)
    return hashes


@sensor(
    job=taxon_images_job,
    minimum_interval_seconds=SENSOR_INTERVAL_SECONDS,
    default_status=DefaultSensorStatus.STOPPED,
    description="Requests taxon_images for each class whose photo set in the current dataset manifests differs from "
    "its last download (new, removed or relabelled photos, or another image size); unchanged classes get no run.",
)
def taxon_images_sensor(context: SensorEvaluationContext, warehouse: WarehouseResource) -> SensorResult:
    wanted = class_photo_set_hashes(warehouse.warehouse())
    if not wanted:
        return SensorResult(skip_reason="No dataset manifest yet: materialize dataset_manifest first.")
    have = materialized_photo_set_hashes(context.instance, set(wanted))
    changed = sorted(key for key, digest in wanted.items() if have.get(key) != digest)
    if not changed:
        return SensorResult(skip_reason=f"The photo sets of all {len(wanted)} classes are downloaded.")
    existing = set(context.instance.get_dynamic_partitions(taxa_partitions.name))
    new_keys = [key for key in changed if key not in existing]
    context.log.info(f"{len(changed)} of {len(wanted)} classes changed: {', '.join(changed[:20])}")
    return SensorResult(
        run_requests=[RunRequest(partition_key=key, run_key=f"{key}:{wanted[key][:16]}") for key in changed],
        dynamic_partitions_requests=[taxa_partitions.build_add_request(new_keys)] if new_keys else [],
    )
