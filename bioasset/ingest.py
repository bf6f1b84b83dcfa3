"""Ingestion of one iNaturalist metadata snapshot: raw files first, then typed Parquet tables.

Plain Python (no Dagster). Two steps:

1. :func:`fetch_snapshot_files` copies the dated snapshot tarball from the bucket into
   ``raw/`` (resuming a ``.part`` file by byte range, checking the size against the bucket's) and
   stream-extracts its members, each checked against its tar header size and renamed into place
   only when complete. ``raw/manifest.json`` records what is verified, so a rerun skips it.
2. :func:`ingest_table` turns one extracted TSV file into typed Parquet with DuckDB: explicit
   column types, no quoting, and every row that does not parse (wrong field count, bad value,
   invalid UTF-8) kept in ``{table}_rejects.parquet`` with its line number and reason.

:func:`fetch_and_ingest_tables` runs both at once, as the ingest job does: each table is parsed as
soon as its file is out of the tarball, while the next files are still being extracted.
"""

from __future__ import annotations

import io
import json
import os
import tarfile
import time
import uuid
import zlib
from dataclasses import asdict, dataclass, field
from datetime import date, datetime, timezone
from pathlib import Path
from concurrent.futures import Future, ThreadPoolExecutor, as_completed
from typing import Any, BinaryIO, Callable, Iterable, Iterator

import fsspec

from bioasset.inat_format import CORE_TABLES, TABLE_COLUMNS, dated_tarball_key, snapshot_dirname
from bioasset.storage import join
from bioasset.warehouse import Warehouse, sql_string

try:  # python-isal inflates 2-3x faster than zlib, on its own thread
    from isal import igzip_threaded as _igzip_threaded
    from isal import isal_zlib as _isal_zlib

    _INFLATE_ERRORS: tuple[type[BaseException], ...] = (zlib.error, _isal_zlib.error)
except ImportError:  # pragma: no cover - isal is a declared dependency
    _igzip_threaded = None
    _INFLATE_ERRORS = (zlib.error,)

#: What a damaged or truncated gzip/tar stream raises (OSError covers gzip.BadGzipFile).
_CORRUPT_ERRORS = (tarfile.TarError, EOFError, OSError) + _INFLATE_ERRORS

#: Bytes per read when copying the tarball from the bucket (one ranged GET on S3).
COPY_CHUNK = 8 * 1024 * 1024
#: Inflated bytes per block handed over by the inflating thread, and per write of a member. Small
#: enough to stay in the CPU cache between inflate and write (8 MiB blocks run about 2x slower).
INFLATE_BLOCK = 1024 * 1024
WRITE_CHUNK = 256 * 1024
MANIFEST_NAME = "manifest.json"
TARBALL_NAME = "snapshot.tar.gz"


class IngestError(Exception):
    """Ingestion cannot go on; the message names the input, the problem and the fix."""


class SnapshotNotFoundError(IngestError):
    pass


class SizeMismatchError(IngestError):
    pass


class MissingTableError(IngestError):
    pass


class HeaderMismatchError(IngestError):
    pass


# ---------------------------------------------------------------------------------------------
# Step 1: snapshot files
# ---------------------------------------------------------------------------------------------


@dataclass
class MemberFile:
    """One extracted member of the snapshot tarball."""

    table: str
    member: str
    path: str
    bytes: int


@dataclass
class SnapshotFiles:
    """What :func:`fetch_snapshot_files` verified, and how much work this run did."""

    snapshot: date
    source: str
    tarball_path: Path
    tarball_bytes: int
    members: dict[str, MemberFile]
    copied_bytes: int = 0
    resumed_from: int = 0
    extracted_bytes: int = 0
    extracted: list[str] = field(default_factory=list)
    skipped: list[str] = field(default_factory=list)
    ignored_members: list[str] = field(default_factory=list)
    elapsed_s: float = 0.0

    @property
    def total_member_bytes(self) -> int:
        return sum(m.bytes for m in self.members.values())


