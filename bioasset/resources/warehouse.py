from __future__ import annotations

from typing import Optional

from dagster import ConfigurableResource
from pydantic import Field

from bioasset import config
from bioasset.warehouse import DuckDBSettings, Warehouse


class WarehouseResource(ConfigurableResource):
    """The warehouse: typed Parquet per snapshot plus one DuckDB file of views over them.

    Defaults to ``BIOASSET_HOME/warehouse``. Table building uses in-memory DuckDB connections
    bounded by ``memory_limit`` and ``threads``; they spill under the warehouse's ``.tmp/``.
    """

    path: Optional[str] = Field(default=None, description="Warehouse folder; default: BIOASSET_HOME/warehouse")
    memory_limit: str = Field(default="1GB", description="DuckDB memory_limit of each table-building connection")
    threads: Optional[int] = Field(default=None, description="DuckDB threads per connection; default: all cores")
    view_lock_timeout_s: float = Field(default=60.0, description="How long to wait for the DuckDB file when refreshing views")

    def resolved_path(self) -> str:
        return self.path or str(config.warehouse_dir())

    def warehouse(self) -> Warehouse:
        """The plain-Python warehouse that domain code works on."""
        return Warehouse(
            self.resolved_path(),
            DuckDBSettings(memory_limit=self.memory_limit, threads=self.threads),
            view_lock_timeout_s=self.view_lock_timeout_s,
        )
