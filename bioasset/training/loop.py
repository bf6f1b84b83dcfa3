"""Train a classifier on a dataset version's manifest: ``train_classifier``.

- **Device.** CUDA when present, with bf16 (or fp16 + gradient scaling) autocast, channels_last
  and cudnn.benchmark; otherwise the CPU in fp32. ``torch.compile`` on request.
- **Checkpoints.** After every epoch, ``checkpoint.pt`` in the output folder holds the model,
  optimizer, scheduler, gradient scaler, epoch, early-stopping state, history and every RNG
  (torch, CUDA, numpy, python and the sampler's generator), written atomically. With
  ``resume=True`` a killed run continues after its last finished epoch and ends in the same
  state as a run that never stopped (bit for bit on the CPU with ``num_workers=0`` and
  ``deterministic=True``; with worker processes the workers' augmentation seeds are drawn anew
  on resume). A run that already finished only rewrites its bundle.
- **Early stopping** on the validation loss (plain cross-entropy whatever the training loss, so
  epochs compare alike); the bundle holds the weights of the best epoch (``best_model.pt``).
- **Progress.** ``progress(ProgressEvent)`` after every epoch (and every
  ``log_every_n_steps`` steps), for the Dagster log and MLflow metrics.

Output folder: ``checkpoint.pt``, ``best_model.pt`` (both usable as ``TrainingConfig.weights``)
and ``bundle/`` (:mod:`bioasset.classifier_bundle`).
"""

from __future__ import annotations

import hashlib
import io
import json
import math
import os
import random
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import fsspec
import numpy as np
import pandas as pd
import torch
from torch import nn
from torch.nn import functional as F

from bioasset.classifier_bundle import BundleMeta, ClassLabel, save_bundle
from bioasset.storage import atomic_write_bytes
from bioasset.training.config import TrainingConfig
from bioasset.training.data import (
    ManifestError,
    balanced_class_weights,
    build_labels,
    eval_resize_size,
    eval_transform,
    infer_label_rank,
    make_loader,
    manifest_dataset,
    prepare_manifest,
    train_sampler,
    train_transform,
)
from bioasset.training.losses import make_criterion
from bioasset.training.models import InitLoader, build_model, load_init_source, transfer_weights

CHECKPOINT_FILE = "checkpoint.pt"
BEST_MODEL_FILE = "best_model.pt"
BUNDLE_DIR = "bundle"
CHECKPOINT_FORMAT = 1

#: Settings that change how fast a run goes, not what it computes: a checkpoint written with other
#: values of these still resumes.
RUNTIME_FIELDS = frozenset({"num_workers", "log_every_n_steps", "device", "precision", "channels_last", "compile", "deterministic"})


class ResumeError(RuntimeError):
    pass


@dataclass
class ProgressEvent:
    kind: str  # "epoch": an epoch finished (metrics are its history record) | "step": mid-epoch
    epoch: int  # 1-based
    step: int  # optimizer steps so far, over the whole run
    metrics: dict[str, float]


ProgressCallback = Callable[[ProgressEvent], None]


@dataclass
class EarlyStopping:
    patience: int  # 0: never stop early
    min_delta: float
    best_loss: float = math.inf
    best_epoch: int = 0
    epochs_without_improvement: int = 0
    stopped: bool = False

    def update(self, epoch: int, loss: float) -> bool:
        """Record an epoch's validation loss; True if it is the best so far."""
        if loss < self.best_loss - self.min_delta or self.best_epoch == 0:
            self.best_loss, self.best_epoch, self.epochs_without_improvement = loss, epoch, 0
            return True
        self.epochs_without_improvement += 1
        self.stopped = self.patience > 0 and self.epochs_without_improvement >= self.patience
        return False


