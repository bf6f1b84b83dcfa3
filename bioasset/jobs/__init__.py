"""Jobs. ``ingest_snapshot_job`` materializes every asset of the ``ingest`` group for one snapshot."""

from dagster import AssetSelection, define_asset_job

from bioasset.partitions import snapshots_partitions

INGEST_GROUP = "ingest"

ingest_snapshot_job = define_asset_job(
    "ingest_snapshot_job",
    selection=AssetSelection.groups(INGEST_GROUP),
    partitions_def=snapshots_partitions,
    description="Ingest one iNaturalist metadata snapshot: raw files, typed tables, taxonomy and media.",
)
