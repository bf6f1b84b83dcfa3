"""Where things live. Everything defaults to a folder under ``BIOASSET_HOME`` (``./.bioasset``);
every location can be overridden by an environment variable or by resource config."""

from __future__ import annotations

import os
from pathlib import Path

HOME_ENV = "BIOASSET_HOME"
OPEN_DATA_URL_ENV = "BIOASSET_OPEN_DATA_URL"
S3_ENDPOINT_URL_ENV = "BIOASSET_S3_ENDPOINT_URL"
MLFLOW_TRACKING_URI_ENV = "MLFLOW_TRACKING_URI"

REAL_OPEN_DATA_URL = "s3://inaturalist-open-data"


def bioasset_home() -> Path:
    """The root folder of the embedded defaults, made absolute so that every process agrees."""
    return Path(os.environ.get(HOME_ENV, ".bioasset")).expanduser().resolve()


def dagster_home() -> Path:
    return bioasset_home() / "dagster"


def warehouse_dir() -> Path:
    return bioasset_home() / "warehouse"


def image_store_url() -> str:
    return str(bioasset_home() / "images")


def sample_bucket_dir() -> Path:
    return bioasset_home() / "sample-bucket"


def mlflow_dir() -> Path:
    return bioasset_home() / "mlflow"


def open_data_url() -> str:
    """The open-data bucket: env override, else the local sample bucket."""
    return os.environ.get(OPEN_DATA_URL_ENV) or str(sample_bucket_dir())


def s3_endpoint_url() -> str | None:
    return os.environ.get(S3_ENDPOINT_URL_ENV) or None


def mlflow_tracking_uri() -> str:
    return os.environ.get(MLFLOW_TRACKING_URI_ENV) or f"sqlite:///{mlflow_dir() / 'mlflow.db'}"


def mlflow_artifact_root() -> str:
    return str(mlflow_dir() / "artifacts")