def fetch_snapshot_files(
    fs: fsspec.AbstractFileSystem,
    bucket_root: str,
    snapshot: date,
    raw_dir: str | os.PathLike[str],
    *,
    required: Iterable[str] = CORE_TABLES,
    chunk_size: int = COPY_CHUNK,
    on_member: Callable[[MemberFile], None] | None = None,
) -> SnapshotFiles:
    """Copy and extract the dated snapshot tarball into ``raw_dir``; resume and skip verified work.

    ``on_member`` is called (on this thread) with every member file as soon as it is verified: first
    those verified by an earlier run, then each one the moment it is extracted, so a caller can start
    on one table while the next is still being extracted (:func:`fetch_and_ingest_tables`).

    Raises :class:`SnapshotNotFoundError` when the bucket has no tarball for ``snapshot``,
    :class:`SizeMismatchError` when a copy or a member does not have its expected size, and
    :class:`MissingTableError` when a ``required`` table is not in the tarball.
    """
    started = time.perf_counter()
    raw = Path(raw_dir)
    raw.mkdir(parents=True, exist_ok=True)
    key = dated_tarball_key(snapshot)
    source_path = join(bucket_root, key)
    source_label = _label(fs, source_path)
    try:
        info = fs.info(source_path)
    except FileNotFoundError:
        raise SnapshotNotFoundError(
            f"No snapshot tarball at {source_label} for snapshot {snapshot.isoformat()}. Fix: check that "
            f"`{key}` exists in the bucket (list `metadata/`), or delete this partition if the date is wrong."
        ) from None
    source_size = int(info["size"])
    version = info.get("ETag") or info.get("etag") or info.get("LastModified") or info.get("mtime") or ""
    source_tag = {"key": key, "size": source_size, "version": str(version)}

    tarball = raw / TARBALL_NAME
    manifest_path = raw / MANIFEST_NAME
    manifest = _read_manifest(manifest_path)
    if manifest.get("source") != source_tag:
        if manifest.get("source"):  # the bucket object changed since the partial work: start over
            tarball.unlink(missing_ok=True)
            _part_path(tarball).unlink(missing_ok=True)
        manifest = {"snapshot": snapshot.isoformat(), "source": source_tag, "tarball": None, "members": {}}
        _write_json(manifest_path, manifest)  # before copying, so that a resumed copy knows its source

    result = SnapshotFiles(snapshot, source_label, tarball, source_size, members={})

    # -- copy the tarball, resuming from .part -------------------------------------------------
    if not (manifest.get("tarball") and tarball.is_file() and tarball.stat().st_size == source_size):
        manifest["tarball"] = None
        manifest["members"] = {}
        result.resumed_from, result.copied_bytes = copy_with_resume(
            fs, source_path, tarball, source_size, chunk_size=chunk_size, label=source_label
        )
        manifest["tarball"] = {"path": str(tarball), "bytes": source_size, "verified_at": _now()}
        _write_json(manifest_path, manifest)

    # -- extract the members that are not verified yet -----------------------------------------
    verified = {
        table: MemberFile(**entry)
        for table, entry in manifest.get("members", {}).items()
        if Path(entry["path"]).is_file() and Path(entry["path"]).stat().st_size == entry["bytes"]
    }
    for member in verified.values():
        if on_member is not None:
            on_member(member)
    if manifest.get("complete") and len(verified) == len(manifest.get("members", {})):
        result.skipped = sorted(verified)
    else:
        manifest["complete"] = False
        try:
            _extract_members(tarball, snapshot_dirname(snapshot) + "/", raw, verified, result, manifest, on_member)
        except _CORRUPT_ERRORS as exc:
            if isinstance(exc, OSError) and exc.errno is not None:
                raise  # a disk problem (full, permissions), not a damaged tarball
            # The copy matched the bucket's size but does not decompress: discard it so a rerun re-copies.
            tarball.unlink(missing_ok=True)
            manifest["tarball"] = None
            _write_json(manifest_path, manifest)
            raise IngestError(
                f"The snapshot tarball copied from {source_label} is corrupt ({type(exc).__name__}: {exc}). "
                "The local copy was removed. Fix: re-run to copy it again; if it fails again the bucket object "
                "itself is damaged, so pick another snapshot."
            ) from exc
        manifest["complete"] = True
        _write_json(manifest_path, manifest)

    result.members = verified
    result.elapsed_s = time.perf_counter() - started
    missing = [t for t in required if t not in verified]
    if missing:
        raise MissingTableError(
            f"The snapshot tarball {source_label} has no "
            + ", ".join(f"{snapshot_dirname(snapshot)}/{t}.csv" for t in missing)
            + f" (required tables: {', '.join(missing)}); it holds {sorted(verified) or 'no known tables'}. "
            "Fix: the release is incomplete or its layout changed: pick another snapshot, or update "
            "bioasset.inat_format if iNaturalist renamed the files."
        )
    return result


