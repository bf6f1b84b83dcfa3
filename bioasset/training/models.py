"""torchvision classification models: build one for N classes, with no, ImageNet or earlier weights.

- ``build_model``: ``torchvision.models.get_model`` with ``weights=None`` (N outputs directly), or
  with ImageNet weights and the head swapped for N classes. The head is found generically as the
  last ``nn.Linear`` of the model (``fc`` for ResNets, ``classifier[-1]`` for EfficientNet,
  MobileNet and ConvNeXt, ``heads.head`` for ViT), so the state dict has the same keys and shapes
  as ``get_model(name, weights=None, num_classes=N)`` and :func:`bioasset.classifier_bundle.load_bundle`
  rebuilds it.
- ``load_init_source`` / ``transfer_weights``: start from a checkpoint, a bundle or an MLflow
  model (through a loader callable), remapping the head by label id: a class present in both
  keeps its head row, a new class gets a fresh one.

One architecture of our own, ``tiny_cnn`` (four conv blocks, ~0.15M parameters), for tests,
demos and CPU-only runs on small images: it keeps full resolution in its first block, where
torchvision models downsample 4x at once, and learns the sample bucket's species at 64 px in
about a CPU minute. It is registered in torchvision's model registry when this module is
imported (``bioasset.classifier_bundle`` and the training loop import it; ``import
bioasset.training`` alone does not, as it loads torch lazily), so ``torchvision.models.get_model("tiny_cnn", …)``
and :func:`bioasset.classifier_bundle.load_bundle` rebuild it by name like any other.
"""

from __future__ import annotations

import os
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

import torch
from torch import nn
from torchvision import models as tv_models
from torchvision.models._api import register_model  # the registry behind get_model; public since 0.14 in all but name

from bioasset.classifier_bundle import MODEL_FILE, ClassLabel, load_bundle_meta
from bioasset.training.config import TINY_CNN

#: Turns a model URI (``models:/name@champion``, ``runs:/…``) into a local classifier bundle folder.
InitLoader = Callable[[str], str | os.PathLike]


class UnknownArchitectureError(ValueError):
    pass


class PretrainedWeightsUnavailable(RuntimeError):
    """ImageNet weights are neither in the torch hub cache nor downloadable (offline)."""


class InitWeightsError(ValueError):
    """A checkpoint, bundle or model URI to start from cannot be used."""


@dataclass
class InitSource:
    """Weights to start from, with the label map their head was trained on."""

    description: str  # where they came from, for reports
    architecture: str
    labels: list[ClassLabel]
    state_dict: dict[str, torch.Tensor]


@dataclass
class TransferReport:
    source: str
    kept_classes: list[int] = field(default_factory=list)  # label ids whose head row was copied
    new_classes: list[int] = field(default_factory=list)  # label ids that start from a fresh head row
    dropped_classes: list[int] = field(default_factory=list)  # source label ids not in this dataset

    def as_dict(self) -> dict:
        return {
            "source": self.source,
            "kept_classes": len(self.kept_classes),
            "new_classes": len(self.new_classes),
            "dropped_classes": len(self.dropped_classes),
        }


TINY_CNN_WIDTHS = (24, 48, 96, 128)


def tiny_cnn(*, weights: None = None, progress: bool = True, num_classes: int = 1000, dropout: float = 0.2) -> nn.Sequential:
    """Four blocks of 3x3 conv, BatchNorm, ReLU and 2x2 max-pool, then global average pooling and
    a linear head. No pretrained weights exist for it."""
    if weights is not None:
        raise ValueError(f"{TINY_CNN} has no pretrained weights (got weights={weights!r}). Fix: use weights=None")
    layers: list[nn.Module] = []
    channels = 3
    for width in TINY_CNN_WIDTHS:
        layers += [nn.Conv2d(channels, width, 3, padding=1, bias=False), nn.BatchNorm2d(width), nn.ReLU(inplace=True), nn.MaxPool2d(2)]
        channels = width
    return nn.Sequential(*layers, nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Dropout(dropout), nn.Linear(channels, num_classes))


if TINY_CNN not in tv_models.list_models():  # a module reload must not register it twice
    register_model(TINY_CNN)(tiny_cnn)


def classification_models() -> list[str]:
    """torchvision's classification builders, and ``tiny_cnn``."""
    return sorted(tv_models.list_models(module=tv_models) + [TINY_CNN])


def head_name(model: nn.Module) -> str:
    """Qualified name of the classification head: the model's last ``nn.Linear``."""
    name = next((n for n, m in reversed(list(model.named_modules())) if isinstance(m, nn.Linear)), None)
    if name is None:
        raise UnknownArchitectureError(
            f"{type(model).__name__} has no nn.Linear head (e.g. SqueezeNet's conv head). "
            f"Fix: choose an architecture with a linear classifier, e.g. resnet18"
        )
    return name


def replace_head(model: nn.Module, num_classes: int) -> str:
    """Swap the head for a fresh ``nn.Linear`` with ``num_classes`` outputs; returns its name."""
    name = head_name(model)
    old = model.get_submodule(name)
    parent_name, _, attribute = name.rpartition(".")
    parent = model.get_submodule(parent_name) if parent_name else model
    setattr(parent, attribute, nn.Linear(old.in_features, num_classes, bias=old.bias is not None))
    return name


