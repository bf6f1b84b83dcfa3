"""The classifier assets in a real Dagster instance: real torch training on a tiny frozen dataset
version, a real MLflow SQLite store, the promotion gate, fine-tuning the champion, and automation."""

from __future__ import annotations

import textwrap
from pathlib import Path

import pytest
from dagster import (
    AssetKey,
    AssetMaterialization,
    Definitions,
    MultiPartitionKey,
    evaluate_automation_conditions,
    instance_for_test,
    materialize,
)

from bioasset.assets.classifiers import build_classifier_assets, training_dir
from bioasset.assets.datasets import build_dataset_assets
from bioasset.assets.ingest import INGEST_ASSETS
from bioasset.mlflow_registry import CHALLENGER, CHAMPION, MlflowRegistry
from bioasset.registry import freeze_version
from bioasset.resources import OpenDataBucket, WarehouseResource
from bioasset.resources.image_store import ImageStoreResource
from bioasset.resources.mlflow import MlflowResource
from bioasset.warehouse import DuckDBSettings, Warehouse

from classifier_fixtures import empty_store_copy, one_torch_thread
from dataset_fixtures import Photo, make_manifest, standard_photos

DATASET = "tiny"
ARCH = "resnet18"
PARTITION = MultiPartitionKey({"dataset": DATASET, "arch": ARCH})
SPEC = """
    name: tiny
    root_taxon: {id: 1, name: Animalia}
    label_rank: species
    image_size: thumb
    min_per_class: 1
    """
#: Small and quick: 32 px, one epoch, no worker processes, the CPU.
TRAINING = {"epochs": 1, "batch_size": 4, "image_size": 32, "num_workers": 0, "device": "cpu", "learning_rate": 0.01}


class World:
    """A frozen version of ``tiny`` (12 photos, 3 species), a warehouse, an image store, an MLflow store."""

    def __init__(self, root: Path):
        specs = root / "datasets"
        specs.mkdir()
        (specs / "tiny.yaml").write_text(textwrap.dedent(SPEC))
        (specs / "other.yaml").write_text(textwrap.dedent(SPEC).replace("name: tiny", "name: other"))  # never frozen
        self.dataset_assets = build_dataset_assets(specs)
        self.classifier_assets = build_classifier_assets(self.dataset_assets.datasets_partitions, [ARCH, "mobilenet_v3_large"])
        self.warehouse = Warehouse(root / "warehouse", DuckDBSettings(memory_limit="256MB", threads=1))
        self.store = store = root / "images"
        self.version = freeze_version(
            self.warehouse, DATASET, make_manifest(store, standard_photos()), snapshot="2026-10-27", image_store=str(store)
        ).version
        tracking_uri = f"sqlite:///{empty_store_copy(root / 'mlflow' / 'mlflow.db')}"
        self.registry = MlflowRegistry(tracking_uri, str(root / "mlflow" / "artifacts"))
        self.resources = {
            "open_data": OpenDataBucket(url=str(root / "bucket")),
            "warehouse": WarehouseResource(path=str(self.warehouse.root), memory_limit="256MB", threads=1),
            "image_store": ImageStoreResource(url=str(store)),
            "mlflow": MlflowResource(tracking_uri=tracking_uri, artifact_root=str(root / "mlflow" / "artifacts")),
        }
        self.all_assets = [*INGEST_ASSETS, *self.dataset_assets.assets, *self.classifier_assets.assets]
        self.defs = Definitions(
            assets=self.all_assets,
            sensors=[self.classifier_assets.automation_sensor],
            resources=self.resources,
        )

    def run(self, instance, asset, **config):
        run_config = {"ops": {"classifier": {"config": {**TRAINING, **config}}}} if asset is self.classifier_assets.classifier else None
        return materialize(
            self.all_assets, selection=[asset], partition_key=PARTITION, instance=instance, resources=self.resources, run_config=run_config
        )


@pytest.fixture(scope="module")
def world(tmp_path_factory):
    root = tmp_path_factory.mktemp("classifiers")
    with pytest.MonkeyPatch.context() as patch, one_torch_thread():
        patch.setenv("BIOASSET_HOME", str(root / "home"))  # training checkpoints go under it
        yield World(root)


def metadata_of(result) -> dict:
    (event,) = result.get_asset_materialization_events()
    return {key: value.value for key, value in event.materialization.metadata.items()}