def raw_table_path(raw_dir: str | os.PathLike[str], table: str) -> Path:
    """Where :func:`fetch_snapshot_files` puts the extracted ``{table}.csv``."""
    return Path(raw_dir) / f"{table}.csv"


def copy_with_resume(
    fs: fsspec.AbstractFileSystem,
    source_path: str,
    dest: Path,
    expected_size: int,
    *,
    chunk_size: int = COPY_CHUNK,
    label: str | None = None,
) -> tuple[int, int]:
    """Copy ``source_path`` to ``dest`` through ``dest.part``, resuming from the bytes already there.

    Returns ``(resumed_from, copied_bytes)``. The bytes are copied as stored (the bucket's
    ``Content-Encoding: gzip`` objects stay gzip). The finished copy must have ``expected_size``
    bytes; only then is it renamed to ``dest``.
    """
    label = label or source_path
    part = _part_path(dest)
    have = part.stat().st_size if part.exists() else 0
    if have > expected_size:  # not a prefix of this object: start again
        part.unlink()
        have = 0
    copied = 0
    if have < expected_size:
        with fs.open(source_path, "rb", block_size=chunk_size) as src, open(part, "ab") as out:
            if have:
                src.seek(have)
            while True:
                chunk = src.read(chunk_size)
                if not chunk:
                    break
                out.write(chunk)
                copied += len(chunk)
    got = part.stat().st_size
    if got != expected_size:
        raise SizeMismatchError(
            f"Copy of {label} has {got} bytes, the bucket says {expected_size}. The partial copy {part} is kept. "
            "Fix: re-run to resume the copy; if the sizes still differ, delete the .part file."
        )
    os.replace(part, dest)
    return have, copied


def _extract_members(
    tarball: Path,
    prefix: str,
    raw: Path,
    verified: dict[str, MemberFile],
    result: SnapshotFiles,
    manifest: dict[str, Any],
    on_member: Callable[[MemberFile], None] | None = None,
) -> None:
    """Stream the tarball once; write each table member not yet in ``verified``, updating the manifest."""
    manifest_path = raw / MANIFEST_NAME
    with _open_gzip(tarball) as stream:
        reader = TarStreamReader(stream)
        for member in reader:
            table = _member_table(member, prefix)
            if table is None:
                if member.isfile():
                    result.ignored_members.append(member.name)
                continue
            if table in verified:
                result.skipped.append(table)
                continue
            dest = raw_table_path(raw, table)
            tmp = _part_path(dest)
            try:
                with open(tmp, "wb") as out:
                    written = reader.copy_member(out)
                if written != member.size:
                    raise SizeMismatchError(
                        f"Member {member.name} of {tarball} gave {written} bytes, its tar header says {member.size}. "
                        f"Fix: the tarball is truncated or damaged; delete {raw} and re-run."
                    )
                os.replace(tmp, dest)
            finally:
                tmp.unlink(missing_ok=True)
            verified[table] = MemberFile(table, member.name, str(dest), member.size)
            result.extracted.append(table)
            result.extracted_bytes += member.size
            manifest["members"] = {t: asdict(m) for t, m in verified.items()}
            _write_json(manifest_path, manifest)
            if on_member is not None:
                on_member(verified[table])