def build_model(architecture: str, num_classes: int, *, imagenet: bool = False) -> nn.Module:
    """A torchvision classifier for ``num_classes``, randomly initialised or from ImageNet weights."""
    if architecture not in classification_models():
        raise UnknownArchitectureError(
            f"architecture {architecture!r} is not a torchvision classification model. "
            f"Fix: use one of {classification_models()}"
        )
    if not imagenet:
        return tv_models.get_model(architecture, weights=None, num_classes=num_classes)
    if architecture == TINY_CNN:
        raise PretrainedWeightsUnavailable(f"weights=imagenet: {TINY_CNN} has no ImageNet weights. Fix: use weights=none, or a torchvision architecture")
    weights = tv_models.get_model_weights(architecture).DEFAULT
    try:
        model = tv_models.get_model(architecture, weights=weights)
    except OSError as error:  # urllib's URLError, connection resets, timeouts
        raise PretrainedWeightsUnavailable(_offline_message(architecture, weights, error)) from error
    replace_head(model, num_classes)
    return model


def _offline_message(architecture: str, weights, error: Exception) -> str:
    cache = Path(torch.hub.get_dir()) / "checkpoints" / os.path.basename(weights.url)
    return (
        f"weights=imagenet for {architecture}: {weights} is not cached at {cache} and could not be "
        f"downloaded from {weights.url} ({type(error).__name__}: {error}). Fix: on a machine with internet run "
        f"`TORCH_HOME=/some/dir python -c \"import torchvision; torchvision.models.get_model('{architecture}', weights='DEFAULT')\"`, "
        f"copy /some/dir/hub/checkpoints/{cache.name} to {cache.parent} here (or point TORCH_HOME at a copy), "
        f"or train with weights=none"
    )


def load_init_source(weights: str, kind: str, *, init_loader: InitLoader | None = None) -> InitSource:
    """The weights named by ``TrainingConfig.weights`` when it is a path (``kind="path"``) or a
    model URI (``kind="uri"``).

    A path is a classifier bundle folder or a training checkpoint file (``checkpoint.pt`` or
    ``best_model.pt`` of :func:`bioasset.training.train_classifier`). A URI goes through
    ``init_loader``, which must return a local bundle folder (the MLflow side downloads it).
    """
    if kind == "uri":
        if init_loader is None:
            raise InitWeightsError(
                f"weights={weights!r} is a model URI but no init_loader was given. "
                f"Fix: pass init_loader=<callable returning a local bundle folder for a URI> "
                f"(the MLflow module provides one), or use a bundle path"
            )
        location = Path(init_loader(weights))
        return _from_bundle(location, f"{weights} ({location})")
    path = Path(weights).expanduser()
    if path.is_dir():
        return _from_bundle(path, str(path))
    if path.is_file():
        return _from_checkpoint(path)
    raise InitWeightsError(
        f"weights={weights!r}: no such checkpoint file or bundle folder. "
        f"Fix: pass 'none', 'imagenet', an existing path, or a models:/ URI"
    )


def _from_bundle(directory: Path, description: str) -> InitSource:
    meta = load_bundle_meta(directory)
    state = torch.load(directory / MODEL_FILE, map_location="cpu", weights_only=True)
    return InitSource(description, meta.architecture, meta.labels, state)


def _from_checkpoint(path: Path) -> InitSource:
    saved = torch.load(path, map_location="cpu", weights_only=True)
    if not isinstance(saved, dict) or not {"model", "labels", "architecture"} <= set(saved):
        raise InitWeightsError(
            f"weights={str(path)!r} is not a bioasset training checkpoint (it needs model, labels and architecture). "
            f"Fix: point at checkpoint.pt or best_model.pt in a training folder, or at a bundle folder"
        )
    labels = [ClassLabel(**label) for label in saved["labels"]]
    return InitSource(str(path), saved["architecture"], labels, saved["model"])


def transfer_weights(model: nn.Module, architecture: str, labels: list[ClassLabel], source: InitSource) -> TransferReport:
    """Load ``source`` into ``model`` (built for ``labels``); the head is remapped by label id."""
    if source.architecture != architecture:
        raise InitWeightsError(
            f"weights from {source.description} are for {source.architecture}, but the config asks for {architecture}. "
            f"Fix: set architecture: {source.architecture}, or start from weights of a {architecture}"
        )
    head = head_name(model)
    head_keys = {f"{head}.weight", f"{head}.bias"}
    target = model.state_dict()
    backbone = {k: v for k, v in source.state_dict.items() if k not in head_keys}
    missing = sorted(set(target) - head_keys - set(backbone))
    mismatched = sorted(k for k, v in backbone.items() if k in target and target[k].shape != v.shape)
    unexpected = sorted(set(backbone) - set(target))
    if missing or mismatched or unexpected:
        raise InitWeightsError(
            f"weights from {source.description} do not fit {architecture}: missing {missing[:5]}, "
            f"unexpected {unexpected[:5]}, other shapes {mismatched[:5]}. Fix: start from a model of the same architecture and variant"
        )
    source_row = {label.label_id: label.index for label in source.labels}
    report = TransferReport(source.description)
    new_state = dict(target, **backbone)
    for key in head_keys & set(target):
        rows = new_state[key].clone()
        for label in labels:
            if label.label_id in source_row:
                rows[label.index] = source.state_dict[key][source_row[label.label_id]]
        new_state[key] = rows
    model.load_state_dict(new_state)
    ours = {label.label_id for label in labels}
    report.kept_classes = sorted(ours & set(source_row))
    report.new_classes = sorted(ours - set(source_row))
    report.dropped_classes = sorted(set(source_row) - ours)
    return report
