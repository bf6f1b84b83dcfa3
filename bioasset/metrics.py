"""Evaluate a classifier bundle on a split of its dataset version: numbers, tables and plots.

``evaluate_classifier`` runs the bundle over the split and hands the class probabilities to
``evaluate_predictions``, which computes (numpy and scikit-learn):

- top-1, top-5, mean-per-class accuracy and Cohen's kappa;
- per class: support, sensitivity (recall), specificity, fall-out and precision;
- the confusion matrix (PNG and CSV);
- a confidence-threshold sweep: accuracy, kappa and coverage of the predictions at or above
  each threshold (PNG and CSV), and the abstention threshold (:class:`AbstentionThreshold`): the
  lowest confidence whose accepted predictions reach ``target_precision`` on the split that chose
  it, with coverage and accuracy at that threshold on the split evaluated. It belongs in
  ``BundleMeta.threshold`` (``write_threshold``): predictions below it abstain ("not sure",
  :data:`ABSTAIN`). Choose it on the val split (``threshold_split``) and pass it to the test
  evaluation, so that the test numbers at the threshold are out of sample;
- hierarchical accuracy: at every rank above the label rank, the share of predictions whose
  taxon at that rank is right (a wrong species of the right genus still counts for genus);
- expected calibration error with a reliability diagram (PNG and CSV).

Artifacts are written atomically into ``out_dir`` and returned by file name.
"""

from __future__ import annotations

import io
import json
import logging
import math
import os
import time
import warnings
from collections.abc import Sequence
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

import fsspec
import numpy as np
import pandas as pd
import torch
from matplotlib.figure import Figure
from sklearn.exceptions import UndefinedMetricWarning
from sklearn.metrics import cohen_kappa_score, multilabel_confusion_matrix

from bioasset.classifier_bundle import MODEL_FILE, BundleMeta, ClassLabel, load_bundle, load_bundle_meta, save_bundle
from bioasset.inat_format import MAIN_RANKS
from bioasset.storage import atomic_write_bytes
from bioasset.training.data import ManifestError, class_indices, eval_transform, make_loader, manifest_dataset, prepare_manifest
from bioasset.training.loop import predict_logits, resolve_runtime

#: Predicted index of an abstention: top-1 probability below the bundle's threshold.
ABSTAIN = -1
CALIBRATION_BINS = 15
SWEEP_THRESHOLDS = np.round(np.linspace(0.0, 1.0, 101), 2)
#: The abstention threshold is chosen on this split: held out from training, and not the test
#: split it is reported on. ``THRESHOLD_FALLBACK_SPLIT`` is used when it is too small.
THRESHOLD_SPLIT = "val"
THRESHOLD_FALLBACK_SPLIT = "test"
#: Fewer usable rows than this of any class in ``THRESHOLD_SPLIT`` make it too small to choose on.
MIN_THRESHOLD_ROWS_PER_CLASS = 1

_LOCAL_FS = fsspec.filesystem("file")
logger = logging.getLogger(__name__)


@dataclass(frozen=True)
class AbstentionThreshold:
    """Predictions whose top-1 probability is below ``value`` abstain ("not sure").

    ``value`` is the lowest confidence whose accepted predictions on ``split`` reach
    ``target_precision``; None when no confidence does, and then nothing abstains (as
    ``BundleMeta.threshold = None`` means).
    """

    value: float | None
    split: str  # the split whose predictions chose it
    target_precision: float

    @classmethod
    def choose(cls, y_true: np.ndarray, probabilities: np.ndarray, target_precision: float, *, split: str) -> "AbstentionThreshold":
        if not 0.0 < target_precision <= 1.0:
            raise ValueError(f"target_precision={target_precision}: must be in (0, 1]. Fix: pass e.g. 0.95")
        return cls(choose_threshold(y_true, probabilities, target_precision), split, target_precision)


@dataclass
class Evaluation:
    metrics: dict[str, Any]  # flat numbers (None where undefined), also in metrics.json
    per_class: pd.DataFrame  # one row per class, also per_class.csv
    artifacts: dict[str, Path]  # file name -> path in out_dir
    threshold: AbstentionThreshold  # chosen on this split, or given (chosen on another)
    threshold_sweep: pd.DataFrame


