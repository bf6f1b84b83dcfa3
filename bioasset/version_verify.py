"""``bioasset datasets verify``: is every image of a frozen version still in the image store, with
the bytes the version recorded?

A version is immutable, but the store under it is only a folder: files get deleted, cut short by a
full disk or overwritten by hand. The download journal vouches for a stored file by its size, so
such damage stays unseen until an export or a training run trips on it. ``verify`` reads every
image of the version once and compares its sha256 with the version's.

``repair`` then moves each changed file to ``_quarantine/`` (with a ``.reason.json``) and downloads
the missing and changed images again from their ``source_url``, with the engine and the settings
the version's size folder names (``medium-short256-q90``: resized to 256, quality 90), into the
journal of their class. Resizing is deterministic for given library versions, so an image whose
source has not changed comes back with the version's exact bytes; one whose source changed (or
that is gone upstream) cannot restore this version, and the report says which classes need a new
``taxon_images`` run and a new version.

Do not run a repair while ``taxon_images`` runs for the same classes: both write their journals.
"""

from __future__ import annotations

import hashlib
import time
from collections import Counter
from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass, field, replace
from enum import StrEnum
from typing import Any

import duckdb

from bioasset.download import DownloadItem, ImageStore, ItemResult, Outcome, download_images
from bioasset.download.engine import quarantine_file
from bioasset.download.items import parse_stored_size_name
from bioasset.registry import DatasetVersion, WarehouseLike, as_image_store, manifest_path, read_store_files
from bioasset.selection import taxon_key
from bioasset.warehouse import sql_string

#: Images read from the store per ``fs.cat`` call (fetched concurrently on S3).
READ_BATCH = 64
#: Problem images named one by one in a report; the counts cover all.
SHOWN_PROBLEMS = 20


class VerifyError(ValueError):
    """A verification that cannot run: a version manifest this module cannot read."""


class Problem(StrEnum):
    MISSING = "missing"  # no file at the version's image_path
    CHANGED = "changed"  # a file, but not the bytes the version recorded
    UNREADABLE = "unreadable"  # the store could not be read (permissions, network)


class Repair(StrEnum):
    RESTORED = "restored"  # downloaded again with exactly the version's bytes
    DIFFERENT = "different"  # downloaded again, but the source now gives other bytes
    NOT_RESTORED = "not_restored"  # still no readable image: the download failed (gone upstream?) or the store errs


@dataclass(frozen=True)
class ImageProblem:
    photo_id: int
    label_id: int
    label_name: str
    image_path: str
    problem: Problem
    detail: str
    repair: Repair | None = None
    repair_detail: str | None = None

    @property
    def taxon_key(self) -> str:
        """The ``taxa`` partition of the image's class."""
        return taxon_key(self.label_id, self.label_name)

    def to_dict(self) -> dict[str, Any]:
        return {
            "photo_id": self.photo_id, "label_id": self.label_id, "label_name": self.label_name,
            "taxon_key": self.taxon_key, "image_path": self.image_path, "problem": self.problem.value,
            "detail": self.detail, "repair": self.repair.value if self.repair else None,
            "repair_detail": self.repair_detail,
        }