def test_definitions_load(world):
    Definitions.validate_loadable(world.defs)


def test_train_register_promote_then_fine_tune_the_champion_on_a_new_version(world):
    registry = world.registry
    with instance_for_test() as instance:
        trained = world.run(instance, world.classifier_assets.classifier)
        assert trained.success
        meta = metadata_of(trained)
        assert meta["model_uri"] == "models:/bioasset-tiny/1" and meta["dataset_version"] == world.version.ref
        assert meta["epochs_run"] == 1 and meta["init"] == "none"
        assert 0.0 <= meta["top1_accuracy"] <= 1.0 and meta["test_images"] == 3
        assert Path(meta["confusion_matrix"]).is_file() and "confusion_matrix_plot" in meta
        version = registry.model_version("bioasset-tiny", 1)
        assert version.tags["dagster_run_id"] == trained.run_id and version.tags["dagster_partition"] == str(PARTITION)
        assert version.tags["dataset_version"] == world.version.version and version.tags["architecture"] == ARCH
        assert str(registry.alias_version("bioasset-tiny", CHALLENGER).version) == "1"
        assert registry.alias_version("bioasset-tiny", CHAMPION) is None
        run = registry.client.get_run(meta["mlflow_run_id"])
        assert run.data.params["epochs"] == "1" and "test_top1_accuracy" in run.data.metrics
        assert {a.path for a in registry.client.list_artifacts(run.info.run_id, "evaluation")} >= {
            "evaluation/confusion_matrix.png", "evaluation/threshold_sweep.png", "evaluation/per_class.csv",
        }
        assert not (training_dir() / DATASET / world.version.version / ARCH).exists()  # registered: checkpoints removed

        promoted = world.run(instance, world.classifier_assets.classifier_promotion)
        assert promoted.success
        decision = metadata_of(promoted)
        assert decision["decision"] == "promoted" and decision["reason"] == "no champion yet"
        assert str(registry.alias_version("bioasset-tiny", CHAMPION).version) == "1"

        # A new dataset version (one more training photo); fine-tune the champion trained on the old one.
        photos = [*standard_photos(), Photo(200, "Apis mellifera", "train")]
        newer = freeze_version(world.warehouse, DATASET, make_manifest(world.store, photos), snapshot="2026-11-27", image_store=str(world.store))
        assert newer.created
        fine_tuned = world.run(instance, world.classifier_assets.classifier, init="champion")
        meta = metadata_of(fine_tuned)
        assert meta["init"] == "fine-tuned from the champion models:/bioasset-tiny/1"
        assert meta["model_version"] == "2" and meta["dataset_version"] == newer.version.ref

        gate = metadata_of(world.run(instance, world.classifier_assets.classifier_promotion))
        assert gate["challenger_version"] == "2" and gate["champion_version_before"] == "1"
        # The champion learnt on the old version: it was scored again, on the new version's test split.
        assert gate["champion_reevaluated"] is True and gate["compared_on"] == newer.version.ref
        champion_now = str(registry.alias_version("bioasset-tiny", CHAMPION).version)
        assert champion_now == ("2" if gate["decision"] == "promoted" else "1") == gate["champion_version"]
        assert registry.model_version("bioasset-tiny", 2).tags["promotion.decision"] == gate["decision"]


def test_a_new_dataset_version_requests_its_classifiers(world):
    with instance_for_test() as instance:
        before = evaluate_automation_conditions(defs=world.defs, instance=instance)
        assert before.get_num_requested(AssetKey("classifier")) == 0  # dataset_version is missing: nothing to train
        instance.report_runless_asset_event(AssetMaterialization("dataset_version", partition=DATASET))
        after = evaluate_automation_conditions(defs=world.defs, instance=instance, cursor=before.cursor)
        requested = {str(key) for key in after.get_requested_partitions(AssetKey("classifier"))}
        assert requested == {f"{ARCH}|{DATASET}", f"mobilenet_v3_large|{DATASET}"}  # every arch of tiny, nothing of other
        # The gate is requested with them: eager() counts a parent that will be requested in this
        # tick, so each classifier and its gate run together, the gate after the classifier.
        assert {str(key) for key in after.get_requested_partitions(AssetKey("classifier_promotion"))} == requested
