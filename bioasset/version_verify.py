"""``bioasset datasets verify``: is every image of a frozen version still in the image store, with
the bytes the version recorded?

A version is immutable, but the store under it is only a folder: files get deleted, cut short by a
full disk or overwritten by hand. The download journal vouches for a stored file by its size, so
such damage stays unseen until an export or a training run trips on it. ``verify`` reads every
image of the version once and compares its sha256 with the version's.

``repair`` then moves each changed file to ``_quarantine/`` (with a ``.reason.json``) and downloads
the missing and changed images again from their ``source_url``, with the engine and the settings
the version's size folder names (``medium-short256-q90``: resized to 256, quality 90), into the
journal of their class (the one its ``taxon_images`` runs keep). Resizing is deterministic for given library versions, so an image whose
source has not changed comes back with the version's exact bytes; one whose source changed (or
that is gone upstream) cannot restore this version, and the report says which classes need a new
``taxon_images`` run and a new version.

A repair refuses while a ``taxon_images`` run of one of those classes is unfinished (both would
write its journal), and when every image is missing: that is the wrong image store, not damage.
"""

from __future__ import annotations

import functools
import hashlib
import time
from collections import Counter
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field, replace
from functools import partial
from enum import StrEnum
from typing import Any

import duckdb

from bioasset.download import DownloadItem, ImageStore, InvalidItemError, ItemResult, Outcome, download_images
from bioasset.download.engine import quarantine_file
from bioasset.download.items import parse_stored_size_name, split_image_path
from bioasset.registry import (
    DatasetVersion,
    WarehouseLike,
    as_image_store,
    catalog,
    manifest_batches,
    manifest_path,
    read_store_files,
)
from bioasset.selection import taxon_key

#: Problem images named one by one in a report; the counts cover all.
SHOWN_PROBLEMS = 20
#: Seconds between two "verified N/M images" lines.
PROGRESS_INTERVAL_S = 1.0


class VerifyError(ValueError):
    """A verification or repair that cannot run; nothing in the store was changed."""


class Problem(StrEnum):
    MISSING = "missing"  # no file at the version's image_path
    CHANGED = "changed"  # a file, but not the bytes the version recorded
    UNREADABLE = "unreadable"  # the store could not be read (permissions, network)