def evaluate_classifier(
    bundle_dir: str | os.PathLike,
    manifest: pd.DataFrame,
    image_store_url: str,
    *,
    split: str = "test",
    target_precision: float = 0.95,
    threshold: AbstentionThreshold | None = None,
    out_dir: str | os.PathLike,
    batch_size: int = 64,
    num_workers: int = 0,
    device: str = "auto",
    storage_options: dict[str, Any] | None = None,
) -> Evaluation:
    """Run the bundle over ``split`` of ``manifest`` and evaluate its predictions.

    ``threshold``: an abstention threshold chosen on another split (val), applied here; without
    it one is chosen on ``split`` for ``target_precision``.

    Rows whose label the bundle does not know (a class added after training) cannot be scored;
    they are counted in ``rows_unknown_label`` and left out, as are the manifest's unusable rows
    (``rows_rejected``). ``metrics`` also carries the training speed from the bundle.
    """
    model, meta = load_bundle(bundle_dir)
    prepared = prepare_manifest(manifest)
    rows = prepared.split(split)
    known = class_indices(rows, meta.labels) >= 0
    if not known.any():
        raise ManifestError(
            f"manifest: no {split} rows with a label this bundle knows ({len(rows)} {split} rows, "
            f"{len(prepared.rejected)} rejected). Fix: evaluate on the dataset version the bundle was trained on, or on a split that has rows"
        )
    runtime = resolve_runtime(device)
    model.to(runtime.device)
    dataset = manifest_dataset(rows[known], meta.labels, image_store_url, eval_transform(meta.image_size, meta.mean, meta.std),
                               storage_options=storage_options, decode_size=meta.image_size)
    loader = make_loader(dataset, batch_size=batch_size, num_workers=num_workers, pin_memory=runtime.pin_memory)
    started = time.perf_counter()
    logits, targets = predict_logits(model, loader, runtime)
    seconds = time.perf_counter() - started
    training = meta.extra.get("training", {})
    context = {
        "rows_unknown_label": int((~known).sum()),
        "rows_rejected": len(prepared.rejected),
        "eval_images_per_s": len(targets) / seconds if seconds else None,
        "train_images_per_s": training.get("images_per_s"),
        "mean_epoch_seconds": training.get("mean_epoch_seconds"),
    }
    probabilities = torch.softmax(logits, dim=1).numpy()
    return evaluate_predictions(targets.numpy(), probabilities, meta.labels, label_rank=meta.label_rank, split=split,
                                target_precision=target_precision, threshold=threshold, out_dir=out_dir, context=context)


