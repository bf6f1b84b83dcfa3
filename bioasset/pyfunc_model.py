"""The MLflow pyfunc of a classifier bundle: images in, top-k taxa out.

The logged model carries the bundle folder (:mod:`bioasset.classifier_bundle`) as its ``bundle``
artifact, so the label map, the taxonomic paths, the preprocessing and the abstention threshold
travel with it. Loading it needs this package (``bioasset``), torch and torchvision.

**Input**: a ``pandas.DataFrame`` with one column, ``image``; each value is either

- the encoded bytes of an image file (JPEG, PNG, anything Pillow reads), or
- a string: a local path or an fsspec URL (``s3://…``) of an image file.

Over MLflow's REST scoring server the column is declared ``binary``, so clients send the bytes
base64-encoded (``{"dataframe_split": {"columns": ["image"], "data": [["<base64>"]]}}``).

**Param**: ``top_k`` (int, default :data:`DEFAULT_TOP_K`), capped at the number of classes.

**Output**: a ``pandas.DataFrame`` with one row per input row, best first inside each list:

- ``label_ids``: taxon ids at the dataset's label rank;
- ``label_names``: their names;
- ``paths``: each class's full taxonomic path, ``"Animalia > Arthropoda > … > Apis mellifera"``
  (names alone are ambiguous below kingdom: *Morus*, *Pieris*; the path is not);
- ``probabilities``: softmax probabilities;
- ``abstained``: ``True`` when the top-1 probability is below the bundle's threshold ("not sure");
- ``threshold``: that threshold (NaN when the bundle has none, and then nothing abstains).
"""

from __future__ import annotations

import io
import math
from typing import Any, Iterable, Sequence

import mlflow.pyfunc
import pandas as pd

from bioasset.classifier_bundle import BundleMeta, ClassLabel, load_bundle
from bioasset.inat_format import RANKS_WITH_SUBSPECIES
from bioasset.training.data import eval_transform

#: Name of the logged model's artifact that holds the bundle folder.
BUNDLE_ARTIFACT = "bundle"
IMAGE_COLUMN = "image"
DEFAULT_TOP_K = 5
OUTPUT_COLUMNS = ("label_ids", "label_names", "paths", "probabilities", "abstained", "threshold")
PATH_SEPARATOR = " > "
#: Images decoded and run through the network at once; bounds memory on large inputs.
BATCH_SIZE = 32


def taxon_path_text(label: ClassLabel) -> str:
    """``"Animalia > Arthropoda > … > label"``, in rank order (kingdom first), missing ranks skipped.

    The bundle's JSON sorts keys alphabetically, so the order comes from the rank list, not the dict.
    """
    ranks = [rank for rank in RANKS_WITH_SUBSPECIES if rank in label.path]
    ranks += sorted(rank for rank in label.path if rank not in RANKS_WITH_SUBSPECIES)  # ranks we do not know, last
    names = [(label.path[rank] or {}).get("name") for rank in ranks]
    names = [name for name in names if name]
    if not names or names[-1] != label.label_name:
        names.append(label.label_name)
    return PATH_SEPARATOR.join(names)


def read_image(value: Any, row: int):
    """An RGB ``PIL.Image`` from image bytes or a path / fsspec URL; errors name the row and the fix."""
    import fsspec
    from PIL import Image, UnidentifiedImageError

    if isinstance(value, (bytes, bytearray, memoryview)):
        source, data = f"{len(value)} bytes", bytes(value)
    elif isinstance(value, str):
        source = repr(value)
        try:
            with fsspec.open(value, "rb") as handle:
                data = handle.read()
        except (FileNotFoundError, OSError) as exc:
            raise ValueError(
                f"Column '{IMAGE_COLUMN}', row {row}: cannot read the image file {source}: {exc}. "
                "Fix: pass an existing path or URL, or the image's bytes."
            ) from exc
    else:
        raise TypeError(
            f"Column '{IMAGE_COLUMN}', row {row}: expected image bytes or a path string, got {type(value).__name__}. "
            "Fix: build the input as pandas.DataFrame({'image': [bytes_or_path, ...]})."
        )
    try:
        image = Image.open(io.BytesIO(data))
        return image.convert("RGB")
    except (UnidentifiedImageError, OSError) as exc:
        raise ValueError(
            f"Column '{IMAGE_COLUMN}', row {row}: {source} is not an image Pillow can decode ({exc}). "
            "Fix: pass JPEG/PNG/WebP bytes or a path to such a file."
        ) from exc