class TarStreamReader:
    """A forward-only reader of an uncompressed tar stream, for large members.

    ``tarfile``'s stream mode copies every byte several times in Python (about 4x slower than
    inflating); this reads each member with ``readinto`` into one reused buffer. Headers are
    parsed by :meth:`tarfile.TarInfo.frombuf` (ustar, GNU base-256 sizes); pax ``path``/``size``
    records and GNU long names are applied to the member that follows them.
    """

    BLOCK = 512

    def __init__(self, stream: BinaryIO, chunk_size: int = WRITE_CHUNK):
        self._stream = stream
        self._buffer = bytearray(chunk_size)
        self._left = 0  # unread data bytes of the current member
        self._padding = 0

    def __iter__(self) -> Iterator[tarfile.TarInfo]:
        overrides: dict[str, str] = {}
        while True:
            self._skip(self._left + self._padding)
            self._left = self._padding = 0
            header = self._read(self.BLOCK)
            if not header or header == bytes(self.BLOCK):
                return  # end of archive
            if len(header) < self.BLOCK:
                raise tarfile.ReadError("the tar stream ends inside a member header")
            info = tarfile.TarInfo.frombuf(header, "utf-8", "surrogateescape")
            padding = -info.size % self.BLOCK
            if info.type in (tarfile.XHDTYPE, tarfile.XGLTYPE, tarfile.SOLARIS_XHDTYPE):
                overrides.update(_pax_records(self._read(info.size)))
                self._skip(padding)
                continue
            if info.type in (tarfile.GNUTYPE_LONGNAME, tarfile.GNUTYPE_LONGLINK):
                data = self._read(info.size).split(b"\0", 1)[0].decode("utf-8", "surrogateescape")
                if info.type == tarfile.GNUTYPE_LONGNAME:
                    overrides["path"] = data
                self._skip(padding)
                continue
            if "path" in overrides:
                info.name = overrides["path"]
            if "size" in overrides:
                info.size = int(overrides["size"])
            overrides = {}
            has_data = info.isreg() or info.type not in tarfile.SUPPORTED_TYPES  # as tarfile itself decides
            self._left, self._padding = (info.size, -info.size % self.BLOCK) if has_data else (0, 0)
            yield info

    def copy_member(self, out: BinaryIO) -> int:
        """Copy the rest of the current member's data to ``out``; returns the bytes copied."""
        view = memoryview(self._buffer)
        copied = 0
        while self._left:
            n = self._stream.readinto(view[: min(len(view), self._left)])
            if not n:
                break
            out.write(view[:n])
            copied += n
            self._left -= n
        return copied

    def _read(self, size: int) -> bytes:
        return self._stream.read(size)

    def _skip(self, size: int) -> None:
        view = memoryview(self._buffer)
        while size > 0:
            n = self._stream.readinto(view[: min(len(view), size)])
            if not n:
                raise tarfile.ReadError("the tar stream ends inside a member")
            size -= n


def _pax_records(data: bytes) -> dict[str, str]:
    """Records ``"LEN key=value\\n"`` of a pax extended header."""
    records: dict[str, str] = {}
    pos = 0
    try:
        while pos < len(data) and data[pos] != 0:
            space = data.index(b" ", pos)
            length = int(data[pos:space])
            key, _, value = data[space + 1 : pos + length - 1].partition(b"=")
            records[key.decode("utf-8")] = value.decode("utf-8", "surrogateescape")
            pos += length
    except ValueError as exc:
        raise tarfile.HeaderError(f"malformed pax header: {exc}") from exc
    return records


