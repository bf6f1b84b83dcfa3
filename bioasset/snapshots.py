"""Tell whether the open-data bucket has published a new iNaturalist metadata snapshot.

Plain Python, no Dagster: ``inat_snapshot_sensor`` and ``bioasset snapshots check`` both call
:func:`observe_bucket` (what the bucket shows now) and then :func:`decide` (what to do about it,
given the cursor of the previous tick).

- The latest snapshot is ``metadata/inaturalist-open-data-latest.tar.gz``. Its identity is its
  ETag and size; a local folder has no ETags, so there it is its size and modification time.
- Its date comes from the dated tarball (``metadata/inaturalist-open-data-YYYYMMDD.tar.gz``)
  with the same ETag and size, else the only dated tarball of the same size (S3 gives a copied
  multipart object a new ETag), else the LastModified date of the latest tarball.
- A release is half-published while a root CSV (``{table}.csv.gz``) is newer than the latest
  tarball: the new tables are up but the new tarball is not yet.
"""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass
from datetime import date, datetime, timezone
from typing import Any

import fsspec

from bioasset.inat_format import (
    LATEST_TARBALL,
    METADATA_PREFIX,
    ROOT_CSV_TABLES,
    parse_dated_tarball_key,
    snapshot_key,
)
from bioasset.storage import join

#: How the snapshot date was resolved (``SnapshotObservation.resolved_by``).
RESOLVED_BY_ETAG_AND_SIZE = "the dated tarball with the same ETag and size"
RESOLVED_BY_SIZE = "the only dated tarball with the same size"
RESOLVED_BY_LAST_MODIFIED = "the LastModified date of the latest tarball (no dated tarball matches it)"


@dataclass(frozen=True)
class ObjectStamp:
    """What a HEAD request tells about one object: enough to see whether it changed."""

    path: str
    size: int
    last_modified: datetime  # timezone-aware, UTC
    etag: str | None  # None where the store has no ETags (a local folder)

    @classmethod
    def from_info(cls, info: dict[str, Any]) -> ObjectStamp:
        """From an fsspec ``info``/``ls(detail=True)`` entry: s3fs gives ETag and LastModified,
        a local folder gives mtime."""
        etag = info.get("ETag") or info.get("etag")
        return cls(
            path=info["name"],
            size=int(info["size"]),
            last_modified=_modification_time(info),
            # s3 quotes ETags; the quotes carry no information.
            etag=etag.strip('"') if etag else None,
        )

    def to_dict(self) -> dict[str, Any]:
        return {"path": self.path, "size": self.size, "last_modified": self.last_modified.isoformat(), "etag": self.etag}


@dataclass(frozen=True)
class SnapshotCursor:
    """What the sensor remembers between ticks: the latest tarball it acted on."""

    etag: str | None
    size: int
    last_modified: str  # ISO 8601, as ObjectStamp.to_dict writes it
    snapshot: str  # the snapshot key (partition) it resolved to

    @classmethod
    def for_latest(cls, latest: ObjectStamp, snapshot: str) -> SnapshotCursor:
        return cls(etag=latest.etag, size=latest.size, last_modified=latest.last_modified.isoformat(), snapshot=snapshot)

    def is_same_object(self, latest: ObjectStamp) -> bool:
        """Whether ``latest`` is the object this cursor was taken from: same ETag and size, or,
        without ETags, same size and modification time."""
        if self.etag and latest.etag:
            return (self.etag, self.size) == (latest.etag, latest.size)
        return (self.size, self.last_modified) == (latest.size, latest.last_modified.isoformat())

    def to_json(self) -> str:
        return json.dumps(asdict(self), sort_keys=True)

    @classmethod
    def from_json(cls, text: str | None) -> SnapshotCursor | None:
        """The cursor stored as JSON by :meth:`to_json`; None for no cursor (the first tick)."""
        if not text:
            return None
        try:
            fields = json.loads(text)
            return cls(
                etag=fields["etag"],
                size=int(fields["size"]),
                last_modified=str(fields["last_modified"]),
                snapshot=str(fields["snapshot"]),
            )
        except (ValueError, TypeError, KeyError) as error:
            raise ValueError(
                f"Snapshot cursor {text!r} is not valid: {error!r}; expected JSON with the keys etag, size, "
                "last_modified and snapshot. Fix: pass a cursor printed by `bioasset snapshots check --json`, "
                "or clear the cursor of inat_snapshot_sensor in the Dagster UI (it then requests the latest snapshot)."
            ) from error


