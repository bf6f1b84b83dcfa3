from __future__ import annotations

from typing import Optional

from dagster import ConfigurableResource
from pydantic import Field

from bioasset import config


class WarehouseResource(ConfigurableResource):
    """The warehouse: typed Parquet per snapshot plus one DuckDB file of views over them.

    Defaults to ``BIOASSET_HOME/warehouse``.
    """

    path: Optional[str] = Field(default=None, description="Warehouse folder; default: BIOASSET_HOME/warehouse")

    def resolved_path(self) -> str:
        return self.path or str(config.warehouse_dir())