def _part_path(dest: Path) -> Path:
    return dest.with_name(dest.name + ".part")


def _member_table(member: tarfile.TarInfo, prefix: str) -> str | None:
    if not member.isfile() or not member.name.startswith(prefix) or not member.name.endswith(".csv"):
        return None
    table = member.name[len(prefix) : -len(".csv")]
    return table if table in TABLE_COLUMNS else None


def _open_gzip(path: Path) -> BinaryIO:
    if _igzip_threaded is not None:
        return _igzip_threaded.open(path, "rb", threads=1, block_size=INFLATE_BLOCK)
    import gzip

    return io.BufferedReader(gzip.open(path, "rb"), buffer_size=INFLATE_BLOCK)  # type: ignore[arg-type]


def _label(fs: fsspec.AbstractFileSystem, path: str) -> str:
    protocol = fs.protocol if isinstance(fs.protocol, str) else fs.protocol[0]
    return path if protocol in ("file", "local") else f"{protocol}://{path}"


def _read_manifest(path: Path) -> dict[str, Any]:
    try:
        return json.loads(path.read_text())
    except (FileNotFoundError, ValueError):
        return {}


def _write_json(path: Path, data: dict[str, Any]) -> None:
    tmp = path.with_name(f".{path.name}.tmp-{uuid.uuid4().hex[:8]}")
    tmp.write_text(json.dumps(data, indent=2, sort_keys=True))
    os.replace(tmp, path)


def _now() -> str:
    return datetime.now(timezone.utc).isoformat(timespec="seconds")


def write_snapshot_files_table(warehouse: Warehouse, files: SnapshotFiles, dest: Path) -> int:
    """Write the ``snapshot_files`` table: one row per extracted member. Returns its row count."""
    rows = [
        (files.snapshot, m.table, m.member, str(Path(m.path).resolve()), m.bytes, files.source)
        for m in sorted(files.members.values(), key=lambda m: m.table)
    ]
    with warehouse.connect() as con:
        con.execute(
            "CREATE TABLE files (snapshot DATE, \"table\" VARCHAR, member VARCHAR, path VARCHAR, bytes BIGINT, source VARCHAR)"
        )
        if rows:
            con.executemany("INSERT INTO files VALUES (?, ?, ?, ?, ?, ?)", rows)
        return warehouse.copy_to_parquet(con, "SELECT * FROM files ORDER BY \"table\"", dest)


# ---------------------------------------------------------------------------------------------
# Step 2: typed tables
# ---------------------------------------------------------------------------------------------


@dataclass
class TableIngest:
    """The outcome of :func:`ingest_table`."""

    table: str
    source: Path
    path: Path
    rejects_path: Path
    rows: int
    rejected_rows: int
    rejects_by_reason: dict[str, int]
    source_bytes: int
    parquet_bytes: int
    elapsed_s: float
    warnings: list[str] = field(default_factory=list)

    @property
    def rows_per_s(self) -> float:
        return (self.rows + self.rejected_rows) / self.elapsed_s if self.elapsed_s > 0 else 0.0

    @property
    def empty(self) -> bool:
        return self.rows == 0


#: Schema of every ``{table}_rejects.parquet``: one row per rejected line.
REJECTS_COLUMNS = {
    "line": "BIGINT",  # 1-based line number in the TSV file (the header is line 1)
    "byte_position": "BIGINT",
    "error_types": "VARCHAR",  # e.g. 'TOO MANY COLUMNS', 'MISSING COLUMNS', 'CAST', 'INVALID ENCODING'
    "columns": "VARCHAR",
    "error_message": "VARCHAR",
    "csv_line": "VARCHAR",
}


