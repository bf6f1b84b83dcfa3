"""The image download engine against a real loopback HTTP server with injected faults, real
files, a real moto S3 server, and a real ``kill -9``."""

from __future__ import annotations

import asyncio
import gzip
import hashlib
import io
import json
import os
import signal
import struct
import subprocess
import sys
import textwrap
import threading
import time
import zlib
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from bioasset import storage
from bioasset.download import (
    AdaptiveRateLimiter,
    DownloadItem,
    ImageStore,
    InvalidItemError,
    Outcome,
    download_images,
    inaturalist_item,
    parse_retry_after,
    verify_image,
)
from bioasset.download.workers import LoopWorkers
from bioasset.storage import atomic_write_local
from http_faults import Fault, FaultyHTTPServer
from s3_fixtures import create_public_bucket, put_public_object, unique_bucket_name

REPO_ROOT = Path(__file__).resolve().parents[1]
#: Short backoffs keep fault tests fast; the logic is the same as with defaults. The timeout stays
#: long enough that a loaded test machine never times out a healthy request (counts are exact).
FAST = {"backoff_base_s": 0.01, "backoff_max_s": 0.05, "timeout_s": 1.5}


def jpeg_bytes(width: int = 32, height: int = 24, seed: int = 0) -> bytes:
    pixels = np.random.default_rng(seed).integers(0, 256, (height, width, 3), dtype=np.uint8)
    buffer = io.BytesIO()
    Image.fromarray(pixels).save(buffer, "JPEG", quality=90)
    return buffer.getvalue()


def png_bytes(width: int, height: int, seed: int = 0) -> bytes:
    pixels = np.random.default_rng(seed).integers(0, 256, (height, width, 3), dtype=np.uint8)
    buffer = io.BytesIO()
    Image.fromarray(pixels).save(buffer, "PNG")
    return buffer.getvalue()


def photo_path(photo_id: int, size: str = "medium", extension: str = "jpg") -> str:
    return f"/photos/{photo_id}/{size}.{extension}"


def serve_photos(server: FaultyHTTPServer, count: int, **image_options) -> dict[int, bytes]:
    photos = {photo_id: jpeg_bytes(seed=photo_id, **image_options) for photo_id in range(count)}
    for photo_id, data in photos.items():
        server.put(photo_path(photo_id), data)
    return photos


def items_for(server: FaultyHTTPServer, photo_ids) -> list[DownloadItem]:
    return [DownloadItem(photo_id, server.url(photo_path(photo_id)), "medium", "jpg") for photo_id in photo_ids]


def stored_files(store: Path) -> dict[str, Path]:
    """Images in the store (not bookkeeping, not temporary files), by relative path."""
    return {
        path.relative_to(store).as_posix(): path
        for path in store.rglob("*")
        if path.is_file() and not path.relative_to(store).parts[0].startswith("_") and ".tmp-" not in path.name
    }


def decoded_size(path: Path) -> tuple[int, int]:
    with Image.open(path) as image:
        image.load()  # a full decode: raises on truncated or corrupt files
        return image.size


@pytest.fixture
def server():
    with FaultyHTTPServer() as running:
        yield running


@pytest.fixture
def store(tmp_path) -> Path:
    return tmp_path / "store"


