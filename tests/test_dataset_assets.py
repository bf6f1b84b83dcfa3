"""The dataset assets end to end in a real Dagster instance: a generated sample bucket with images,
ingested; manifests, taxa partitions, downloads, a frozen version; then a ``--next`` snapshot:
eager manifests, the update report, stable splits, only changed classes requested, only new
photos fetched, and ``bioasset images gc``. Also the images from a real S3 server (moto)."""

from __future__ import annotations

import contextlib
import hashlib
import os
import tempfile
import textwrap
from datetime import date
from pathlib import Path
from typing import Iterator

import pandas as pd
import pytest
from dagster import (
    AssetCheckSeverity,
    AssetKey,
    AssetRecordsFilter,
    AssetMaterialization,
    AssetSelection,
    DagsterInstance,
    DagsterRunStatus,
    Definitions,
    build_sensor_context,
    define_asset_job,
    evaluate_automation_conditions,
    instance_for_test,
)
from PIL import Image

from bioasset import cli
from bioasset.assets.datasets import build_dataset_assets
from bioasset.assets.ingest import INGEST_ASSETS
from bioasset.download import ImageStore, Outcome
from bioasset.image_commands import plan_gc
from bioasset.registry import catalog, manifest_path
from bioasset.resources import OpenDataBucket, WarehouseResource
from bioasset.resources.image_store import ImageStoreResource
from bioasset.sample_bucket import generate_sample_bucket
from bioasset.selection import (
    class_photo_set_hashes,
    dataset_manifest_path,
    images_index_path,
    read_manifest_info,
    taxon_key,
)
from bioasset.jobs import taxon_images_job
from bioasset.jobs.taxon_images_batch import batch_keys, batch_run_config, taxon_images_batch_job
from bioasset.sensors import dataset_sensors
from bioasset.sensors.dataset_sensors import dataset_version_sensor, taxon_images_sensor
from bioasset.warehouse import DuckDBSettings, Warehouse
from s3_fixtures import unique_bucket_name, upload_folder_as_bucket
from test_selection import ingest_snapshot

SNAPSHOT = date(2026, 10, 27)
SEED = 24  # with 4 species: the next snapshot changes 3 classes and leaves one alone
OPEN_LICENSES = ["CC0", "CC-BY", "CC-BY-SA", "PD"]
SPECS = {
    # Every class is capped at 12: the cap and the per-observation limit shape what is downloaded.
    "bugs": """
        name: bugs
        root_taxon: Insecta
        label_rank: species
        quality_grades: [research, needs_id]
        image_size: thumb
        min_per_class: 3
        max_per_class: 12
        max_photos_per_observation: 2
        seed: 3
        """,
    # Open licenses only, resized: the same classes at another stored size.
    "open-bugs": f"""
        name: open-bugs
        root_taxon: {{id: 47158, name: Insecta}}
        label_rank: species
        licenses: {OPEN_LICENSES}
        image_size: thumb
        resize: {{shorter_side: 40}}
        min_per_class: 3
        """,
}
DATASETS = sorted(SPECS)
RESIZED = "thumb-short40-q90"


def write_specs(folder: Path) -> Path:
    folder.mkdir(parents=True)
    for name, text in SPECS.items():
        (folder / f"{name}.yaml").write_text(textwrap.dedent(text))
    return folder


