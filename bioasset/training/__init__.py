"""Classifier training: plain Python, no Dagster.

    from bioasset.training import TrainingConfig, train_classifier
    result = train_classifier(manifest, image_store_url, TrainingConfig(epochs=10), out_dir)
    result.bundle_dir  # a bioasset.classifier_bundle folder

Evaluation lives in :mod:`bioasset.metrics` (``evaluate_classifier``).
"""

from importlib import import_module
from typing import TYPE_CHECKING, Any

from bioasset.training.config import DEFAULT_ARCHITECTURES, TrainingConfig, TrainingConfigError

if TYPE_CHECKING:
    from bioasset.training.data import ManifestError, eval_resize_size, eval_transform
    from bioasset.training.loop import ProgressEvent, ResumeError, TrainingResult, train_classifier
    from bioasset.training.models import (
        InitLoader,
        InitWeightsError,
        PretrainedWeightsUnavailable,
        UnknownArchitectureError,
    )

#: Names that need torch, imported on first use: the Dagster code location imports this package for
#: TrainingConfig alone, and every run, sensor tick and UI load would otherwise pay torch's import
#: (about 3 s and 0.5 GB with torchvision) even when nothing trains.
_LAZY = {
    "ManifestError": "data", "eval_resize_size": "data", "eval_transform": "data",
    "ProgressEvent": "loop", "ResumeError": "loop", "TrainingResult": "loop", "train_classifier": "loop",
    "InitLoader": "models", "InitWeightsError": "models", "PretrainedWeightsUnavailable": "models",
    "UnknownArchitectureError": "models",
}


def __dir__() -> list[str]:
    return sorted(__all__)


def __getattr__(name: str) -> Any:
    module = _LAZY.get(name)
    if module is None:
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    value = getattr(import_module(f"{__name__}.{module}"), name)
    globals()[name] = value
    return value


__all__ = [
    "DEFAULT_ARCHITECTURES",
    "InitLoader",
    "InitWeightsError",
    "ManifestError",
    "PretrainedWeightsUnavailable",
    "ProgressEvent",
    "ResumeError",
    "TrainingConfig",
    "TrainingConfigError",
    "TrainingResult",
    "UnknownArchitectureError",
    "eval_resize_size",
    "eval_transform",
    "train_classifier",
]