def read_csv_sql(table: str, path_param: str = "$path") -> str:
    """The DuckDB ``read_csv`` call for one iNat TSV file: no quoting, explicit types, rejects kept."""
    columns = ", ".join(f"{sql_string(name)}: {sql_string(kind)}" for name, kind in TABLE_COLUMNS[table].items())
    return (
        f"read_csv({path_param}, delim='\\t', quote='', escape='', header=true, auto_detect=false, "
        f"columns={{{columns}}}, store_rejects=true, rejects_table='rejects', rejects_scan='rejects_scans')"
    )


def ingest_table(table: str, source: str | os.PathLike[str], dest: Path, rejects_dest: Path, warehouse: Warehouse) -> TableIngest:
    """Parse one iNat TSV file into typed Parquet at ``dest`` and its rejects at ``rejects_dest``.

    Every column is read (so every cast runs); rows that fail are counted and written to the
    rejects file, never dropped silently and never fatal. A zero-byte or header-only file gives an
    empty table and a warning. A missing file raises :class:`MissingTableError`; a header that does
    not match :data:`bioasset.inat_format.TABLE_COLUMNS` raises :class:`HeaderMismatchError`.
    """
    started = time.perf_counter()
    if table not in TABLE_COLUMNS:
        raise IngestError(f"Unknown table {table!r}. Fix: use one of {', '.join(TABLE_COLUMNS)}.")
    source = Path(source)
    if not source.is_file():
        raise MissingTableError(
            f"The {table} file {source} does not exist. Fix: materialize `snapshot_files` for this snapshot first "
            "(it extracts the file from the snapshot tarball)."
        )
    source_bytes = source.stat().st_size
    warnings: list[str] = []
    expected = list(TABLE_COLUMNS[table])
    header = _first_line(source)
    with warehouse.connect() as con:
        if source_bytes == 0 or header is None:
            warnings.append(f"{source} is empty (zero bytes): the {table} table has no rows.")
            rows = warehouse.copy_to_parquet(con, _empty_select(TABLE_COLUMNS[table]), dest)
            _write_empty_rejects(warehouse, con, rejects_dest)
            rejects: dict[str, int] = {}
            rejected = 0
        else:
            if header != expected:
                raise HeaderMismatchError(
                    f"The header of {source} is {header}, expected {expected}. Fix: if iNaturalist changed the "
                    f"export format, update TABLE_COLUMNS['{table}'] in bioasset/inat_format.py."
                )
            rows = warehouse.copy_to_parquet(con, f"SELECT * FROM {read_csv_sql(table)}", dest, params={"path": str(source)})
            rejected, rejects = _write_rejects(warehouse, con, rejects_dest)
            if rows == 0 and rejected == 0:
                warnings.append(f"{source} has a header and no rows: the {table} table is empty.")
            elif rows == 0:
                warnings.append(f"Every row of {source} was rejected ({rejected}); see {rejects_dest}.")
    return TableIngest(
        table=table,
        source=source,
        path=dest,
        rejects_path=rejects_dest,
        rows=rows,
        rejected_rows=rejected,
        rejects_by_reason=rejects,
        source_bytes=source_bytes,
        parquet_bytes=dest.stat().st_size,
        elapsed_s=time.perf_counter() - started,
        warnings=warnings,
    )


def ingest_snapshot_table(warehouse: Warehouse, snapshot_key: str, table: str) -> TableIngest:
    """:func:`ingest_table` of one table of a snapshot: from the file :func:`fetch_snapshot_files`
    extracted into the warehouse's raw folder, to the warehouse's table and rejects paths."""
    return ingest_table(
        table, raw_table_path(warehouse.raw_dir(snapshot_key), table), warehouse.table_path(snapshot_key, table),
        warehouse.rejects_path(snapshot_key, table), warehouse,
    )  # fmt: skip


