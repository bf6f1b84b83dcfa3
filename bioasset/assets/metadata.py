"""Helpers that shape Dagster materialization metadata, shared by every asset module."""

from typing import Any, Iterable

from dagster import MetadataValue


def markdown_table(header: Iterable[str], rows: Iterable[Iterable[Any]]) -> MetadataValue:
    """A Markdown table for the UI's metadata panel; pipes and newlines in cells are escaped."""
    header = list(header)
    lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    lines += ["| " + " | ".join(str(v).replace("|", "\\|").replace("\n", " ") for v in row) + " |" for row in rows]
    return MetadataValue.md("\n".join(lines))
