"""Jobs. ``ingest_snapshot_job`` materializes every asset of the ``ingest`` group for one snapshot."""

from dagster import AssetSelection, define_asset_job

INGEST_GROUP = "ingest"

# The job takes its `snapshots` partitions from the assets it selects.
ingest_snapshot_job = define_asset_job(
    "ingest_snapshot_job",
    selection=AssetSelection.groups(INGEST_GROUP),
    description="Ingest one iNaturalist metadata snapshot: raw files, typed tables, taxonomy and media.",
)
