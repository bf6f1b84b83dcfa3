"""What to download and where it goes: validated items and the image store layout.

Images live at ``{store}/{source}/{size}/{photo_id}.{ext}``. Every path part comes from data
(the metadata tables), so each is checked against a strict pattern before any path is built:
no part can hold ``/``, ``..`` or an absolute path, and nothing is ever written outside the store.
"""

from __future__ import annotations

import os
import re
from collections.abc import Callable
from dataclasses import dataclass
from functools import partial
from typing import Any

import fsspec

from bioasset.inat_format import IMAGE_SIZES, photo_key
from bioasset.storage import atomic_write_bytes, filesystem_for, join

#: Accepted file extensions -> the Pillow format a resized image is re-encoded to. The bytes may be
#: any of these formats (sources mislabel some); without a resize they are stored as they came.
EXTENSION_FORMATS = {"jpg": "JPEG", "jpeg": "JPEG", "png": "PNG", "gif": "GIF", "webp": "WEBP"}

#: Store folders that hold bookkeeping, not images; a source name may not start with "_".
QUARANTINE_DIR = "_quarantine"
JOURNAL_DIR = "_journal"

INATURALIST_SOURCE = "inaturalist"
INATURALIST_BUCKET_URL = "s3://inaturalist-open-data"

_PHOTO_ID = re.compile(r"[A-Za-z0-9][A-Za-z0-9_-]{0,127}")
_FOLDER_NAME = re.compile(r"[a-z0-9][a-z0-9_-]{0,63}")
_SAFE_NAME_HINT = "use letters, digits, '_' or '-' only (no '/', '..', '.' or absolute paths)"


class InvalidItemError(ValueError):
    """A download item (or store address) that would not map to a safe file inside the store."""


@dataclass(frozen=True, slots=True)
class DownloadItem:
    """One image to fetch: the photo, where its bytes come from, and which size and extension it has.

    ``source_url`` is ``http(s)://…`` or any fsspec URL (``s3://…``, a local path).
    """

    photo_id: int | str
    source_url: str
    size: str = "medium"
    extension: str = "jpg"


def inaturalist_item(
    photo_id: int, size: str = "medium", extension: str = "jpg", *, bucket_url: str = INATURALIST_BUCKET_URL
) -> DownloadItem:
    """The item for one iNaturalist photo in the open-data bucket (or a bucket laid out like it,
    including its HTTPS endpoint ``https://inaturalist-open-data.s3.amazonaws.com``)."""
    return DownloadItem(photo_id, join(bucket_url, photo_key(photo_id, size, extension)), size, extension)


def checked_photo_id(photo_id: object) -> str:
    """The photo id as a file-name stem, or InvalidItemError saying why it is unsafe."""
    if isinstance(photo_id, bool) or not isinstance(photo_id, (int, str)):
        raise InvalidItemError(f"photo_id {photo_id!r} has type {type(photo_id).__name__}: pass an int or a str")
    if isinstance(photo_id, int):
        if photo_id < 0:
            raise InvalidItemError(f"photo_id {photo_id} is negative: photo ids are non-negative integers")
        return str(photo_id)
    if not _PHOTO_ID.fullmatch(photo_id):
        raise InvalidItemError(f"photo_id {photo_id!r} is not a safe file name: {_SAFE_NAME_HINT}")
    return photo_id


def checked_extension(extension: object) -> str:
    """The lower-case extension if it is an image type the store accepts."""
    normalized = extension.lower() if isinstance(extension, str) else extension
    if normalized not in EXTENSION_FORMATS:
        raise InvalidItemError(
            f"extension {extension!r} is not an accepted image extension: use one of {sorted(EXTENSION_FORMATS)}"
        )
    return normalized


def checked_folder_name(kind: str, name: object) -> str:
    """A source or size name that is safe as one folder level and not a reserved ``_`` folder."""
    if not isinstance(name, str) or not _FOLDER_NAME.fullmatch(name):
        raise InvalidItemError(
            f"{kind} {name!r} is not a safe folder name: use lower-case letters, digits, '_' or '-', "
            "starting with a letter or digit (no '/', '..' or absolute paths)"
        )
    return name


def checked_size(source: str, size: object) -> str:
    """The size name; iNaturalist sizes must be one the bucket actually has."""
    checked = checked_folder_name("size", size)
    if source == INATURALIST_SOURCE and checked not in IMAGE_SIZES:
        raise InvalidItemError(f"size {size!r} is not an iNaturalist image size: use one of {list(IMAGE_SIZES)}")
    return checked


def checked_source_url(url: object) -> str:
    if not isinstance(url, str) or not url.strip():
        raise InvalidItemError(f"source_url {url!r} is empty: pass an http(s):// URL or an fsspec URL")
    return url