@dataclass
class VerifyReport:
    version: DatasetVersion
    store_url: str
    checked: int = 0  # rows with an image
    bytes_read: int = 0
    problems: list[ImageProblem] = field(default_factory=list)
    repaired: bool = False
    elapsed_s: float = 0.0

    @property
    def ok(self) -> int:
        return self.checked - len(self.problems)

    def counts(self) -> dict[str, int]:
        found = Counter(p.problem.value for p in self.problems)
        return {problem.value: found[problem.value] for problem in Problem}

    def repair_counts(self) -> dict[str, int]:
        found = Counter(p.repair.value for p in self.problems if p.repair)
        return {repair.value: found[repair.value] for repair in Repair}

    @property
    def intact(self) -> bool:
        """Every image of the version is in the store with its recorded bytes (after a repair,
        counting the restored ones)."""
        return all(p.repair == Repair.RESTORED for p in self.problems)

    def unresolved_classes(self) -> list[str]:
        """``taxa`` partitions of the images still not as the version recorded them."""
        return sorted({p.taxon_key for p in self.problems if p.repair != Repair.RESTORED})

    def advice(self) -> str | None:
        """What to do next, or None when the version is intact."""
        if self.intact:
            return None
        classes = self.unresolved_classes()
        named = ", ".join(classes[:10]) + (f" and {len(classes) - 10} more" if len(classes) > 10 else "")
        if not self.repaired:
            return (
                f"{len(self.problems) - self.repair_counts()[Repair.RESTORED.value]} images of {self.version.ref} are not as "
                f"frozen (classes {named}). Fix: run this again with --repair, which downloads them again from their source."
            )
        return (
            f"{len(self.problems) - self.repair_counts()[Repair.RESTORED.value]} images of {self.version.ref} could not be "
            f"restored: their source is gone or now gives other bytes (classes {named}). This version cannot be exported "
            "whole any more. Fix: materialize taxon_images for those classes, then dataset_version, to freeze a new version."
        )

    def to_dict(self) -> dict[str, Any]:
        return {
            "version": self.version.ref, "image_store": self.store_url, "checked": self.checked, "ok": self.ok,
            "bytes_read": self.bytes_read, "problems": self.counts(), "repaired": self.repaired,
            "repairs": self.repair_counts() if self.repaired else None, "intact": self.intact,
            "unresolved_classes": self.unresolved_classes(), "advice": self.advice(),
            "elapsed_s": round(self.elapsed_s, 3), "images": [p.to_dict() for p in self.problems],
        }


#: The version manifest's columns a verification needs.
_COLUMNS = "photo_id, label_id, label_name, image_path, sha256, source_url, image_size, extension"


def verify_version(
    warehouse: WarehouseLike,
    version: DatasetVersion,
    image_store: ImageStore | str | None = None,
    *,
    repair: bool = False,
    source_options: Mapping[str, Any] | None = None,
    progress: Callable[[int, int], None] | None = None,
    concurrency: int = 16,
) -> VerifyReport:
    """Read every image of ``version`` from ``image_store`` and compare it with the version's
    sha256; with ``repair``, set changed files aside and download the problem images again (see
    the module's docstring). ``progress(done, total)`` is called after each batch read."""
    started = time.perf_counter()
    store = as_image_store(image_store)
    manifest = manifest_path(warehouse, version)
    report = VerifyReport(version, store.url)
    total = _images_in(manifest)
    rows_by_photo: dict[int, dict[str, Any]] = {}
    for batch in _batches(manifest):
        contents = read_store_files(store, [row["image_path"] for row in batch])
        for row in batch:
            report.checked += 1
            problem = _check(row, contents[row["image_path"]], report)
            if problem is not None:
                report.problems.append(problem)
                rows_by_photo[problem.photo_id] = row
        if progress is not None:
            progress(report.checked, total)
    if repair and report.problems:
        report.problems = _repair(store, report.problems, rows_by_photo, source_options, concurrency)
        report.repaired = True
    report.elapsed_s = time.perf_counter() - started
    return report


def _images_in(manifest: Any) -> int:
    with duckdb.connect() as con:
        return con.execute(
            f"SELECT count(*) FROM read_parquet({sql_string(str(manifest))}) WHERE image_path IS NOT NULL"
        ).fetchone()[0]


def _batches(manifest: Any) -> Iterator[list[dict[str, Any]]]:
    try:
        with duckdb.connect() as con:
            cursor = con.execute(
                f"SELECT {_COLUMNS} FROM read_parquet({sql_string(str(manifest))}) WHERE image_path IS NOT NULL "
                "ORDER BY image_path"
            )
            columns = [d[0] for d in cursor.description]
            while rows := cursor.fetchmany(READ_BATCH):
                yield [dict(zip(columns, row)) for row in rows]
    except duckdb.Error as error:
        raise VerifyError(
            f"Cannot read the version manifest {manifest}: {error}. Fix: the version folder is damaged; "
            "freeze the dataset again (materialize dataset_version)."
        ) from error