def prediction_row(labels: Sequence[ClassLabel], probabilities: Sequence[float], threshold: float | None) -> dict[str, Any]:
    """One output row (see the module docstring): ``labels`` best first, with their probabilities."""
    return {
        "label_ids": [label.label_id for label in labels],
        "label_names": [label.label_name for label in labels],
        "paths": [taxon_path_text(label) for label in labels],
        "probabilities": [float(p) for p in probabilities],
        "abstained": threshold is not None and probabilities[0] < threshold,
        "threshold": math.nan if threshold is None else float(threshold),
    }


class BundlePredictor:
    """A loaded bundle that turns images into top-k predictions (the pyfunc's work, without MLflow)."""

    def __init__(self, bundle_dir: str, *, device: str = "cpu") -> None:
        self.model, self.meta = load_bundle(bundle_dir, map_location=device)
        self.model.to(device)
        self.device = device
        # The same preprocessing as evaluation after training: one definition, in the training module.
        self.transform = eval_transform(self.meta.image_size, self.meta.mean, self.meta.std)
        self.labels = {label.index: label for label in self.meta.labels}  # by output unit

    def predict(self, images: Sequence[Any], top_k: int = DEFAULT_TOP_K) -> pd.DataFrame:
        import torch

        if top_k < 1:
            raise ValueError(f"top_k={top_k}: must be at least 1. Fix: pass params={{'top_k': 5}} or another positive number.")
        k = min(int(top_k), self.meta.num_classes)
        threshold = self.meta.threshold
        rows: list[dict[str, Any]] = []
        for start in range(0, len(images), BATCH_SIZE):
            batch = [self.transform(read_image(value, start + i)) for i, value in enumerate(images[start : start + BATCH_SIZE])]
            with torch.inference_mode():
                logits = self.model(torch.stack(batch).to(self.device))
            probabilities, indices = torch.softmax(logits.float(), dim=1).topk(k, dim=1)
            for probs, units in zip(probabilities.tolist(), indices.tolist()):
                rows.append(prediction_row([self.labels[unit] for unit in units], probs, threshold))
        return pd.DataFrame(rows, columns=list(OUTPUT_COLUMNS))


def image_column(model_input: Any) -> list[Any]:
    """The ``image`` values of a pyfunc input (a DataFrame, or a list / dict MLflow did not convert)."""
    if isinstance(model_input, pd.DataFrame):
        if IMAGE_COLUMN not in model_input.columns:
            raise ValueError(
                f"Model input has columns {list(model_input.columns)} but no '{IMAGE_COLUMN}'. "
                f"Fix: pass pandas.DataFrame({{'{IMAGE_COLUMN}': [image_bytes_or_path, ...]}})."
            )
        return model_input[IMAGE_COLUMN].tolist()
    if isinstance(model_input, dict) and IMAGE_COLUMN in model_input:
        values = model_input[IMAGE_COLUMN]
        return list(values) if isinstance(values, Iterable) and not isinstance(values, (str, bytes)) else [values]
    raise TypeError(
        f"Model input is a {type(model_input).__name__}; expected a DataFrame with an '{IMAGE_COLUMN}' column. "
        f"Fix: pass pandas.DataFrame({{'{IMAGE_COLUMN}': [image_bytes_or_path, ...]}})."
    )


class ClassifierPyfunc(mlflow.pyfunc.PythonModel):
    """MLflow pyfunc over a classifier bundle; see the module docstring for input, params and output."""

    def load_context(self, context) -> None:
        self.predictor = BundlePredictor(context.artifacts[BUNDLE_ARTIFACT])

    # The DataFrame hint tells MLflow that the explicit signature, not the hint, describes the input.
    def predict(self, context, model_input: pd.DataFrame, params: dict[str, Any] | None = None) -> pd.DataFrame:
        top_k = int((params or {}).get("top_k", DEFAULT_TOP_K))
        return self.predictor.predict(image_column(model_input), top_k=top_k)


def example_image_bytes(size: int = 8) -> bytes:
    """A tiny PNG: the logged input example (kept small; the example is stored with every model)."""
    from PIL import Image

    buffer = io.BytesIO()
    Image.new("RGB", (size, size), (120, 160, 90)).save(buffer, format="PNG")
    return buffer.getvalue()


def pyfunc_signature_and_example(meta: BundleMeta):
    """(signature, input example) of a bundle's pyfunc.

    The output schema is inferred from a prediction-shaped frame built from the label map (no
    forward pass); MLflow's own input-example check at logging time runs the real model.
    """
    from mlflow.models import infer_signature

    example = pd.DataFrame({IMAGE_COLUMN: [example_image_bytes()]})
    labels = meta.labels[:DEFAULT_TOP_K]
    output = pd.DataFrame([prediction_row(labels, [1.0 / meta.num_classes] * len(labels), meta.threshold)], columns=list(OUTPUT_COLUMNS))
    return infer_signature(example, output, params={"top_k": DEFAULT_TOP_K}), example