class World:
    """A sample bucket, a warehouse, an image store and the dataset assets over them."""

    def __init__(self, root: Path, open_data: OpenDataBucket | None = None, **bucket_options):
        self.bucket = root / "bucket"
        self.report = generate_sample_bucket(self.bucket, seed=SEED, sizes=("thumb",), snapshot_date=SNAPSHOT, workers=1, **bucket_options)
        self.warehouse = Warehouse(root / "warehouse", DuckDBSettings(memory_limit="256MB", threads=1))
        self.store = root / "images"
        self.assets = build_dataset_assets(write_specs(root / "datasets"))
        self.resources = {
            "open_data": open_data or OpenDataBucket(url=str(self.bucket)),
            "warehouse": WarehouseResource(path=str(self.warehouse.root), memory_limit="256MB", threads=1),
            "image_store": ImageStoreResource(url=str(self.store)),
        }
        self.defs = self.definitions()

    def definitions(self) -> Definitions:
        """The assets, the sensor, and one job per dataset asset (resolved once: faster than materialize());
        for taxon_images, the code location's own job, which the sensor targets."""
        return Definitions(
            assets=[*INGEST_ASSETS, *self.assets.assets],
            jobs=[
                *(define_asset_job(f"{asset.key.path[-1]}_job", [asset]) for asset in self.assets.assets
                  if asset.key.path[-1] != "taxon_images"),
                taxon_images_job,
                taxon_images_batch_job,
            ],
            sensors=[taxon_images_sensor, dataset_version_sensor],
            asset_checks=self.assets.checks,
            resources=self.resources,
        )

    def check_alone(self, instance: DagsterInstance):
        """``images_match_version`` executed on its own, as from the UI: every dataset's latest version."""
        job = define_asset_job("images_match_version_job", AssetSelection.checks(self.assets.images_match_version))
        defs = Definitions(assets=[*INGEST_ASSETS, *self.assets.assets], asset_checks=self.assets.checks, jobs=[job],
                           resources=self.resources)
        return checks_of(defs.resolve_job_def("images_match_version_job").execute_in_process(instance=instance))

    def ingest(self, instance: DagsterInstance, day: date) -> str:
        """Ingest with the domain functions, and record the taxonomy and media materializations
        the ingest job would have, so that automation sees a new snapshot."""
        key = ingest_snapshot(self.bucket, self.warehouse, day)
        instance.add_dynamic_partitions("snapshots", [key])
        for table in ("taxonomy", "media"):
            instance.report_runless_asset_event(AssetMaterialization(table, partition=key))
        return key

    def run(self, instance: DagsterInstance, asset: str, partition_key: str, **options):
        job = self.defs.resolve_job_def(f"{asset}_job")
        return job.execute_in_process(instance=instance, partition_key=partition_key, **options)

    def sensor_requests(self, instance: DagsterInstance) -> list:
        result = taxon_images_sensor(build_sensor_context(instance=instance, definitions=self.defs, resources=self.resources))
        for request in result.dynamic_partitions_requests:
            instance.add_dynamic_partitions(request.partitions_def_name, list(request.partition_keys))
        return result.run_requests

    def sensor_keys(self, instance: DagsterInstance) -> list[str]:
        """The classes the sensor asks for, in per-class and batch runs alike."""
        return sorted(key for request in self.sensor_requests(instance) for key in requested_classes(request))

    def version_sensor_keys(self, instance: DagsterInstance) -> list[str]:
        context = build_sensor_context(instance=instance, definitions=self.defs, resources=self.resources)
        return sorted(request.partition_key for request in dataset_version_sensor(context).run_requests)

    def manifests(self) -> dict[str, pd.DataFrame]:
        return {name: pd.read_parquet(dataset_manifest_path(self.warehouse, name)) for name in DATASETS}

    def store_files(self) -> set[str]:
        return {p.relative_to(self.store).as_posix() for p in self.store.rglob("*") if p.is_file() and not p.name.startswith(".")}


@contextlib.contextmanager
def dagster_instance(tmp_path: Path) -> Iterator[DagsterInstance]:
    """A real SQLite-backed instance, in memory where the machine has /dev/shm: it writes its
    event log once per event, and on a loaded disk that is the slowest part of these tests."""
    shm = Path("/dev/shm")
    parent = shm if shm.is_dir() and os.access(shm, os.W_OK) else tmp_path
    with tempfile.TemporaryDirectory(dir=parent, prefix="dagster-") as folder, instance_for_test(temp_dir=folder) as instance:
        yield instance


def requested_classes(request) -> list[str]:
    if request.job_name == taxon_images_batch_job.name:
        return batch_keys(request.run_config)
    return [request.partition_key]


def checks_of(result) -> dict:
    """The run's asset check evaluations by check name."""
    return {evaluation.check_name: evaluation for evaluation in result.get_asset_check_evaluations()}


def metadata_of(result) -> dict:
    (event,) = result.get_asset_materialization_events()
    return {key: value.value for key, value in event.materialization.metadata.items()}


