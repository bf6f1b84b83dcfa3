"""``bioasset datasets verify``: a frozen version's images checked against their sha256 and, with
``--repair``, downloaded again. Real images served by the loopback HTTP server, resized by the real
engine into a local folder or a moto S3 image store, frozen by the real registry."""

from __future__ import annotations

import hashlib
import io
import json
import os
from dataclasses import dataclass, replace
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from PIL import Image

from bioasset.cli import main
from bioasset.download import DownloadItem, ImageStore, Outcome, download_images
from bioasset.download.items import parse_stored_size_name, stored_size_name
from bioasset.export import export_version
from bioasset.registry import DatasetVersion, freeze_version, manifest_path
from bioasset.selection import taxon_key
from bioasset.version_verify import Problem, Repair, VerifyError, verify_version
from dataset_fixtures import Photo, _frame, manifest_row
from http_faults import Fault, FaultyHTTPServer
from s3_fixtures import create_public_bucket, unique_bucket_name

#: Resized on download, so a restored file is the engine's output again, not a copy of the source.
SHORTER_SIDE, QUALITY = 96, 85
STORED_SIZE = stored_size_name("medium", SHORTER_SIDE, QUALITY)
RESIZE = {"resize_shorter_side": SHORTER_SIDE, "jpeg_quality": QUALITY}
PHOTOS = [Photo(100 + i, species) for i, species in enumerate(["Pieris rapae"] * 3 + ["Apis mellifera"] * 3)]


def photo_jpeg(seed: int) -> bytes:
    """A 320x240 photo-like JPEG: smooth gradients plus noise, so resizing has real work to do."""
    rng = np.random.default_rng(seed)
    y, x = np.mgrid[0:240, 0:320]
    base = np.stack([x * 0.6 + seed * 7, y * 0.8 + 40, (x + y) * 0.3], axis=-1)
    pixels = np.clip(base + rng.normal(0, 12, base.shape), 0, 255).astype(np.uint8)
    buffer = io.BytesIO()
    Image.fromarray(pixels).save(buffer, "JPEG", quality=92)
    return buffer.getvalue()


def source_path(photo_id: int) -> str:
    return f"/photos/{photo_id}/medium.jpg"


@dataclass
class Frozen:
    server: FaultyHTTPServer
    store: ImageStore
    store_url: str
    warehouse: Path
    version: DatasetVersion
    frame: pd.DataFrame
    stored_size: str = STORED_SIZE

    def file(self, photo_id: int) -> str:
        return f"{self.store.root}/inaturalist/{self.stored_size}/{photo_id}.jpg"

    def journal(self, key: str) -> str:
        return f"{self.store.root}/_journal/inaturalist/{self.stored_size}/{key}.jsonl"

    def sha256(self, photo_id: int) -> str:
        return self.frame.set_index("photo_id").loc[photo_id, "sha256"]


def freeze_downloaded(
    server: FaultyHTTPServer, store: ImageStore, store_url: str, warehouse: Path, resize: dict | None = None
) -> Frozen:
    """Download PHOTOS as taxon_images would (one engine call per class, journal = class key),
    then freeze them as the version ``pests``. ``resize``: the engine's resize options (default RESIZE)."""
    resize = RESIZE if resize is None else resize
    stored_size = stored_size_name("medium", resize.get("resize_shorter_side"), resize.get("jpeg_quality", 90))
    for photo in PHOTOS:
        server.put(source_path(photo.photo_id), photo_jpeg(photo.photo_id))
    rows = []
    for species in ("Pieris rapae", "Apis mellifera"):
        photos = [p for p in PHOTOS if p.species == species]
        items = [DownloadItem(p.photo_id, server.url(source_path(p.photo_id)), "medium", "jpg") for p in photos]
        first = manifest_row(Path("/unused"), replace(photos[0], stored=False))
        report = download_images(items, store, journal=taxon_key(first["label_id"], first["label_name"]), **resize)
        for photo, result in zip(photos, report.results):
            assert result.outcome == Outcome.FETCHED
            assert min(result.width, result.height) == resize.get("resize_shorter_side", 240)
            row = manifest_row(Path("/unused"), replace(photo, stored=False))
            row.update(source_url=server.url(source_path(photo.photo_id)), image_path=f"inaturalist/{stored_size}/{photo.photo_id}.jpg",
                       sha256=result.sha256, width=result.width, height=result.height)
            rows.append(row)
    frame = _frame(rows)
    version = freeze_version(warehouse, "pests", frame, snapshot="2026-10-27", image_store=store).version
    return Frozen(server, store, store_url, warehouse, version, frame, stored_size)


