"""The verification journal: what is known about each stored image, so a rerun skips it.

One JSON-lines file per (source, size, journal name), rewritten atomically at checkpoints. It is
a cache, not the truth: an image on disk that the journal does not know (written after the last
checkpoint, before a crash) is verified again from the store, never downloaded again.
Give concurrent runs different journal names (e.g. the Dagster partition key), or they overwrite
each other's journal and their next reruns verify from disk instead of trusting the journal.
"""

from __future__ import annotations

import json
from dataclasses import dataclass

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


def _line(record: StoredImage) -> str:
    """The record as one line of compact JSON (as ``json.dumps`` of its fields would write it),
    formatted directly at under half the cost: the engine writes one per image."""
    return (
        f'{{"name":{json.dumps(record.name)},"sha256":{json.dumps(record.sha256)},"width":{record.width:d},'
        f'"height":{record.height:d},"bytes":{record.bytes:d},"format":{json.dumps(record.format)}}}'
    )


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
        lines = text.splitlines()
        try:  # one parse for the whole file (a rerun of a big partition reads thousands of lines)
            rows = json.loads(f"[{','.join(lines)}]")
        except ValueError:
            rows = None
        if rows is None or len(rows) != len(lines):  # a line cut or edited by hand: parse line by line
            rows = []
            for line in lines:
                try:
                    rows.append(json.loads(line))
                except ValueError:
                    rows.append(None)
        for line, row in zip(lines, rows):
            try:
                record = StoredImage(**row)
                self._records[record.name] = record
            except TypeError:  # not an object, not a StoredImage's fields, or an unhashable name
                continue
            self._lines[record.name] = line
        return self

    def get(self, name: str) -> StoredImage | None:
        return self._records.get(name)

    def add(self, record: StoredImage) -> None:
        self._records[record.name] = record
        self._lines[record.name] = _line(record)
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
