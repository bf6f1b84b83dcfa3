"""Storage addressed by URL through fsspec: a local path and ``s3://…`` take the same code path."""

from __future__ import annotations

import hashlib
import itertools
import os
import socket
import time
import uuid
from contextlib import contextmanager, suppress
from pathlib import Path
from typing import Any, Iterator

import fsspec
from fsspec.core import url_to_fs


def filesystem_for(
    url: str,
    *,
    endpoint_url: str | None = None,
    anon: bool | None = None,
    key: str | None = None,
    secret: str | None = None,
    region: str | None = None,
) -> tuple[fsspec.AbstractFileSystem, str]:
    """The filesystem and the protocol-less root path for ``url``.

    For ``s3://`` URLs the options configure s3fs: anonymous access unless credentials are given
    (the iNaturalist bucket is public-read), an optional S3-compatible endpoint and region.
    """
    options: dict[str, Any] = {}
    if url.startswith(("s3://", "s3a://")):
        if anon is None:
            anon = not (key or secret)
        options["anon"] = anon
        if key or secret:
            options["key"] = key
            options["secret"] = secret
        client_kwargs: dict[str, Any] = {}
        if endpoint_url:
            client_kwargs["endpoint_url"] = endpoint_url
        if region:
            client_kwargs["region_name"] = region
        if client_kwargs:
            options["client_kwargs"] = client_kwargs
    fs, root = url_to_fs(url, **options)
    return fs, root.rstrip("/") if root not in ("/", "") else root


def join(root: str, *parts: str) -> str:
    """Join path parts with ``/``, the separator every fsspec filesystem understands."""
    pieces = [root.rstrip("/")] + [p.strip("/") for p in parts if p]
    return "/".join(pieces)


def atomic_write_bytes(fs: fsspec.AbstractFileSystem, path: str, data: bytes) -> None:
    """Write ``data`` to ``path`` so that no reader ever sees a half-written file.

    Write to a unique temporary name beside the target, then rename. On object stores a
    single PUT is already atomic, so the rename step is skipped there.
    """
    if is_local(fs):
        atomic_write_local(path, data)
    else:
        fs.pipe_file(path, data)


#: Temporary names of atomic_write_local: ``{path}.tmp-{host}-{pid}-{token}-{n}``: this host, the
#: process id (hex), a random token per interpreter (a forked child shares it, not the pid) and a
#: counter; O_EXCL refuses a name that exists anyway. Host and pid tell a temporary file that a
#: killed process left behind (:func:`remove_stale_temp_files`).
TMP_MARKER = ".tmp-"
def _pid_namespace() -> str:
    """Containers may share a host name but not their process ids (Linux PID namespaces)."""
    try:
        return str(os.stat("/proc/self/ns/pid").st_ino)
    except OSError:
        return ""


_HOST = hashlib.sha1(f"{socket.gethostname()}:{_pid_namespace()}".encode()).hexdigest()[:8]
_TMP_TOKEN = uuid.uuid4().hex[:8]
_tmp_counter = itertools.count()
_CREATE_NEW = os.O_WRONLY | os.O_CREAT | os.O_EXCL | getattr(os, "O_BINARY", 0)
#: A temporary file this old is abandoned whoever made it: a write takes milliseconds.
STALE_TEMP_AGE_S = 3600.0


def atomic_write_local(path: str, data: bytes) -> None:
    """``atomic_write_bytes`` on a local path (which calls this), in the fewest system calls, for hot loops (the image
    download engine writes hundreds of files a second): create the temporary file beside ``path``
    (making the folder only when it is missing), write, rename. No reader ever sees half a file."""
    tmp = f"{path}{TMP_MARKER}{_HOST}-{os.getpid():x}-{_TMP_TOKEN}-{next(_tmp_counter)}"
    try:
        fd = os.open(tmp, _CREATE_NEW, 0o666)
    except FileNotFoundError:
        os.makedirs(os.path.dirname(path) or ".", exist_ok=True)
        fd = os.open(tmp, _CREATE_NEW, 0o666)
    try:
        try:
            written = os.write(fd, data)
            if written < len(data):  # a short write (a signal, a full disk): write the rest, or raise
                view = memoryview(data)
                while written < len(data):
                    written += os.write(fd, view[written:])
        finally:
            os.close(fd)
        os.replace(tmp, path)
    except BaseException:
        with suppress(FileNotFoundError):
            os.unlink(tmp)
        raise


def remove_stale_temp_files(folder: str) -> int:
    """Delete the temporary files of :func:`atomic_write_local` in ``folder`` that no write will
    finish (a process killed mid-write leaves one): made by a process of this host (and PID
    namespace) that is gone, or older than ``STALE_TEMP_AGE_S``. Returns how many; a folder that
    does not exist has none. It lists the whole folder: call it after a run that did not finish."""
    removed = 0
    now = time.time()
    try:
        entries = list(os.scandir(folder))
    except FileNotFoundError:
        return 0
    for entry in entries:
        _, marker, owner = entry.name.rpartition(TMP_MARKER)
        if not marker:
            continue
        host, _, rest = owner.partition("-")
        pid = rest.partition("-")[0]
        try:
            gone = host == _HOST and pid and not _process_alive(int(pid, 16))
            if gone or now - entry.stat().st_mtime > STALE_TEMP_AGE_S:
                os.unlink(entry.path)
                removed += 1
        except (OSError, ValueError):
            continue  # renamed by its writer meanwhile, not ours, or not ours to delete: gc's business
    return removed


def _process_alive(pid: int) -> bool:
    if os.name == "nt":
        return True  # os.kill(pid, 0) would send CTRL_C there; age alone decides
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True  # someone else's process
    return True


def is_local(fs: fsspec.AbstractFileSystem) -> bool:
    protocol = fs.protocol if isinstance(fs.protocol, str) else fs.protocol[0]
    return protocol in ("file", "local")


@contextmanager
def atomic_path(dest: Path) -> Iterator[Path]:
    """A temporary local path beside ``dest``, renamed onto ``dest`` when the block succeeds and
    removed otherwise, so no reader ever sees a half-written file."""
    dest.parent.mkdir(parents=True, exist_ok=True)
    tmp = dest.with_name(f".{dest.name}.tmp-{uuid.uuid4().hex[:8]}")
    try:
        yield tmp
        os.replace(tmp, dest)
    finally:
        tmp.unlink(missing_ok=True)
