from __future__ import annotations

from typing import TYPE_CHECKING, Optional

from dagster import ConfigurableResource
from pydantic import Field

from bioasset import config

if TYPE_CHECKING:
    from bioasset.mlflow_registry import MlflowRegistry


class MlflowResource(ConfigurableResource):
    """MLflow tracking and model registry for the classifier assets (resource key ``mlflow``).

    Defaults to the embedded SQLite store ``BIOASSET_HOME/mlflow/mlflow.db`` (or
    ``MLFLOW_TRACKING_URI``) with artifacts under ``BIOASSET_HOME/mlflow/artifacts``. Point
    ``tracking_uri`` at a tracking server (``http://…``) or a database and ``artifact_root`` at
    ``s3://…`` to scale out. Runs and model versions it creates are tagged with the Dagster run id
    and partition. (dagster-mlflow's function-style resource is legacy; this one is ours.)
    """

    tracking_uri: Optional[str] = Field(default=None, description="MLflow tracking URI; default: MLFLOW_TRACKING_URI or the embedded SQLite store")
    artifact_root: Optional[str] = Field(default=None, description="Where new experiments keep artifacts (path or s3://…); default: BIOASSET_HOME/mlflow/artifacts")

    def resolved_tracking_uri(self) -> str:
        return self.tracking_uri or config.mlflow_tracking_uri()

    def resolved_artifact_root(self) -> str:
        return self.artifact_root or config.mlflow_artifact_root()

    def registry(self, run_id: str | None = None, partition_key: str | None = None) -> MlflowRegistry:
        """The plain-Python registry; its runs and model versions carry the Dagster run id and partition."""
        # Imported here: MLflow and torch take seconds to import, and most runs never need them.
        from bioasset.mlflow_registry import TAG_DAGSTER_PARTITION, TAG_DAGSTER_RUN_ID, MlflowRegistry

        uri = self.resolved_tracking_uri()
        if uri.startswith("sqlite:///"):
            # SQLite needs its folder; a server or another database needs nothing from us.
            from pathlib import Path

            Path(uri.removeprefix("sqlite:///")).parent.mkdir(parents=True, exist_ok=True)
        tags = {TAG_DAGSTER_RUN_ID: run_id, TAG_DAGSTER_PARTITION: partition_key}
        return MlflowRegistry(uri, self.resolved_artifact_root(), {k: v for k, v in tags.items() if v})

    def registry_for(self, context) -> MlflowRegistry:
        """:meth:`registry` tagged from an asset (or op) execution context."""
        return self.registry(context.run.run_id, context.partition_key if context.has_partition_key else None)
