"""The warehouse: typed Parquet per snapshot, plus one DuckDB file of views over the latest ones.

Layout under the warehouse root (``BIOASSET_HOME/warehouse`` by default)::

    bioasset.duckdb                         views named after the assets (media, taxonomy, taxa, ...)
    bioasset.duckdb.lock                    inter-process lock held while the views are refreshed
    snapshots/{YYYY-MM-DD}/raw/             the snapshot tarball, its extracted TSV files, manifest.json
    snapshots/{YYYY-MM-DD}/{table}.parquet  one file per table (asset key = file name = view name)
    snapshots/{YYYY-MM-DD}/{table}_rejects.parquet   rows that did not parse, with line numbers
    .tmp/                                   DuckDB spill space (one folder per connection)

DuckDB has one writer per file. Table building therefore runs on in-memory connections that only
write Parquet (any number of partitions in parallel); the DuckDB file is opened only to refresh its
views, briefly, under an ``fcntl`` lock, with retries.
"""

from __future__ import annotations

import fcntl
import os
import re
import shutil
import time
import uuid
from contextlib import contextmanager
from dataclasses import dataclass
from datetime import date
from pathlib import Path
from typing import Any, Iterator, Mapping, Sequence

import duckdb

from bioasset.storage import atomic_path

DB_FILENAME = "bioasset.duckdb"
SNAPSHOTS_DIR = "snapshots"
RAW_DIR = "raw"
REJECTS_SUFFIX = "_rejects"

#: Every Parquet table of a snapshot, in dependency order. Each is also a DuckDB view.
WAREHOUSE_TABLES = ("snapshot_files", "taxa", "observations", "photos", "observers", "taxonomy", "media")
#: Tables that have a rejects file beside them.
REJECTS_TABLES = ("taxa", "observations", "photos", "observers")

_SNAPSHOT_KEY = re.compile(r"^\d{4}-\d{2}-\d{2}$")


class WarehouseError(Exception):
    """A problem with the warehouse folder or its DuckDB file."""


class WarehouseLockedError(WarehouseError):
    """The DuckDB file stayed locked by another process for longer than the timeout."""


@dataclass(frozen=True)
class DuckDBSettings:
    """Bounds for every table-building DuckDB connection.

    ``memory_limit`` caps DuckDB's buffer pool (it spills to ``temp_directory`` beyond it);
    ``threads`` defaults to the number of cores. zstd level 1 writes the typed tables with 20% less
    CPU than DuckDB's default level 3, for the same size (their UUIDs do not compress anyway).
    """

    memory_limit: str = "1GB"
    threads: int | None = None
    temp_directory: str | None = None
    parquet_compression: str = "zstd"
    parquet_compression_level: int | None = 1  # zstd only; other codecs take no level

    @property
    def zstd_level(self) -> int | None:
        """The level to pass to a Parquet writer: ``parquet_compression_level`` when the codec is zstd."""
        return self.parquet_compression_level if self.parquet_compression.lower() == "zstd" else None


def parse_snapshot_key(key: str) -> date:
    """The date of a ``snapshots`` partition key (``YYYY-MM-DD``), or a clear error."""
    if not _SNAPSHOT_KEY.match(key or ""):
        raise WarehouseError(
            f"Snapshot partition key {key!r} is not a date in YYYY-MM-DD form. "
            "Fix: add the partition with the snapshot date, e.g. '2024-11-27'."
        )
    try:
        return date.fromisoformat(key)
    except ValueError as exc:
        raise WarehouseError(f"Snapshot partition key {key!r} is not a valid date ({exc}). Fix: use a real YYYY-MM-DD date.") from exc


def sql_string(value: str) -> str:
    """A SQL string literal (single quotes doubled)."""
    return "'" + str(value).replace("'", "''") + "'"


def rejects_name(table: str) -> str:
    return f"{table}{REJECTS_SUFFIX}"