def evaluate_predictions(
    y_true: np.ndarray,
    probabilities: np.ndarray,
    labels: Sequence[ClassLabel],
    *,
    label_rank: str,
    split: str = "test",
    target_precision: float = 0.95,
    threshold: AbstentionThreshold | None = None,
    out_dir: str | os.PathLike,
    context: dict[str, Any] | None = None,
) -> Evaluation:
    """Every metric, table and plot for class probabilities (n, K) of rows of ``split`` against
    their true indices (n,). ``threshold``: as in :func:`evaluate_classifier`."""
    y_true = np.asarray(y_true, dtype=np.int64)
    probabilities = np.asarray(probabilities, dtype=np.float64)
    if threshold is None:
        threshold = AbstentionThreshold.choose(y_true, probabilities, target_precision, split=split)
    num_classes = len(labels)
    y_pred = probabilities.argmax(axis=1)
    sweep = threshold_sweep(y_true, probabilities)
    ece, calibration = expected_calibration_error(y_true, probabilities)
    per_class = per_class_table(y_true, y_pred, labels)
    # What the bundle will do with this threshold: a None threshold abstains on nothing.
    accepted = apply_threshold(probabilities, threshold.value) != ABSTAIN
    metrics: dict[str, Any] = {
        **(context or {}),
        "split": split,
        "images": len(y_true),
        "classes": num_classes,
        "top1_accuracy": top_k_accuracy(y_true, probabilities, 1),
        "top5_accuracy": top_k_accuracy(y_true, probabilities, 5),
        "mean_per_class_accuracy": mean_per_class_accuracy(y_true, y_pred, num_classes),
        "cohen_kappa": cohen_kappa(y_true, y_pred, num_classes),
        "expected_calibration_error": ece,
        "target_precision": threshold.target_precision,
        "threshold": threshold.value,
        "threshold_split": threshold.split,
        "coverage_at_threshold": float(accepted.mean()),
        "accuracy_at_threshold": _mean_or_none(y_pred[accepted] == y_true[accepted]),
        "kappa_at_threshold": cohen_kappa(y_true[accepted], y_pred[accepted], num_classes) if accepted.any() else None,
        **{f"{rank}_accuracy": value for rank, value in hierarchical_accuracy(y_true, y_pred, labels, label_rank).items()},
    }
    metrics = {k: _plain(v) for k, v in metrics.items()}
    out = Path(out_dir)
    names = display_names(labels)
    matrix = pd.DataFrame(confusion_counts(y_true, y_pred, num_classes), index=pd.Index(names, name="true"), columns=pd.Index(names, name="predicted"))
    artifacts = {
        "confusion_matrix.csv": _write_csv(matrix, out / "confusion_matrix.csv"),
        "confusion_matrix.png": _write_figure(_confusion_figure(matrix), out / "confusion_matrix.png"),
        "threshold_sweep.csv": _write_csv(sweep, out / "threshold_sweep.csv", index=False),
        "threshold_sweep.png": _write_figure(_sweep_figure(sweep, threshold, split), out / "threshold_sweep.png"),
        "calibration.csv": _write_csv(calibration, out / "calibration.csv", index=False),
        "reliability_diagram.png": _write_figure(_reliability_figure(calibration, ece), out / "reliability_diagram.png"),
        "per_class.csv": _write_csv(per_class, out / "per_class.csv", index=False),
    }
    artifacts["metrics.json"] = out / "metrics.json"
    atomic_write_bytes(_LOCAL_FS, str(artifacts["metrics.json"]), json.dumps(metrics, indent=2, sort_keys=True).encode())
    return Evaluation(metrics, per_class, artifacts, threshold, sweep)


# --- metrics on predictions ---------------------------------------------------------------


def top_k_accuracy(y_true: np.ndarray, probabilities: np.ndarray, k: int) -> float:
    """Share of rows whose true class is among the k most probable (k capped at the class count)."""
    k = min(k, probabilities.shape[1])
    top = np.argsort(-probabilities, axis=1, kind="stable")[:, :k]
    return float((top == np.asarray(y_true)[:, None]).any(axis=1).mean())


def confusion_counts(y_true: np.ndarray, y_pred: np.ndarray, num_classes: int) -> np.ndarray:
    """(K, K) counts: rows are true classes, columns predicted ones."""
    return np.bincount(np.asarray(y_true) * num_classes + np.asarray(y_pred), minlength=num_classes**2).reshape(num_classes, num_classes)


def mean_per_class_accuracy(y_true: np.ndarray, y_pred: np.ndarray, num_classes: int) -> float:
    """Recall averaged over the classes that occur in ``y_true`` (balanced accuracy)."""
    matrix = confusion_counts(y_true, y_pred, num_classes)
    support = matrix.sum(axis=1)
    present = support > 0
    return float((np.diag(matrix)[present] / support[present]).mean())


def cohen_kappa(y_true: np.ndarray, y_pred: np.ndarray, num_classes: int) -> float | None:
    """Cohen's kappa; None when chance agreement is total (every row in one class)."""
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", UndefinedMetricWarning)  # the undefined case is reported as None
        value = cohen_kappa_score(y_true, y_pred, labels=list(range(num_classes)))
    return None if math.isnan(value) else float(value)


