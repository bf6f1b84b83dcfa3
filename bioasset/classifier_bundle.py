"""A trained classifier on disk: the contract between training, evaluation, the MLflow pyfunc and
``bioasset predict``.

A bundle is a folder with two files:

- ``model.pt``: the torch ``state_dict`` of a torchvision classification model;
- ``classifier.json``: everything needed to rebuild and use it (:class:`BundleMeta`): the
  architecture, the label map with each class's full taxonomic path, the preprocessing and the
  abstention threshold.
"""

from __future__ import annotations

import json
import os
import tempfile
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

MODEL_FILE = "model.pt"
META_FILE = "classifier.json"

IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)


@dataclass
class ClassLabel:
    index: int  # output unit of the model
    label_id: int  # taxon id at the dataset's label rank
    label_name: str
    path: dict[str, Any]  # rank -> {"id": int | None, "name": str | None}, kingdom … label rank


@dataclass
class BundleMeta:
    architecture: str  # torchvision model builder name, e.g. "resnet18"
    labels: list[ClassLabel]
    image_size: int  # square input side after resize + center crop
    label_rank: str
    mean: tuple[float, float, float] = IMAGENET_MEAN
    std: tuple[float, float, float] = IMAGENET_STD
    threshold: float | None = None  # top-1 probability below which predictions abstain
    dataset: dict[str, Any] = field(default_factory=dict)  # name, version, snapshot, spec hash
    extra: dict[str, Any] = field(default_factory=dict)

    @property
    def num_classes(self) -> int:
        return len(self.labels)

    def to_json(self) -> str:
        return json.dumps(asdict(self), indent=2, sort_keys=True)

    @classmethod
    def from_json(cls, text: str) -> "BundleMeta":
        data = json.loads(text)
        data["labels"] = [ClassLabel(**label) for label in data["labels"]]
        data["mean"] = tuple(data["mean"])
        data["std"] = tuple(data["std"])
        return cls(**data)


def save_bundle(state_dict: dict, meta: BundleMeta, directory: str | os.PathLike) -> Path:
    """Write a bundle atomically: into a temporary sibling folder, then rename into place."""
    import torch

    target = Path(directory)
    target.parent.mkdir(parents=True, exist_ok=True)
    staging = Path(tempfile.mkdtemp(prefix=f".{target.name}-", dir=target.parent))
    torch.save(state_dict, staging / MODEL_FILE)
    (staging / META_FILE).write_text(meta.to_json())
    if target.exists():
        # Replace an older bundle of the same name: move it aside first so the swap is quick.
        old = target.with_name(f".{target.name}-old-{os.getpid()}")
        os.replace(target, old)
        os.replace(staging, target)
        _remove_tree(old)
    else:
        os.replace(staging, target)
    return target


def load_bundle_meta(directory: str | os.PathLike) -> BundleMeta:
    path = Path(directory) / META_FILE
    if not path.exists():
        raise FileNotFoundError(
            f"{directory} is not a classifier bundle: {META_FILE} is missing. "
            f"Fix: point at a folder written by bioasset training (it holds {MODEL_FILE} and {META_FILE})."
        )
    return BundleMeta.from_json(path.read_text())


def load_bundle(directory: str | os.PathLike, *, map_location: str = "cpu"):
    """(model in eval mode, meta). The model is rebuilt with ``weights=None`` and the saved state."""
    import torch
    from torchvision import models

    import bioasset.training.models  # noqa: F401  (registers tiny_cnn with torchvision's get_model)

    meta = load_bundle_meta(directory)
    model = models.get_model(meta.architecture, weights=None, num_classes=meta.num_classes)
    state = torch.load(Path(directory) / MODEL_FILE, map_location=map_location, weights_only=True)
    model.load_state_dict(state)
    model.eval()
    return model, meta


def _remove_tree(path: Path) -> None:
    import shutil

    shutil.rmtree(path, ignore_errors=True)
