"""The image download engine: concurrent, resumable, verified downloads into the image store.

One event loop (uvloop where installed, else asyncio's) does the network I/O (aiohttp, or fsspec
on an I/O thread pool); a few worker threads decode, resize, hash and write, where Pillow, hashlib
and the file system calls release the GIL. A request slot is held only while a request is in
flight, so the network keeps fetching while the threads decode what has arrived.
"""

from __future__ import annotations

import asyncio
import json
import os
import time
from collections import Counter
from collections.abc import Callable, Iterable, Mapping
from concurrent.futures import ThreadPoolExecutor
from contextlib import suppress
from dataclasses import dataclass, field, replace
from datetime import datetime, timezone
from enum import StrEnum
from typing import Any

from PIL import Image

from bioasset.download.fetch import Fetcher, RetryPolicy
from bioasset.download.images import (
    DEFAULT_MAX_PIXELS,
    DEFAULT_RESAMPLE,
    ImageRejected,
    VerifiedImage,
    verify_image,
)
from bioasset.download.items import (
    INATURALIST_SOURCE,
    DownloadItem,
    ImageStore,
    InvalidItemError,
    checked_extension,
    checked_folder_name,
    checked_photo_id,
    checked_size,
    checked_source_url,
    stored_size_name,
)
from bioasset.download.journal import Journal, StoredImage
from bioasset.download.workers import LoopWorkers
from bioasset.storage import remove_stale_temp_files

DEFAULT_MAX_IMAGE_BYTES = 50 * 1024 * 1024


class Outcome(StrEnum):
    FETCHED = "fetched"  # downloaded, verified and stored in this run
    SKIPPED = "skipped"  # already in the store and verified (or a duplicate item)
    MISSING = "missing"  # 404/403/410: the metadata points to a deleted or hidden photo
    FAILED = "failed"  # gave up after retries (5xx, timeouts, throttling), or the store would not take the write: worth another run
    REFUSED = "refused"  # an HTTP status no retry changes (400, 405, 501, ...), or over max_image_bytes
    QUARANTINED = "quarantined"  # not an image, truncated, corrupt or a bomb: kept under _quarantine/
    INVALID = "invalid"  # the item itself is unsafe or malformed (bad id, size or extension)


@dataclass(frozen=True, slots=True)
class ItemResult:
    """What happened to one item. ``path`` is where its bytes are: in the store, or in quarantine."""

    item: DownloadItem
    outcome: Outcome
    path: str | None = None
    sha256: str | None = None
    width: int | None = None
    height: int | None = None
    bytes_stored: int = 0
    bytes_downloaded: int = 0
    attempts: int = 0
    reason: str | None = None
    rejection: str | None = None  # for quarantined items: corrupt, not_an_image, wrong_content_type, …


@dataclass(frozen=True, slots=True)
class DownloadProgress:
    """Handed to the progress callback about once per ``progress_interval_s``, and at the end."""

    done: int
    total: int
    counts: Mapping[str, int]
    bytes_downloaded: int
    elapsed_s: float

    @property
    def images_per_s(self) -> float:
        """Images downloaded and stored per second (skipped ones are not counted)."""
        return self.counts.get(Outcome.FETCHED, 0) / self.elapsed_s if self.elapsed_s > 0 else 0.0

    def __str__(self) -> str:
        counts = ", ".join(f"{count} {outcome}" for outcome, count in self.counts.items() if count)
        return (
            f"{self.done}/{self.total} images ({counts or 'none yet'}), "
            f"{self.bytes_downloaded / 1e6:.1f} MB, {self.images_per_s:.1f} images/s"
        )


