"""Jobs. ``ingest_snapshot_job`` materializes every asset of the ``ingest`` group for one snapshot;
``taxon_images_job`` downloads one class (``taxa`` partition), as ``taxon_images_sensor`` asks;
``bioasset.jobs.taxon_images_batch`` holds the job that downloads many classes in one run."""

from dagster import AssetSelection, define_asset_job, in_process_executor

INGEST_GROUP = "ingest"

# The job takes its `snapshots` partitions from the assets it selects.
ingest_snapshot_job = define_asset_job(
    "ingest_snapshot_job",
    selection=AssetSelection.groups(INGEST_GROUP),
    description="Ingest one iNaturalist metadata snapshot: raw files, typed tables, taxonomy and media.",
)

# A small incremental update asks for one run per changed class (a larger one for batch runs, see
# bioasset.jobs.taxon_images_batch), so a run's fixed cost counts once per class. The run is a single step: the in-process executor runs it in the run's
# own process, where the default multiprocess executor would start (and load this code location in)
# a second one, which doubled that cost. The price: a crash in native code (libjpeg, OpenCV) ends the
# run worker itself rather than a step process, and with the default run launcher such a run stays
# STARTED until it is marked failed in the UI; the decoders only see images whose header passed the
# decompression-bomb check.
taxon_images_job = define_asset_job(
    "taxon_images_job",
    selection=AssetSelection.assets("taxon_images"),
    executor_def=in_process_executor,
    description="Download, verify and store the images of one class (a `taxa` partition) in the image store.",
)