def test_injected_faults_every_recoverable_image_arrives_once_and_decodes(server, store):
    photos = serve_photos(server, 20)
    faults = {
        0: [Fault.error(503, times=2)],
        1: [Fault.error(500, times=1), Fault.error(502, times=1)],
        2: [Fault.timeout(delay_s=5.0)],
        3: [Fault.truncated_body(keep_fraction=0.5)],
        4: [Fault.reset()],
        5: [Fault.throttle(retry_after="0")],
        6: [Fault.missing(404)],
        7: [Fault.missing(403)],
        8: [Fault.html()],
        9: [Fault.html_as_image()],
        10: [Fault.cut_image(keep_fraction=0.6)],
    }
    for photo_id, photo_faults in faults.items():
        server.inject(photo_path(photo_id), *photo_faults)

    report = download_images(items_for(server, photos), store, concurrency=6, **FAST)

    outcomes = {result.item.photo_id: result.outcome for result in report.results}
    assert {photo_id for photo_id, outcome in outcomes.items() if outcome == Outcome.MISSING} == {6, 7}
    assert {photo_id for photo_id, outcome in outcomes.items() if outcome == Outcome.QUARANTINED} == {8, 9, 10}
    recoverable = set(photos) - {6, 7, 8, 9, 10}
    assert {photo_id for photo_id, outcome in outcomes.items() if outcome == Outcome.FETCHED} == recoverable
    expected_requests = {0: 3, 1: 3, 2: 2, 3: 2, 4: 2, 5: 2}
    for photo_id in photos:
        assert server.request_count(photo_path(photo_id)) == expected_requests.get(photo_id, 1), photo_id
    files = stored_files(store)
    assert set(files) == {f"inaturalist/medium/{photo_id}.jpg" for photo_id in recoverable}
    for result in report.with_outcome(Outcome.FETCHED):
        stored = Path(result.path).read_bytes()
        assert stored == photos[result.item.photo_id]  # without resize the bytes are kept as they came
        assert result.sha256 == hashlib.sha256(stored).hexdigest()
        assert decoded_size(Path(result.path)) == (result.width, result.height) == (32, 24)
    assert report.counts["fetched"] == len(recoverable) and report.retries >= 7
    assert report.throttled_responses == 1

    # A rerun finds everything verified in the store and asks the server only for what is not there.
    before = {photo_id: server.request_count(photo_path(photo_id)) for photo_id in photos}
    rerun = download_images(items_for(server, photos), store, concurrency=6, **FAST)
    assert rerun.counts["skipped"] == len(recoverable) and rerun.counts["fetched"] == 0
    for photo_id in recoverable:
        assert server.request_count(photo_path(photo_id)) == before[photo_id]


def test_missing_photos_are_recorded_and_not_retried(server, store):
    server.inject(photo_path(1), Fault.missing(404))
    server.inject(photo_path(2), Fault.missing(410))
    report = download_images(items_for(server, [1, 2, 3]), store, **FAST)  # 3 was never served: 404
    assert [result.outcome for result in report.results] == [Outcome.MISSING] * 3
    assert "HTTP 404" in report.results[0].reason and "HTTP 410" in report.results[1].reason
    assert [server.request_count(photo_path(photo_id)) for photo_id in (1, 2, 3)] == [1, 1, 1]
    assert stored_files(store) == {}


def test_errors_no_retry_changes_are_refused_and_exhausted_retries_are_failed(server, store):
    """refused: no run would get the image (a client error, or bigger than allowed); failed:
    another run may (server errors past the retries), so dataset versions wait for it."""
    photos = serve_photos(server, 4)
    server.inject(photo_path(0), Fault.missing(400))
    server.inject(photo_path(1), Fault.missing(501))
    server.inject(photo_path(2), Fault.error(503, times=None))
    report = download_images(items_for(server, photos), store, max_image_bytes=len(photos[3]) - 1,
                             max_retries=2, **FAST)
    assert [r.outcome for r in report.results] == [Outcome.REFUSED, Outcome.REFUSED, Outcome.FAILED, Outcome.REFUSED]
    assert "HTTP 400" in report.results[0].reason and "max_image_bytes" in report.results[3].reason
    assert [server.request_count(photo_path(i)) for i in range(4)] == [1, 1, 3, 1]
    assert report.counts["refused"] == 3 and report.counts["failed"] == 1 and stored_files(store) == {}


def test_truncated_transfer_is_retried_and_image_cut_at_source_is_quarantined(server, store):
    photos = serve_photos(server, 2)
    server.inject(photo_path(0), Fault.truncated_body(keep_fraction=0.3, times=2))
    server.inject(photo_path(1), Fault.cut_image(keep_fraction=0.7))

    report = download_images(items_for(server, photos), store, **FAST)

    retried, cut = report.results
    assert retried.outcome == Outcome.FETCHED and retried.attempts == 3
    assert Path(retried.path).read_bytes() == photos[0]
    assert cut.outcome == Outcome.QUARANTINED and cut.rejection == "corrupt"
    assert "truncated" in cut.reason
    quarantined = store / "_quarantine/inaturalist/medium/1.jpg"
    assert Path(cut.path) == quarantined and quarantined.read_bytes() == photos[1][: int(len(photos[1]) * 0.7)]
    reason = json.loads(Path(f"{quarantined}.reason.json").read_text())
    assert reason["rejection"] == "corrupt" and reason["photo_id"] == 1
    assert not (store / "inaturalist/medium/1.jpg").exists()


