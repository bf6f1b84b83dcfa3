"""Training data: the manifest of a frozen dataset version, read from the image store.

- ``prepare_manifest``: keeps the rows training can use and returns the others with a reason;
- ``build_labels`` / ``infer_label_rank``: the label map (one :class:`ClassLabel` per ``label_id``,
  with its taxonomic path) that goes into the bundle;
- ``ManifestImageDataset``: (image tensor, class index) per row, read through fsspec from the image
  store URL, with a plain ``open`` fast path for a local store;
- ``train_transform`` / ``eval_transform``: torchvision.transforms.v2 pipelines. Evaluation and
  prediction resize the shorter side to ``eval_resize_size(image_size)`` and center-crop
  ``image_size``: the MLflow model and ``bioasset predict`` should call :func:`eval_transform` too.
"""

from __future__ import annotations

import io
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
import pandas as pd
import torch
from PIL import Image
from torch.utils.data import DataLoader, Dataset, RandomSampler, Sampler, WeightedRandomSampler
from torchvision.transforms import v2

from bioasset.classifier_bundle import IMAGENET_MEAN, IMAGENET_STD, ClassLabel
from bioasset.inat_format import MAIN_RANKS
from bioasset.manifest_schema import SPLITS
from bioasset.storage import filesystem_for, is_local, join

#: Columns training reads from the manifest (besides the rank columns down to the label rank).
REQUIRED_COLUMNS = ("photo_id", "label_id", "label_name", "split", "image_path")


class ManifestError(ValueError):
    """The manifest cannot be trained on; the message names the column or rows and the fix."""


class ImageReadError(RuntimeError):
    pass


@dataclass
class PreparedManifest:
    rows: pd.DataFrame  # usable rows, index reset
    rejected: pd.DataFrame  # photo_id, reason: rows left out, counted in reports

    def split(self, name: str) -> pd.DataFrame:
        return self.rows[self.rows["split"] == name]

    def rejected_counts(self) -> dict[str, int]:
        return {str(k): int(v) for k, v in self.rejected["reason"].value_counts().items()}


def prepare_manifest(manifest: pd.DataFrame) -> PreparedManifest:
    """Rows with an image path, a label and a known split; the rest come back in ``rejected``."""
    missing = [c for c in REQUIRED_COLUMNS if c not in manifest.columns]
    if missing:
        raise ManifestError(
            f"manifest: columns {missing} are missing (it has {list(manifest.columns)}). "
            f"Fix: pass the manifest of a frozen dataset_version, which has the image columns"
        )
    reasons = pd.Series(pd.NA, index=manifest.index, dtype="object")
    # The first failing check names the reason, so each rejected row is counted once.
    for reason, bad in (
        ("label_id is missing", manifest["label_id"].isna()),
        ("image_path is missing", manifest["image_path"].isna() | (manifest["image_path"].astype("string") == "")),
        (f"split is not one of {list(SPLITS)}", ~manifest["split"].astype("string").isin(SPLITS).fillna(False)),
    ):
        reasons = reasons.mask(reasons.isna() & bad, reason)
    bad_rows = reasons.notna()
    rejected = pd.DataFrame({"photo_id": manifest.loc[bad_rows, "photo_id"], "reason": reasons[bad_rows]})
    rows = manifest.loc[~bad_rows].reset_index(drop=True)
    rows = rows.assign(label_id=rows["label_id"].astype("int64"), split=rows["split"].astype(str))
    return PreparedManifest(rows, rejected.reset_index(drop=True))


def infer_label_rank(rows: pd.DataFrame) -> str:
    """The rank whose id column equals ``label_id`` on every row."""
    for rank in reversed(MAIN_RANKS):
        column = f"{rank}_id"
        if column in rows.columns and len(rows) and (rows[column] == rows["label_id"]).all():
            return rank
    raise ManifestError(
        "manifest: no {rank}_id column equals label_id on every row, so the label rank is unknown. "
        "Fix: pass label_rank=… explicitly, or check that the manifest's rank id columns are filled"
    )


