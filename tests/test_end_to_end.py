"""The whole chain on a generated sample bucket, as ``bioasset demo`` runs it, through the domain
functions under the Dagster assets (no Dagster runs: the same code, minutes faster):

1. a sample bucket (procedural species photos at iNaturalist size ``small``) is generated;
2. its snapshot is ingested into a real DuckDB warehouse;
3. the demo's own dataset spec (``datasets/demo-insects.yaml``) selects the manifest and splits;
4. every class's images are downloaded from the bucket folder into an image store by the real
   download engine, and the dataset version is frozen;
5. ``tiny_cnn`` trains on the CPU with the demo's settings (:data:`bioasset.demo.DEMO_TRAINING`,
   at 48 px for 20 epochs), the abstention threshold is chosen on val, the model is evaluated on
   the test split at that threshold and registered in a real MLflow SQLite store.

The test split must reach at least 90% top-1. Everything is seeded and runs on one CPU thread
with no loader workers, so the result repeats exactly from run to run on a machine. Over
sample-bucket seeds 0-2 x training seeds 0-2 it was 0.95-0.985 (issue 5's report).
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import pandas as pd
import pytest

from bioasset.classifier_bundle import load_bundle_meta
from bioasset.dataset_spec import load_specs
from bioasset.demo import DEMO_ARCHITECTURE, DEMO_DATASET, DEMO_TRAINING
from bioasset.download import ImageStore
from bioasset.mlflow_registry import TAG_THRESHOLD_SPLIT, DatasetVersionRef, train_and_register
from bioasset.registry import DatasetVersion, freeze_version, manifest_path, read_manifest
from bioasset.sample_bucket import generate_sample_bucket
from bioasset.selection import ImagesCompleteness, build_manifest, download_taxon_images, manifest_with_images
from bioasset.training import TrainingConfig
from bioasset.warehouse import DuckDBSettings, Warehouse

from classifier_fixtures import new_registry
from classifier_fixtures import torch_on_one_thread  # noqa: F401 (autouse: the module runs torch on one thread)
from test_selection import ingest_snapshot

DATASETS = Path(__file__).resolve().parents[1] / "datasets"
#: The demo's sample-bucket seed, with three times the generator's default photos per species:
#: the test split then holds 180-200 photos instead of about 60, so that the few hard photos
#: (subjects tiny, or cut off by the center crop) move top-1 by 0.5% each, not 1.6%.
BUCKET_SEED = 0
PHOTOS_PER_SPECIES = 144
#: The catalogue's first 12 species are its insects, the demo dataset's classes (root Insecta);
#: the other three (a bird and two plants) would be drawn only to be left out.
N_SPECIES = 12
#: The demo's training at 48 px for 20 epochs instead of 64 px for 40: about the demo's CPU time
#: on three times the photos (see the issue 5 report for top-1 per seed).
TRAINING_OVERRIDES = {"image_size": 48, "epochs": 20}
#: The issue's bar for "a tiny end-to-end training on a sample bucket".
MIN_TEST_TOP1 = 0.90


@dataclass
class SampleDataset:
    """A frozen version of the demo dataset over a generated sample bucket."""

    version: DatasetVersion
    manifest: pd.DataFrame
    source: str  # where the version's manifest lives
    image_store: ImageStore
    completeness: ImagesCompleteness  # of the dataset's manifest against the downloads


def build_sample_dataset(root: Path, *, seed: int = BUCKET_SEED, photos_per_species: int = PHOTOS_PER_SPECIES) -> SampleDataset:
    """Steps 1-4 of the module docstring, under ``root``."""
    spec = load_specs(DATASETS)[DEMO_DATASET]
    bucket = root / "bucket"
    report = generate_sample_bucket(
        bucket, seed=seed, n_species=N_SPECIES, photos_per_species=photos_per_species, sizes=(spec.image_size,), workers=1
    )
    warehouse = Warehouse(root / "warehouse", DuckDBSettings(memory_limit="256MB", threads=1))
    ingest_snapshot(bucket, warehouse, report.snapshot_date)
    build = build_manifest(warehouse, spec, open_data_url=str(bucket))
    store = ImageStore(root / "images")
    for key in build.taxon_keys:
        download_taxon_images(warehouse, store, key, concurrency=4)
    table, completeness, info = manifest_with_images(warehouse, DEMO_DATASET)
    assert completeness.complete, completeness
    # No dataset card: its sample grids take seconds and training does not read them.
    frozen = freeze_version(warehouse, DEMO_DATASET, table, snapshot=info.snapshot, spec_hash=info.spec_hash, image_store=store, with_card=False)
    version = frozen.version
    return SampleDataset(version, read_manifest(warehouse, version).to_pandas(), str(manifest_path(warehouse, version)), store, completeness)


def training_config() -> TrainingConfig:
    """The demo's classifier settings with :data:`TRAINING_OVERRIDES`, on the CPU."""
    return TrainingConfig.from_dict({**DEMO_TRAINING, "architecture": DEMO_ARCHITECTURE, "device": "cpu", **TRAINING_OVERRIDES})


@pytest.mark.slow
def test_sample_bucket_to_registered_classifier_reaches_90_percent_top1(tmp_path):
    dataset = build_sample_dataset(tmp_path)
    version, manifest = dataset.version, dataset.manifest
    # The chain delivered a real dataset: every class has photos in every split, and the photos
    # deleted upstream (the sample bucket deletes about 2%) are counted, not silently dropped.
    assert version.class_count == N_SPECIES and version.images == len(manifest)
    assert version.missing_images == sum(dataset.completeness.unavailable.values()) > 0
    assert (manifest.groupby("split")["label_id"].nunique() == version.class_count).all(), manifest.groupby("split").size()

    registry = new_registry(tmp_path / "mlflow")
    run = train_and_register(
        registry,
        DatasetVersionRef(version.name, version.version, version.snapshot or "", dataset.source),
        manifest,
        dataset.image_store.url,
        training_config(),
        tmp_path / "training",
    )

    metrics = run.evaluation.metrics
    assert metrics["split"] == "test" and metrics["images"] == version.test_images and metrics["rows_unknown_label"] == 0
    assert run.training.epochs_run == TRAINING_OVERRIDES["epochs"]
    assert metrics["top1_accuracy"] >= MIN_TEST_TOP1, {k: metrics[k] for k in ("top1_accuracy", "top5_accuracy", "mean_per_class_accuracy")}
    # The abstention threshold was chosen on val and reported on test; the registered model carries it.
    assert run.threshold_evaluation.metrics["split"] == "val" and metrics["threshold_split"] == "val"
    assert metrics["threshold"] == run.threshold_evaluation.threshold.value
    assert registry.model_version(run.registered.registered_model_name, run.registered.version).tags[TAG_THRESHOLD_SPLIT] == "val"
    bundle = registry.download_bundle(run.registered.model_uri, tmp_path / "downloaded")
    assert load_bundle_meta(bundle).threshold == metrics["threshold"]
