"""The single Definitions of the bioasset code location."""

from dagster import Definitions

from bioasset.resources import OpenDataBucket, WarehouseResource

defs = Definitions(
    assets=[],
    resources={
        "open_data": OpenDataBucket(),
        "warehouse": WarehouseResource(),
    },
)
