"""How a classifier is trained: one plain dataclass that the Dagster ``Config`` mirrors field for field.

Every field has a default, so ``TrainingConfig()`` is the ResNet transfer-learning baseline
(resnet18, SGD with momentum, step schedule 7 / 0.1). Values are checked on construction; a bad
value raises :class:`TrainingConfigError` naming the field, the problem and the fix.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, fields
from typing import Any

#: Architectures offered by default (any torchvision classification builder name also works, and
#: ``tiny_cnn`` for tests and CPU demos on small images: see bioasset.training.models).
DEFAULT_ARCHITECTURES = ("resnet18", "resnet50", "efficientnet_b0", "mobilenet_v3_large", "convnext_tiny", "vit_b_16")
#: bioasset's own small CNN (bioasset.training.models), registered with torchvision's get_model for CPU demos.
TINY_CNN = "tiny_cnn"

OPTIMIZERS = ("sgd", "adamw")
LR_SCHEDULES = ("step", "cosine")
AUGMENTATIONS = ("crop_flip", "trivial_augment")
IMBALANCE_OPTIONS = ("none", "weighted_sampler", "loss_weights", "focal_loss")
DEVICES = ("auto", "cpu", "cuda")
PRECISIONS = ("auto", "bf16", "fp16", "fp32")

#: ``weights`` values that are not a checkpoint path or a model URI.
NO_WEIGHTS = "none"
IMAGENET_WEIGHTS = "imagenet"
#: URI schemes handed to the ``init_loader`` callable (MLflow model and run URIs).
MODEL_URI_SCHEMES = ("models:/", "runs:/", "mlflow-artifacts:/")


class TrainingConfigError(ValueError):
    """A training setting that cannot work; the message names the field and the fix."""


@dataclass(frozen=True)
class TrainingConfig:
    architecture: str = "resnet18"  # torchvision builder name (see DEFAULT_ARCHITECTURES) or tiny_cnn
    epochs: int = 20
    batch_size: int = 64
    image_size: int = 224  # square side the model sees (train crops and eval center crops)
    optimizer: str = "sgd"  # sgd (with momentum) | adamw
    learning_rate: float = 0.001
    momentum: float = 0.9  # sgd only
    weight_decay: float = 1e-4
    lr_schedule: str = "step"  # step: x gamma every step_epochs | cosine: linear warm-up, then cosine to 0
    step_epochs: int = 7
    gamma: float = 0.1
    warmup_epochs: float = 1.0  # cosine only; fractions of an epoch are allowed
    label_smoothing: float = 0.0
    augmentation: str = "crop_flip"  # crop_flip: RandomResizedCrop + horizontal flip | trivial_augment: also TrivialAugmentWide
    min_crop_scale: float = 0.08  # RandomResizedCrop's smallest area share; raise it when subjects are small in frame
    imbalance: str = "none"  # none | weighted_sampler | loss_weights | focal_loss
    focal_gamma: float = 2.0
    weights: str = NO_WEIGHTS  # none | imagenet | a checkpoint or bundle path | models:/… or runs:/… (needs init_loader)
    early_stopping_patience: int = 5  # epochs without a val-loss improvement before stopping; 0 turns it off
    early_stopping_min_delta: float = 0.0  # how much val loss must fall to count as an improvement
    seed: int = 0
    num_workers: int = 2  # DataLoader worker processes; 0 loads in the training process
    device: str = "auto"  # auto: cuda when present, else cpu
    precision: str = "auto"  # auto: bf16 autocast on GPUs that have it, else fp16; always fp32 on the CPU
    channels_last: bool = True  # CUDA only
    compile: bool = False  # torch.compile the model (the first epoch pays for compilation)
    deterministic: bool = False  # deterministic algorithms: slower, bit-for-bit repeatable on one machine
    log_every_n_steps: int = 0  # also call progress every N training steps; 0: once per epoch only

    def __post_init__(self) -> None:
        _check_positive(self, "epochs", "batch_size", "image_size", "step_epochs")
        _check_choice(self, "optimizer", OPTIMIZERS)
        _check_choice(self, "lr_schedule", LR_SCHEDULES)
        _check_choice(self, "augmentation", AUGMENTATIONS)
        _check_choice(self, "imbalance", IMBALANCE_OPTIONS)
        _check_choice(self, "device", DEVICES)
        _check_choice(self, "precision", PRECISIONS)
        _check_range(self, "learning_rate", 0.0, None)
        _check_range(self, "momentum", 0.0, 1.0)
        _check_range(self, "weight_decay", 0.0, None)
        _check_range(self, "gamma", 0.0, 1.0)
        _check_range(self, "warmup_epochs", 0.0, None)
        _check_range(self, "label_smoothing", 0.0, 0.99)
        _check_range(self, "focal_gamma", 0.0, None)
        _check_range(self, "early_stopping_min_delta", 0.0, None)
        if not 0.0 < self.min_crop_scale <= 1.0:
            _fail("min_crop_scale", self.min_crop_scale, "must be in (0, 1]", "use e.g. 0.08 (torchvision's default) or 0.5 for small subjects")
        for name in ("early_stopping_patience", "num_workers", "log_every_n_steps", "seed"):
            if getattr(self, name) < 0:
                _fail(name, getattr(self, name), "must not be negative", "pass 0 or more")
        if self.architecture.startswith("vit_") and self.image_size != 224:
            # torchvision ViTs fix their position embeddings to the builder's image size, and the
            # bundle rebuilds the model with the builder's defaults.
            _fail("image_size", self.image_size, f"{self.architecture} only takes 224x224 inputs", "set image_size: 224, or choose a CNN")
        if not self.weights:
            _fail("weights", self.weights, "is empty", f"pass {NO_WEIGHTS!r}, {IMAGENET_WEIGHTS!r}, a checkpoint path or a models:/ URI")

    @classmethod
    def from_dict(cls, values: dict[str, Any]) -> "TrainingConfig":
        """Build from a mapping (Dagster config, YAML, MLflow params), refusing unknown keys."""
        known = {f.name for f in fields(cls)}
        unknown = sorted(set(values) - known)
        if unknown:
            raise TrainingConfigError(
                f"training config: unknown field(s) {unknown}. Fix: use only {sorted(known)}"
            )
        return cls(**values)

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    @property
    def weights_kind(self) -> str:
        """none | imagenet | uri (needs an init loader) | path (a checkpoint file or bundle folder)."""
        if self.weights == NO_WEIGHTS:
            return "none"
        if self.weights == IMAGENET_WEIGHTS:
            return "imagenet"
        if self.weights.startswith(MODEL_URI_SCHEMES):
            return "uri"
        return "path"


def _fail(name: str, value: Any, problem: str, fix: str) -> None:
    raise TrainingConfigError(f"training config {name}={value!r}: {problem}. Fix: {fix}")


def _check_positive(config: TrainingConfig, *names: str) -> None:
    for name in names:
        value = getattr(config, name)
        if not isinstance(value, int) or value < 1:
            _fail(name, value, "must be a whole number of at least 1", f"pass e.g. {getattr(TrainingConfig, name)}")


def _check_choice(config: TrainingConfig, name: str, choices: tuple[str, ...]) -> None:
    value = getattr(config, name)
    if value not in choices:
        _fail(name, value, "is not one of the options", f"pass one of {list(choices)}")


def _check_range(config: TrainingConfig, name: str, low: float, high: float | None) -> None:
    value = getattr(config, name)
    if value < low or (high is not None and value > high):
        bound = f">= {low}" if high is None else f"in [{low}, {high}]"
        _fail(name, value, f"must be {bound}", f"pass a value {bound}")