@dataclass(slots=True)
class DownloadReport:
    results: list[ItemResult]
    elapsed_s: float
    bytes_downloaded: int
    bytes_stored: int  # bytes written to the store by this run
    retries: int
    throttled_responses: int
    stale_temp_files_removed: int = 0  # temporary files of killed earlier runs, deleted from the store
    counts: dict[str, int] = field(init=False)  # outcome -> number of items, every outcome present

    def __post_init__(self) -> None:
        tally = Counter(result.outcome for result in self.results)
        self.counts = {outcome.value: tally.get(outcome, 0) for outcome in Outcome}

    @property
    def images_per_s(self) -> float:
        """Images downloaded and stored per second of the whole run."""
        return self.counts[Outcome.FETCHED] / self.elapsed_s if self.elapsed_s > 0 else 0.0

    def with_outcome(self, *outcomes: Outcome) -> list[ItemResult]:
        return [result for result in self.results if result.outcome in outcomes]

    def summary(self) -> dict[str, int | float]:
        """Plain numbers for logs and Dagster materialization metadata."""
        return {
            **self.counts,
            "items": len(self.results),
            "bytes_downloaded": self.bytes_downloaded,
            "bytes_stored": self.bytes_stored,
            "elapsed_s": round(self.elapsed_s, 3),
            "images_per_s": round(self.images_per_s, 1),
            "retries": self.retries,
            "throttled_responses": self.throttled_responses,
            "stale_temp_files_removed": self.stale_temp_files_removed,
        }


@dataclass(slots=True)
class _Task:
    index: int
    item: DownloadItem
    stored_size: str
    name: str  # ``{photo_id}.{ext}``
    extension: str
    path: str
    #: In a local store: the size of the file already there, or None. Remote stores are asked during
    #: the download instead.
    stored_bytes: int | None = None


def download_images(
    items: Iterable[DownloadItem],
    store: ImageStore | str | os.PathLike[str],
    *,
    source: str = INATURALIST_SOURCE,
    concurrency: int = 16,
    resize_shorter_side: int | None = None,
    jpeg_quality: int = 90,
    max_retries: int = 5,
    timeout_s: float = 30.0,
    progress: Callable[[DownloadProgress], None] | None = None,
    journal: str = "default",
    max_rate: float | None = None,
    decode_threads: int | None = None,
    max_pixels: int = DEFAULT_MAX_PIXELS,
    max_image_bytes: int = DEFAULT_MAX_IMAGE_BYTES,
    backoff_base_s: float = 0.5,
    backoff_max_s: float = 30.0,
    resample: Image.Resampling = DEFAULT_RESAMPLE,
    source_options: Mapping[str, Any] | None = None,
    progress_interval_s: float = 1.0,
    checkpoint_interval_s: float = 5.0,
) -> DownloadReport:
    """Download, verify and store images at ``{store}/{source}/{size}/{photo_id}.{ext}``.

    Images already in the store (and verified) are not fetched again, so a rerun after a crash
    picks up where the last run stopped. Every image is decoded before it is stored; bytes that
    are not a sound image go to ``{store}/_quarantine/…`` with a ``.reason.json``. With
    ``resize_shorter_side``, larger images are shrunk so their shorter side has that many pixels
    (JPEG and WebP at ``jpeg_quality``) and stored under the size folder
    ``{size}-short{N}-q{quality}``.

    ``concurrency`` requests are in flight at once, and up to as many fetched images wait for the
    ``decode_threads`` (default: the usable CPUs) threads that decode and resize them. ``max_rate`` caps requests per second per host; 429 responses lower
    the rate further until the server stops refusing. ``journal`` names the verification journal:
    give concurrent runs different names (e.g. their partition key). ``source_options`` configure
    fsspec source URLs (e.g. ``endpoint_url`` for an S3-compatible server). ``progress`` is called
    on the calling thread. Items that are unsafe or malformed come back as ``invalid``; nothing is
    ever written outside the store.
    """
    checked_folder_name("source", source)
    checked_folder_name("journal", journal)
    image_store = store if isinstance(store, ImageStore) else ImageStore(store)
    settings = _Settings(
        source=source,
        concurrency=concurrency,
        resize_shorter_side=resize_shorter_side,
        jpeg_quality=jpeg_quality,
        timeout_s=timeout_s,
        retry=RetryPolicy(max_retries=max_retries, backoff_base_s=backoff_base_s, backoff_max_s=backoff_max_s),
        journal=journal,
        max_rate=max_rate,
        decode_threads=decode_threads or _usable_cpus(),
        max_pixels=max_pixels,
        max_image_bytes=max_image_bytes,
        resample=resample,
        source_options=source_options,
        progress_interval_s=progress_interval_s,
        checkpoint_interval_s=checkpoint_interval_s,
    )
    run = _Run(list(items), image_store, settings, progress)
    return _run_to_completion(run.run)


