"""The metadata files of a snapshot, byte for byte deterministic.

A snapshot is first written as one raw TSV per table into a staging folder; ``publish_snapshot``
then packs them into ``metadata/inaturalist-open-data-YYYYMMDD.tar.gz`` and, when the snapshot is
the newest, copies that to ``…-latest.tar.gz`` and gzips the root ``{table}.csv.gz`` files. The
tarball and the root files are compressed at once, in two threads (zlib lets go of the GIL).

Deterministic: tar members carry the snapshot's midnight (UTC) as mtime, uid/gid 0, no user
names; gzip headers carry the same mtime and no file name.
"""

from __future__ import annotations

import gzip
import shutil
import tarfile
import uuid
from collections.abc import Iterable, Iterator, Mapping
from concurrent.futures import ThreadPoolExecutor
from contextlib import contextmanager
from dataclasses import dataclass
from datetime import date, datetime, timezone
from pathlib import Path

from bioasset.inat_format import (
    LATEST_TARBALL,
    ROOT_CSV_TABLES,
    SNAPSHOT_TABLES,
    TABLE_COLUMNS,
    dated_tarball_key,
    header_line,
    parse_dated_tarball_key,
    snapshot_dirname,
)
from bioasset.sample_bucket.errors import SampleBucketError
from bioasset.storage import atomic_path

COPY_BLOCK = 4 << 20

Row = Mapping[str, str]


def format_value(value: object) -> str:
    """One field as the iNat export writes it: NULL is empty, booleans are ``true``/``false``,
    whole floats have no decimals (``10``), other floats the shortest repr (``33.5``)."""
    if value is None:
        return ""
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, float):
        return str(int(value)) if value.is_integer() else repr(value)
    text = str(value)
    if "\t" in text or "\n" in text or "\r" in text:
        raise SampleBucketError(f"field {text!r} holds a tab or newline, which the unquoted iNat TSV cannot carry")
    return text


def write_table(path: Path, table: str, rows: Iterable[Row]) -> None:
    """Write one table as TSV with a header: rows are mappings of column -> formatted field."""
    columns = tuple(TABLE_COLUMNS[table])
    with open(path, "w", encoding="utf-8", newline="") as handle:
        handle.write(header_line(table))
        handle.writelines("\t".join(row[column] for column in columns) + "\n" for row in rows)


def read_tables(tarball: Path) -> dict[str, list[dict[str, str]]]:
    """Every table of a snapshot tarball, as lists of column -> field (strings as written)."""
    tables: dict[str, list[dict[str, str]]] = {}
    try:
        archive = tarfile.open(tarball, "r:gz")
    except (OSError, tarfile.TarError) as error:
        raise SampleBucketError(f"{tarball}: not a readable .tar.gz ({error}); pass a snapshot tarball written by sample-bucket") from error
    with archive:
        for member in archive.getmembers():
            table = Path(member.name).name.removesuffix(".csv")
            if not member.isfile() or table not in TABLE_COLUMNS:
                continue
            lines = archive.extractfile(member).read().decode("utf-8").split("\n")
            header = lines[0].split("\t")
            columns = list(TABLE_COLUMNS[table])
            if header != columns:
                raise SampleBucketError(f"{tarball}:{member.name}: header {header} is not {columns}; the file is not an iNat export table")
            rows = []
            for number, line in enumerate(lines[1:], start=2):
                if not line:
                    continue
                fields = line.split("\t")
                if len(fields) != len(columns):
                    raise SampleBucketError(f"{tarball}:{member.name} line {number}: {len(fields)} fields, expected {len(columns)}")
                rows.append(dict(zip(columns, fields)))
            tables[table] = rows
    missing = set(SNAPSHOT_TABLES) - set(tables)
    if missing:
        raise SampleBucketError(f"{tarball}: lacks {sorted(missing)}; a snapshot tarball holds {list(SNAPSHOT_TABLES)}")
    return tables


def snapshot_dates(dest: Path) -> list[date]:
    """The dates of the dated tarballs in ``dest``, oldest first."""
    metadata = dest / Path(dated_tarball_key(date(2000, 1, 1))).parent
    found = (parse_dated_tarball_key(path.name) for path in metadata.glob("*.tar.gz")) if metadata.is_dir() else ()
    return sorted(d for d in found if d is not None)