@dataclass(frozen=True)
class SnapshotObservation:
    """What the bucket shows now."""

    url: str
    latest: ObjectStamp | None  # None: no latest tarball in the bucket
    snapshot: date | None
    resolved_by: str | None  # one of the RESOLVED_BY_* texts
    dated_tarball: str | None  # the dated tarball the date was read from, if any
    newer_root_csvs: tuple[ObjectStamp, ...]  # root CSVs modified after the latest tarball

    @property
    def half_published(self) -> bool:
        return bool(self.newer_root_csvs)

    @property
    def snapshot_key(self) -> str | None:
        return snapshot_key(self.snapshot) if self.snapshot else None

    def to_dict(self) -> dict[str, Any]:
        return {
            "url": self.url,
            "latest": self.latest.to_dict() if self.latest else None,
            "snapshot": self.snapshot_key,
            "resolved_by": self.resolved_by,
            "dated_tarball": self.dated_tarball,
            "half_published": self.half_published,
            "newer_root_csvs": [stamp.to_dict() for stamp in self.newer_root_csvs],
        }


@dataclass(frozen=True)
class SnapshotDecision:
    """What a sensor tick does: request ``snapshot_key`` (None: skip), and why."""

    snapshot_key: str | None
    reason: str
    cursor: SnapshotCursor | None  # the cursor to keep after this tick

    @property
    def is_new(self) -> bool:
        return self.snapshot_key is not None


def observe_bucket(fs: fsspec.AbstractFileSystem, root: str, *, url: str) -> SnapshotObservation:
    """HEAD the latest tarball, list the dated tarballs and HEAD the root CSVs of the bucket at
    ``root`` on ``fs`` (``url`` is only for messages). Never reads a cached listing."""
    latest = _stat(fs, join(root, LATEST_TARBALL))
    if latest is None:
        return SnapshotObservation(url, None, None, None, None, ())
    snapshot, resolved_by, dated_tarball = _resolve_snapshot_date(latest, _dated_tarballs(fs, root))
    root_csvs = (_stat(fs, join(root, f"{table}.csv.gz")) for table in ROOT_CSV_TABLES)
    newer_root_csvs = tuple(csv for csv in root_csvs if csv is not None and csv.last_modified > latest.last_modified)
    return SnapshotObservation(url, latest, snapshot, resolved_by, dated_tarball, newer_root_csvs)


def decide(observation: SnapshotObservation, cursor: SnapshotCursor | None) -> SnapshotDecision:
    """Request the snapshot the bucket shows, unless it was requested before, or is not there,
    or is half-published. Repeating a tick with the cursor it returned always skips."""
    latest = observation.latest
    if latest is None:
        return SnapshotDecision(
            None,
            f"No {LATEST_TARBALL} in {observation.url}: nothing is published there yet, or the open_data URL is "
            "wrong. Fix: point the open_data resource (or BIOASSET_OPEN_DATA_URL) at the bucket root; "
            "`bioasset snapshots check --url URL` shows what a URL holds.",
            cursor,
        )
    if observation.half_published:
        newer = ", ".join(f"{csv.path} ({csv.last_modified.isoformat()})" for csv in observation.newer_root_csvs)
        return SnapshotDecision(
            None,
            f"Release half-published in {observation.url}: root CSVs {newer} are newer than {latest.path} "
            f"({latest.last_modified.isoformat()}). Waiting for the new tarball before requesting a snapshot.",
            cursor,
        )
    key = observation.snapshot_key
    assert key is not None  # a latest tarball always resolves to a date
    if cursor is not None and cursor.is_same_object(latest):
        return SnapshotDecision(
            None, f"{latest.path} is unchanged ({_identity_text(latest)}); snapshot {cursor.snapshot} was already requested.", cursor
        )
    new_cursor = SnapshotCursor.for_latest(latest, key)
    if cursor is not None and cursor.snapshot == key:
        return SnapshotDecision(
            None,
            f"{latest.path} changed ({_identity_text(latest)}) but still resolves to snapshot {key}, which was already "
            f"requested. To ingest it again, launch ingest_snapshot_job for partition {key} by hand.",
            new_cursor,
        )
    return SnapshotDecision(
        key, f"New snapshot {key} ({_identity_text(latest)}); its date is from {observation.resolved_by}.", new_cursor
    )