def per_class_table(y_true: np.ndarray, y_pred: np.ndarray, labels: Sequence[ClassLabel]) -> pd.DataFrame:
    """One row per class: support, predicted, TP/FP/FN/TN, sensitivity, specificity, fall-out, precision.

    A ratio whose denominator is 0 (e.g. precision of a class never predicted) is NaN.
    """
    counts = multilabel_confusion_matrix(y_true, y_pred, labels=list(range(len(labels)))).astype(np.int64)
    tn, fp, fn, tp = counts[:, 0, 0], counts[:, 0, 1], counts[:, 1, 0], counts[:, 1, 1]
    table = pd.DataFrame({
        "index": [label.index for label in labels],
        "label_id": [label.label_id for label in labels],
        "label_name": [label.label_name for label in labels],
        "support": tp + fn,
        "predicted": tp + fp,
        "true_positives": tp,
        "false_positives": fp,
        "false_negatives": fn,
        "true_negatives": tn,
    })
    with np.errstate(divide="ignore", invalid="ignore"):
        table["sensitivity"] = tp / (tp + fn)
        table["specificity"] = tn / (tn + fp)
        table["fall_out"] = fp / (fp + tn)
        table["precision"] = tp / (tp + fp)
    return table


def hierarchical_accuracy(y_true: np.ndarray, y_pred: np.ndarray, labels: Sequence[ClassLabel], label_rank: str) -> dict[str, float | None]:
    """Rank -> share of rows whose predicted class has the true class's taxon at that rank,
    for every main rank above ``label_rank``. Rows whose true class has no taxon at a rank
    (a missing rank) are not counted at that rank; None if no row is."""
    result: dict[str, float | None] = {}
    for rank in MAIN_RANKS[: MAIN_RANKS.index(label_rank)]:
        ids = np.array([_rank_id(label, rank) for label in labels], dtype=np.float64)  # NaN: missing rank
        true_ids, pred_ids = ids[y_true], ids[y_pred]
        counted = ~np.isnan(true_ids)
        result[rank] = _mean_or_none(true_ids[counted] == pred_ids[counted])
    return result


def _rank_id(label: ClassLabel, rank: str) -> float:
    taxon = label.path.get(rank) or {}
    return math.nan if taxon.get("id") is None else float(taxon["id"])


def expected_calibration_error(y_true: np.ndarray, probabilities: np.ndarray, n_bins: int = CALIBRATION_BINS) -> tuple[float, pd.DataFrame]:
    """ECE over equal-width bins of top-1 confidence: sum over bins of (share of rows) x
    |accuracy - mean confidence|. Bins are (low, high], the first one also takes 0."""
    confidence = probabilities.max(axis=1)
    correct = probabilities.argmax(axis=1) == y_true
    edges = np.linspace(0.0, 1.0, n_bins + 1)
    which = np.clip(np.searchsorted(edges, confidence, side="left") - 1, 0, n_bins - 1)
    count = np.bincount(which, minlength=n_bins)
    with np.errstate(divide="ignore", invalid="ignore"):
        mean_confidence = np.bincount(which, weights=confidence, minlength=n_bins) / count
        accuracy = np.bincount(which, weights=correct.astype(np.float64), minlength=n_bins) / count
    gap = np.where(count > 0, np.abs(accuracy - mean_confidence), 0.0)
    ece = float((count / max(len(y_true), 1) * gap).sum())
    table = pd.DataFrame({"low": edges[:-1], "high": edges[1:], "count": count, "mean_confidence": mean_confidence, "accuracy": accuracy})
    return ece, table


def threshold_sweep(y_true: np.ndarray, probabilities: np.ndarray, thresholds: np.ndarray = SWEEP_THRESHOLDS) -> pd.DataFrame:
    """At each threshold: coverage (share of rows with top-1 probability >= it), and the accuracy
    and kappa of those rows (NaN where none are left)."""
    num_classes = probabilities.shape[1]
    confidence = probabilities.max(axis=1)
    y_pred = probabilities.argmax(axis=1)
    records = []
    for threshold in thresholds:
        accepted = confidence >= threshold
        kappa = cohen_kappa(y_true[accepted], y_pred[accepted], num_classes) if accepted.any() else None
        records.append({
            "threshold": float(threshold),
            "coverage": float(accepted.mean()),
            "accepted": int(accepted.sum()),
            "accuracy": _mean_or_none(y_pred[accepted] == y_true[accepted]),
            "kappa": kappa,
        })
    return pd.DataFrame.from_records(records).astype({"accuracy": float, "kappa": float})