def fetch_and_ingest_tables(
    fs: fsspec.AbstractFileSystem,
    bucket_root: str,
    snapshot: date,
    warehouse: Warehouse,
    *,
    tables: Iterable[str] = CORE_TABLES,
    workers: int = 1,
) -> Iterator[SnapshotFiles | TableIngest]:
    """:func:`fetch_snapshot_files`, with each of ``tables`` parsed by :func:`ingest_table` as soon as its
    member file is extracted, while the later members are still being extracted.

    Extraction is one inflating thread plus one writing thread, so it leaves part of a second core
    idle; parsing ``observations.csv`` (the first big member of an iNat tarball) while
    ``photos.csv`` is extracted uses it. ``workers`` tables are parsed at a time (each DuckDB
    connection uses every core and up to ``memory_limit``, so the default 1 keeps the memory bound).

    Yields the :class:`SnapshotFiles` when the tarball is extracted, then each table's
    :class:`TableIngest` as it finishes. Raises what :func:`fetch_snapshot_files` raises (after the
    parses already started have finished); a table that fails to parse (a changed header, say) does
    not stop the others: its error is raised once they are done.
    """
    key = snapshot.isoformat()
    wanted = list(tables)
    parses: dict[str, Future[TableIngest]] = {}
    with ThreadPoolExecutor(max(1, workers), thread_name_prefix="typed-table") as pool:

        def parse(table: str) -> None:
            if table in wanted and table not in parses:
                parses[table] = pool.submit(ingest_snapshot_table, warehouse, key, table)

        try:
            yield fetch_snapshot_files(fs, bucket_root, snapshot, warehouse.raw_dir(key), on_member=lambda member: parse(member.table))
            for table in wanted:  # not in the tarball and not required: ingest_table names the missing file
                parse(table)
            failed: Exception | None = None
            for future in as_completed(parses.values()):
                try:
                    result = future.result()
                except Exception as exc:  # re-raised below, once the other tables are done
                    failed = failed or exc
                    continue
                yield result
            if failed is not None:
                raise failed
        finally:  # on an error (or an abandoned generator), parses not started yet never start
            for future in parses.values():
                future.cancel()


def _write_rejects(warehouse: Warehouse, con, dest: Path) -> tuple[int, dict[str, int]]:
    """One row per rejected line (a line may have several errors). Returns (lines, lines per reason)."""
    query = """
        SELECT line::BIGINT AS line,
               min(byte_position)::BIGINT AS byte_position,
               string_agg(DISTINCT error_type::VARCHAR, ', ' ORDER BY error_type::VARCHAR) AS error_types,
               string_agg(DISTINCT column_name, ', ' ORDER BY column_name) AS columns,
               string_agg(error_message, ' | ' ORDER BY column_idx) AS error_message,
               any_value(csv_line) AS csv_line
        FROM rejects GROUP BY line ORDER BY line
    """
    lines = warehouse.copy_to_parquet(con, query, dest)
    by_reason = dict(
        con.execute(
            "SELECT error_type::VARCHAR, count(DISTINCT line) FROM rejects GROUP BY ALL ORDER BY ALL"
        ).fetchall()
    )
    return lines, {str(k): int(v) for k, v in by_reason.items()}


def _write_empty_rejects(warehouse: Warehouse, con, dest: Path) -> None:
    warehouse.copy_to_parquet(con, _empty_select(REJECTS_COLUMNS), dest)


def _empty_select(columns: dict[str, str]) -> str:
    return "SELECT " + ", ".join(f"CAST(NULL AS {kind}) AS \"{name}\"" for name, kind in columns.items()) + " LIMIT 0"


def _first_line(path: Path) -> list[str] | None:
    with open(path, "rb") as handle:
        line = handle.readline(1 << 16)
    if not line:
        return None
    return line.rstrip(b"\r\n").decode("utf-8", errors="replace").split("\t")


def read_rejects(path: Path, limit: int = 10) -> list[dict[str, Any]]:
    """The first ``limit`` rows of a rejects file, for reports."""
    import pyarrow.parquet as pq

    return pq.read_table(path).slice(0, limit).to_pylist()
