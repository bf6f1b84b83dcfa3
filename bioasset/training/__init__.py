"""Classifier training: plain Python, no Dagster.

    from bioasset.training import TrainingConfig, train_classifier
    result = train_classifier(manifest, image_store_url, TrainingConfig(epochs=10), out_dir)
    result.bundle_dir  # a bioasset.classifier_bundle folder

Evaluation lives in :mod:`bioasset.metrics` (``evaluate_classifier``).
"""

from bioasset.training.config import DEFAULT_ARCHITECTURES, TrainingConfig, TrainingConfigError
from bioasset.training.data import ManifestError, eval_resize_size, eval_transform
from bioasset.training.loop import ProgressEvent, ResumeError, TrainingResult, train_classifier
from bioasset.training.models import InitLoader, InitWeightsError, PretrainedWeightsUnavailable, UnknownArchitectureError

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
