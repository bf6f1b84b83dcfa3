"""ConfigurableResources: the open-data bucket, the warehouse, the image store, MLflow."""

from bioasset.resources.open_data import OpenDataBucket
from bioasset.resources.warehouse import WarehouseResource

__all__ = ["OpenDataBucket", "WarehouseResource"]