@pytest.fixture
def server():
    with FaultyHTTPServer() as server:
        yield server


@pytest.fixture
def frozen(server, tmp_path):
    store_url = str(tmp_path / "images")
    return freeze_downloaded(server, ImageStore(store_url), store_url, tmp_path / "warehouse")


def damage(frozen: Frozen, changed: int, missing: int) -> bytes:
    """Flip one byte of ``changed`` (same size: the journal still vouches for it) and delete
    ``missing``; returns the original bytes of ``changed``."""
    fs = frozen.store.fs
    original = fs.cat_file(frozen.file(changed))
    damaged = bytearray(original)
    damaged[len(damaged) // 2] ^= 0xFF
    fs.pipe_file(frozen.file(changed), bytes(damaged))
    fs.rm_file(frozen.file(missing))
    return original


def cli(frozen: Frozen, *extra: str) -> int:
    return main(["datasets", "verify", "pests", "--warehouse", str(frozen.warehouse), "--image-store", frozen.store_url, *extra])


def test_an_intact_version_verifies(frozen, capsys):
    report = verify_version(frozen.warehouse, frozen.version, frozen.store_url)

    assert (report.checked, report.ok, report.problems, report.intact) == (6, 6, [], True)
    assert report.bytes_read == sum(len(frozen.store.fs.cat_file(frozen.file(p.photo_id))) for p in PHOTOS)
    assert report.advice() is None
    assert cli(frozen) == 0
    assert "6 images checked" in capsys.readouterr().out


def test_changed_and_missing_files_are_found_even_where_the_journal_vouches(frozen, capsys):
    damage(frozen, changed=101, missing=104)
    # What the download engine sees: the changed file has its journal's size, so a rerun trusts it.
    rerun = download_images([DownloadItem(101, frozen.server.url(source_path(101)), "medium", "jpg")], frozen.store,
                            resize_shorter_side=SHORTER_SIDE, jpeg_quality=QUALITY, journal="55626-pieris-rapae")
    assert rerun.results[0].outcome == Outcome.SKIPPED

    report = verify_version(frozen.warehouse, frozen.version, frozen.store_url)

    assert report.counts() == {"missing": 1, "changed": 1, "unreadable": 0}
    assert not report.intact and report.ok == 4
    problems = {p.photo_id: p for p in report.problems}
    assert problems[101].problem == Problem.CHANGED and frozen.sha256(101) in problems[101].detail
    assert problems[104].problem == Problem.MISSING
    assert report.unresolved_classes() == ["47220-apis-mellifera", "55626-pieris-rapae"]
    assert "--repair" in report.advice()

    assert cli(frozen) == 1
    captured = capsys.readouterr()
    assert "1 missing, 1 changed" in captured.out and "inaturalist/medium-short96-q85/101.jpg" in captured.out
    assert "--repair" in captured.err


@pytest.mark.parametrize("resize", [RESIZE, {}], ids=["resized", "as-served"])
def test_repair_restores_the_version_bytes_and_keeps_the_journal_true(resize, server, capsys, tmp_path):
    store_url = str(tmp_path / "images")
    frozen = freeze_downloaded(server, ImageStore(store_url), store_url, tmp_path / "warehouse", resize)
    original = damage(frozen, changed=101, missing=104)
    fs = frozen.store.fs
    damaged = fs.cat_file(frozen.file(101))

    assert cli(frozen, "--repair") == 0

    captured = capsys.readouterr()
    assert "2 restored, 0 now different at the source, 0 not restored" in captured.out
    assert "verified 6/6 images" in captured.err and "repairing 2 images of 2 classes and sizes" in captured.err
    assert fs.cat_file(frozen.file(101)) == original
    assert hashlib.sha256(fs.cat_file(frozen.file(104))).hexdigest() == frozen.sha256(104)
    # The damaged bytes are kept, with the reason.
    quarantined = f"{frozen.store.root}/_quarantine/inaturalist/{frozen.stored_size}/101.jpg"
    assert fs.cat_file(quarantined) == damaged
    reason = json.loads(fs.cat_file(f"{quarantined}.reason.json"))
    assert reason["rejection"] == "changed_since_frozen" and reason["photo_id"] == 101
    # Each repaired image was fetched once more; the others were not touched.
    assert {p.photo_id: frozen.server.request_count(source_path(p.photo_id)) for p in PHOTOS} == {
        100: 1, 101: 2, 102: 1, 103: 1, 104: 2, 105: 1,
    }
    # The classes' journals learnt the new files: a taxon_images-style rerun fetches nothing.
    for key, ids in (("55626-pieris-rapae", (100, 101, 102)), ("47220-apis-mellifera", (103, 104, 105))):
        items = [DownloadItem(i, frozen.server.url(source_path(i)), "medium", "jpg") for i in ids]
        rerun = download_images(items, frozen.store, journal=key, **resize)
        assert [r.outcome for r in rerun.results] == [Outcome.SKIPPED] * 3
        assert [r.sha256 for r in rerun.results] == [frozen.sha256(i) for i in ids]
    assert sum(frozen.server.request_count(source_path(p.photo_id)) for p in PHOTOS) == 8
    # And the version exports whole again (export checks every sha256).
    export = export_version(frozen.warehouse, frozen.version, tmp_path / "export", format="imagefolder",
                            image_store=frozen.store_url)
    assert export.images == 6
    assert verify_version(frozen.warehouse, frozen.version, frozen.store_url).intact


def test_repair_reports_sources_that_changed_or_are_gone(frozen, capsys):
    damage(frozen, changed=101, missing=104)
    frozen.server.put(source_path(101), photo_jpeg(seed=999))  # the observer replaced the photo
    frozen.server.inject(source_path(104), Fault.missing())  # the photo was deleted upstream

    report = verify_version(frozen.warehouse, frozen.version, frozen.store_url, repair=True)

    problems = {p.photo_id: p for p in report.problems}
    assert problems[101].repair == Repair.DIFFERENT and "the source now gives sha256" in problems[101].repair_detail
    assert problems[104].repair == Repair.NOT_RESTORED and problems[104].repair_detail.startswith("download missing")
    assert report.repair_counts() == {"restored": 0, "different": 1, "not_restored": 1}
    assert not report.intact
    assert "freeze a new version" in report.advice() and "47220-apis-mellifera" in report.advice()
    # The class's next taxon_images run indexes the new bytes, so the next version records them.
    new_sha256 = hashlib.sha256(frozen.store.fs.cat_file(frozen.file(101))).hexdigest()
    assert new_sha256 != frozen.sha256(101)
    rerun = download_images([DownloadItem(101, frozen.server.url(source_path(101)), "medium", "jpg")], frozen.store,
                            resize_shorter_side=SHORTER_SIDE, jpeg_quality=QUALITY, journal="55626-pieris-rapae")
    assert (rerun.results[0].outcome, rerun.results[0].sha256) == (Outcome.SKIPPED, new_sha256)

    assert cli(frozen, "--json") == 1
    data = json.loads(capsys.readouterr().out)
    assert data["intact"] is False and data["problems"] == {"missing": 1, "changed": 1, "unreadable": 0}
    assert sorted(i["photo_id"] for i in data["images"]) == [101, 104]
    assert data["unresolved_classes"] == ["47220-apis-mellifera", "55626-pieris-rapae"]


def test_verify_and_repair_on_an_s3_image_store(moto_s3, tmp_path):
    bucket = unique_bucket_name("images")
    create_public_bucket(moto_s3, bucket)
    store = ImageStore(f"s3://{bucket}/images", endpoint_url=moto_s3, key="testing", secret="testing")
    with FaultyHTTPServer() as server:
        frozen = freeze_downloaded(server, store, f"s3://{bucket}/images", tmp_path / "warehouse")
        original = damage(frozen, changed=102, missing=103)

        report = verify_version(frozen.warehouse, frozen.version, store, repair=True)

        assert report.counts() == {"missing": 1, "changed": 1, "unreadable": 0}
        assert report.repair_counts() == {"restored": 2, "different": 0, "not_restored": 0} and report.intact
        assert store.fs.cat_file(frozen.file(102)) == original
        assert verify_version(frozen.warehouse, frozen.version, store).intact


def test_stored_size_names_parse_back():
    assert parse_stored_size_name("medium") == ("medium", None, None)
    assert parse_stored_size_name(stored_size_name("large", 256, 90)) == ("large", 256, 90)
    with pytest.raises(ValueError, match="SIZE-shortN-qQ"):
        parse_stored_size_name("medium-short0-q90")
    with pytest.raises(ValueError, match="not a stored size name"):
        parse_stored_size_name("../medium")


def test_unknown_version_is_a_clear_error(frozen, capsys):
    assert main(["datasets", "verify", "pests@ffff", "--warehouse", str(frozen.warehouse)]) == 1
    err = capsys.readouterr().err
    assert err.startswith("bioasset datasets verify:") and "Version 'ffff' of dataset 'pests'" in err and "Fix:" in err


def test_a_lost_version_manifest_is_a_clear_error(frozen):
    manifest_path(frozen.warehouse, frozen.version).unlink()
    with pytest.raises(VerifyError, match=r"The version manifest .*manifest\.parquet of pests@\w+ is gone.*Fix: "):
        verify_version(frozen.warehouse, frozen.version, frozen.store_url)


def test_the_wrong_image_store_is_named_and_never_repaired_into(frozen, tmp_path):
    empty = str(tmp_path / "another-store")

    report = verify_version(frozen.warehouse, frozen.version, empty)
    assert report.wrong_store and "--image-store" in report.advice()
    with pytest.raises(VerifyError, match="Nothing was downloaded"):
        verify_version(frozen.warehouse, frozen.version, empty, repair=True)
    assert sum(frozen.server.request_count(source_path(p.photo_id)) for p in PHOTOS) == 6
    assert not os.path.exists(empty)


def test_repair_refuses_while_a_class_run_is_unfinished_and_moves_nothing(frozen):
    original = damage(frozen, changed=101, missing=104)
    damaged = frozen.store.fs.cat_file(frozen.file(101))
    marker = Path(frozen.journal("55626-pieris-rapae") + ".running")
    marker.touch()

    with pytest.raises(VerifyError, match="taxon_images run of class 55626-pieris-rapae has not finished"):
        verify_version(frozen.warehouse, frozen.version, frozen.store_url, repair=True)

    assert frozen.store.fs.cat_file(frozen.file(101)) == damaged != original
    assert frozen.server.request_count(source_path(104)) == 1
    marker.unlink()
    assert verify_version(frozen.warehouse, frozen.version, frozen.store_url, repair=True).intact


def test_repair_uses_the_journal_the_class_keeps_under_its_current_name(frozen):
    """A class renamed since the version keeps its journal under its new partition key; the old
    journal (last written before the rename) stays as it was, and a run of either blocks a repair."""
    old, renamed = frozen.journal("55626-pieris-rapae"), frozen.journal("55626-cabbage-white")
    Path(renamed).write_text(Path(old).read_text())
    os.utime(old, (1_700_000_000, 1_700_000_000))
    old_text = Path(old).read_text()
    damage(frozen, changed=101, missing=102)
    Path(f"{old}.running").touch()
    with pytest.raises(VerifyError, match="class 55626-pieris-rapae has not finished"):
        verify_version(frozen.warehouse, frozen.version, frozen.store_url, repair=True)
    Path(f"{old}.running").unlink()

    assert verify_version(frozen.warehouse, frozen.version, frozen.store_url, repair=True).intact

    assert Path(old).read_text() == old_text
    lines = [json.loads(line) for line in Path(renamed).read_text().splitlines()]
    assert sorted(line["name"] for line in lines) == ["100.jpg", "101.jpg", "102.jpg"]


def test_a_lost_size_folder_is_damage_not_the_wrong_store(frozen):
    """Every image gone, but the store's journals know the size folder: repaired, not refused."""
    frozen.store.fs.rm(f"{frozen.store.root}/inaturalist/{frozen.stored_size}", recursive=True)

    report = verify_version(frozen.warehouse, frozen.version, frozen.store_url)
    assert report.counts()["missing"] == 6 and not report.wrong_store and "--repair" in report.advice()
    repaired = verify_version(frozen.warehouse, frozen.version, frozen.store_url, repair=True)
    assert repaired.repair_counts()["restored"] == 6 and repaired.intact


def test_an_image_path_the_engine_would_not_write_is_refused_before_anything_moves(server, tmp_path):
    store_url = str(tmp_path / "images")
    frozen = freeze_downloaded(server, ImageStore(store_url), store_url, tmp_path / "warehouse")
    frame = frozen.frame.copy()
    frame.loc[frame.photo_id == 101, "image_path"] = f"inaturalist/{STORED_SIZE}/999.jpg"  # not its photo id
    frame.loc[frame.photo_id == 101, "sha256"] = hashlib.sha256(b"other bytes").hexdigest()  # a version of its own
    version = freeze_version(frozen.warehouse, "pests", frame, snapshot="2026-10-28", image_store=frozen.store).version

    report = verify_version(frozen.warehouse, version, frozen.store_url)
    assert [p.photo_id for p in report.problems] == [101]
    with pytest.raises(VerifyError, match=r"Photo 101: cannot repair its image_path .*999\.jpg.*not the photo id"):
        verify_version(frozen.warehouse, version, frozen.store_url, repair=True)
    assert frozen.server.request_count(source_path(101)) == 1