def build_labels(rows: pd.DataFrame, label_rank: str) -> list[ClassLabel]:
    """One label per ``label_id``, ordered by taxonomic path so related classes sit together."""
    if label_rank not in MAIN_RANKS:
        raise ManifestError(f"label_rank={label_rank!r} is not a main rank. Fix: use one of {list(MAIN_RANKS)}")
    ranks = MAIN_RANKS[: MAIN_RANKS.index(label_rank) + 1]
    missing = [c for rank in ranks for c in (rank, f"{rank}_id") if c not in rows.columns]
    if missing:
        raise ManifestError(f"manifest: rank columns {missing} are missing. Fix: pass a manifest with every rank down to {label_rank}")
    first = rows.drop_duplicates("label_id")
    entries = []
    for record in first.to_dict("records"):
        path = {rank: {"id": _optional_int(record[f"{rank}_id"]), "name": _optional_str(record[rank])} for rank in ranks}
        sort_key = tuple(_optional_str(record[rank]) or "" for rank in ranks) + (int(record["label_id"]),)
        entries.append((sort_key, int(record["label_id"]), str(record["label_name"]), path))
    entries.sort(key=lambda entry: entry[0])
    return [ClassLabel(index=i, label_id=label_id, label_name=name, path=path) for i, (_, label_id, name, path) in enumerate(entries)]


def _optional_int(value: Any) -> int | None:
    return None if pd.isna(value) else int(value)


def _optional_str(value: Any) -> str | None:
    return None if pd.isna(value) else str(value)


def class_indices(rows: pd.DataFrame, labels: Sequence[ClassLabel]) -> np.ndarray:
    """Class index of each row; -1 where its label is not in ``labels``."""
    index_of = {label.label_id: label.index for label in labels}
    return rows["label_id"].map(index_of).fillna(-1).astype(np.int64).to_numpy()


def eval_resize_size(image_size: int) -> int:
    """Shorter side before the center crop: the usual 256 -> 224 ratio."""
    return int(round(image_size * 256 / 224))


def eval_transform(image_size: int, mean: Sequence[float] = IMAGENET_MEAN, std: Sequence[float] = IMAGENET_STD) -> v2.Compose:
    """PIL image -> normalised float tensor, as evaluation and prediction see it."""
    return v2.Compose([
        v2.Resize(eval_resize_size(image_size), antialias=True),
        v2.CenterCrop(image_size),
        *_to_normalised_tensor(mean, std),
    ])


def train_transform(
    image_size: int,
    *,
    augmentation: str = "crop_flip",
    min_crop_scale: float = 0.08,
    mean: Sequence[float] = IMAGENET_MEAN,
    std: Sequence[float] = IMAGENET_STD,
) -> v2.Compose:
    """RandomResizedCrop + horizontal flip (+ TrivialAugmentWide for ``trivial_augment``)."""
    steps: list[Any] = [
        v2.RandomResizedCrop(image_size, scale=(min_crop_scale, 1.0), antialias=True),
        v2.RandomHorizontalFlip(),
    ]
    if augmentation == "trivial_augment":
        steps.append(v2.TrivialAugmentWide())
    return v2.Compose(steps + _to_normalised_tensor(mean, std))


def _to_normalised_tensor(mean: Sequence[float], std: Sequence[float]) -> list[Any]:
    return [v2.ToImage(), v2.ToDtype(torch.float32, scale=True), v2.Normalize(list(mean), list(std)), v2.ToPureTensor()]


