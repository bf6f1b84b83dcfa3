"""Dataset assets: ``dataset_manifest[dataset]`` → ``taxon_images[taxon]`` → ``dataset_version[dataset]``.

Thin wrappers over :mod:`bioasset.selection` and :mod:`bioasset.registry`.

- ``datasets`` partitions are static, one per spec in the specs folder, read when the code
  location loads (``BIOASSET_DATASETS_DIR``, default the repository's ``datasets/``). A dataset
  is a reviewed file in the repository: it shows up after a code-location reload, with no sensor
  to switch on, and a broken spec fails the load with the spec's own error message.
- ``dataset_manifest`` follows the newest snapshot: it depends on the last ``snapshots``
  partition of ``media`` and ``taxonomy`` and is ``eager()``, so the automation sensor recomputes
  every manifest once a new snapshot's media is built. It adds a ``taxa`` partition for each
  class itself, so the classes are there as soon as the manifest is.
- ``taxon_images`` downloads one class for every dataset that has it. Which classes need a run
  after a manifest changes is decided by ``taxon_images_sensor`` (bioasset/sensors/dataset_sensors.py).
- ``dataset_version`` freezes a manifest once every class of it is downloaded; its blocking
  ``images_complete`` check verifies that every image of the version is in the store, and the
  ``images_match_version`` check reads every image of every dataset's latest version back and
  compares its sha256 (``bioasset datasets verify``; ``--repair`` there downloads damaged ones again).
"""


import base64
import os
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any, Optional

from dagster import (
    AllPartitionMapping,
    AssetCheckExecutionContext,
    AssetCheckResult,
    AssetCheckSeverity,
    AssetChecksDefinition,
    AssetCheckSpec,
    AssetDep,
    AssetExecutionContext,
    AssetsDefinition,
    AutomationCondition,
    Config,
    DagsterLogManager,
    DynamicPartitionsDefinition,
    Failure,
    LastPartitionMapping,
    MaterializeResult,
    MetadataValue,
    StaticPartitionsDefinition,
    asset,
    asset_check,
)
from pydantic import Field

from bioasset.assets.ingest import WAREHOUSE_POOL
from bioasset.assets.metadata import markdown_table
from bioasset.dataset_spec import DatasetSpec, load_specs
from bioasset.registry import card_dir, freeze_version
from bioasset.resources import OpenDataBucket, WarehouseResource
from bioasset.resources.image_store import ImageStoreResource
from bioasset.selection import (
    ImagesCompleteness,
    ManifestBuild,
    TaxonImagesBuild,
    absent_store_files,
    build_manifest,
    download_taxon_images,
    manifest_with_images,
)

if TYPE_CHECKING:  # imported where used: the code location loads without it
    from bioasset.version_verify import VerifyReport

DATASETS_DIR_ENV = "BIOASSET_DATASETS_DIR"
DATASETS_GROUP = "datasets"

#: One partition per label class of any dataset, keyed ``{taxon_id}-{slug}``.
taxa_partitions = DynamicPartitionsDefinition(name="taxa")

IMAGES_COMPLETE = "images_complete"
IMAGES_MATCH_VERSION = "images_match_version"

#: The update report lists at most this many changed classes (the totals count them all).
UPDATE_REPORT_CLASSES = 50


def default_specs_dir() -> Path:
    """``BIOASSET_DATASETS_DIR``, else the repository's ``datasets/`` folder."""
    return Path(os.environ.get(DATASETS_DIR_ENV) or Path(__file__).resolve().parents[2] / "datasets")


class TaxonImagesConfig(Config):
    """Download settings of one ``taxon_images`` run."""

    concurrency: int = Field(default=16, description="Requests in flight at once")
    max_rate: Optional[float] = Field(default=None, description="Requests per second per host at most; 429s lower it further")
    max_retries: int = Field(default=5, description="Retries of a failing image before it counts as failed")
    timeout_s: float = Field(default=30.0, description="Seconds one request may take")


class DatasetVersionConfig(Config):
    """Settings of one ``dataset_version`` run."""

    freeze_with_failed_downloads: bool = Field(
        default=False,
        description="Freeze even though some downloads failed (server errors or timeouts past the retries): those "
        "photos are left out of the version and counted as missing. By default the version waits for them.",
    )


@dataclass(frozen=True)
class DatasetAssets:
    """The dataset assets built over one specs folder."""

    specs_dir: Path
    datasets_partitions: StaticPartitionsDefinition
    dataset_manifest: AssetsDefinition
    taxon_images: AssetsDefinition
    dataset_version: AssetsDefinition
    images_match_version: AssetChecksDefinition

    @property
    def assets(self) -> list[AssetsDefinition]:
        return [self.dataset_manifest, self.taxon_images, self.dataset_version]

    @property
    def checks(self) -> list[AssetChecksDefinition]:
        return [self.images_match_version]


