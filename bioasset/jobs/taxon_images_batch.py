"""``taxon_images_batch_job``: many classes (``taxa`` partitions) downloaded in one run.

Many classes changing at once (a new snapshot touches most classes of a large dataset) would pay
a run's fixed cost once per class in ``taxon_images_job``; this job pays it once per batch. Each
class still gets its own ``taxon_images`` materialization, with the metadata the asset records, so
``taxon_images_sensor``, ``dataset_version`` and its sensor treat it as the asset's own. A range run
of the asset (``BackfillPolicy``) does not fit: the changed classes are scattered over the dynamic
partitions, and a range run records one set of metadata for all of its partitions.

What the UI shows differently, since the materializations are logged by an op: the classes of a
running batch are not shown as in progress (no "planned" events), a class that failed in a batch is
not shown as a failed partition (the run's failure names it), and the materializations carry no
data or code version.

Its own module: it imports the dataset assets, which import ``bioasset.jobs`` for the ingest group.
"""

import traceback
from collections.abc import Mapping
from typing import Any

from dagster import AssetMaterialization, Failure, OpExecutionContext, in_process_executor, job, op
from pydantic import Field

from bioasset.assets.datasets import TaxonImagesConfig, download_class, taxa_partitions
from bioasset.assets.metadata import markdown_table
from bioasset.resources import OpenDataBucket, WarehouseResource
from bioasset.resources.image_store import ImageStoreResource

#: The op's name in run config: see :func:`batch_run_config`.
DOWNLOAD_CLASSES = "download_classes"


def batch_run_config(keys: list[str]) -> dict[str, Any]:
    """The run config of a ``taxon_images_batch_job`` run that downloads the classes ``keys``."""
    return {"ops": {DOWNLOAD_CLASSES: {"config": {"keys": list(keys)}}}}


def batch_keys(run_config: Mapping[str, Any] | None) -> list[str]:
    """The classes of a ``taxon_images_batch_job`` run, from its run config (none if it has none)."""
    return list((run_config or {}).get("ops", {}).get(DOWNLOAD_CLASSES, {}).get("config", {}).get("keys", []))


class TaxonImagesBatchConfig(TaxonImagesConfig):
    """Download settings, and the classes of one ``taxon_images_batch_job`` run."""

    keys: list[str] = Field(description="The taxa partitions to download, one after another")


@op(
    name=DOWNLOAD_CLASSES,
    description="Download the images of each class in `keys`, one after another, as taxon_images would, and record "
    "each as a materialization of that taxon_images partition.",
)
def download_classes(
    context: OpExecutionContext,
    config: TaxonImagesBatchConfig,
    open_data: OpenDataBucket,
    warehouse: WarehouseResource,
    image_store: ImageStoreResource,
) -> None:
    known = set(context.instance.get_dynamic_partitions(taxa_partitions.name))
    unknown = [key for key in config.keys if key not in known]
    if unknown:
        raise Failure(
            f"{len(unknown)} of the keys are not taxa partitions: {', '.join(unknown[:10])}. Fix: use keys that "
            "dataset_manifest added (the taxa partitions in the UI), or materialize dataset_manifest first."
        )
    failed: dict[str, str] = {}
    for number, key in enumerate(config.keys, 1):
        context.log.info(f"class {number}/{len(config.keys)}: {key}")
        try:
            metadata = download_class(key, config, open_data, warehouse, image_store, context.log)
        except Exception as error:  # one class's failure must not cost the others their downloads
            context.log.error(f"{key} failed: {type(error).__name__}: {error}\n{traceback.format_exc()}")
            failed[key] = f"{type(error).__name__}: {error}"
            continue
        context.log_event(AssetMaterialization(asset_key="taxon_images", partition=key, metadata=metadata))
    if failed:
        # The sensor's run key for a batch is its classes' keys: the same classes failing again would
        # never be asked for, so only a partial failure leaves the rest to the sensor.
        again = ("taxon_images_sensor asks for the failed classes again on its next tick, or materialize taxon_images "
                 "for them by hand" if len(failed) < len(config.keys) else
                 "the sensor does not ask for the same batch again: fix the cause, then materialize taxon_images for them")
        raise Failure(
            f"{len(failed)} of {len(config.keys)} classes failed: {', '.join(list(failed)[:10])}"
            f"{'; the others are materialized' if len(failed) < len(config.keys) else ''}. Fix: see each class's error "
            f"in the metadata and the log; {again}.",
            metadata={"failed_classes": markdown_table(["class", "error"], failed.items())},
        )


@job(
    executor_def=in_process_executor,
    description="Download, verify and store the images of many classes (taxa partitions) in one run: the batches "
    "taxon_images_sensor asks for when many classes changed at once.",
)
def taxon_images_batch_job() -> None:
    download_classes()
