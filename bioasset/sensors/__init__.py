"""Thin Dagster wrappers; domain logic lives in plain modules under bioasset/."""

from bioasset.sensors.snapshot_sensor import inat_snapshot_sensor

__all__ = ["inat_snapshot_sensor"]
