"""A sample of ``s3://inaturalist-open-data`` in a local folder (``bioasset sample-bucket``).

- ``generate_sample_bucket``: snapshots with photos, every shape of row the real export has,
  and ``next_from`` to derive a later snapshot;
- ``generate_scale_snapshot``: a metadata-only snapshot of millions of photos, for benchmarks;
- ``sample_species`` / ``sample_taxa`` / ``root_taxon``: the species and taxa a sample uses.
"""

from bioasset.sample_bucket.errors import SampleBucketError
from bioasset.sample_bucket.generate import (
    DEFAULT_N_SPECIES,
    DEFAULT_PHOTOS_PER_SPECIES,
    DEFAULT_SIZES,
    DEFAULT_SNAPSHOT_DATE,
    SampleBucketReport,
    generate_sample_bucket,
)
from bioasset.sample_bucket.scale import ScaleSnapshotReport, generate_scale_snapshot
from bioasset.sample_bucket.taxonomy_data import Taxon, root_taxon, sample_species, sample_taxa

__all__ = [
    "DEFAULT_N_SPECIES",
    "DEFAULT_PHOTOS_PER_SPECIES",
    "DEFAULT_SIZES",
    "DEFAULT_SNAPSHOT_DATE",
    "SampleBucketError",
    "SampleBucketReport",
    "ScaleSnapshotReport",
    "Taxon",
    "generate_sample_bucket",
    "generate_scale_snapshot",
    "root_taxon",
    "sample_species",
    "sample_taxa",
]
