"""The single Definitions of the bioasset code location."""

from dagster import Definitions, load_assets_from_modules

from bioasset.assets import ingest as ingest_assets
from bioasset.jobs import ingest_snapshot_job
from bioasset.resources import OpenDataBucket, WarehouseResource
from bioasset.sensors import inat_snapshot_sensor

defs = Definitions(
    assets=load_assets_from_modules([ingest_assets]),
    jobs=[ingest_snapshot_job],
    sensors=[inat_snapshot_sensor],
    resources={
        "open_data": OpenDataBucket(),
        "warehouse": WarehouseResource(),
    },
)