@dataclass
class TrainingResult:
    bundle_dir: Path
    best_epoch: int
    epochs_run: int  # epochs finished, over all resumes
    stopped_early: bool
    history: list[dict[str, Any]]  # one record per epoch, as given to progress
    images_per_s: float  # training images per second of training phase, over all epochs
    epoch_times: list[float]  # seconds per epoch, training plus validation
    device: str
    precision: str
    label_rank: str
    num_classes: int
    rows: dict[str, int]  # usable rows per split
    rejected_rows: pd.DataFrame  # photo_id, reason
    resumed_from_epoch: int | None  # None: started fresh
    init: dict[str, Any] | None  # where the starting weights came from (TransferReport.as_dict)
    checkpoint_path: Path

    def summary(self) -> dict[str, Any]:
        """Flat, JSON-friendly numbers for asset metadata and MLflow params."""
        return {
            "best_epoch": self.best_epoch,
            "epochs_run": self.epochs_run,
            "stopped_early": self.stopped_early,
            "images_per_s": round(self.images_per_s, 2),
            "mean_epoch_seconds": round(float(np.mean(self.epoch_times)), 3) if self.epoch_times else None,
            "device": self.device,
            "precision": self.precision,
            "num_classes": self.num_classes,
            **{f"{split}_rows": n for split, n in self.rows.items()},
            "rejected_rows": len(self.rejected_rows),
            "best_val_loss": self.history[self.best_epoch - 1]["val_loss"] if self.best_epoch else None,
            "best_val_accuracy": self.history[self.best_epoch - 1]["val_accuracy"] if self.best_epoch else None,
        }


@dataclass(frozen=True)
class Runtime:
    """Where and in what precision the model runs."""

    device: torch.device
    amp_dtype: torch.dtype | None  # None: fp32
    channels_last: bool

    @property
    def precision(self) -> str:
        return {None: "fp32", torch.bfloat16: "bf16", torch.float16: "fp16"}[self.amp_dtype]

    @property
    def pin_memory(self) -> bool:
        return self.device.type == "cuda"

    def autocast(self):
        return torch.autocast(self.device.type, dtype=self.amp_dtype, enabled=self.amp_dtype is not None)

    def images_to_device(self, images: torch.Tensor) -> torch.Tensor:
        memory_format = torch.channels_last if self.channels_last else torch.contiguous_format
        return images.to(self.device, non_blocking=True, memory_format=memory_format)


def resolve_runtime(device: str = "auto", precision: str = "auto", channels_last: bool = True) -> Runtime:
    """CUDA when present (or asked for), bf16 autocast where the GPU has it, else fp16; CPU in fp32."""
    cuda = torch.cuda.is_available()
    if device == "cuda" and not cuda:
        raise RuntimeError(
            "device=cuda: torch sees no CUDA device here. Fix: use device=auto or cpu, or run where a GPU and a CUDA build of torch are"
        )
    on_gpu = device == "cuda" or (device == "auto" and cuda)
    if not on_gpu:
        if precision == "fp16":
            raise RuntimeError("precision=fp16 on the CPU: fp16 autocast needs CUDA. Fix: use precision=auto (fp32) or bf16")
        return Runtime(torch.device("cpu"), torch.bfloat16 if precision == "bf16" else None, False)
    if precision == "auto":
        precision = "bf16" if torch.cuda.is_bf16_supported() else "fp16"
    dtype = {"bf16": torch.bfloat16, "fp16": torch.float16, "fp32": None}[precision]
    return Runtime(torch.device("cuda"), dtype, channels_last)


