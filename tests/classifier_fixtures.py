"""Tiny classifier bundles and a real MLflow SQLite store, for the registry, predict and classifier tests.

Import as ``from classifier_fixtures import ...`` (tests/ is on sys.path)."""

from __future__ import annotations

import atexit
import io
import shutil
import tempfile
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import pandas as pd
import pytest
from PIL import Image

from bioasset.classifier_bundle import BundleMeta, ClassLabel, save_bundle
from bioasset.inat_format import MAIN_RANKS
from bioasset.mlflow_registry import DatasetVersionRef, MlflowRegistry, RegisteredClassifier, TrainingRun

from dataset_fixtures import LINEAGES

#: The three classes, in output-unit order; two of them share the genus name Pieris.
SPECIES = ("Pieris rapae", "Apis mellifera", "Pieris japonica")
ARCHITECTURE = "resnet18"
IMAGE_SIZE = 32


@contextmanager
def one_torch_thread() -> Iterator[None]:
    """Run torch on one thread: on a shared 2-core machine its thread pool spins and a 32-px
    resnet18 forward pass takes 0.5 s instead of 30 ms. Restores the previous setting."""
    import torch

    before = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        yield
    finally:
        torch.set_num_threads(before)


@pytest.fixture(scope="module", autouse=True)
def torch_on_one_thread() -> Iterator[None]:
    """Autouse in every module that imports it: :func:`one_torch_thread` for the whole module."""
    with one_torch_thread():
        yield


def class_labels() -> list[ClassLabel]:
    labels = []
    for index, species in enumerate(SPECIES):
        lineage = LINEAGES[species]
        path = {rank: {"id": taxon_id, "name": name} for rank, (taxon_id, name) in zip(MAIN_RANKS, lineage)}
        labels.append(ClassLabel(index=index, label_id=lineage[-1][0], label_name=species, path=path))
    return labels


def make_bundle(directory: Path, *, threshold: float | None = None, seed: int = 0, dataset: dict | None = None) -> Path:
    """A resnet18 (``weights=None``, 3 classes, seeded) saved as a bundle with the SPECIES label map."""
    import torch
    from torchvision import models

    torch.manual_seed(seed)
    model = models.get_model(ARCHITECTURE, weights=None, num_classes=len(SPECIES))
    meta = BundleMeta(
        architecture=ARCHITECTURE,
        labels=class_labels(),
        image_size=IMAGE_SIZE,
        label_rank="species",
        threshold=threshold,
        dataset=dataset or {},
    )
    return save_bundle(model.state_dict(), meta, directory)


def image_bytes(rgb: tuple[int, int, int], size: int = 40, fmt: str = "PNG") -> bytes:
    buffer = io.BytesIO()
    Image.new("RGB", (size, size), rgb).save(buffer, format=fmt)
    return buffer.getvalue()


def write_images(folder: Path, count: int = 2) -> list[Path]:
    folder.mkdir(parents=True, exist_ok=True)
    paths = []
    for i in range(count):
        path = folder / f"photo-{i}.jpg"
        path.write_bytes(image_bytes((40 + 90 * i, 200 - 60 * i, 30), fmt="JPEG"))
        paths.append(path)
    return paths


_empty_store: Path | None = None


def empty_store_copy(target: Path) -> Path:
    """A fresh, empty MLflow SQLite database at ``target``.

    MLflow builds its schema with dozens of migrations (seconds on a busy machine), so the first
    call of a test process builds one and later calls copy it.
    """
    global _empty_store
    if _empty_store is None:
        folder = Path(tempfile.mkdtemp(prefix="bioasset-mlflow-empty-"))
        atexit.register(shutil.rmtree, folder, True)
        MlflowRegistry(f"sqlite:///{folder / 'mlflow.db'}", str(folder / "artifacts")).client.search_experiments()
        _empty_store = folder / "mlflow.db"
    target.parent.mkdir(parents=True, exist_ok=True)
    shutil.copyfile(_empty_store, target)
    return target


def new_registry(folder: Path, **tags: str) -> MlflowRegistry:
    """A real MLflow store: SQLite tracking + registry, local artifacts, all under ``folder``."""
    database = empty_store_copy(folder / "mlflow.db")
    return MlflowRegistry(f"sqlite:///{database}", str(folder / "artifacts"), tags)


def log_classifier(
    registry: MlflowRegistry,
    bundle: Path,
    *,
    dataset: str,
    version: str = "a1b2c3d4e5f6",
    top1: float = 0.5,
    kappa: float = 0.25,
    artifacts: tuple[Path, ...] = (),
) -> RegisteredClassifier:
    """Log ``bundle`` as a training run with the given test numbers (the promotion gate's inputs)."""
    manifest = pd.DataFrame({"photo_id": [1, 2, 3], "label_id": [55626, 47220, 50736], "split": ["train", "val", "test"]})
    return registry.log_training_run(
        TrainingRun(
            dataset=DatasetVersionRef(dataset, version, "2024-06-01", f"/warehouse/datasets/{dataset}/{version}/manifest.parquet"),
            manifest=manifest,
            architecture=ARCHITECTURE,
            bundle_dir=bundle,
            params={"epochs": 2, "learning_rate": 0.01},
            epoch_metrics=[{"epoch": 0, "train_loss": 1.2, "val_top1": 0.4}, {"epoch": 1, "train_loss": 0.9, "val_top1": 0.6}],
            test_metrics={"top1_accuracy": top1, "cohen_kappa": kappa, "split": "test", "threshold": None},
            artifacts=artifacts,
        )
    )