def build_dataset_assets(specs_dir: str | os.PathLike[str] | None = None) -> DatasetAssets:
    """The dataset assets, with one ``datasets`` partition per spec in ``specs_dir``."""
    folder = Path(specs_dir) if specs_dir is not None else default_specs_dir()
    datasets_partitions = StaticPartitionsDefinition(sorted(load_specs(folder)))

    def spec_named(name: str) -> DatasetSpec:
        # Read again at run time, so that an edited spec takes effect without a reload.
        specs = load_specs(folder)
        if name not in specs:
            raise Failure(
                f"No dataset spec named {name!r} in {folder} any more (it has {', '.join(sorted(specs)) or 'none'}). "
                "Fix: restore the spec, or reload the code location so that the partition goes away."
            )
        return specs[name]

    @asset(
        partitions_def=datasets_partitions,
        group_name=DATASETS_GROUP,
        deps=[AssetDep(table, partition_mapping=LastPartitionMapping()) for table in ("taxonomy", "media")],
        automation_condition=AutomationCondition.eager(),
        kinds={"duckdb", "parquet"},
        pool=WAREHOUSE_POOL,
        description="The dataset's photos from the newest snapshot: one row per photo with its label at the spec's "
        "rank, 7-rank path, license, attribution, source URL and split (stable across snapshots), at "
        "{warehouse}/datasets/{name}/manifest.parquet. Adds a `taxa` partition per class.",
    )
    def dataset_manifest(
        context: AssetExecutionContext, open_data: OpenDataBucket, warehouse: WarehouseResource
    ) -> MaterializeResult:
        spec = spec_named(context.partition_key)
        build = build_manifest(warehouse.warehouse(), spec, open_data_url=open_data.resolved_url())
        known = set(context.instance.get_dynamic_partitions(taxa_partitions.name))
        new_keys = [key for key in build.taxon_keys if key not in known]
        if new_keys:
            context.instance.add_dynamic_partitions(taxa_partitions.name, new_keys)
        for dropped in build.dropped_classes:
            context.log.warning(f"Class {dropped.label_name} ({dropped.label_id}) dropped: {dropped.detail}")
        return MaterializeResult(metadata=_manifest_metadata(build, new_keys))

    @asset(
        partitions_def=taxa_partitions,
        group_name=DATASETS_GROUP,
        deps=[AssetDep(dataset_manifest, partition_mapping=AllPartitionMapping())],
        kinds={"parquet"},
        description="Every image the current manifests need of one class (each needed size and resize), downloaded "
        "and verified into the image store; only images not stored yet are fetched. Writes the class's "
        "images index to {warehouse}/taxon_images/{key}.parquet.",
    )
    def taxon_images(
        context: AssetExecutionContext,
        config: TaxonImagesConfig,
        open_data: OpenDataBucket,
        warehouse: WarehouseResource,
        image_store: ImageStoreResource,
    ) -> MaterializeResult:
        return MaterializeResult(
            metadata=download_class(context.partition_key, config, open_data, warehouse, image_store, context.log)
        )

    @asset(
        partitions_def=datasets_partitions,
        group_name=DATASETS_GROUP,
        deps=[dataset_manifest, AssetDep(taxon_images, partition_mapping=AllPartitionMapping())],
        kinds={"parquet"},
        check_specs=[
            AssetCheckSpec(
                IMAGES_COMPLETE,
                asset="dataset_version",
                blocking=True,
                description="Every row of the frozen version has a verified image that is in the image store, or is "
                "counted as missing with the reason its download gave (missing upstream, quarantined; failed only when "
                "frozen with freeze_with_failed_downloads).",
            )
        ],
        description="The manifest with its verified images, frozen as an immutable, content-addressed version in the "
        "dataset registry, with its dataset card. Refuses while some of its classes are not downloaded yet, some "
        "downloads failed, or verified images are gone from the store.",
    )
    def dataset_version(
        context: AssetExecutionContext,
        config: DatasetVersionConfig,
        warehouse: WarehouseResource,
        image_store: ImageStoreResource,
    ) -> MaterializeResult:
        from bioasset.dataset_card import CARD_FILES  # imports matplotlib: only where needed

        name, wh, store = context.partition_key, warehouse.warehouse(), image_store.store()
        table, completeness, info = manifest_with_images(wh, name)
        refusal = completeness.refusal(name, allow_failed=config.freeze_with_failed_downloads)
        if refusal:
            raise Failure(refusal, metadata=_completeness_metadata(completeness))
        # Before freezing, so that a version never names files the store does not have.
        absent = absent_store_files(store, [path for path in table.column("image_path").to_pylist() if path])
        if absent:
            raise Failure(
                f"{len(absent)} verified images of {name} are not in the image store {store.url} any more, e.g. "
                f"{', '.join(absent[:5])}. Fix: materialize taxon_images for their classes (it fetches them again), "
                "then this again.",
                metadata={**_completeness_metadata(completeness), "files_absent_from_store": len(absent)},
            )
        frozen = freeze_version(wh, name, table, snapshot=info.snapshot, spec_hash=info.spec_hash, image_store=store)
        version = frozen.version
        if frozen.catalog_view_error:
            context.log.warning(frozen.catalog_view_error)
        check = AssetCheckResult(
            check_name=IMAGES_COMPLETE,
            passed=version.images + version.missing_images == completeness.rows,
            metadata=_completeness_metadata(completeness),
        )
        return MaterializeResult(
            metadata={
                "version": version.version,
                "ref": version.ref,
                "new_version": frozen.created,
                "sequence": version.sequence,
                "parent_version": version.parent_version or "(none)",
                "snapshot": version.snapshot or "",
                "dagster/row_count": version.images,
                "classes": version.class_count,
                **version.images_per_split,
                "missing_images": version.missing_images,
                "added": version.added,
                "removed": version.removed,
                "relabelled": version.relabelled,
                "resplit": version.resplit,
                "relicensed": version.relicensed,
                "card": MetadataValue.path(str(card_dir(wh, version) / CARD_FILES["card"])),
                "path": MetadataValue.path(str(frozen.path)),
            },
            check_results=[check],
        )

    # Not partitioned (partitioned checks are a Dagster preview), so it has one status for all
    # datasets; to mean one thing, it always checks every dataset's latest version.
    @asset_check(
        asset=dataset_version,
        name=IMAGES_MATCH_VERSION,
        blocking=False,
        description="Reads every image of every dataset's latest version back from the image store and compares it "
        "with the sha256 the version recorded: a file deleted, cut short or changed in place since the freeze fails "
        "it. Execute it alone (or define a schedule for it); it also runs with dataset_version runs launched from the "
        "UI, not with "
        "those of dataset_version_sensor. Repair with `bioasset datasets verify NAME --repair`, which downloads those "
        "images again.",
    )
    def images_match_version(
        context: AssetCheckExecutionContext, warehouse: WarehouseResource, image_store: ImageStoreResource
    ) -> AssetCheckResult:
        from bioasset.version_verify import verify_latest_versions

        names = list(datasets_partitions.get_partition_keys())
        result = verify_latest_versions(warehouse.warehouse(), names, image_store.store(), log=context.log.info)
        if not result.reports and not result.unreadable:
            return AssetCheckResult(
                passed=False, severity=AssetCheckSeverity.WARN,
                description=f"No frozen version of {', '.join(names)} yet. Fix: materialize dataset_version first.",
            )
        metadata = {**(_verify_metadata(result.reports) if result.reports else {}), "unreadable_versions": len(result.unreadable)}
        return AssetCheckResult(passed=result.intact, description=result.description(), metadata=metadata)

    return DatasetAssets(folder, datasets_partitions, dataset_manifest, taxon_images, dataset_version, images_match_version)