def test_wrong_content_type_is_quarantined_with_its_reason(server, store):
    serve_photos(server, 2)
    server.inject(photo_path(0), Fault.html())
    server.inject(photo_path(1), Fault.html_as_image())
    labelled_html, disguised_html = download_images(items_for(server, [0, 1]), store, **FAST).results
    assert labelled_html.rejection == "wrong_content_type" and "text/html" in labelled_html.reason
    assert disguised_html.rejection == "not_an_image" and "<!DOCTYPE html>" in disguised_html.reason
    assert server.request_count(photo_path(0)) == server.request_count(photo_path(1)) == 1


def test_random_faults_still_deliver_every_image_intact(server, store):
    photos = serve_photos(server, 30)
    server.inject_random(Fault.error(503), probability=0.25, seed=7)
    server.inject_random(Fault.truncated_body(), probability=0.1, seed=8)
    server.inject_random(Fault.reset(), probability=0.1, seed=9)
    report = download_images(items_for(server, photos), store, concurrency=8, max_retries=12, **FAST)
    assert report.counts["fetched"] == 30
    assert report.retries > 0
    for result in report.results:
        assert Path(result.path).read_bytes() == photos[result.item.photo_id]
        decoded_size(Path(result.path))


def test_retry_after_is_honoured(server, store):
    photos = serve_photos(server, 4)
    server.inject(photo_path(0), Fault.throttle(retry_after="1"))

    report = download_images(items_for(server, photos), store, concurrency=1, **FAST)

    assert report.counts["fetched"] == 4 and report.throttled_responses == 1
    throttled, retried = server.records_for(photo_path(0))
    assert throttled.status == 429 and retried.status == 200
    assert retried.time - throttled.time >= 0.95
    # The pause holds every request to the host, not only the throttled one.
    assert all(record.time >= throttled.time + 0.95 for record in server.requests if record.path != photo_path(0))


def test_rate_limiter_slows_on_429_and_recovers_gradually():
    async def scenario() -> None:
        limiter = AdaptiveRateLimiter(recovery_doubling_s=0.1)
        for _ in range(20):  # unlimited: as fast as we like
            await limiter.acquire()
        assert limiter.rate is None and limiter.observed_rate() > 1000
        limiter.throttled(retry_after_s=0.1, fallback_pause_s=1.0)
        throttled_rate = limiter.rate
        assert throttled_rate is not None and throttled_rate < limiter.observed_rate()
        limiter.throttled(retry_after_s=0.1, fallback_pause_s=1.0)  # same burst: no second decrease
        assert limiter.rate == throttled_rate
        started = time.monotonic()
        await limiter.acquire()
        assert time.monotonic() - started >= 0.09  # waited out Retry-After
        await asyncio.sleep(0.15)  # 0.15 s past the pause: more than one doubling
        assert limiter.rate is None or limiter.rate > 2 * throttled_rate
        await asyncio.sleep(0.25)
        assert limiter.rate is None  # recovered to twice the refused rate, then unlimited

    asyncio.run(scenario())


def test_server_rate_limit_is_learned_from_429s(server, store):
    photos = serve_photos(server, 60)
    server.rate_limit(60, burst=5, retry_after=None)  # 429 without Retry-After: back off and slow down

    report = download_images(items_for(server, photos), store, concurrency=16, **FAST)

    assert report.counts["fetched"] == 60
    refused = sum(record.status == 429 for record in server.requests)
    assert refused == report.throttled_responses
    # Retrying blindly gets about 200 refusals here; halving the rate gets about 15.
    assert refused < 45


