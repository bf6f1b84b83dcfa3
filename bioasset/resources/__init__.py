"""ConfigurableResources: the open-data bucket, the warehouse, the image store, MLflow."""

from bioasset.resources.image_store import ImageStoreResource
from bioasset.resources.mlflow import MlflowResource
from bioasset.resources.open_data import OpenDataBucket
from bioasset.resources.warehouse import WarehouseResource

__all__ = ["ImageStoreResource", "MlflowResource", "OpenDataBucket", "WarehouseResource"]