def _resolve_snapshot_date(latest: ObjectStamp, dated_tarballs: list[ObjectStamp]) -> tuple[date, str, str | None]:
    same_size = [tarball for tarball in dated_tarballs if tarball.size == latest.size]
    same_etag = [tarball for tarball in same_size if latest.etag and tarball.etag == latest.etag]
    if same_etag:
        match, resolved_by = max(same_etag, key=_tarball_date), RESOLVED_BY_ETAG_AND_SIZE
    elif len(same_size) == 1:
        match, resolved_by = same_size[0], RESOLVED_BY_SIZE
    else:
        return latest.last_modified.date(), RESOLVED_BY_LAST_MODIFIED, None
    return _tarball_date(match), resolved_by, match.path


def _tarball_date(tarball: ObjectStamp) -> date:
    snapshot = parse_dated_tarball_key(tarball.path)
    assert snapshot is not None  # _dated_tarballs keeps dated keys only
    return snapshot


def _dated_tarballs(fs: fsspec.AbstractFileSystem, root: str) -> list[ObjectStamp]:
    folder = join(root, METADATA_PREFIX)
    try:
        entries = fs.ls(folder, detail=True, refresh=True)
    except FileNotFoundError:
        return []
    except PermissionError as error:
        raise _access_denied(folder, error) from error
    return [
        ObjectStamp.from_info(entry)
        for entry in entries
        if entry.get("type") == "file" and parse_dated_tarball_key(entry["name"]) is not None
    ]


def _stat(fs: fsspec.AbstractFileSystem, path: str) -> ObjectStamp | None:
    """One HEAD request (fs.info), bypassing fsspec's listing cache: filesystem instances are
    shared across sensor ticks, and a cached listing would hide a new publication."""
    try:
        return ObjectStamp.from_info(fs.info(path, refresh=True))
    except FileNotFoundError:
        return None
    except PermissionError as error:
        raise _access_denied(path, error) from error


def _access_denied(path: str, error: PermissionError) -> PermissionError:
    return PermissionError(
        f"Access denied reading {path} ({error}). The iNaturalist bucket is public-read, so this is another "
        "store or a wrong URL. Fix: correct the open_data URL, or give the open_data resource access_key_id "
        "and secret_access_key."
    )


def _modification_time(info: dict[str, Any]) -> datetime:
    value = info.get("LastModified", info.get("mtime"))
    if isinstance(value, (int, float)):
        return datetime.fromtimestamp(value, tz=timezone.utc)
    if isinstance(value, str):
        value = datetime.fromisoformat(value)
    if not isinstance(value, datetime):
        raise ValueError(
            f"{info.get('name')!r} has no modification time (no LastModified or mtime in {sorted(info)}); the snapshot "
            "sensor needs one to order releases. Fix: use an S3-compatible store or a local folder as the open-data bucket."
        )
    return value.astimezone(timezone.utc) if value.tzinfo else value.replace(tzinfo=timezone.utc)


def _identity_text(latest: ObjectStamp) -> str:
    if latest.etag:
        return f"ETag {latest.etag}, {latest.size} bytes"
    return f"{latest.size} bytes, modified {latest.last_modified.isoformat()}"
