"""``bioasset predict IMAGE... [--model models:/NAME@champion] [--top-k 5] [--json]``.

Loads a registered classifier pyfunc from MLflow and prints, per image, the top-k taxa with their
names, full taxonomic paths and probabilities, or "not sure" when the top-1 probability is below
the model's threshold.
"""

from __future__ import annotations

import argparse
import json
import math
import sys
from pathlib import Path
from typing import TYPE_CHECKING, Any

from bioasset import config

# mlflow and torch load in seconds: this module imports them only when a prediction runs, so that
# every other `bioasset` command (the dispatcher imports all command modules) stays quick.
if TYPE_CHECKING:
    from bioasset.mlflow_registry import MlflowRegistry


class PredictError(Exception):
    """A problem the user can fix (no model, missing image); printed without a traceback."""


def default_model_uri(registry: "MlflowRegistry") -> str:
    """``models:/NAME@champion`` of the first (by name) registered bioasset model that has a champion."""
    from bioasset.mlflow_registry import CHAMPION, alias_uri

    names = registry.registered_models()
    for name in names:
        if registry.alias_version(name, CHAMPION) is not None:
            return alias_uri(name, CHAMPION)
    if names:
        raise PredictError(
            f"No registered bioasset model has a '{CHAMPION}' yet ({', '.join(names)}). "
            f"Fix: materialize classifier_promotion, or pass --model models:/{names[0]}/VERSION."
        )
    raise PredictError(
        f"No bioasset classifier is registered in {registry.tracking_uri}. Fix: materialize the classifier "
        "asset, point MLFLOW_TRACKING_URI / --tracking-uri at the right store, or pass --model."
    )


def _open_registry(uri: str) -> "MlflowRegistry":
    from bioasset.mlflow_registry import MlflowRegistry

    if uri.startswith("sqlite:///") and not Path(uri.removeprefix("sqlite:///")).exists():
        # Opening a missing SQLite store would create an empty one; say what is wrong instead.
        raise PredictError(
            f"There is no MLflow store at {uri}. Fix: train a classifier first, or set MLFLOW_TRACKING_URI "
            "(or --tracking-uri) to the store that holds your models."
        )
    return MlflowRegistry(uri, config.mlflow_artifact_root())


def predict(images: list[str], *, model_uri: str | None = None, top_k: int | None = None, tracking: str | None = None) -> dict[str, Any]:
    """Predict ``images`` (paths or fsspec URLs) with a registered model; a JSON-ready dict.

    ``top_k`` None leaves it to the model's default (``pyfunc_model.DEFAULT_TOP_K``)."""
    import mlflow.pyfunc
    import pandas as pd

    from bioasset.mlflow_registry import tracking_uri, version_uri
    from bioasset.pyfunc_model import IMAGE_COLUMN

    missing = [image for image in images if "://" not in image and not Path(image).is_file()]
    if missing:
        raise PredictError(f"Image file(s) not found: {', '.join(missing)}. Fix: check the paths.")
    if top_k is not None and top_k < 1:
        raise PredictError(f"--top-k {top_k}: must be at least 1.")
    registry = _open_registry(tracking or config.mlflow_tracking_uri())
    requested = model_uri or default_model_uri(registry)
    try:
        found = registry.resolve(requested)
    except (LookupError, ValueError) as exc:
        raise PredictError(str(exc)) from exc
    with tracking_uri(registry.tracking_uri):
        # Load the resolved version, not the alias, so the answer names exactly what predicted.
        model = mlflow.pyfunc.load_model(version_uri(found.name, found.version))
    frame = model.predict(pd.DataFrame({IMAGE_COLUMN: images}), params=None if top_k is None else {"top_k": top_k})
    predictions = []
    for image, row in zip(images, frame.to_dict("records")):
        threshold = None if math.isnan(row["threshold"]) else row["threshold"]
        taxa = [
            {"label_id": int(label_id), "label_name": name, "path": path, "probability": float(probability)}
            for label_id, name, path, probability in zip(row["label_ids"], row["label_names"], row["paths"], row["probabilities"])
        ]
        predictions.append({"image": image, "abstained": bool(row["abstained"]), "threshold": threshold, "taxa": taxa})
    return {"model": requested, "model_name": found.name, "model_version": str(found.version), "predictions": predictions}


def format_text(result: dict[str, Any]) -> str:
    lines = [f"model: {result['model']} (version {result['model_version']})"]
    for prediction in result["predictions"]:
        lines.append(prediction["image"])
        best = prediction["taxa"][0]
        if prediction["abstained"]:
            lines.append(
                f"  not sure: best guess {best['label_name']} at {best['probability']:.1%} "
                f"is below the threshold {prediction['threshold']:.1%}"
            )
            continue
        for rank, taxon in enumerate(prediction["taxa"], start=1):
            lines.append(f"  {rank}. {taxon['label_name']}  {taxon['probability']:.1%}  {taxon['path']}  (taxon {taxon['label_id']})")
    return "\n".join(lines)


def _run(args: argparse.Namespace) -> int:
    try:
        result = predict(args.images, model_uri=args.model, top_k=args.top_k, tracking=args.tracking_uri)
    except PredictError as exc:
        print(f"bioasset predict: {exc}", file=sys.stderr)
        return 2
    print(json.dumps(result, indent=2) if args.json else format_text(result))
    return 0


def add_parser(subparsers: argparse._SubParsersAction) -> None:
    parser = subparsers.add_parser(
        "predict",
        help="name the taxa in images with a registered classifier",
        description="Print the top-k taxa (name, full taxonomic path, probability) for each image, or "
        "'not sure' when the best probability is below the model's threshold.",
    )
    parser.add_argument("images", nargs="+", metavar="IMAGE", help="image file paths (or fsspec URLs such as s3://…)")
    parser.add_argument(
        "--model",
        default=None,
        help="models:/NAME@ALIAS or models:/NAME/VERSION. Default: the champion of the only registered "
        "bioasset-* model, or of the first by name when there are several",
    )
    parser.add_argument("--top-k", type=int, default=None, help="how many taxa per image (default: the model's, 5)")
    parser.add_argument("--json", action="store_true", help="print the same as JSON")
    parser.add_argument(
        "--tracking-uri",
        default=None,
        help="MLflow tracking URI. Default: MLFLOW_TRACKING_URI, else the embedded store BIOASSET_HOME/mlflow/mlflow.db",
    )
    parser.set_defaults(func=_run)