def train_classifier(
    manifest: pd.DataFrame,
    image_store_url: str,
    config: TrainingConfig,
    out_dir: str | os.PathLike,
    *,
    progress: ProgressCallback | None = None,
    resume: bool = True,
    init_loader: InitLoader | None = None,
    label_rank: str | None = None,
    dataset_info: dict[str, Any] | None = None,
    storage_options: dict[str, Any] | None = None,
) -> TrainingResult:
    """Train ``config.architecture`` on the manifest's train split, early-stop on its val split,
    and write the best epoch's model as a bundle in ``out_dir/bundle``.

    ``manifest``: a frozen dataset version (``bioasset.manifest_schema.VERSION_COLUMNS``); rows
    without an image path, a label or a known split are left out and returned in
    ``rejected_rows``. ``image_store_url``: root that ``image_path`` is relative to (a local path
    or any fsspec URL; ``storage_options`` go to :func:`bioasset.storage.filesystem_for`).
    ``label_rank``: inferred from the rank id columns when not given. ``dataset_info`` goes into
    ``BundleMeta.dataset``. ``init_loader`` resolves ``weights: models:/…`` URIs to a bundle folder.
    """
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    prepared = prepare_manifest(manifest)
    rank = label_rank or infer_label_rank(prepared.rows)
    labels = build_labels(prepared.rows, rank)
    train_rows, val_rows = prepared.split("train"), prepared.split("val")
    for split, rows in (("train", train_rows), ("val", val_rows)):
        if rows.empty:
            raise ManifestError(
                f"manifest: no usable {split} rows ({len(prepared.rejected)} rows rejected: {prepared.rejected_counts()}). "
                f"Fix: give the dataset spec a {split} ratio above 0 and freeze a version with images"
            )
    runtime = resolve_runtime(config.device, config.precision, config.channels_last)
    fingerprint = _fingerprint(config, labels, train_rows, val_rows)
    checkpoint = _load_checkpoint(out / CHECKPOINT_FILE, fingerprint) if resume else None

    with _determinism(config.deterministic, runtime):
        if checkpoint is None:
            _seed_everything(config.seed)
        model, init_report = _initial_model(config, labels, init_loader, fresh=checkpoint is None)
        model.to(runtime.device, memory_format=torch.channels_last if runtime.channels_last else torch.contiguous_format)
        load_options = dict(storage_options=storage_options, decode_size=config.image_size)
        train_set = manifest_dataset(train_rows, labels, image_store_url,
                                     train_transform(config.image_size, augmentation=config.augmentation, min_crop_scale=config.min_crop_scale),
                                     **load_options)
        val_set = manifest_dataset(val_rows, labels, image_store_url, eval_transform(config.image_size), **load_options)
        generator = torch.Generator().manual_seed(config.seed)
        train_loader = make_loader(
            train_set, batch_size=config.batch_size, num_workers=config.num_workers, pin_memory=runtime.pin_memory,
            sampler=train_sampler(train_set.targets, len(labels), weighted=config.imbalance == "weighted_sampler", generator=generator),
            generator=generator,
        )
        val_loader = make_loader(val_set, batch_size=config.batch_size, num_workers=config.num_workers, pin_memory=runtime.pin_memory)
        criterion = make_criterion(
            config.imbalance, class_weights=balanced_class_weights(train_set.targets, len(labels)),
            label_smoothing=config.label_smoothing, focal_gamma=config.focal_gamma,
        ).to(runtime.device)
        optimizer = make_optimizer(config, model)
        scheduler = torch.optim.lr_scheduler.LambdaLR(optimizer, lr_factor(config, len(train_loader)))
        scaler = torch.amp.GradScaler(runtime.device.type, enabled=runtime.amp_dtype == torch.float16)
        stopper = EarlyStopping(config.early_stopping_patience, config.early_stopping_min_delta)
        history: list[dict[str, Any]] = []
        resumed_from = None
        if checkpoint is not None:
            resumed_from = checkpoint["epoch"]
            model.load_state_dict(checkpoint["model"])
            optimizer.load_state_dict(checkpoint["optimizer"])
            scheduler.load_state_dict(checkpoint["scheduler"])
            scaler.load_state_dict(checkpoint["scaler"])
            stopper = EarlyStopping(**checkpoint["early_stopping"])
            history = list(checkpoint["history"])
            init_report = checkpoint["init"]
            _restore_rng(checkpoint["rng"], generator)
        forward = torch.compile(model) if config.compile else model
        saved = dict(architecture=config.architecture, labels=[asdict(label) for label in labels], label_rank=rank)

        while len(history) < config.epochs and not stopper.stopped:
            epoch = len(history) + 1
            started = time.perf_counter()
            lr = optimizer.param_groups[0]["lr"]
            train_stats = train_one_epoch(
                forward, train_loader, criterion, optimizer, scheduler, scaler, runtime,
                epoch=epoch, progress=progress, log_every=config.log_every_n_steps,
            )
            val_stats = _validation_metrics(*predict_logits(forward, val_loader, runtime))
            improved = stopper.update(epoch, val_stats["val_loss"])
            epoch_seconds = time.perf_counter() - started
            record = {"epoch": epoch, "lr": lr, **train_stats, **val_stats, "epoch_seconds": epoch_seconds, "is_best": improved}
            history.append(record)
            model_state = _cpu_state(model)
            if improved:
                _atomic_torch_save({"model": model_state, **saved}, out / BEST_MODEL_FILE)
            _atomic_torch_save(
                {
                    "format": CHECKPOINT_FORMAT,
                    "fingerprint": fingerprint,
                    "epoch": epoch,
                    "model": model_state,
                    "optimizer": optimizer.state_dict(),
                    "scheduler": scheduler.state_dict(),
                    "scaler": scaler.state_dict(),
                    "early_stopping": asdict(stopper),
                    "history": history,
                    "init": init_report,
                    "rng": _rng_state(generator),
                    **saved,
                },
                out / CHECKPOINT_FILE,
            )
            if progress is not None:
                progress(ProgressEvent("epoch", epoch, train_stats["step"], record))

    train_seconds = sum(r["train_seconds"] for r in history)
    images_per_s = sum(r["train_images"] for r in history) / train_seconds if train_seconds else 0.0
    result = TrainingResult(
        bundle_dir=out / BUNDLE_DIR,
        best_epoch=stopper.best_epoch,
        epochs_run=len(history),
        stopped_early=stopper.stopped,
        history=history,
        images_per_s=images_per_s,
        epoch_times=[r["epoch_seconds"] for r in history],
        device=str(runtime.device),
        precision=runtime.precision,
        label_rank=rank,
        num_classes=len(labels),
        rows={split: int((prepared.rows["split"] == split).sum()) for split in ("train", "val", "test")},
        rejected_rows=prepared.rejected,
        resumed_from_epoch=resumed_from,
        init=init_report,
        checkpoint_path=out / CHECKPOINT_FILE,
    )
    best = torch.load(out / BEST_MODEL_FILE, map_location="cpu", weights_only=True)["model"]
    meta = BundleMeta(
        architecture=config.architecture,
        labels=labels,
        image_size=config.image_size,
        label_rank=rank,
        dataset=dict(dataset_info or {}),
        extra={
            "resize_size": eval_resize_size(config.image_size),
            "config": config.to_dict(),
            "training": {**result.summary(), "epoch_times": result.epoch_times, "init": init_report},
        },
    )
    save_bundle(best, meta, result.bundle_dir)
    return result