def choose_threshold(y_true: np.ndarray, probabilities: np.ndarray, target_precision: float) -> float | None:
    """The lowest top-1 probability t such that the predictions with probability >= t are right
    at least ``target_precision`` of the time (so the most rows are answered); None when no t does.

    Exact: every distinct confidence is a candidate, not a grid.
    """
    confidence = probabilities.max(axis=1)
    correct = probabilities.argmax(axis=1) == y_true
    order = np.argsort(-confidence, kind="stable")
    confidence, correct = confidence[order], correct[order]
    precision = np.cumsum(correct) / np.arange(1, len(correct) + 1)
    # Rows tied on confidence are accepted together: only the last row of each tie is a cut.
    last_of_tie = np.append(confidence[1:] != confidence[:-1], True)
    reaching = np.flatnonzero(last_of_tie & (precision >= target_precision))
    return None if reaching.size == 0 else float(confidence[reaching[-1]])


def threshold_split(manifest: pd.DataFrame, labels: Sequence[ClassLabel]) -> tuple[str, str]:
    """(split, note): the split to choose the abstention threshold on, for a bundle with ``labels``.

    :data:`THRESHOLD_SPLIT` (val) when it holds at least :data:`MIN_THRESHOLD_ROWS_PER_CLASS`
    usable rows of every class; otherwise :data:`THRESHOLD_FALLBACK_SPLIT` (test), with a note
    saying which classes were short, since a threshold chosen on test makes the test numbers at
    the threshold in-sample. The note is empty when val is used.
    """
    rows = prepare_manifest(manifest).split(THRESHOLD_SPLIT)
    counts = np.bincount(class_indices(rows, labels) + 1, minlength=len(labels) + 1)[1:]  # +1: unknown labels (-1) go to bin 0
    short = [label for label, count in zip(labels, counts) if count < MIN_THRESHOLD_ROWS_PER_CLASS]
    if not short:
        return THRESHOLD_SPLIT, ""
    names = ", ".join(label.label_name for label in short[:5]) + (f" and {len(short) - 5} more" if len(short) > 5 else "")
    note = (
        f"the {THRESHOLD_SPLIT} split has fewer than {MIN_THRESHOLD_ROWS_PER_CLASS} usable rows of {len(short)} of the "
        f"{len(labels)} classes ({names}), so the threshold was chosen on the {THRESHOLD_FALLBACK_SPLIT} split and the "
        f"{THRESHOLD_FALLBACK_SPLIT} coverage and accuracy at the threshold are in-sample. "
        f"Fix: give the dataset spec a larger {THRESHOLD_SPLIT} ratio, or more photos per class"
    )
    logger.warning("Abstention threshold: %s", note)
    return THRESHOLD_FALLBACK_SPLIT, note


def apply_threshold(probabilities: np.ndarray, threshold: float | None) -> np.ndarray:
    """Predicted class index per row, :data:`ABSTAIN` where the top-1 probability is below ``threshold``."""
    predicted = probabilities.argmax(axis=1)
    if threshold is None:
        return predicted
    return np.where(probabilities.max(axis=1) >= threshold, predicted, ABSTAIN)


def write_threshold(bundle_dir: str | os.PathLike, threshold: float | None) -> BundleMeta:
    """Store ``threshold`` in the bundle's ``classifier.json`` (the bundle is rewritten atomically)."""
    meta = load_bundle_meta(bundle_dir)
    state = torch.load(Path(bundle_dir) / MODEL_FILE, map_location="cpu", weights_only=True)
    meta = replace(meta, threshold=threshold)
    save_bundle(state, meta, bundle_dir)
    return meta


def display_names(labels: Sequence[ClassLabel]) -> list[str]:
    """Label names, with the label id added where a name repeats (genus names are not unique)."""
    counts = pd.Series([label.label_name for label in labels]).value_counts()
    return [label.label_name if counts[label.label_name] == 1 else f"{label.label_name} ({label.label_id})" for label in labels]