@dataclass(frozen=True, slots=True)
class _Settings:
    source: str
    concurrency: int
    resize_shorter_side: int | None
    jpeg_quality: int
    timeout_s: float
    retry: RetryPolicy
    journal: str
    max_rate: float | None
    decode_threads: int
    max_pixels: int
    max_image_bytes: int
    resample: Image.Resampling
    source_options: Mapping[str, Any] | None
    progress_interval_s: float
    checkpoint_interval_s: float

    def __post_init__(self) -> None:
        problems = []
        if self.concurrency < 1:
            problems.append(f"concurrency={self.concurrency}: use 1 or more requests in flight")
        if self.resize_shorter_side is not None and self.resize_shorter_side < 1:
            problems.append(f"resize_shorter_side={self.resize_shorter_side}: use a positive pixel count, or None")
        if not 1 <= self.jpeg_quality <= 100:
            problems.append(f"jpeg_quality={self.jpeg_quality}: use 1..100 (90 is a good default)")
        if self.retry.max_retries < 0:
            problems.append(f"max_retries={self.retry.max_retries}: use 0 or more")
        if self.timeout_s <= 0:
            problems.append(f"timeout_s={self.timeout_s}: use a positive number of seconds")
        if self.max_pixels < 1:
            problems.append(f"max_pixels={self.max_pixels}: use a positive pixel count")
        if problems:
            raise ValueError("download_images settings are invalid: " + "; ".join(problems))