def test_rerun_after_kill_9_has_the_same_checksums_and_refetches_nothing_finished(tmp_path):
    count = 80
    with FaultyHTTPServer(latency_s=0.01) as server:
        photos = serve_photos(server, count)
        crashed_store = tmp_path / "crashed"
        child = subprocess.Popen(
            [sys.executable, "-c", CRASHING_CHILD, server.base_url, str(crashed_store), str(count)],
            cwd=REPO_ROOT,
        )
        try:
            deadline = time.monotonic() + 30
            while len(stored_files(crashed_store)) < 20:
                assert child.poll() is None, "the download finished before it could be killed: slow the server"
                assert time.monotonic() < deadline, "the child stored nothing: see its stderr"
                time.sleep(0.005)
            os.kill(child.pid, signal.SIGKILL)
        finally:
            child.wait()
        finished = {int(Path(name).stem) for name in stored_files(crashed_store)}
        assert 20 <= len(finished) < count

        folder = crashed_store / "inaturalist/medium"
        # What a process killed mid-write leaves: a temporary file of a process that is gone (here
        # made by hand, as the kill may land between writes), and one of a live process (this one).
        gone = child.pid
        own = next(folder.glob("*.jpg")).name
        (folder / f"{own}.tmp-{storage._HOST}-{gone:x}-deadbeef-0").write_bytes(b"half a jp")
        (folder / f"{own}.tmp-{storage._HOST}-{os.getpid():x}-deadbeef-1").write_bytes(b"in flight")
        leftovers = {p.name for p in folder.glob("*.tmp-*")}

        resumed = download_images(items_for(server, photos), crashed_store, concurrency=4, journal="crash")

        assert [p.name for p in folder.glob("*.tmp-*")] == [f"{own}.tmp-{storage._HOST}-{os.getpid():x}-deadbeef-1"]
        assert resumed.stale_temp_files_removed == len(leftovers) - 1
        # The killed run's marker told the rerun to sweep; a run that finishes leaves none.
        assert not list(crashed_store.glob("_journal/**/*.running"))

        assert {r.item.photo_id for r in resumed.with_outcome(Outcome.SKIPPED)} == finished
        assert {r.item.photo_id for r in resumed.with_outcome(Outcome.FETCHED)} == set(photos) - finished
        for photo_id in finished:  # fetched once, by the run that was killed
            assert server.request_count(photo_path(photo_id)) == 1, photo_id

    with FaultyHTTPServer() as clean_server:
        serve_photos(clean_server, count)
        uninterrupted = download_images(items_for(clean_server, photos), tmp_path / "clean", concurrency=4)
    checksums = lambda report: {r.item.photo_id: r.sha256 for r in report.results}  # noqa: E731
    assert checksums(resumed) == checksums(uninterrupted)
    for photo_id, path in ((int(Path(name).stem), path) for name, path in stored_files(crashed_store).items()):
        assert hashlib.sha256(path.read_bytes()).hexdigest() == checksums(uninterrupted)[photo_id]
        decoded_size(path)


CRASHING_CHILD = textwrap.dedent(
    """
    import sys
    from bioasset.download import DownloadItem, download_images

    base_url, store, count = sys.argv[1], sys.argv[2], int(sys.argv[3])
    items = [DownloadItem(i, f"{base_url}/photos/{i}/medium.jpg") for i in range(count)]
    download_images(items, store, concurrency=2, journal="crash", checkpoint_interval_s=0.1)
    """
)


def test_files_on_disk_but_not_in_the_journal_are_verified_not_downloaded(server, store):
    photos = serve_photos(server, 5)
    first = download_images(items_for(server, photos), store, journal="partition-a")
    for journal in (store / "_journal").rglob("*.jsonl"):
        journal.unlink()  # as if the run died before its first checkpoint

    second = download_images(items_for(server, photos), store, journal="partition-a")

    assert second.counts["skipped"] == 5
    assert all(result.reason == "in the store, verified again" for result in second.results)
    assert [r.sha256 for r in second.results] == [r.sha256 for r in first.results]
    assert all(server.request_count(photo_path(photo_id)) == 1 for photo_id in photos)
    assert (store / "_journal/inaturalist/medium/partition-a.jsonl").is_file()  # rebuilt