def download_class(
    key: str,
    config: TaxonImagesConfig,
    open_data: OpenDataBucket,
    warehouse: WarehouseResource,
    image_store: ImageStoreResource,
    log: DagsterLogManager,
) -> dict[str, Any]:
    """Download one class (a ``taxa`` partition): the body of ``taxon_images``, and of each class
    of ``taxon_images_batch_job``. Returns the materialization's metadata."""
    build = download_taxon_images(
        warehouse.warehouse(),
        image_store.store(),
        key,
        progress=lambda progress: log.info(f"{key}: {progress}"),
        source_options=_source_options(open_data),
        concurrency=config.concurrency,
        max_rate=config.max_rate,
        max_retries=config.max_retries,
        timeout_s=config.timeout_s,
    )
    if not build.datasets:
        log.warning(f"No current manifest has the class {key}; nothing to download.")
    return _taxon_images_metadata(build, image_store.resolved_url())


def _source_options(open_data: OpenDataBucket) -> dict[str, Any]:
    """fsspec options of the bucket's image URLs (used for s3:// URLs only)."""
    credentials = open_data.access_key_id or open_data.secret_access_key
    return {
        "endpoint_url": open_data.resolved_endpoint_url(),
        "anon": open_data.anonymous and not credentials,
        "key": open_data.access_key_id,
        "secret": open_data.secret_access_key,
        "region": open_data.region,
    }