class _Run:
    """The state of one download_images call; lives on one event loop."""

    def __init__(
        self,
        items: list[DownloadItem],
        store: ImageStore,
        settings: _Settings,
        progress: Callable[[DownloadProgress], None] | None,
    ) -> None:
        self.items = items
        self.store = store
        self.settings = settings
        self.progress = progress
        self.results: list[ItemResult | None] = [None] * len(items)
        self.journals: dict[str, Journal] = {}
        self.counts = Counter({outcome.value: 0 for outcome in Outcome})
        self.done = 0
        self.bytes_downloaded = 0
        self.stale_temp_files_removed = 0
        self.running_markers: list[str] = []  # see _mark_running
        self.started = time.perf_counter()
        self._last_progress = self.started

    async def run(self) -> DownloadReport:
        settings = self.settings
        self.cpu_pool: LoopWorkers = LoopWorkers(settings.decode_threads, "bioasset-decode")
        # Writes to a remote store wait on the network: give them their own, wider pool.
        self.store_pool: LoopWorkers = (
            self.cpu_pool if self.store.is_local else LoopWorkers(settings.concurrency, "bioasset-store")
        )
        try:
            tasks, duplicates = self._plan()
            if self.store.is_local:
                for stored_size in sorted({task.stored_size for task in tasks}):
                    self._mark_running(stored_size)
                tasks = self._look_in_local_store(tasks)
            await self._load_journals({task.stored_size for task in tasks})
            journaled: list[tuple[_Task, ItemResult]] = []
            if self.store.is_local:
                tasks, journaled = self._split_journaled(tasks)
            async with Fetcher(
                concurrency=settings.concurrency,
                timeout_s=settings.timeout_s,
                retry=settings.retry,
                max_image_bytes=settings.max_image_bytes,
                max_rate=settings.max_rate,
                source_options=settings.source_options,
            ) as fetcher:
                self.fetcher = fetcher
                checkpoints = asyncio.create_task(self._checkpoint_periodically())
                pending = iter(tasks)
                # The fetcher keeps `concurrency` requests in flight; as many workers again hold
                # fetched images waiting for (or in) the decode threads, so neither side waits on the other.
                workers = [asyncio.create_task(self._work(pending)) for _ in range(2 * settings.concurrency)]
                try:
                    if journaled:
                        await asyncio.sleep(0)  # the workers start their first requests before the skipped are counted
                        for task, skipped in journaled:
                            self._finish(task.index, skipped)
                    await asyncio.gather(*workers)
                except BaseException:
                    for worker in workers:
                        worker.cancel()
                    raise
                finally:
                    checkpoints.cancel()
                    await self._checkpoint()
            for index, first in duplicates:
                self._finish(index, _duplicate_result(self.items[index], index, first, self.results[first]))
            self._report_progress(final=True)
            return DownloadReport(
                results=list(self.results),  # type: ignore[arg-type]  # every slot is filled by now
                elapsed_s=time.perf_counter() - self.started,
                bytes_downloaded=self.bytes_downloaded,
                bytes_stored=sum(r.bytes_stored for r in self.results if r and r.outcome == Outcome.FETCHED),
                retries=fetcher.retries,
                throttled_responses=fetcher.throttled_responses,
                stale_temp_files_removed=self.stale_temp_files_removed,
            )
        finally:
            self.cpu_pool.shutdown()
            if self.store_pool is not self.cpu_pool:
                self.store_pool.shutdown()
            for marker in self.running_markers:  # finished (or failed with an exception, cleaning up as it went)
                with suppress(FileNotFoundError):
                    os.remove(marker)

    def _plan(self) -> tuple[list[_Task], list[tuple[int, int]]]:
        """Validate every item up front; invalid ones are finished at once, duplicates later."""
        tasks: list[_Task] = []
        duplicates: list[tuple[int, int]] = []
        first_by_path: dict[str, int] = {}
        folders: dict[str, tuple[str, str]] = {}  # item size -> (stored size, its folder in the store)
        for index, item in enumerate(self.items):
            try:
                checked_source_url(item.source_url)
                extension = checked_extension(item.extension)
                stored_size, folder = self._folder_for(item.size, folders)
                # Safe as one path part: the photo id and the extension are checked against strict patterns.
                name = f"{checked_photo_id(item.photo_id)}.{extension}"
            except InvalidItemError as error:
                self._finish(index, ItemResult(item, Outcome.INVALID, reason=str(error)))
                continue
            path = f"{folder}/{name}"
            if path in first_by_path:
                duplicates.append((index, first_by_path[path]))
                continue
            first_by_path[path] = index
            tasks.append(_Task(index, item, stored_size, name, extension, path))
        return tasks, duplicates

    def _folder_for(self, size: object, folders: dict[str, tuple[str, str]]) -> tuple[str, str]:
        """The stored size and folder of an item size, checked once per run rather than once per item."""
        if isinstance(size, str) and size in folders:
            return folders[size]
        settings = self.settings
        checked = checked_size(settings.source, size)
        stored_size = stored_size_name(checked, settings.resize_shorter_side, settings.jpeg_quality)
        folders[checked] = stored_size, self.store.folder_for(settings.source, stored_size)
        return folders[checked]

    def _look_in_local_store(self, tasks: list[_Task]) -> list[_Task]:
        """Note the size of each file already in a local store, and return the tasks without one
        first: their requests go out first, and the others, which need only a journal look-up or
        a verification, follow.

        One stat per task, all before the downloads start, when no decode thread competes for the
        GIL; none at all in a folder that does not exist yet (a first download)."""
        missing: list[_Task] = []
        present: list[_Task] = []
        folder_exists: dict[str, bool] = {}
        for task in tasks:
            exists = folder_exists.get(task.stored_size)
            if exists is None:
                folder = self.store.folder_for(self.settings.source, task.stored_size)
                exists = folder_exists[task.stored_size] = os.path.isdir(folder)
            if exists:
                try:
                    task.stored_bytes = os.stat(task.path).st_size
                except FileNotFoundError:
                    pass
                except OSError as error:
                    reason = f"cannot check the store at {task.path}: {error}"
                    self._finish(task.index, ItemResult(task.item, Outcome.FAILED, reason=reason))
                    continue
            (missing if task.stored_bytes is None else present).append(task)
        return missing + present

    def _split_journaled(self, tasks: list[_Task]) -> tuple[list[_Task], list[tuple[_Task, ItemResult]]]:
        """The tasks to work on, and those whose file is in the local store with the size its
        journal records (most items of an incremental update) with their SKIPPED results: no worker,
        await or hand-off for an image that needs nothing."""
        remaining, journaled = [], []
        for task in tasks:
            skipped = self._journaled(task, task.stored_bytes)
            if skipped is None:
                remaining.append(task)
            else:
                journaled.append((task, skipped))
        return remaining, journaled

    def _journaled(self, task: _Task, stored_bytes: int | None) -> ItemResult | None:
        """SKIPPED when the store holds ``stored_bytes`` bytes for the task and its journal line agrees."""
        known = self.journals[task.stored_size].get(task.name)
        if stored_bytes is None or known is None or known.bytes != stored_bytes:
            return None
        return _stored_result(task.item, Outcome.SKIPPED, task.path, known, reason="in the store and journal")

    def _mark_running(self, stored_size: str) -> None:
        """Leave ``{journal}.running`` beside the journal for this run. Found at the start, it says
        the last run of this journal never finished (killed mid-write, perhaps): then sweep the
        folder's abandoned temporary files first. Listing a folder shared by every class costs
        time, so only then."""
        marker = f"{self.store.journal_path(self.settings.source, stored_size, self.settings.journal)}.running"
        if os.path.exists(marker):
            folder = self.store.folder_for(self.settings.source, stored_size)
            self.stale_temp_files_removed += remove_stale_temp_files(folder)
        os.makedirs(self.store.journal_folder(self.settings.source, stored_size), exist_ok=True)
        with open(marker, "w") as handle:
            handle.write(f"{os.getpid()}\n")
        self.running_markers.append(marker)

    async def _load_journals(self, stored_sizes: set[str]) -> None:
        for stored_size in sorted(stored_sizes):
            path = self.store.journal_path(self.settings.source, stored_size, self.settings.journal)
            journal = Journal(self.store.fs, path)
            self.journals[stored_size] = await self.store_pool.run(journal.load)

    async def _work(self, pending: Iterable[_Task]) -> None:
        for task in pending:  # one iterator shared by all workers: each task is taken once
            self._finish(task.index, await self._download(task))

    async def _download(self, task: _Task) -> ItemResult:
        item = task.item
        journal = self.journals[task.stored_size]
        stored_bytes = task.stored_bytes
        if not self.store.is_local:  # a local store's journal was consulted before the downloads (_split_journaled)
            try:
                stored_bytes = await self.store_pool.run(_remote_size, self.store.fs, task.path)
            except OSError as error:
                return ItemResult(item, Outcome.FAILED, reason=f"cannot check the store at {task.path}: {error}")
            skipped = self._journaled(task, stored_bytes)
            if skipped is not None:
                return skipped
        if stored_bytes is not None:
            # Written after the last journal checkpoint (or changed since): verify what is there.
            skipped = await self._verify_stored(task)
            if skipped is not None:
                return skipped
        elif journal.get(task.name) is not None:
            journal.discard(task.name)  # the journal remembers a file that is gone

        fetched = await self.fetcher.fetch(item.source_url)
        self.bytes_downloaded += len(fetched.data)
        if fetched.kind == "missing":
            return ItemResult(item, Outcome.MISSING, attempts=fetched.attempts, reason=fetched.reason)
        if fetched.kind in ("failed", "refused"):
            return ItemResult(item, Outcome(fetched.kind), attempts=fetched.attempts, reason=fetched.reason)
        if fetched.kind == "wrong_content_type":
            rejected = ImageRejected("wrong_content_type", fetched.reason or "not an image content type")
            return await self._quarantine(task, fetched.data, rejected, fetched.attempts)
        try:
            record = await self._store(task, fetched.data)
        except ImageRejected as rejected:
            return await self._quarantine(task, fetched.data, rejected, fetched.attempts)
        except OSError as error:
            return ItemResult(item, Outcome.FAILED, attempts=fetched.attempts, bytes_downloaded=len(fetched.data),
                              reason=f"cannot write {task.path}: {error}; check the store's space and permissions")
        journal.add(record)
        return _stored_result(item, Outcome.FETCHED, task.path, record, fetched.attempts, len(fetched.data))

    async def _verify_stored(self, task: _Task) -> ItemResult | None:
        """Skip a file already in the store if it verifies; quarantine it (and return None) if not."""
        try:
            data = await self.store_pool.run(self.store.fs.cat_file, task.path)
            verified = await self.cpu_pool.run(self._verify, task, data, False)
        except ImageRejected as rejected:
            self.journals[task.stored_size].discard(task.name)
            try:
                await self.store_pool.run(self._write_quarantine, task, None, rejected)
            except OSError:
                pass  # the bad file could not be moved aside; the fresh download replaces it
            return None
        except OSError:
            return None  # gone or unreadable: fetch it again
        record = _stored_image(task, verified)
        self.journals[task.stored_size].add(record)
        return _stored_result(task.item, Outcome.SKIPPED, task.path, record, reason="in the store, verified again")

    async def _store(self, task: _Task, data: bytes) -> StoredImage:
        if self.store.is_local:  # one hop: verify and write on the same worker thread
            return await self.cpu_pool.run(self._verify_and_write, task, data)
        verified = await self.cpu_pool.run(self._verify, task, data, True)
        return await self.store_pool.run(self._write, task, verified)

    def _verify(self, task: _Task, data: bytes, resize: bool) -> VerifiedImage:
        settings = self.settings
        return verify_image(
            data,
            extension=task.extension,
            resize_shorter_side=settings.resize_shorter_side if resize else None,
            jpeg_quality=settings.jpeg_quality,
            max_pixels=settings.max_pixels,
            resample=settings.resample,
        )

    def _verify_and_write(self, task: _Task, data: bytes) -> StoredImage:
        return self._write(task, self._verify(task, data, True))

    def _write(self, task: _Task, verified: VerifiedImage) -> StoredImage:
        self.store.write_atomic(task.path, verified.data)
        return _stored_image(task, verified)

    async def _quarantine(self, task: _Task, data: bytes, rejected: ImageRejected, attempts: int) -> ItemResult:
        quarantine_path = self._quarantine_path(task)
        try:
            await self.store_pool.run(self._write_quarantine, task, data, rejected)
        except OSError as error:
            return ItemResult(task.item, Outcome.FAILED, attempts=attempts, bytes_downloaded=len(data),
                              reason=f"{rejected.reason}; and cannot write quarantine {quarantine_path}: {error}")
        return ItemResult(
            task.item, Outcome.QUARANTINED, path=quarantine_path, bytes_downloaded=len(data),
            attempts=attempts, reason=rejected.reason, rejection=rejected.kind,
        )

    def _quarantine_path(self, task: _Task) -> str:
        return self.store.quarantine_path_for(self.settings.source, task.stored_size, task.item.photo_id, task.extension)

    def _write_quarantine(self, task: _Task, data: bytes | None, rejected: ImageRejected) -> None:
        """Keep the rejected bytes (``data``, or the stored file when None) with a reason beside them."""
        reason = {"photo_id": task.item.photo_id, "source_url": task.item.source_url, "rejection": rejected.kind,
                  "reason": rejected.reason}
        quarantine_file(self.store, task.path, self._quarantine_path(task), reason, data=data)

    async def _checkpoint_periodically(self) -> None:
        while True:
            await asyncio.sleep(self.settings.checkpoint_interval_s)
            await self._checkpoint()

    async def _checkpoint(self) -> None:
        for journal in self.journals.values():
            content = journal.snapshot()
            if content is not None:
                await self.store_pool.run(journal.write, content)

    def _finish(self, index: int, result: ItemResult) -> None:
        self.results[index] = result
        self.done += 1
        self.counts[result.outcome.value] += 1
        self._report_progress()

    def _report_progress(self, final: bool = False) -> None:
        if self.progress is None:
            return
        now = time.perf_counter()
        if final or now - self._last_progress >= self.settings.progress_interval_s:
            self._last_progress = now
            self.progress(
                DownloadProgress(self.done, len(self.items), dict(self.counts), self.bytes_downloaded, now - self.started)
            )