def test_corrupt_file_in_the_store_is_quarantined_and_fetched_again(server, store):
    photos = serve_photos(server, 1)
    broken = store / "inaturalist/medium/0.jpg"
    broken.parent.mkdir(parents=True)
    broken.write_bytes(photos[0][:-200])  # e.g. a copy cut short outside the engine

    (result,) = download_images(items_for(server, photos), store).results

    assert result.outcome == Outcome.FETCHED and broken.read_bytes() == photos[0]
    assert (store / "_quarantine/inaturalist/medium/0.jpg").read_bytes() == photos[0][:-200]


@pytest.mark.parametrize(
    ("photo_id", "size", "extension", "problem"),
    [
        ("../x", "medium", "jpg", "photo_id"),
        ("a/b", "medium", "jpg", "photo_id"),
        ("/etc/passwd", "medium", "jpg", "photo_id"),
        ("..", "medium", "jpg", "photo_id"),
        ("x.jpg", "medium", "jpg", "photo_id"),
        (-1, "medium", "jpg", "photo_id"),
        (True, "medium", "jpg", "photo_id"),
        (1, "../../etc", "jpg", "size"),
        (1, "huge", "jpg", "size"),
        (1, "medium", "jpg/../../x", "extension"),
        (1, "medium", "exe", "extension"),
        (1, "medium", "", "extension"),
    ],
)
def test_unsafe_items_are_rejected_and_nothing_is_written_outside_the_store(
    server, tmp_path, photo_id, size, extension, problem
):
    store = tmp_path / "nested" / "store"
    item = DownloadItem(photo_id, server.url("/photos/1/medium.jpg"), size, extension)

    (result,) = download_images([item], store).results

    assert result.outcome == Outcome.INVALID and result.reason.startswith(problem)
    assert server.total_requests() == 0
    outside = [p for p in tmp_path.rglob("*") if p.is_file() and not p.is_relative_to(store)]
    assert outside == []
    if size != "huge":  # an unknown iNaturalist size is a safe path: only the engine refuses it
        with pytest.raises(InvalidItemError, match=problem):
            ImageStore(store).path_for("inaturalist", size, photo_id, extension)


def test_unsafe_source_and_journal_names_are_refused(store):
    with pytest.raises(InvalidItemError, match="source '../up'"):
        download_images([], store, source="../up")
    with pytest.raises(InvalidItemError, match="source '_quarantine'"):
        download_images([], store, source="_quarantine")
    with pytest.raises(InvalidItemError, match="journal"):
        download_images([], store, journal="a/b")
    with pytest.raises(ValueError, match="concurrency=0"):
        download_images([], store, concurrency=0)


def test_decompression_bombs_are_refused(server, store):
    server.put(photo_path(1), png_bytes(1200, 1000))
    server.put(photo_path(2), png_claiming_size(60_000, 60_000))
    items = [
        DownloadItem(1, server.url(photo_path(1)), "medium", "jpg"),
        DownloadItem(2, server.url(photo_path(2)), "medium", "png"),
    ]
    small_limit, pillow_limit = download_images(items[:1], store, max_pixels=1_000_000).results + download_images(
        items[1:], store
    ).results
    assert small_limit.outcome == Outcome.QUARANTINED and small_limit.rejection == "decompression_bomb"
    assert "1200x1000" in small_limit.reason
    assert pillow_limit.outcome == Outcome.QUARANTINED and pillow_limit.rejection == "decompression_bomb"
    assert stored_files(store) == {}


def png_claiming_size(width: int, height: int) -> bytes:
    """A tiny PNG whose header claims a huge size: what a decompression bomb looks like up front."""
    data = bytearray(png_bytes(1, 1))
    header = struct.pack(">II", width, height) + bytes(data[24:29])
    data[16:29] = header
    data[29:33] = struct.pack(">I", zlib.crc32(b"IHDR" + header))
    return bytes(data)