def wanted_images(manifests: dict[str, pd.DataFrame]) -> dict[str, set[tuple[int, str]]]:
    """Class key -> (photo_id, stored size) the manifests need, computed here from the specs."""
    sizes = {"bugs": "thumb", "open-bugs": RESIZED}
    wanted: dict[str, set[tuple[int, str]]] = {}
    for name, rows in manifests.items():
        for label_id, label_name, photo_id in zip(rows["label_id"], rows["label_name"], rows["photo_id"]):
            wanted.setdefault(taxon_key(label_id, label_name), set()).add((int(photo_id), sizes[name]))
    return wanted


@pytest.mark.slow
def test_datasets_end_to_end_then_a_later_snapshot(tmp_path, monkeypatch):
    world = World(tmp_path, n_species=4, photos_per_species=24)
    Definitions.validate_loadable(world.defs)
    with dagster_instance(tmp_path) as instance:
        # --- first snapshot: eager manifests, taxa partitions ---------------------------------
        # The automation sensor ticks before any snapshot is there: nothing to do yet.
        automation = evaluate_automation_conditions(defs=world.defs, instance=instance)
        assert automation.total_requested == 0
        key1 = world.ingest(instance, SNAPSHOT)
        automation = evaluate_automation_conditions(defs=world.defs, instance=instance, cursor=automation.cursor)
        assert automation.get_requested_partitions(AssetKey("dataset_manifest")) == set(DATASETS)
        first = {name: metadata_of(world.run(instance, "dataset_manifest", name)) for name in DATASETS}
        manifests = world.manifests()
        assert first["bugs"]["snapshot"] == key1 and "update_report" not in first["bugs"]
        assert first["bugs"]["dagster/row_count"] == len(manifests["bugs"]) and first["bugs"]["excluded"]["max_per_class"] > 0
        assert (manifests["bugs"].groupby("label_id").size() <= 12).all()
        assert set(manifests["open-bugs"]["license"]) <= set(OPEN_LICENSES)
        assert "| Popillia japonica |" in first["bugs"]["class_histogram"]
        assert read_manifest_info(dataset_manifest_path(world.warehouse, "open-bugs")).stored_size == RESIZED

        wanted = wanted_images(manifests)
        assert sorted(instance.get_dynamic_partitions("taxa")) == sorted(wanted)

        # --- downloads: every class once, then nothing ----------------------------------------
        assert world.version_sensor_keys(instance) == []  # no images yet: nothing to freeze
        assert world.sensor_keys(instance) == sorted(wanted)
        deleted_upstream = set(world.report.missing_image_photo_ids)
        for key in sorted(wanted):
            result = world.run(instance, "taxon_images", key, run_config={"ops": {"taxon_images": {"config": {"concurrency": 4}}}})
            metadata = metadata_of(result)
            missing = {item for item in wanted[key] if item[0] in deleted_upstream}
            assert metadata["fetched"] == len(wanted[key]) - len(missing) and metadata["missing"] == len(missing), key
            assert metadata["skipped"] == metadata["failed"] == 0 and metadata["bytes_stored"] > 0
            assert "data:image/png;base64," in metadata["samples"] and Path(metadata["sample_grid"]).is_file()
            logs = [e.user_message for e in instance.all_logs(result.run_id) if e.user_message.startswith(f"{key}: ")]
            assert logs and "images (" in logs[-1]
        for key, items in wanted.items():
            index = pd.read_parquet(images_index_path(world.warehouse, key))
            assert {(int(p), s) for p, s in zip(index["photo_id"], index["size"])} == items
            for row in index[index["image_path"].notna()].itertuples():
                data = (world.store / row.image_path).read_bytes()
                assert hashlib.sha256(data).hexdigest() == row.sha256
                with Image.open(world.store / row.image_path) as image:
                    assert image.size == (row.width, row.height)
                    assert row.size != RESIZED or min(image.size) == 40
            assert set(index.loc[index["image_path"].isna(), "outcome"]) <= {Outcome.MISSING.value}
        assert world.sensor_keys(instance) == []
        assert world.version_sensor_keys(instance) == sorted(DATASETS)  # complete: freeze both

        # Nothing frozen yet: the check that reads versions back warns, and says what to run.
        early = world.check_alone(instance)["images_match_version"]
        assert not early.passed and early.severity == AssetCheckSeverity.WARN
        assert "No frozen version" in early.description and "materialize dataset_version" in early.description

        # --- a frozen version, with its check -------------------------------------------------
        version_run = world.run(instance, "dataset_version", "bugs")
        assert world.version_sensor_keys(instance) == sorted(set(DATASETS) - {"bugs"})
        checks = checks_of(version_run)
        assert checks["images_complete"].passed and checks["images_complete"].metadata["not_downloaded"].value == 0
        version = metadata_of(version_run)
        (frozen,) = catalog(world.warehouse, "bugs")
        assert checks["images_match_version"].passed and checks["images_match_version"].metadata["checked"].value == frozen.images

        # A stored image changed in place (same size: the journal still vouches for it): the
        # images_match_version check, executed alone, fails and names its class; verify --repair
        # downloads it again, and the check passes.
        version_rows = pd.read_parquet(manifest_path(world.warehouse, frozen)).dropna(subset=["image_path"])
        damaged_row = version_rows.iloc[0]
        damaged = bytearray((world.store / damaged_row["image_path"]).read_bytes())
        damaged[len(damaged) // 2] ^= 0xFF
        (world.store / damaged_row["image_path"]).write_bytes(bytes(damaged))
        alone = world.check_alone(instance)["images_match_version"]
        assert not alone.passed and alone.metadata["changed"].value == 1 and alone.metadata["versions"].text == frozen.ref
        assert taxon_key(damaged_row["label_id"], damaged_row["label_name"]) in alone.metadata["classes_to_repair"].text
        verify = ["datasets", "verify", "bugs", "--warehouse", str(world.warehouse.root), "--image-store", str(world.store)]
        assert cli.main(verify) == 1 and cli.main([*verify, "--repair"]) == 0
        assert world.check_alone(instance)["images_match_version"].passed
        # A version whose manifest is gone fails the check with the reason, instead of erroring out.
        version_manifest = manifest_path(world.warehouse, frozen)
        version_manifest.rename(version_manifest.with_suffix(".away"))
        gone = world.check_alone(instance)["images_match_version"]
        assert not gone.passed and "is gone" in gone.description and gone.metadata["unreadable_versions"].value == 1
        version_manifest.with_suffix(".away").rename(version_manifest)
        assert version["version"] == frozen.version and version["new_version"] is True and Path(version["card"]).is_file()
        unavailable = manifests["bugs"]["photo_id"].isin(deleted_upstream).sum()
        assert frozen.images == len(manifests["bugs"]) - unavailable and frozen.missing_images == unavailable

        # --- the next snapshot ----------------------------------------------------------------
        # A tick after the manifests ran: up to date (Dagster counts them as handled on this tick).
        automation = evaluate_automation_conditions(defs=world.defs, instance=instance, cursor=automation.cursor)
        assert automation.total_requested == 0
        later = generate_sample_bucket(world.bucket, seed=SEED, photos_per_species=24, sizes=("thumb",), next_from=SNAPSHOT, workers=1)
        key2 = world.ingest(instance, later.snapshot_date)
        automation = evaluate_automation_conditions(defs=world.defs, instance=instance, cursor=automation.cursor)
        assert automation.get_requested_partitions(AssetKey("dataset_manifest")) == set(DATASETS)
        second = {name: metadata_of(world.run(instance, "dataset_manifest", name)) for name in DATASETS}
        new_manifests = world.manifests()
        for name in DATASETS:
            old, new = manifests[name].set_index("photo_id"), new_manifests[name].set_index("photo_id")
            both = old.index.intersection(new.index)
            relabelled = int((old.loc[both, "label_id"] != new.loc[both, "label_id"]).sum())
            expected = (len(new.index.difference(old.index)), len(old.index.difference(new.index)), relabelled)
            assert (second[name]["added"], second[name]["removed"], second[name]["relabelled"]) == expected, name
            assert (old.loc[both, "split"] == new.loc[both, "split"]).all(), name
            assert second[name]["snapshot"] == key2 and "| before |" in second[name]["update_report"]
        assert second["open-bugs"]["removed"] > 0

        # Not downloaded yet: no version is frozen, and the failure says what to run.
        downloaded = set().union(*wanted.values())
        waiting = sum((int(p), "thumb") not in downloaded for p in new_manifests["bugs"]["photo_id"])
        stale = world.run(instance, "dataset_version", "bugs", raise_on_error=False)
        assert not stale.success and len(catalog(world.warehouse, "bugs")) == 1
        failure = next(e for e in stale.all_events if e.is_step_failure).step_failure_data.error.message
        assert f"{waiting} of the {len(new_manifests['bugs'])} photos of bugs have no download yet" in failure
        assert "Fix: materialize taxon_images for" in failure

        # --- only changed classes, only new photos --------------------------------------------
        new_wanted = wanted_images(new_manifests)
        changed = sorted(key for key in new_wanted if new_wanted[key] != wanted.get(key))
        assert 0 < len(changed) < len(new_wanted), "the sample must change some classes and leave others"
        assert world.sensor_keys(instance) == changed
        assert "bugs" not in world.version_sensor_keys(instance)  # its changed classes are not downloaded yet
        for key in changed:
            metadata = metadata_of(world.run(instance, "taxon_images", key))
            # Only images no earlier run stored are fetched: a photo that moved class is there already.
            fresh = {item for item in new_wanted[key] - downloaded if item[0] not in deleted_upstream}
            assert metadata["fetched"] == len(fresh), key
            assert metadata["skipped"] == len(new_wanted[key]) - len(fresh) - metadata["missing"], key
        assert world.sensor_keys(instance) == []
        assert "bugs" in world.version_sensor_keys(instance)

        # A stored image lost after its download: no version is frozen, and the failure names it;
        # the class's next run fetches it again, and then the version is frozen.
        index_path = images_index_path(world.warehouse, changed[0])
        index = pd.read_parquet(index_path)
        lost = index.loc[index["size"] == "thumb", "image_path"].dropna().iloc[0]
        (world.store / lost).unlink()
        broken = world.run(instance, "dataset_version", "bugs", raise_on_error=False)
        failure = next(e for e in broken.all_events if e.is_step_failure).step_failure_data.error.message
        assert not broken.success and lost in failure and "not in the image store" in failure
        assert len(catalog(world.warehouse, "bugs")) == 1
        assert metadata_of(world.run(instance, "taxon_images", changed[0]))["fetched"] == 1
        repaired = world.run(instance, "dataset_version", "bugs")
        assert all(check.passed for check in checks_of(repaired).values()) and metadata_of(repaired)["new_version"] is True
        assert len(catalog(world.warehouse, "bugs")) == 2

        # A download that failed (server errors past the retries) is worth another try: the version
        # waits for it, unless told to freeze without it; the class's next run fetches just that photo.
        index = pd.read_parquet(index_path)
        row = index.index[(index["size"] == "thumb") & index["image_path"].notna()][0]
        failed_photo, failed_path = int(index.loc[row, "photo_id"]), index.loc[row, "image_path"]
        index.loc[row, ["image_path", "sha256", "outcome", "reason"]] = [None, None, Outcome.FAILED.value, "HTTP 503"]
        index.to_parquet(index_path)
        (world.store / failed_path).unlink()  # as if never stored
        waiting = world.run(instance, "dataset_version", "bugs", raise_on_error=False)
        failure = next(e for e in waiting.all_events if e.is_step_failure).step_failure_data.error.message
        assert not waiting.success and "1 of the" in failure and "failed to download" in failure and changed[0] in failure
        forced = world.run(instance, "dataset_version", "bugs",
                           run_config={"ops": {"dataset_version": {"config": {"freeze_with_failed_downloads": True}}}})
        frozen = metadata_of(forced)
        assert frozen["new_version"] is True and frozen["missing_images"] == metadata_of(repaired)["missing_images"] + 1
        assert failed_photo not in set(pd.read_parquet(manifest_path(world.warehouse, catalog(world.warehouse, "bugs")[-1]))
                                       .dropna(subset=["image_path"])["photo_id"])
        assert metadata_of(world.run(instance, "taxon_images", changed[0]))["fetched"] == 1
        complete = metadata_of(world.run(instance, "dataset_version", "bugs"))
        assert complete["new_version"] is False and complete["version"] == metadata_of(repaired)["version"]
        assert len(catalog(world.warehouse, "bugs")) == 3

        # The sensor asks again for a class whose last run left failed downloads: after a delay that
        # doubles with each retry, at most MAX_FAILED_RETRIES times for one photo set.
        monkeypatch.setattr(dataset_sensors, "RETRY_FAILED_AFTER_S", 3600)
        digest = class_photo_set_hashes(world.warehouse)[changed[0]]

        def failed_run() -> None:
            instance.report_runless_asset_event(AssetMaterialization(
                "taxon_images", partition=changed[0], metadata={"photo_set_hash": digest, "failed": 2}))

        failed_run()
        assert world.sensor_keys(instance) == []  # not due yet
        monkeypatch.setattr(dataset_sensors, "RETRY_FAILED_AFTER_S", 0)
        for _ in range(dataset_sensors.MAX_FAILED_RETRIES):
            assert world.sensor_keys(instance) == [changed[0]]
            failed_run()
        assert world.sensor_keys(instance) == []  # retries spent: by hand from here

        # --- gc: files no manifest and no version uses ----------------------------------------
        in_use = {f"inaturalist/{size}/{photo}" for items in new_wanted.values() for photo, size in items}
        in_use |= {Path(p).with_suffix("").as_posix() for v in catalog(world.warehouse) for p in pd.read_parquet(manifest_path(world.warehouse, v))["image_path"]}
        images = {f for f in world.store_files() if not f.startswith("_")}
        expected_garbage = {f for f in images if f.rsplit(".", 1)[0] not in in_use}
        assert expected_garbage, "photos that left open-bugs must leave files behind"
        plan = plan_gc(world.warehouse, ImageStore(str(world.store)))
        assert {path for path, _ in plan.unreferenced} == expected_garbage
        args = ["images", "gc", "--warehouse", str(world.warehouse.root), "--image-store", str(world.store)]
        assert cli.main(args) == 0 and world.store_files() >= expected_garbage
        assert cli.main([*args, "--yes"]) == 0
        assert not world.store_files() & expected_garbage and (images - expected_garbage) <= world.store_files()


@pytest.mark.slow
def test_images_come_from_a_real_s3_bucket(tmp_path, moto_s3):
    world = World(tmp_path, n_species=2, photos_per_species=12)
    bucket = unique_bucket_name("inat")
    upload_folder_as_bucket(world.bucket, moto_s3, bucket)
    world.resources["open_data"] = OpenDataBucket(url=f"s3://{bucket}", endpoint_url=moto_s3)
    world.defs = world.definitions()
    with dagster_instance(tmp_path) as instance:
        world.ingest(instance, SNAPSHOT)
        world.run(instance, "dataset_manifest", "bugs")
        rows = pd.read_parquet(dataset_manifest_path(world.warehouse, "bugs"))
        assert all(url.startswith(f"s3://{bucket}/photos/") for url in rows["source_url"])
        key = taxon_key(rows["label_id"].iloc[0], rows["label_name"].iloc[0])
        metadata = metadata_of(world.run(instance, "taxon_images", key))
        photos = set(rows.loc[rows["label_id"] == rows["label_id"].iloc[0], "photo_id"])
        missing = photos & set(world.report.missing_image_photo_ids)
        assert metadata["fetched"] == len(photos) - len(missing) > 0 and metadata["missing"] == len(missing)
        index = pd.read_parquet(images_index_path(world.warehouse, key)).dropna(subset=["image_path"])
        for row in index.itertuples():
            original = world.bucket / "photos" / str(row.photo_id)
            (source,) = original.glob("thumb.*")
            assert (world.store / row.image_path).read_bytes() == source.read_bytes()


def test_many_changed_classes_are_downloaded_in_batch_runs(tmp_path, monkeypatch):
    """Past BATCH_OVER classes the sensor asks for taxon_images_batch_job runs; each class still gets
    its own taxon_images materialization, so the sensor and dataset_version see no difference.
    A class that fails in a batch does not stop the others, and is asked again alone."""
    monkeypatch.setattr(dataset_sensors, "BATCH_OVER", 1)
    monkeypatch.setattr(dataset_sensors, "CLASSES_PER_BATCH", 2)
    world = World(tmp_path, n_species=4, photos_per_species=24)
    with dagster_instance(tmp_path) as instance:
        world.ingest(instance, SNAPSHOT)
        for name in DATASETS:
            world.run(instance, "dataset_manifest", name)
        wanted = wanted_images(world.manifests())
        requests = world.sensor_requests(instance)
        assert len(wanted) > 2 and len(requests) == -(-len(wanted) // 2)  # batches of 2
        assert {request.job_name for request in requests} == {taxon_images_batch_job.name}
        assert sorted(key for request in requests for key in requested_classes(request)) == sorted(wanted)
        assert [r.run_key for r in world.sensor_requests(instance)] == [r.run_key for r in requests]  # stable

        # The second batch waits in the run queue; one class of the first cannot write its images
        # index (a folder stands where the file goes): it fails alone.
        batch_job = world.defs.resolve_job_def(taxon_images_batch_job.name)
        queued = instance.create_run_for_job(batch_job, run_config=requests[1].run_config, tags=requests[1].tags,
                                             status=DagsterRunStatus.NOT_STARTED)  # QUEUED needs a code location
        broken = requested_classes(requests[0])[1]
        images_index_path(world.warehouse, broken).mkdir(parents=True)
        first = batch_job.execute_in_process(instance=instance, run_config=requests[0].run_config, tags=requests[0].tags,
                                             raise_on_error=False)
        failure = next(e for e in first.all_events if e.is_step_failure).step_failure_data
        assert not first.success and f"1 of 2 classes failed: {broken}; the others are materialized" in failure.error.message
        assert "asks for the failed classes again" in failure.error.message
        assert broken in failure.user_failure_data.metadata["failed_classes"].value

        # Next tick: the failed class alone; the queued batch's classes are left to it.
        (again,) = world.sensor_requests(instance)
        assert (again.job_name, again.partition_key) == (taxon_images_job.name, broken)
        assert again.run_key.startswith(f"{broken}:")
        images_index_path(world.warehouse, broken).rmdir()
        world.run(instance, "taxon_images", broken)
        assert world.sensor_requests(instance) == []  # all done or queued
        second = batch_job.execute_in_process(instance=instance, run_config=queued.run_config, tags=queued.tags)
        assert second.success
        instance.delete_run(queued.run_id)  # it ran just now, as the queue would have run it

        hashes = class_photo_set_hashes(world.warehouse)
        recorded = dataset_sensors.last_downloads(instance, set(wanted))
        assert sorted(recorded) == sorted(wanted)
        assert all(recorded[key].photo_set_hash == hashes[key] for key in recorded)
        counts = {}  # from the instance: a failed run's result leaves out its step's materializations
        for key in recorded:
            (record,) = instance.fetch_materializations(
                AssetRecordsFilter(asset_key=AssetKey("taxon_images"), asset_partitions=[key]), limit=1).records
            counts[key] = (record.asset_materialization.metadata["fetched"].value,
                           record.asset_materialization.metadata["skipped"].value)
        deleted = set(world.report.missing_image_photo_ids)
        stored = {key: sum(p not in deleted for p, _ in wanted[key]) for key in wanted}
        # The broken class's images were stored before its index failed: its own run only checked them.
        assert counts == {key: (0, n) if key == broken else (n, 0) for key, n in stored.items()}
        assert world.sensor_requests(instance) == []
        assert world.version_sensor_keys(instance) == sorted(DATASETS)

        unknown = batch_job.execute_in_process(
            instance=instance, raise_on_error=False,
            run_config=batch_run_config(["1-no-such-class"]),
        )
        failure = next(e for e in unknown.all_events if e.is_step_failure).step_failure_data.error.message
        assert not unknown.success and "1-no-such-class" in failure and "Fix:" in failure


def test_gc_refuses_to_empty_a_store_when_no_dataset_uses_it(tmp_path, capsys):
    image = tmp_path / "images" / "inaturalist" / "thumb" / "1.jpg"
    image.parent.mkdir(parents=True)
    image.write_bytes(b"an image")
    args = ["images", "gc", "--warehouse", str(tmp_path / "warehouse"), "--image-store", str(tmp_path / "images"), "--yes"]
    assert cli.main(args) == 2 and image.exists()
    assert "No dataset manifest and no frozen dataset version" in capsys.readouterr().out