def _mean_or_none(values: np.ndarray) -> float | None:
    return float(values.mean()) if len(values) else None


def _plain(value: Any) -> Any:
    """JSON-ready: numpy scalars to Python, NaN to None."""
    if isinstance(value, np.generic):
        value = value.item()
    if isinstance(value, float) and math.isnan(value):
        return None
    return value


# --- artifacts ----------------------------------------------------------------------------


def _write_csv(frame: pd.DataFrame, path: Path, *, index: bool = True) -> Path:
    atomic_write_bytes(_LOCAL_FS, str(path), frame.to_csv(index=index).encode())
    return path


def _write_figure(figure: Figure, path: Path) -> Path:
    buffer = io.BytesIO()
    figure.savefig(buffer, format="png", dpi=100, bbox_inches="tight")
    atomic_write_bytes(_LOCAL_FS, str(path), buffer.getvalue())
    return path


def _confusion_figure(matrix: pd.DataFrame) -> Figure:
    """Rows normalised to recall for colour; counts written in the cells when there are few classes."""
    k = len(matrix)
    side = min(30.0, max(5.0, 0.28 * k + 2))
    figure = Figure(figsize=(side, side))
    axes = figure.add_subplot()
    counts = matrix.to_numpy()
    support = counts.sum(axis=1, keepdims=True)
    share = np.divide(counts, support, out=np.zeros(counts.shape, dtype=float), where=support > 0)
    image = axes.imshow(share, cmap="Blues", vmin=0, vmax=1)
    figure.colorbar(image, ax=axes, fraction=0.046, pad=0.04, label="share of the true class")
    if k <= 60:
        axes.set_xticks(range(k), matrix.columns, rotation=90, fontsize=7)
        axes.set_yticks(range(k), matrix.index, fontsize=7)
    if k <= 20:
        for (i, j), value in np.ndenumerate(counts):
            if value:
                axes.text(j, i, str(value), ha="center", va="center", fontsize=7, color="white" if share[i, j] > 0.5 else "black")
    axes.set_xlabel("predicted")
    axes.set_ylabel("true")
    axes.set_title(f"Confusion matrix ({int(counts.sum())} images, {k} classes)")
    return figure


def _sweep_figure(sweep: pd.DataFrame, threshold: AbstentionThreshold, split: str) -> Figure:
    figure = Figure(figsize=(7, 4.5))
    axes = figure.add_subplot()
    for column in ("accuracy", "kappa", "coverage"):
        axes.plot(sweep["threshold"], sweep[column], label=column)
    axes.axhline(threshold.target_precision, color="grey", linestyle=":", label=f"target precision {threshold.target_precision:g}")
    if threshold.value is not None:
        axes.axvline(threshold.value, color="black", linestyle="--", label=f"threshold {threshold.value:.3f} (chosen on {threshold.split})")
    axes.set_xlabel("confidence threshold (top-1 probability)")
    axes.set_ylim(-0.05, 1.05)
    axes.set_title(f"Accepted predictions by confidence threshold ({split} split)")
    axes.legend(loc="lower left")
    return figure


def _reliability_figure(calibration: pd.DataFrame, ece: float) -> Figure:
    figure = Figure(figsize=(5, 5))
    axes = figure.add_subplot()
    filled = calibration["count"] > 0
    centres = (calibration["low"] + calibration["high"]) / 2
    width = float(calibration["high"].iloc[0] - calibration["low"].iloc[0])
    axes.bar(centres[filled], calibration["accuracy"][filled], width=width, edgecolor="black", label="accuracy")
    axes.plot([0, 1], [0, 1], color="grey", linestyle="--", label="perfect calibration")
    axes.set_xlabel("confidence (top-1 probability)")
    axes.set_ylabel("accuracy")
    axes.set_xlim(0, 1)
    axes.set_ylim(0, 1)
    axes.set_title(f"Reliability diagram (ECE {ece:.3f})")
    axes.legend(loc="upper left")
    return figure