def _check(row: dict[str, Any], content: bytes | Exception, report: VerifyReport) -> ImageProblem | None:
    def problem(kind: Problem, detail: str) -> ImageProblem:
        return ImageProblem(int(row["photo_id"]), int(row["label_id"]), str(row["label_name"]), row["image_path"], kind, detail)

    if isinstance(content, FileNotFoundError):
        return problem(Problem.MISSING, "no file in the store")
    if isinstance(content, Exception):
        return problem(Problem.UNREADABLE, f"{type(content).__name__}: {content}")
    report.bytes_read += len(content)
    digest = hashlib.sha256(content).hexdigest()
    if digest != row["sha256"]:
        return problem(Problem.CHANGED, f"{len(content)} bytes with sha256 {digest}, not {row['sha256']}")
    return None


def _repair(
    store: ImageStore,
    problems: list[ImageProblem],
    rows: dict[int, dict[str, Any]],
    source_options: Mapping[str, Any] | None,
    concurrency: int,
) -> list[ImageProblem]:
    """Set changed files aside, download every problem image again, then read each back: only the
    store's bytes say whether the version is whole again."""
    for problem in problems:
        if problem.problem == Problem.CHANGED:
            source, stored_size, photo_id, extension = _parts(problem.image_path)
            reason = {"photo_id": problem.photo_id, "source_url": rows[problem.photo_id]["source_url"],
                      "rejection": "changed_since_frozen", "reason": problem.detail}
            quarantine_file(store, store.quarantine_path_for(source, stored_size, photo_id, extension), reason,
                            stored_path=store.path_for(source, stored_size, photo_id, extension))
    # One engine call per class and size folder, into the class's own journal: as if its
    # taxon_images run had fetched them.
    groups: dict[tuple[str, str, str], list[ImageProblem]] = {}
    for problem in problems:
        source, stored_size, _, _ = _parts(problem.image_path)
        groups.setdefault((problem.taxon_key, source, stored_size), []).append(problem)
    downloads: dict[int, ItemResult] = {}
    for (key, source, stored_size), group in sorted(groups.items()):
        _, resize, quality = parse_stored_size_name(stored_size)
        items = [
            DownloadItem(p.photo_id, rows[p.photo_id]["source_url"], rows[p.photo_id]["image_size"], rows[p.photo_id]["extension"])
            for p in group
        ]
        report = download_images(
            items, store, source=source, resize_shorter_side=resize, jpeg_quality=quality or 90, journal=key,
            source_options=source_options, concurrency=concurrency,
        )
        downloads.update({p.photo_id: result for p, result in zip(group, report.results)})
    contents = read_store_files(store, [p.image_path for p in problems])
    return [_repaired(p, downloads[p.photo_id], contents[p.image_path], rows[p.photo_id]["sha256"]) for p in problems]


def _repaired(problem: ImageProblem, download: ItemResult, content: bytes | Exception, recorded_sha256: str) -> ImageProblem:
    if isinstance(content, Exception):
        detail = f"download {download.outcome.value}" + (f": {download.reason}" if download.reason else "")
        return replace(problem, repair=Repair.NOT_RESTORED, repair_detail=f"{detail}; store: {type(content).__name__}: {content}")
    digest = hashlib.sha256(content).hexdigest()
    if digest == recorded_sha256:
        return replace(problem, repair=Repair.RESTORED, repair_detail=f"{download.outcome.value}: bytes as frozen")
    return replace(problem, repair=Repair.DIFFERENT, repair_detail=f"the source now gives sha256 {digest}")


def _parts(image_path: str) -> tuple[str, str, str, str]:
    """``(source, stored size, photo id, extension)`` of ``{source}/{size}/{photo_id}.{ext}``."""
    parts = image_path.split("/")
    name = parts[-1].rpartition(".")
    if len(parts) != 3 or not name[0] or not name[2]:
        raise VerifyError(
            f"image_path {image_path!r} is not SOURCE/SIZE/PHOTO_ID.EXT, the image store's layout. Fix: the version "
            "manifest was not written by bioasset; freeze the dataset again (materialize dataset_version)."
        )
    return parts[0], parts[1], name[0], name[2]


def progress_printer(stream: Any, every_s: float = 1.0) -> Callable[[int, int], None]:
    """A ``progress`` callback that writes ``verified N/M images`` at most every ``every_s``."""
    last = [time.monotonic()]

    def report(done: int, total: int) -> None:
        now = time.monotonic()
        if done == total or now - last[0] >= every_s:
            last[0] = now
            print(f"  verified {done}/{total} images", file=stream, flush=True)

    return report

