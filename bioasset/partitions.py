"""Partition definitions shared by assets, jobs and sensors (one name for one thing)."""

from dagster import DynamicPartitionsDefinition

#: One partition per iNaturalist metadata snapshot, keyed ``YYYY-MM-DD``.
snapshots_partitions = DynamicPartitionsDefinition(name="snapshots")
