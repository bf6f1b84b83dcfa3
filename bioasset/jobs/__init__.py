"""Thin Dagster wrappers; domain logic lives in plain modules under bioasset/."""