class ManifestImageDataset(Dataset):
    """(transformed image, class index) for each of ``image_paths`` under the image store.

    The filesystem is opened lazily in each process, so the dataset pickles into DataLoader
    workers (fork or spawn) without carrying an open S3 session.
    """

    def __init__(
        self,
        image_paths: Sequence[str],
        targets: Sequence[int],
        image_store_url: str,
        transform,
        *,
        storage_options: dict[str, Any] | None = None,
        decode_size: int | None = None,
    ) -> None:
        if len(image_paths) != len(targets):
            raise ValueError(f"{len(image_paths)} image paths but {len(targets)} targets")
        self.image_paths = list(image_paths)
        self.targets = np.asarray(targets, dtype=np.int64)
        self.image_store_url = image_store_url
        self.storage_options = dict(storage_options or {})
        self.transform = transform
        # Large JPEGs decode at a reduced DCT scale, still at least twice the input side.
        self.decode_size = decode_size
        fs, self._root = filesystem_for(image_store_url, **self.storage_options)
        self._local = is_local(fs)
        self._fs = None

    def __len__(self) -> int:
        return len(self.image_paths)

    def __getitem__(self, index: int) -> tuple[torch.Tensor, int]:
        return self.transform(self.read_image(index)), int(self.targets[index])

    def read_image(self, index: int) -> Image.Image:
        path = join(self._root, self.image_paths[index])
        try:
            if self._local:
                image = Image.open(path)
            else:
                image = Image.open(io.BytesIO(self._filesystem().cat_file(path)))
            if self.decode_size:
                image.draft("RGB", (2 * self.decode_size, 2 * self.decode_size))
            return image.convert("RGB")
        except (OSError, ValueError) as error:
            raise ImageReadError(
                f"image {self.image_paths[index]!r} in image store {self.image_store_url}: {type(error).__name__}: {error}. "
                f"Fix: re-materialize taxon_images for this photo (its file is missing or corrupt), or check the image store URL"
            ) from error

    def _filesystem(self):
        if self._fs is None:
            self._fs, _ = filesystem_for(self.image_store_url, **self.storage_options)
        return self._fs

    def __getstate__(self) -> dict[str, Any]:
        state = dict(self.__dict__)
        state["_fs"] = None
        return state


def class_counts(targets: np.ndarray, num_classes: int) -> np.ndarray:
    return np.bincount(targets, minlength=num_classes)


def balanced_class_weights(targets: np.ndarray, num_classes: int) -> torch.Tensor:
    """n / (K * n_c) per class (scikit-learn's "balanced"); classes absent from training get 0."""
    counts = class_counts(targets, num_classes).astype(np.float64)
    weights = np.divide(len(targets), num_classes * counts, out=np.zeros_like(counts), where=counts > 0)
    return torch.tensor(weights, dtype=torch.float32)


def train_sampler(targets: np.ndarray, num_classes: int, *, weighted: bool, generator: torch.Generator) -> Sampler:
    """Shuffled order, or draws with replacement weighted so every class is equally likely.

    All randomness comes from ``generator``, whose state the checkpoint saves.
    """
    if not weighted:
        return RandomSampler(range(len(targets)), generator=generator)
    per_sample = balanced_class_weights(targets, num_classes)[torch.tensor(targets)]
    return WeightedRandomSampler(per_sample.double(), num_samples=len(targets), replacement=True, generator=generator)


def make_loader(
    dataset: ManifestImageDataset,
    *,
    batch_size: int,
    num_workers: int,
    pin_memory: bool,
    sampler: Sampler | None = None,
    generator: torch.Generator | None = None,
) -> DataLoader:
    """A DataLoader with worker processes kept alive across epochs and pinned memory on CUDA.

    A training loader (with ``sampler``) drops a last batch of one image, which BatchNorm cannot
    train on.
    """
    workers = dict(persistent_workers=True, prefetch_factor=4) if num_workers > 0 else {}
    drop_last = sampler is not None and len(dataset) % batch_size == 1
    return DataLoader(
        dataset,
        batch_size=batch_size,
        sampler=sampler,
        num_workers=num_workers,
        pin_memory=pin_memory,
        drop_last=drop_last,
        generator=generator,
        **workers,
    )


def manifest_dataset(rows: pd.DataFrame, labels: Sequence[ClassLabel], image_store_url: str, transform, **options: Any) -> ManifestImageDataset:
    """A dataset over manifest rows: their image paths, and class indices under ``labels``.
    ``options``: ``storage_options`` and ``decode_size`` of :class:`ManifestImageDataset`."""
    return ManifestImageDataset(rows["image_path"].astype(str).tolist(), class_indices(rows, labels), image_store_url, transform, **options)
