"""The single Definitions of the bioasset code location."""

from dagster import Definitions, load_assets_from_modules

from bioasset.assets import ingest as ingest_assets
from bioasset.assets.classifiers import CLASSIFIER_ASSETS
from bioasset.assets.datasets import DATASET_ASSETS
from bioasset.jobs import ingest_snapshot_job, taxon_images_job
from bioasset.jobs.taxon_images_batch import taxon_images_batch_job
from bioasset.resources import ImageStoreResource, MlflowResource, OpenDataBucket, WarehouseResource
from bioasset.sensors import inat_snapshot_sensor
from bioasset.sensors.dataset_sensors import dataset_version_sensor, taxon_images_sensor

defs = Definitions(
    assets=[
        *load_assets_from_modules([ingest_assets]),
        *DATASET_ASSETS.assets,
        *CLASSIFIER_ASSETS.assets,
    ],
    asset_checks=DATASET_ASSETS.checks,
    jobs=[ingest_snapshot_job, taxon_images_job, taxon_images_batch_job],
    sensors=[inat_snapshot_sensor, taxon_images_sensor, dataset_version_sensor, CLASSIFIER_ASSETS.automation_sensor],
    resources={
        "open_data": OpenDataBucket(),
        "warehouse": WarehouseResource(),
        "image_store": ImageStoreResource(),
        "mlflow": MlflowResource(),
    },
)