class Warehouse:
    """One warehouse folder. Plain Python: the Dagster resource only builds one of these."""

    def __init__(self, root: str | os.PathLike[str], settings: DuckDBSettings | None = None, *, view_lock_timeout_s: float = 60.0):
        text = os.fspath(root)
        if "://" in text and not text.startswith("file://"):
            raise WarehouseError(
                f"Warehouse path {text!r} is a remote URL; the DuckDB file and its Parquet must be on a local disk "
                "for now. Fix: set the warehouse path to a local folder."
            )
        self.root = Path(text.removeprefix("file://")).expanduser().resolve()
        self.settings = settings or DuckDBSettings()
        self.view_lock_timeout_s = view_lock_timeout_s

    # -- layout -------------------------------------------------------------------------------
    @property
    def db_path(self) -> Path:
        return self.root / DB_FILENAME

    @property
    def lock_path(self) -> Path:
        return self.root / f"{DB_FILENAME}.lock"

    def snapshot_dir(self, key: str) -> Path:
        parse_snapshot_key(key)
        return self.root / SNAPSHOTS_DIR / key

    def raw_dir(self, key: str) -> Path:
        return self.snapshot_dir(key) / RAW_DIR

    def table_path(self, key: str, table: str) -> Path:
        return self.snapshot_dir(key) / f"{table}.parquet"

    def rejects_path(self, key: str, table: str) -> Path:
        return self.snapshot_dir(key) / f"{rejects_name(table)}.parquet"

    def snapshot_keys(self) -> list[str]:
        """Snapshot keys present in the warehouse, oldest first."""
        base = self.root / SNAPSHOTS_DIR
        if not base.is_dir():
            return []
        return sorted(p.name for p in base.iterdir() if p.is_dir() and _SNAPSHOT_KEY.match(p.name))

    def latest_table_paths(self) -> dict[str, Path]:
        """View name -> Parquet file of the newest snapshot that has it."""
        found: dict[str, Path] = {}
        names = list(WAREHOUSE_TABLES) + [rejects_name(t) for t in REJECTS_TABLES]
        for key in reversed(self.snapshot_keys()):
            for name in names:
                path = self.snapshot_dir(key) / f"{name}.parquet"
                if name not in found and path.is_file():
                    found[name] = path
        return found

    # -- DuckDB -------------------------------------------------------------------------------
    @contextmanager
    def connect(self) -> Iterator[duckdb.DuckDBPyConnection]:
        """An in-memory DuckDB connection with bounded memory, spilling under the warehouse.

        It never touches the DuckDB file, so any number of partitions may build tables at once.
        """
        spill = Path(self.settings.temp_directory or (self.root / ".tmp")) / f"duckdb-{os.getpid()}-{uuid.uuid4().hex[:8]}"
        spill.mkdir(parents=True, exist_ok=True)
        con = duckdb.connect(
            ":memory:",
            config={
                "memory_limit": self.settings.memory_limit,
                "threads": self.settings.threads or len(os.sched_getaffinity(0)),
                "preserve_insertion_order": False,
                "temp_directory": str(spill),
            },
        )
        con.execute("SET enable_progress_bar = false")
        try:
            yield con
        finally:
            con.close()
            shutil.rmtree(spill, ignore_errors=True)

    def copy_to_parquet(
        self,
        con: duckdb.DuckDBPyConnection,
        query: str,
        dest: Path,
        *,
        params: Sequence[Any] | Mapping[str, Any] | None = None,
        row_group_size: int | None = None,
    ) -> int:
        """Write ``query`` to ``dest`` as Parquet, atomically (temp file, then rename). Returns rows."""
        options = f"FORMAT parquet, COMPRESSION {self.settings.parquet_compression}"
        if self.settings.zstd_level is not None:
            options += f", COMPRESSION_LEVEL {int(self.settings.zstd_level)}"
        if row_group_size:
            options += f", ROW_GROUP_SIZE {int(row_group_size)}"
        with atomic_path(dest) as tmp:
            rows = con.execute(f"COPY ({query}) TO {sql_string(str(tmp))} ({options})", params).fetchall()
        return int(rows[0][0])

    # -- views --------------------------------------------------------------------------------
    def refresh_views(self, *, timeout_s: float | None = None) -> dict[str, Path]:
        """Point one view per table at the newest snapshot that has it; returns view -> Parquet.

        Opens the DuckDB file only for this, under an inter-process lock, and retries while another
        process (a DuckDB CLI opened read-write, say) holds the file.
        """
        targets = self.latest_table_paths()
        self.root.mkdir(parents=True, exist_ok=True)
        deadline = time.monotonic() + (self.view_lock_timeout_s if timeout_s is None else timeout_s)
        with file_lock(self.lock_path, deadline):
            delay = 0.05
            while True:
                try:
                    con = duckdb.connect(str(self.db_path))
                    break
                except duckdb.IOException as exc:
                    if time.monotonic() >= deadline:
                        raise WarehouseLockedError(
                            f"Could not open {self.db_path} to refresh its views: {exc}. Another process has it open "
                            "(a DuckDB CLI or a notebook). Fix: close that connection and re-run; the next "
                            "materialization of any ingest asset refreshes the views too."
                        ) from exc
                    time.sleep(delay)
                    delay = min(delay * 2, 1.0)
            try:
                con.execute("BEGIN TRANSACTION")
                for name, path in targets.items():
                    con.execute(f"CREATE OR REPLACE VIEW {name} AS SELECT * FROM read_parquet({sql_string(str(path))})")
                con.execute("COMMIT")
            finally:
                con.close()
        return targets

    def connect_views(self) -> duckdb.DuckDBPyConnection:
        """A read-only connection to the DuckDB file, for querying the views."""
        if not self.db_path.exists():
            raise WarehouseError(
                f"No warehouse database at {self.db_path}. Fix: materialize the ingest assets (ingest_snapshot_job) first."
            )
        return duckdb.connect(str(self.db_path), read_only=True)


@contextmanager
def file_lock(path: Path, deadline: float) -> Iterator[None]:
    """An exclusive ``fcntl`` lock on ``path``, polled until ``deadline``."""
    path.parent.mkdir(parents=True, exist_ok=True)
    with open(path, "a+b") as handle:
        while True:
            try:
                fcntl.flock(handle.fileno(), fcntl.LOCK_EX | fcntl.LOCK_NB)
                break
            except BlockingIOError:
                if time.monotonic() >= deadline:
                    raise WarehouseLockedError(
                        f"Timed out waiting for the view lock {path}; another ingestion is refreshing views. "
                        "Fix: re-run once it finishes, or remove a stale lock holder process."
                    ) from None
                time.sleep(0.05)
        try:
            yield
        finally:
            fcntl.flock(handle.fileno(), fcntl.LOCK_UN)


def require_table(path: Path) -> str:
    """``read_parquet('path')`` for an input table, or a clear error when it was not built yet."""
    if not Path(path).is_file():
        table = Path(path).stem
        raise WarehouseError(
            f"The {table} table {path} does not exist. Fix: materialize the `{table}` asset for snapshot "
            f"{Path(path).parent.name} first."
        )
    return f"read_parquet({sql_string(str(path))})"