def test_resize_by_shorter_side(server, store):
    originals = {
        1: jpeg_bytes(80, 60, seed=1),  # landscape
        2: jpeg_bytes(60, 90, seed=2),  # portrait
        3: jpeg_bytes(20, 25, seed=3),  # already small: kept as it is, never upscaled
        4: jpeg_bytes(400, 300, seed=4),  # much larger: JPEG draft decodes at reduced scale
    }
    for photo_id, data in originals.items():
        server.put(photo_path(photo_id), data)
    server.put(photo_path(5, extension="png"), png_bytes(50, 100))
    items = items_for(server, originals) + [DownloadItem(5, server.url(photo_path(5, extension="png")), "medium", "png")]

    report = download_images(items, store, resize_shorter_side=30, jpeg_quality=85)

    dims = {r.item.photo_id: (r.width, r.height) for r in report.results}
    assert dims == {1: (40, 30), 2: (30, 45), 3: (20, 25), 4: (40, 30), 5: (30, 60)}
    folder = store / "inaturalist/medium-short30-q85"
    for result in report.results:
        assert result.outcome == Outcome.FETCHED and Path(result.path).parent == folder
        assert decoded_size(Path(result.path)) == (result.width, result.height)
        assert hashlib.sha256(Path(result.path).read_bytes()).hexdigest() == result.sha256
    assert (folder / "3.jpg").read_bytes() == originals[3]
    with Image.open(folder / "5.png") as resized_png:
        assert resized_png.format == "PNG"
    assert not (store / "inaturalist/medium").exists()  # a resized image never poses as the original


def test_local_bucket_folder_as_source(tmp_path, store):
    bucket = tmp_path / "bucket"
    photo = jpeg_bytes(seed=5)
    (bucket / "photos/7").mkdir(parents=True)
    (bucket / "photos/7/small.jpg").write_bytes(photo)
    items = [inaturalist_item(7, "small", bucket_url=str(bucket)), inaturalist_item(8, "small", bucket_url=str(bucket))]

    present, deleted = download_images(items, store).results

    assert present.outcome == Outcome.FETCHED and Path(present.path).read_bytes() == photo
    assert deleted.outcome == Outcome.MISSING and "not found" in deleted.reason


def test_s3_source_and_s3_store(moto_s3):
    source_bucket, store_bucket = unique_bucket_name("photos"), unique_bucket_name("images")
    create_public_bucket(moto_s3, source_bucket)
    create_public_bucket(moto_s3, store_bucket)
    photos = {photo_id: jpeg_bytes(seed=photo_id) for photo_id in (1, 2)}
    for photo_id, data in photos.items():
        put_public_object(moto_s3, source_bucket, f"photos/{photo_id}/medium.jpg", data)
    items = [inaturalist_item(photo_id, bucket_url=f"s3://{source_bucket}") for photo_id in (1, 2, 3)]
    store = ImageStore(f"s3://{store_bucket}/images", endpoint_url=moto_s3, key="testing", secret="testing")
    options = {"source_options": {"endpoint_url": moto_s3}}

    first = download_images(items, store, **options)
    second = download_images(items, store, **options)

    assert [r.outcome for r in first.results] == [Outcome.FETCHED, Outcome.FETCHED, Outcome.MISSING]
    assert [r.outcome for r in second.results] == [Outcome.SKIPPED, Outcome.SKIPPED, Outcome.MISSING]
    assert store.fs.cat_file(f"{store_bucket}/images/inaturalist/medium/1.jpg") == photos[1]
    assert store.fs.exists(f"{store_bucket}/images/_journal/inaturalist/medium/default.jsonl")


def test_progress_is_reported_and_duplicates_are_fetched_once(server, store):
    photos = serve_photos(server, 6)
    seen = []
    items = items_for(server, photos) + items_for(server, [0])
    report = download_images(items, store, progress=seen.append, progress_interval_s=0.0)

    assert [progress.done for progress in seen] == sorted(progress.done for progress in seen)
    assert seen[-1].done == seen[-1].total == 7 and seen[-1].counts["fetched"] == 6
    assert seen[-1].images_per_s > 0 and "7/7 images" in str(seen[-1])
    assert report.results[-1].outcome == Outcome.SKIPPED and "same image as item 0" in report.results[-1].reason
    assert server.request_count(photo_path(0)) == 1
    summary = report.summary()
    assert summary["fetched"] == 6 and summary["items"] == 7 and summary["bytes_stored"] == sum(map(len, photos.values()))


