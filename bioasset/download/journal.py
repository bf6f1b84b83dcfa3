"""The verification journal: what is known about each stored image, so a rerun skips it.

One JSON-lines file per (source, size, journal name), rewritten atomically at checkpoints. It is
a cache, not the truth: an image on disk that the journal does not know (written after the last
checkpoint, before a crash) is verified again from the store, never downloaded again.
Give concurrent runs different journal names (e.g. the Dagster partition key), or they overwrite
each other's journal and their next reruns verify from disk instead of trusting the journal.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, fields

import fsspec

from bioasset.storage import atomic_write_bytes


@dataclass(frozen=True, slots=True)
class StoredImage:
    """What was verified about one stored image."""

    name: str  # file name in its size folder: ``{photo_id}.{ext}``
    sha256: str
    width: int
    height: int
    bytes: int
    format: str


_FIELD_NAMES = tuple(field.name for field in fields(StoredImage))


class Journal:
    def __init__(self, fs: fsspec.AbstractFileSystem, path: str) -> None:
        self.fs = fs
        self.path = path
        self._lines: dict[str, str] = {}
        self._records: dict[str, StoredImage] = {}
        self._dirty = False

    def load(self) -> Journal:
        """Read the journal if there is one; lines cut by a crash or edited by hand are ignored."""
        try:
            text = self.fs.cat_file(self.path).decode("utf-8", errors="replace")
        except FileNotFoundError:
            return self
        for line in text.splitlines():
            try:
                record = StoredImage(**json.loads(line))
            except (ValueError, TypeError):
                continue
            self._records[record.name] = record
            self._lines[record.name] = line
        return self

    def get(self, name: str) -> StoredImage | None:
        return self._records.get(name)

    def add(self, record: StoredImage) -> None:
        self._records[record.name] = record
        self._lines[record.name] = json.dumps(
            {name: getattr(record, name) for name in _FIELD_NAMES}, separators=(",", ":")
        )
        self._dirty = True

    def discard(self, name: str) -> None:
        if self._records.pop(name, None) is not None:
            del self._lines[name]
            self._dirty = True

    def snapshot(self) -> bytes | None:
        """The journal's bytes if it changed since the last write; cheap enough for the event loop."""
        if not self._dirty:
            return None
        self._dirty = False
        lines = list(self._lines.values())
        return ("\n".join(lines) + "\n").encode() if lines else b""

    def write(self, content: bytes) -> None:
        """Write a snapshot atomically: readers see the old journal or the new one, never half."""
        atomic_write_bytes(self.fs, self.path, content)