class Repair(StrEnum):
    RESTORED = "restored"  # the store holds the version's exact bytes again
    DIFFERENT = "different"  # downloaded again, but the source now gives other bytes
    NOT_RESTORED = "not_restored"  # still not the version's bytes: the download failed (gone upstream?) or the store errs


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
        """The ``taxa`` partition of the image's class, as the version names it."""
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
    #: False when the store holds no download journal for the version's size folders: not the
    #: store it was frozen from, if its images are all missing too.
    store_has_journals: bool = True

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
    def unresolved(self) -> list[ImageProblem]:
        """The images still not as the version recorded them."""
        return [p for p in self.problems if p.repair != Repair.RESTORED]

    @property
    def intact(self) -> bool:
        """Every image of the version is in the store with its recorded bytes (after a repair,
        counting the restored ones)."""
        return not self.unresolved

    @property
    def wrong_store(self) -> bool:
        """Not one image is there, nor a journal of their size folders: the wrong store, not damage."""
        return self.checked > 0 and self.counts()[Problem.MISSING.value] == self.checked and not self.store_has_journals

    def unresolved_classes(self) -> list[str]:
        """``taxa`` partitions of the images still not as the version recorded them."""
        return sorted({p.taxon_key for p in self.unresolved})

    def advice(self) -> str | None:
        """What to do next, or None when the version is intact."""
        if self.intact:
            return None
        if self.wrong_store:
            return (
                f"Not one of the {self.checked} images of {self.version.ref} is in {self.store_url}, nor a download journal "
                "of their size folders: is this the image store the version was frozen from? Fix: pass it with "
                "--image-store (or set the image_store resource's URL)."
            )
        classes = self.unresolved_classes()
        named = ", ".join(classes[:10]) + (f" and {len(classes) - 10} more" if len(classes) > 10 else "")
        if not self.repaired:
            return (
                f"{len(self.unresolved)} images of {self.version.ref} are not as frozen (classes {named}). "
                "Fix: run this again with --repair, which downloads them again from their source."
            )
        return (
            f"{len(self.unresolved)} images of {self.version.ref} could not be restored: their source is gone or now gives "
            f"other bytes, or the store refused (classes {named}; see each image's detail). This version cannot be "
            "exported whole any more. Fix: materialize taxon_images for those classes, then dataset_version, to freeze "
            "a new version."
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
_COLUMNS = "photo_id, label_id, label_name, image_path, sha256, source_url"


def verify_version(
    warehouse: WarehouseLike,
    version: DatasetVersion,
    image_store: ImageStore | str | None = None,
    *,
    repair: bool = False,
    source_options: Mapping[str, Any] | None = None,
    log: Callable[[str], None] | None = None,
    concurrency: int = 16,
) -> VerifyReport:
    """Read every image of ``version`` from ``image_store`` and compare it with the version's
    sha256; with ``repair``, set changed files aside and download the problem images again (see
    the module's docstring). ``log`` receives progress lines."""
    started = time.perf_counter()
    store = as_image_store(image_store)
    manifest = manifest_path(warehouse, version)
    report = VerifyReport(version, store.url)
    if not manifest.is_file():
        raise VerifyError(
            f"The version manifest {manifest} of {version.ref} is gone, so its images cannot be checked. Fix: restore "
            "the warehouse's datasets/ folder from a backup, or freeze the dataset again (materialize dataset_version)."
        )
    source_urls: dict[int, str] = {}
    recorded: dict[int, str] = {}
    last_log = time.monotonic()
    total = version.images  # the rows with an image: a version keeps no others
    try:
        for batch in manifest_batches(manifest, _COLUMNS, "image_path", where="image_path IS NOT NULL"):
            contents = read_store_files(store, [row["image_path"] for row in batch])
            for row in batch:
                report.checked += 1
                problem = _check(row, contents[row["image_path"]], report)
                if problem is not None:
                    report.problems.append(problem)
                    source_urls[problem.photo_id], recorded[problem.photo_id] = row["source_url"], row["sha256"]
            if log is not None and (report.checked == total or time.monotonic() - last_log >= PROGRESS_INTERVAL_S):
                last_log = time.monotonic()
                log(f"verified {report.checked}/{total} images")
    except duckdb.Error as error:
        raise VerifyError(
            f"Cannot read the version manifest {manifest} of {version.ref}: {error}. Fix: restore it from a backup, or "
            "freeze the dataset again (materialize dataset_version)."
        ) from error
    if report.problems and len(report.problems) == report.checked:
        report.store_has_journals = _has_journals(store, report.problems)
    if repair and report.problems:
        if report.wrong_store:
            raise VerifyError(f"{report.advice()} Nothing was downloaded.")
        report.problems = _repair(store, report.problems, source_urls, recorded, source_options, concurrency, log)
        report.repaired = True
    report.elapsed_s = time.perf_counter() - started
    return report


@dataclass
class LatestVersions:
    """What :func:`verify_latest_versions` found: a report per version it could read, and why it
    could not read the others."""

    reports: list[VerifyReport]
    unreadable: list[str]

    @property
    def intact(self) -> bool:
        return not self.unreadable and all(report.intact for report in self.reports)

    def description(self) -> str:
        problems = self.unreadable + [report.advice() for report in self.reports if not report.intact]
        return " ".join(problems) or (
            f"All {sum(r.checked for r in self.reports)} images of {', '.join(r.version.ref for r in self.reports)} "
            "are as frozen."
        )


def verify_latest_versions(
    warehouse: WarehouseLike, names: list[str], image_store: ImageStore | str | None = None, *,
    log: Callable[[str], None] | None = None,
) -> LatestVersions:
    """:func:`verify_version` for the latest version of each dataset in ``names`` that has one; a
    version that cannot be read is reported, and the others are checked all the same."""
    latest = {version.name: version for version in catalog(warehouse) if version.name in names}  # by sequence: last wins
    result = LatestVersions([], [])
    for version in latest.values():
        try:
            result.reports.append(verify_version(warehouse, version, image_store, log=log))
        except VerifyError as error:
            result.unreadable.append(str(error))
    return result


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


@dataclass(frozen=True)
class _Planned:
    """One problem image's repair, worked out (and checked) before anything in the store moves."""

    problem: ImageProblem
    item: DownloadItem
    source: str
    stored_size: str
    resize: int | None
    quality: int | None
    path: str  # where the file is (or belongs)
    quarantine_path: str
    journal: str  # the journal to download into
    running_journals: list[str]  # journals of the class there whose taxon_images run has not finished


def _repair(
    store: ImageStore,
    problems: list[ImageProblem],
    source_urls: Mapping[int, str],
    recorded: Mapping[int, str],
    source_options: Mapping[str, Any] | None,
    concurrency: int,
    log: Callable[[str], None] | None,
) -> list[ImageProblem]:
    """Set changed files aside, download every problem image again, then read each back: only the
    store's bytes say whether the version is whole again."""
    # One listing of a size folder's journals per class, however many of its images are damaged.
    journals_of = functools.cache(partial(_class_journals, store))
    plans = [_plan(store, problem, source_urls[problem.photo_id], journals_of) for problem in problems]
    _refuse_unfinished_runs(store, plans)
    outcome: dict[int, ImageProblem] = {}
    for plan in plans:
        if plan.problem.problem != Problem.MISSING:
            reason = {"photo_id": plan.problem.photo_id, "source_url": plan.item.source_url,
                      "rejection": f"{plan.problem.problem.value}_since_frozen", "reason": plan.problem.detail}
            try:
                quarantine_file(store, plan.path, plan.quarantine_path, reason)
            except OSError as error:  # left in place, the engine would trust it by its size: do not download
                outcome[plan.problem.photo_id] = replace(
                    plan.problem, repair=Repair.NOT_RESTORED,
                    repair_detail=f"cannot move it aside to {plan.quarantine_path}: {error}",
                )
    pending = [plan for plan in plans if plan.problem.photo_id not in outcome]
    groups: dict[tuple[str, str, str], list[_Planned]] = {}
    for plan in pending:
        groups.setdefault((plan.journal, plan.source, plan.stored_size), []).append(plan)
    if log is not None:
        log(f"repairing {len(pending)} images of {len(groups)} classes and sizes")
    downloads: dict[int, ItemResult] = {}
    for (journal, source, stored_size), group in sorted(groups.items()):
        first = group[0]
        report = download_images(
            [plan.item for plan in group], store, source=source, resize_shorter_side=first.resize,
            **({"jpeg_quality": first.quality} if first.quality is not None else {}), journal=journal,
            source_options=source_options, concurrency=concurrency,
            progress=None if log is None else (lambda progress, key=journal: log(f"{key}: {progress}")),
        )
        downloads.update({plan.problem.photo_id: result for plan, result in zip(group, report.results)})
    contents = read_store_files(store, [plan.problem.image_path for plan in pending])
    for plan in pending:
        photo_id = plan.problem.photo_id
        outcome[photo_id] = _repaired(plan.problem, downloads[photo_id], contents[plan.problem.image_path], recorded[photo_id])
    return [outcome[problem.photo_id] for problem in problems]


def _plan(
    store: ImageStore, problem: ImageProblem, source_url: str, journals_of: Callable[..., tuple[str, list[str]]]
) -> _Planned:
    """The download and paths that repair ``problem``; VerifyError when the version's image_path
    cannot be one the engine writes."""
    try:
        source, stored_size, photo_id, extension = split_image_path(problem.image_path)
        size, resize, quality = parse_stored_size_name(stored_size)
        item = DownloadItem(problem.photo_id, source_url, size, extension)
        path = store.path_for(source, stored_size, photo_id, extension)
        quarantine_path = store.quarantine_path_for(source, stored_size, photo_id, extension)
        if photo_id != str(problem.photo_id):
            raise InvalidItemError(f"its file name is not the photo id {problem.photo_id}")
    except (InvalidItemError, ValueError) as error:
        raise VerifyError(
            f"Photo {problem.photo_id}: cannot repair its image_path {problem.image_path!r}: {error}. Nothing was moved "
            "or downloaded. Fix: this version's manifest was not written by bioasset's download engine; freeze the "
            "dataset again (materialize taxon_images for its classes, then dataset_version)."
        ) from error
    journal, running = journals_of(source, stored_size, problem.label_id, problem.taxon_key)
    return _Planned(problem, item, source, stored_size, resize, quality, path, quarantine_path, journal, running)


def _has_journals(store: ImageStore, problems: list[ImageProblem]) -> bool:
    """Whether the store has a download journal folder for any size folder of ``problems``."""
    for image_path in sorted({p.image_path.rsplit("/", 1)[0] for p in problems}):
        try:
            source, stored_size = image_path.split("/")
            if store.fs.exists(store.journal_folder(source, stored_size)):
                return True
        except (ValueError, InvalidItemError):
            continue
    return False


def _class_journals(store: ImageStore, source: str, stored_size: str, label_id: int, fallback: str) -> tuple[str, list[str]]:
    """The journal that the class's ``taxon_images`` runs keep in this size folder, and those of
    the class's journals there whose run has not finished (a ``.running`` marker beside them).
    Journals are named after the class's partition key, ``{label_id}-{slug}``, and the slug follows
    the class's current name, which may differ from the version's; of several, the last written is
    the current one. Without any, the version's key."""
    folder = store.journal_folder(source, stored_size).rstrip("/")
    try:
        names = [entry.rsplit("/", 1)[-1] for entry in store.fs.ls(folder, detail=False)]
    except FileNotFoundError:
        return fallback, []
    prefix = f"{label_id}-"
    written = [name.removesuffix(".jsonl") for name in names if name.startswith(prefix) and name.endswith(".jsonl")]
    running = sorted(name.removesuffix(".jsonl.running") for name in names
                     if name.startswith(prefix) and name.endswith(".jsonl.running"))
    if not written:
        return fallback, running

    def last_written(key: str) -> tuple[float, str]:
        try:
            return store.fs.modified(f"{folder}/{key}.jsonl").timestamp(), key
        except (OSError, NotImplementedError):
            return 0.0, key

    return max(written, key=last_written), running


def _refuse_unfinished_runs(store: ImageStore, plans: list[_Planned]) -> None:
    """VerifyError when a ``taxon_images`` run of a class to repair has not finished: its journal
    would overwrite the repair's (the engine leaves ``{journal}.running`` while it runs)."""
    unfinished = sorted({(key, p.source, p.stored_size) for p in plans for key in p.running_journals})
    if unfinished:
        journal, source, stored_size = unfinished[0]
        marker = f"{store.journal_path(source, stored_size, journal)}.running"
        raise VerifyError(
            f"A taxon_images run of class {journal} has not finished ({marker} exists). Nothing was moved or "
            "downloaded. Fix: wait for the run to end and repair again; if no run is going (it was killed), "
            f"materialize taxon_images for {journal} first: its run finishes what the killed one left."
        )


def _repaired(problem: ImageProblem, download: ItemResult, content: bytes | Exception, recorded_sha256: str) -> ImageProblem:
    downloaded = f"download {download.outcome.value}" + (f": {download.reason}" if download.reason else "")
    if isinstance(content, Exception):
        return replace(problem, repair=Repair.NOT_RESTORED, repair_detail=f"{downloaded}; store: {type(content).__name__}: {content}")
    digest = hashlib.sha256(content).hexdigest()
    if digest == recorded_sha256:
        return replace(problem, repair=Repair.RESTORED, repair_detail=f"{download.outcome.value}: bytes as frozen")
    if download.outcome == Outcome.FETCHED:
        return replace(problem, repair=Repair.DIFFERENT, repair_detail=f"the source now gives sha256 {digest}")
    return replace(problem, repair=Repair.NOT_RESTORED, repair_detail=f"{downloaded}; the store still holds sha256 {digest}")