def stored_size_name(size: str, resize_shorter_side: int | None, jpeg_quality: int) -> str:
    """The size folder of stored images: the source size, or the size plus the resize applied
    (``medium-short256-q90``), so a resized image never passes for the original one."""
    if resize_shorter_side is None:
        return size
    return f"{size}-short{resize_shorter_side}-q{jpeg_quality}"


_STORED_SIZE_NAME = re.compile(r"^(?P<size>[a-z0-9_]+)(?:-short(?P<shorter_side>[1-9][0-9]*)-q(?P<quality>[1-9][0-9]*))?$")


def parse_stored_size_name(name: str) -> tuple[str, int | None, int | None]:
    """``(size, resize_shorter_side, jpeg_quality)`` of a size folder named by
    :func:`stored_size_name`; ValueError for any other name."""
    match = _STORED_SIZE_NAME.match(name)
    if match is None:
        raise ValueError(f"{name!r} is not a stored size name: expected SIZE or SIZE-shortN-qQ, e.g. medium-short256-q90")
    shorter_side, quality = match["shorter_side"], match["quality"]
    return match["size"], int(shorter_side) if shorter_side else None, int(quality) if quality else None


def split_image_path(image_path: str) -> tuple[str, str, str, str]:
    """``(source, size folder, photo id, extension)`` of a store-relative ``image_path`` laid out
    as ``{source}/{size}/{photo_id}.{ext}``; InvalidItemError for anything else. The parts still
    go through :meth:`ImageStore.path_for` before any use."""
    parts = str(image_path).split("/")
    stem, dot, extension = parts[-1].rpartition(".")
    if len(parts) != 3 or not (parts[0] and parts[1] and stem and dot and extension):
        raise InvalidItemError(f"image_path {image_path!r} is not SOURCE/SIZE/PHOTO_ID.EXT, the image store's layout")
    return parts[0], parts[1], stem, extension


class ImageStore:
    """The image store at an fsspec URL (a local folder or ``s3://…``).

    Layout: ``{store}/{source}/{size}/{photo_id}.{ext}``; bookkeeping lives beside it under
    ``_quarantine/`` (rejected bytes with their reason) and ``_journal/`` (verification records).
    """

    def __init__(self, url: str | os.PathLike[str], **filesystem_options: Any) -> None:
        url = os.fspath(url)
        self.url = url
        self.fs: fsspec.AbstractFileSystem
        self.fs, self.root = filesystem_for(url, **filesystem_options)
        protocol = self.fs.protocol if isinstance(self.fs.protocol, str) else self.fs.protocol[0]
        #: Local stores are checked with cheap inline syscalls; remote ones off the event loop.
        self.is_local = protocol in ("file", "local")
        #: ``write_atomic(path, data)``: temp file then rename (plain system calls on a local disk).
        self.write_atomic: Callable[[str, bytes], None] = partial(atomic_write_bytes, self.fs)

    def __repr__(self) -> str:
        return f"ImageStore({self.url!r})"

    def path_for(self, source: str, size: str, photo_id: int | str, extension: str) -> str:
        """The path of one stored image; InvalidItemError if any part is unsafe."""
        return self._inside(source, size, _file_name(photo_id, extension))

    def folder_for(self, source: str, size: str) -> str:
        """The folder of one source and size: ``path_for`` is this plus ``/{photo_id}.{ext}``."""
        return self._inside(source, size, "")

    def quarantine_path_for(self, source: str, size: str, photo_id: int | str, extension: str) -> str:
        """Where rejected bytes of one image go, beside a ``.reason.json`` that says why."""
        return self._inside(source, size, _file_name(photo_id, extension), under=QUARANTINE_DIR)

    def journal_folder(self, source: str, size: str) -> str:
        """The folder of one (source, size)'s journals: ``journal_path`` is this plus ``/{journal}.jsonl``."""
        return self._inside(source, size, "", under=JOURNAL_DIR)

    def journal_path(self, source: str, size: str, journal: str) -> str:
        """The verification journal of one (source, size) folder, one file per journal name."""
        return self._inside(source, size, f"{checked_folder_name('journal', journal)}.jsonl", under=JOURNAL_DIR)

    def url_of(self, path: str) -> str:
        """The full URL (with protocol) of a path in this store, for manifests."""
        return self.fs.unstrip_protocol(path)

    def _inside(self, source: str, size: str, file_name: str, *, under: str | None = None) -> str:
        parts = [checked_folder_name("source", source), checked_folder_name("size", size), file_name]
        path = join(self.root, *([under] if under else []), *parts)
        # Belt and braces: the patterns above already exclude every way out of the store.
        relative = path[len(self.root.rstrip("/")) :]
        if not relative.startswith("/") or "/../" in f"{relative}/" or "//" in relative:
            raise InvalidItemError(f"path {path!r} would leave the image store {self.url!r}: check the item's parts")
        return path


def _file_name(photo_id: object, extension: object) -> str:
    return f"{checked_photo_id(photo_id)}.{checked_extension(extension)}"