def lr_factor(config: TrainingConfig, steps_per_epoch: int) -> Callable[[int], float]:
    """Learning-rate multiplier by optimizer step (the scheduler steps every batch).

    ``step``: ``gamma ** (epoch // step_epochs)``. ``cosine``: linear warm-up over
    ``warmup_epochs``, then half a cosine down to 0 at the last step.
    """
    if config.lr_schedule == "step":
        return lambda step: config.gamma ** ((step // steps_per_epoch) // config.step_epochs)
    warmup = config.warmup_epochs * steps_per_epoch
    total = config.epochs * steps_per_epoch

    def cosine(step: int) -> float:
        if step < warmup:
            return (step + 1) / warmup
        return 0.5 * (1 + math.cos(math.pi * min(1.0, (step - warmup) / max(1.0, total - warmup))))

    return cosine


@torch.inference_mode()
def predict_logits(model: nn.Module, loader, runtime: Runtime) -> tuple[torch.Tensor, torch.Tensor]:
    """(float32 logits on the CPU, targets) for every batch of ``loader``, in order."""
    model.eval()
    logits, targets = [], []
    for images, target in loader:
        with runtime.autocast():
            out = model(runtime.images_to_device(images))
        logits.append(out.float().cpu())
        targets.append(target)
    return torch.cat(logits), torch.cat(targets)


def train_one_epoch(model, loader, criterion, optimizer, scheduler, scaler, runtime: Runtime, *,
                    epoch: int, progress: ProgressCallback | None = None, log_every: int = 0) -> dict[str, Any]:
    """One pass over ``loader`` (any iterable of (images, targets) batches; tensors already on the
    device pass through untouched, which is how ``bench/train.py`` times pure compute).
    Returns the epoch's training loss, accuracy, images, seconds and images/s."""
    model.train()
    loss_sum = torch.zeros((), device=runtime.device)
    correct = torch.zeros((), device=runtime.device, dtype=torch.int64)
    seen = 0
    started = time.perf_counter()
    for images, target in loader:
        images, target = runtime.images_to_device(images), target.to(runtime.device, non_blocking=True)
        with runtime.autocast():
            logits = model(images)
        loss = criterion(logits.float(), target)
        optimizer.zero_grad(set_to_none=True)
        scaler.scale(loss).backward()
        scaler.step(optimizer)
        scaler.update()
        scheduler.step()
        # Sums stay on the device: no host sync per step.
        loss_sum += loss.detach() * len(target)
        correct += (logits.argmax(1) == target).sum()
        seen += len(target)
        step = scheduler.last_epoch
        if progress is not None and log_every and step % log_every == 0:
            progress(ProgressEvent("step", epoch, step, {"train_loss": float(loss.detach()), "lr": optimizer.param_groups[0]["lr"]}))
    if runtime.device.type == "cuda":
        torch.cuda.synchronize()
    seconds = time.perf_counter() - started
    return {
        "train_loss": float(loss_sum) / max(seen, 1),
        "train_accuracy": float(correct) / max(seen, 1),
        "train_images": seen,
        "train_seconds": seconds,
        "images_per_s": seen / seconds if seconds else 0.0,
        "step": scheduler.last_epoch,
    }


def _validation_metrics(logits: torch.Tensor, target: torch.Tensor) -> dict[str, float]:
    k = min(5, logits.shape[1])
    top5 = (logits.topk(k, dim=1).indices == target[:, None]).any(dim=1)
    return {
        "val_loss": float(F.cross_entropy(logits, target)),
        "val_accuracy": float((logits.argmax(1) == target).float().mean()),
        "val_top5_accuracy": float(top5.float().mean()),
    }


def _initial_model(config: TrainingConfig, labels: list[ClassLabel], init_loader: InitLoader | None, *, fresh: bool):
    """The model before training, and where its weights came from. A resumed run skips the
    starting weights: the checkpoint replaces them anyway (and ImageNet may be offline)."""
    kind = config.weights_kind
    model = build_model(config.architecture, len(labels), imagenet=fresh and kind == "imagenet")
    if not fresh or kind == "none":
        return model, None
    if kind == "imagenet":
        return model, {"source": "imagenet"}
    source = load_init_source(config.weights, kind, init_loader=init_loader)
    return model, transfer_weights(model, config.architecture, labels, source).as_dict()


def make_optimizer(config: TrainingConfig, model: nn.Module) -> torch.optim.Optimizer:
    if config.optimizer == "sgd":
        return torch.optim.SGD(model.parameters(), lr=config.learning_rate, momentum=config.momentum, weight_decay=config.weight_decay)
    return torch.optim.AdamW(model.parameters(), lr=config.learning_rate, weight_decay=config.weight_decay)


def _fingerprint(config: TrainingConfig, labels: list[ClassLabel], train_rows: pd.DataFrame, val_rows: pd.DataFrame) -> dict[str, Any]:
    """What a checkpoint must agree on to be resumed: the settings that change the result and the data."""
    digest = hashlib.sha256()
    for rows in (train_rows, val_rows):
        digest.update(json.dumps(rows["photo_id"].astype("int64").tolist()).encode())
        digest.update(json.dumps(rows["image_path"].astype(str).tolist()).encode())
    return {
        **{k: v for k, v in config.to_dict().items() if k not in RUNTIME_FIELDS},
        "label_ids": [label.label_id for label in labels],
        "rows_sha256": digest.hexdigest(),
    }


def _load_checkpoint(path: Path, fingerprint: dict[str, Any]) -> dict[str, Any] | None:
    if not path.exists():
        return None
    checkpoint = torch.load(path, map_location="cpu", weights_only=True)
    if checkpoint.get("format") != CHECKPOINT_FORMAT:
        raise ResumeError(
            f"{path}: checkpoint format {checkpoint.get('format')!r}, this code reads {CHECKPOINT_FORMAT}. "
            f"Fix: train into a fresh folder, or pass resume=False to start over here"
        )
    saved = checkpoint["fingerprint"]
    differing = sorted(k for k in set(saved) | set(fingerprint) if saved.get(k) != fingerprint.get(k))
    if differing:
        raise ResumeError(
            f"{path} was written for other settings or data: {differing} differ. "
            f"Fix: train into a fresh folder, pass resume=False to start over here, or restore the earlier settings"
        )
    return checkpoint


def _cpu_state(model: nn.Module) -> dict[str, torch.Tensor]:
    return {k: v.detach().to("cpu", copy=True) for k, v in model.state_dict().items()}


_LOCAL_FS = fsspec.filesystem("file")


def _atomic_torch_save(obj: Any, path: Path) -> None:
    buffer = io.BytesIO()
    torch.save(obj, buffer)
    atomic_write_bytes(_LOCAL_FS, str(path), buffer.getvalue())


def _seed_everything(seed: int) -> None:
    random.seed(seed)
    np.random.seed(seed)
    torch.manual_seed(seed)  # also every CUDA device


def _rng_state(generator: torch.Generator) -> dict[str, Any]:
    """Every RNG as tensors and numbers, so the checkpoint loads with ``weights_only=True``."""
    _, keys, pos, has_gauss, cached_gaussian = np.random.get_state()
    version, python_state, gauss_next = random.getstate()
    return {
        "torch": torch.get_rng_state(),
        "cuda": torch.cuda.get_rng_state_all() if torch.cuda.is_available() else [],
        "numpy": {"keys": torch.from_numpy(keys.astype(np.int64)), "pos": pos, "has_gauss": has_gauss, "cached_gaussian": cached_gaussian},
        "python": {"version": version, "state": torch.tensor(python_state, dtype=torch.int64), "gauss_next": gauss_next},
        "sampler": generator.get_state(),
    }


def _restore_rng(state: dict[str, Any], generator: torch.Generator) -> None:
    torch.set_rng_state(state["torch"])
    if state["cuda"] and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(state["cuda"])
    numpy_state = state["numpy"]
    np.random.set_state(("MT19937", numpy_state["keys"].numpy().astype(np.uint32), numpy_state["pos"],
                         numpy_state["has_gauss"], numpy_state["cached_gaussian"]))
    python_state = state["python"]
    random.setstate((python_state["version"], tuple(python_state["state"].tolist()), python_state["gauss_next"]))
    generator.set_state(state["sampler"])


@contextmanager
def _determinism(enabled: bool, runtime: Runtime) -> Iterator[None]:
    """Deterministic algorithms for this run only; otherwise let cuDNN pick the fastest kernels."""
    before = torch.are_deterministic_algorithms_enabled(), torch.backends.cudnn.benchmark
    if enabled:
        os.environ.setdefault("CUBLAS_WORKSPACE_CONFIG", ":4096:8")  # cuBLAS needs it to be deterministic
        torch.use_deterministic_algorithms(True)
        torch.backends.cudnn.benchmark = False
    elif runtime.device.type == "cuda":
        torch.backends.cudnn.benchmark = True
    try:
        yield
    finally:
        torch.use_deterministic_algorithms(before[0])
        torch.backends.cudnn.benchmark = before[1]