def _manifest_metadata(build: ManifestBuild, new_keys: list[str]) -> dict[str, Any]:
    counts = build.class_counts
    metadata: dict[str, Any] = {
        "dagster/row_count": build.rows,
        "classes": build.classes,
        **build.per_split,
        "snapshot": build.info.snapshot,
        "spec_hash": build.info.spec_hash,
        "photos_in_root_subtree": build.scanned,
        "excluded": build.excluded,
        "excluded_total": sum(build.excluded.values()),
        "dropped_classes": markdown_table(
            ["label_id", "class", "photos", "reason"],
            ((d.label_id, d.label_name, d.photos, d.detail) for d in build.dropped_classes),
        ),
        "class_histogram": markdown_table(
            ["label_id", "class", "photos", "train", "val", "test"],
            counts[["label_id", "label_name", "photos", "train", "val", "test"]].itertuples(index=False),
        ),
        "taxa_partitions": len(build.taxon_keys),
        "taxa_partitions_added": len(new_keys),
        "moved_photos": build.moved_photos,
        "compared_with": build.previous or "(nothing: first manifest)",
        "path": MetadataValue.path(str(build.path)),
        "elapsed_s": round(build.elapsed_s, 3),
        "rows_per_s": round(build.scanned / build.elapsed_s) if build.elapsed_s > 0 else 0,
    }
    update = build.update
    if update is not None:
        changed = [c for c in update.classes if c.changed]
        metadata |= {"added": update.added, "removed": update.removed, "relabelled": update.relabelled,
                     "resplit": update.resplit, "relicensed": update.relicensed}
        metadata["update_report"] = markdown_table(
            ["label_id", "class", "before", "after", "added", "removed", "relabelled in", "relabelled out", "relicensed"],
            (
                (c.label_id, c.label_name, c.before, c.after, c.added, c.removed, c.relabelled_in, c.relabelled_out,
                 c.relicensed)
                for c in changed[:UPDATE_REPORT_CLASSES]
            ),
        )
    return metadata


def _taxon_images_metadata(build: TaxonImagesBuild, store_url: str) -> dict[str, Any]:
    metadata: dict[str, Any] = {
        **build.counts,
        "images": build.images,
        "dagster/row_count": build.images,
        "bytes_downloaded": build.bytes_downloaded,
        "bytes_stored": build.bytes_stored,
        "images_per_s": round(build.images_per_s, 1),
        "elapsed_s": round(build.elapsed_s, 3),
        "retries": build.retries,
        "stale_temp_files_removed": build.stale_temp_files_removed,
        "datasets": ", ".join(build.datasets) or "(none)",
        "sizes": ", ".join(build.sizes) or "(none)",
        "photo_set_hash": build.photo_set_hash,
        "image_store": store_url,
        "index": MetadataValue.path(str(build.index_path)),
    }
    if build.grid_path is not None and build.grid_png is not None:
        metadata["sample_grid"] = MetadataValue.path(str(build.grid_path))
        inline = base64.b64encode(build.grid_png).decode()
        metadata["samples"] = MetadataValue.md(f"![samples of {build.key}](data:image/png;base64,{inline})")
    return metadata


def _verify_metadata(reports: "list[VerifyReport]") -> dict[str, Any]:
    """The reports of ``images_match_version`` (one per version checked) as check metadata."""
    from bioasset.version_verify import SHOWN_PROBLEMS

    counts = [report.counts() for report in reports]
    problems = [p for report in reports for p in report.problems]
    return {
        "versions": ", ".join(report.version.ref for report in reports),
        "checked": sum(report.checked for report in reports),
        "intact_images": sum(report.ok for report in reports),
        **{kind: sum(c[kind] for c in counts) for kind in counts[0]},
        "bytes_read": sum(report.bytes_read for report in reports),
        "elapsed_s": round(sum(report.elapsed_s for report in reports), 3),
        "classes_to_repair": ", ".join(sorted({c for report in reports for c in report.unresolved_classes()})) or "(none)",
        "per_version": markdown_table(
            ["version", "checked", "intact", *counts[0]],
            ((report.version.ref, report.checked, report.ok, *c.values()) for report, c in zip(reports, counts)),
        ),
        "problems": markdown_table(
            ["photo_id", "class", "image_path", "problem", "detail"],
            ((p.photo_id, p.taxon_key, p.image_path, p.problem.value, p.detail) for p in problems[:SHOWN_PROBLEMS]),
        ),
    }


def _completeness_metadata(completeness: ImagesCompleteness) -> dict[str, Any]:
    return {
        "manifest_rows": completeness.rows,
        "verified_images": completeness.verified,
        "unavailable_images": completeness.unavailable,
        "not_downloaded": completeness.not_downloaded,
        "failed_downloads": completeness.failed,
    }


#: The dataset assets over the default specs folder, for the code location.
DATASET_ASSETS = build_dataset_assets()