@contextmanager
def staging_dir(dest: Path) -> Iterator[Path]:
    """A scratch folder inside ``dest`` (same filesystem, so renames are atomic), removed after."""
    path = dest / f".staging-{uuid.uuid4().hex}"
    path.mkdir(parents=True)
    try:
        yield path
    finally:
        shutil.rmtree(path, ignore_errors=True)


def _epoch(snapshot: date) -> int:
    return int(datetime(snapshot.year, snapshot.month, snapshot.day, tzinfo=timezone.utc).timestamp())


def _gzip_writer(handle, mtime: int, level: int, fast: bool) -> gzip.GzipFile:
    """A gzip stream with a fixed header. ``fast`` uses python-isal (about 4x zlib's speed,
    levels 0-3) when it is installed; its bytes differ from zlib's, so a bucket is byte for
    byte reproducible on machines that agree on having it."""
    if fast:
        try:
            from isal import igzip
        except ImportError:
            level = 1
        else:
            return igzip.IGzipFile(filename="", mode="wb", fileobj=handle, compresslevel=min(level, 3), mtime=mtime)
    return gzip.GzipFile(filename="", mode="wb", fileobj=handle, compresslevel=level, mtime=mtime)


def _write_tarball(path: Path, snapshot: date, raw_dir: Path, level: int, fast: bool) -> None:
    mtime, dirname = _epoch(snapshot), snapshot_dirname(snapshot)
    with atomic_path(path) as tmp, open(tmp, "wb") as handle, _gzip_writer(handle, mtime, level, fast) as gz:
        with tarfile.open(fileobj=gz, mode="w|", format=tarfile.GNU_FORMAT, bufsize=COPY_BLOCK) as archive:
            archive.copybufsize = COPY_BLOCK
            folder = tarfile.TarInfo(dirname)
            folder.type, folder.mode, folder.mtime = tarfile.DIRTYPE, 0o755, mtime
            archive.addfile(folder)
            for table in sorted(SNAPSHOT_TABLES):
                source = raw_dir / f"{table}.csv"
                member = tarfile.TarInfo(f"{dirname}/{table}.csv")
                member.size, member.mode, member.mtime = source.stat().st_size, 0o644, mtime
                with open(source, "rb") as data:
                    archive.addfile(member, data)


def _write_root_csvs(dest: Path, snapshot: date, raw_dir: Path, level: int, fast: bool) -> None:
    mtime = _epoch(snapshot)
    for table in ROOT_CSV_TABLES:
        with atomic_path(dest / f"{table}.csv.gz") as tmp, open(tmp, "wb") as handle, _gzip_writer(handle, mtime, level, fast) as gz:
            with open(raw_dir / f"{table}.csv", "rb") as data:
                shutil.copyfileobj(data, gz, COPY_BLOCK)


@dataclass(frozen=True)
class Published:
    tarball: Path
    is_latest: bool
    bytes_written: int


def publish_snapshot(dest: Path, snapshot: date, raw_dir: Path, *, compresslevel: int = 6, fast: bool = False) -> Published:
    """Pack the raw tables in ``raw_dir`` into the dated tarball; if no later snapshot exists in
    ``dest``, also update the latest tarball and the root ``*.csv.gz`` files. ``fast``: see
    ``_gzip_writer``."""
    tarball = dest / dated_tarball_key(snapshot)
    is_latest = all(existing <= snapshot for existing in snapshot_dates(dest))
    with ThreadPoolExecutor(max_workers=2) as pool:
        jobs = [pool.submit(_write_tarball, tarball, snapshot, raw_dir, compresslevel, fast)]
        if is_latest:
            jobs.append(pool.submit(_write_root_csvs, dest, snapshot, raw_dir, compresslevel, fast))
        for job in jobs:
            job.result()
    written = [tarball]
    if is_latest:
        with atomic_path(dest / LATEST_TARBALL) as tmp:
            shutil.copyfile(tarball, tmp)
        written += [dest / LATEST_TARBALL] + [dest / f"{table}.csv.gz" for table in ROOT_CSV_TABLES]
    return Published(tarball, is_latest, sum(path.stat().st_size for path in written))