def test_verify_image_catches_truncation_and_unwraps_gzip():
    photo = jpeg_bytes(64, 48)
    for cut in (len(photo) // 2, len(photo) - 2):
        with pytest.raises(Exception, match="truncated") as raised:
            verify_image(photo[:cut], extension="jpg")
        assert raised.value.kind == "corrupt"
    assert verify_image(gzip.compress(photo), extension="jpg").data == photo


def test_parse_retry_after():
    assert parse_retry_after("3") == 3.0
    assert parse_retry_after(None) is None and parse_retry_after("soon") is None
    future = time.strftime("%a, %d %b %Y %H:%M:%S GMT", time.gmtime(time.time() + 30))
    assert 25 <= parse_retry_after(future) <= 31


def test_concurrency_caps_the_requests_in_flight(store):
    # The engine runs twice as many workers as requests in flight (the others hold images for the
    # decode threads), so the cap comes from the fetcher: 8 requests 2 at a time take 4 latencies.
    latency_s = 0.05
    with FaultyHTTPServer(latency_s=latency_s) as server:
        photos = serve_photos(server, 8)
        started = time.perf_counter()
        report = download_images(items_for(server, photos), store, concurrency=2, **FAST)
        elapsed = time.perf_counter() - started
    assert report.counts["fetched"] == 8
    assert elapsed >= 4 * latency_s


def test_a_damaged_journal_line_costs_one_verification_not_a_download(server, store):
    photos = serve_photos(server, 4)
    download_images(items_for(server, photos), store)
    journal = store / "_journal/inaturalist/medium/default.jsonl"
    lines = journal.read_text().splitlines()
    lines[1] = lines[1][: len(lines[1]) // 2]  # cut, as by a crash in an editor
    journal.write_text("\n".join([*lines, '["not", "a", "record"]', ""]))

    rerun = download_images(items_for(server, photos), store)

    assert sorted(r.reason for r in rerun.results) == ["in the store and journal"] * 3 + ["in the store, verified again"]
    assert all(server.request_count(photo_path(photo_id)) == 1 for photo_id in photos)


def test_atomic_write_local_makes_the_folder_replaces_whole_files_and_cleans_up(tmp_path):
    target = tmp_path / "a" / "b" / "1.jpg"
    atomic_write_local(str(target), b"first")
    atomic_write_local(str(target), b"second")
    assert target.read_bytes() == b"second"
    (tmp_path / "a" / "folder.jpg").mkdir()
    with pytest.raises(IsADirectoryError):
        atomic_write_local(str(tmp_path / "a" / "folder.jpg"), b"x")  # the rename fails: no temporary left
    assert sorted(path.relative_to(tmp_path).as_posix() for path in tmp_path.rglob("*") if path.is_file()) == ["a/b/1.jpg"]


@pytest.mark.parametrize("uvloop_installed", [True, False])
def test_runs_on_uvloop_when_installed_on_asyncio_otherwise_and_from_async_code(
    server, store, monkeypatch, uvloop_installed
):
    if uvloop_installed:
        pytest.importorskip("uvloop")
    else:
        monkeypatch.setitem(sys.modules, "uvloop", None)  # what `import uvloop` sees where it is not installed
    photos = serve_photos(server, 3)
    loops: list[str] = []

    def note_loop(progress) -> None:  # progress is reported on the engine's event loop
        loops.append(type(asyncio.get_running_loop()).__module__)

    async def async_caller():  # a notebook or an async service: the engine runs its loop on a helper thread
        return download_images(items_for(server, photos), store, progress=note_loop, progress_interval_s=0.0)

    report = asyncio.run(async_caller())

    assert report.counts["fetched"] == 3
    assert loops and all(module.startswith("uvloop") == uvloop_installed for module in loops)


def test_loop_workers_return_results_raise_errors_and_drop_queued_jobs_on_shutdown():
    async def scenario() -> None:
        workers = LoopWorkers(1, "test-worker")
        assert await workers.run(sum, [1, 2, 3]) == 6
        with pytest.raises(ZeroDivisionError):
            await workers.run(lambda: 1 / 0)
        started, release = threading.Event(), threading.Event()
        busy = workers.run(lambda: (started.set(), release.wait(5))[1])
        queued = workers.run(time.sleep, 0)
        started.wait(5)
        workers.shutdown()  # the job in progress finishes; the queued one never starts
        release.set()
        assert await busy is True
        assert queued.cancelled()

    asyncio.run(scenario())