def quarantine_file(
    store: ImageStore, stored_path: str, quarantine_path: str, reason: Mapping[str, Any], *, data: bytes | None = None
) -> None:
    """Keep bytes that are not a sound image at ``quarantine_path``, with ``reason`` (and the time)
    beside them as ``.reason.json``: ``data`` is written there, or else the file at ``stored_path``
    is moved there, so the store no longer holds it."""
    if data is None:
        store.fs.makedirs(quarantine_path.rsplit("/", 1)[0], exist_ok=True)
        store.fs.mv(stored_path, quarantine_path)
    else:
        store.write_atomic(quarantine_path, data)
    record = {**reason, "quarantined_at": datetime.now(timezone.utc).isoformat(timespec="seconds")}
    store.write_atomic(f"{quarantine_path}.reason.json", json.dumps(record, indent=2).encode())


def _stored_image(task: _Task, verified: VerifiedImage) -> StoredImage:
    return StoredImage(task.name, verified.sha256, verified.width, verified.height, len(verified.data), verified.format)


def _stored_result(
    item: DownloadItem, outcome: Outcome, path: str, record: StoredImage, attempts: int = 0,
    bytes_downloaded: int = 0, reason: str | None = None,
) -> ItemResult:
    return ItemResult(
        item, outcome, path=path, sha256=record.sha256, width=record.width, height=record.height,
        bytes_stored=record.bytes, bytes_downloaded=bytes_downloaded, attempts=attempts, reason=reason,
    )


def _duplicate_result(item: DownloadItem, index: int, first: int, first_result: ItemResult | None) -> ItemResult:
    assert first_result is not None
    outcome = Outcome.SKIPPED if first_result.outcome == Outcome.FETCHED else first_result.outcome
    return replace(first_result, item=item, outcome=outcome, bytes_downloaded=0, attempts=0,
                   reason=f"same image as item {first}" + (f": {first_result.reason}" if first_result.reason else ""))


def _usable_cpus() -> int:
    """CPUs this process may run on (its affinity mask, e.g. a container's cpuset), not the host's."""
    try:
        return len(os.sched_getaffinity(0))
    except AttributeError:  # not on Linux
        return os.cpu_count() or 2


def _remote_size(fs: Any, path: str) -> int | None:
    try:
        return fs.size(path)
    except FileNotFoundError:
        return None


def _run_to_completion(make_coroutine: Callable[[], Any]) -> Any:
    """Run the engine's event loop on this thread, or on a helper thread when this thread already
    runs one (a notebook, an async caller)."""
    try:
        asyncio.get_running_loop()
    except RuntimeError:
        return _run_in_new_loop(make_coroutine)
    with ThreadPoolExecutor(1, thread_name_prefix="bioasset-download") as helper:
        return helper.submit(_run_in_new_loop, make_coroutine).result()


def _run_in_new_loop(make_coroutine: Callable[[], Any]) -> Any:
    """``asyncio.run``, with the main task's own result kept small.

    On the main thread, asyncio.Runner restores the SIGINT handler after the run, and on CPython
    3.11 ``signal.getsignal`` then formats the repr of the finished main task, result included:
    for a DownloadReport that is the repr of every ItemResult, twice (about 25 ms per 1000 items).
    """
    outcome: list[Any] = []

    async def main() -> None:
        outcome.append(await make_coroutine())

    with asyncio.Runner(loop_factory=_new_event_loop) as runner:
        runner.run(main())
    return outcome[0]


def _new_event_loop() -> asyncio.AbstractEventLoop:
    """uvloop where it is installed (Linux, macOS): the engine runs a few dozen loop callbacks,
    futures and socket reads per image, and uvloop's cost a fraction of asyncio's pure-Python ones."""
    try:
        import uvloop
    except ImportError:
        return asyncio.new_event_loop()
    return uvloop.new_event_loop()
