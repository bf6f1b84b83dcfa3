"""Fetch image bytes over HTTP(S) or any fsspec URL, with retries, backoff and rate adaptation.

HTTP goes through one aiohttp session: keep-alive connections are reused, and hundreds of
requests can be in flight on one thread. Other URLs (``s3://…``, local paths) are read with
fsspec on an I/O thread pool.

What happens to each response:

- 2xx: the body (or "wrong content type" when the server sends text, e.g. an HTML error page);
- 404, 403, 410 (and 401, 451): missing: the metadata can point to deleted photos; no retry;
- 429: the shared rate limiter pauses for ``Retry-After`` and slows down; then retry;
- 408, 5xx, timeouts, dropped connections, bodies cut short: retry with exponential backoff and jitter;
  failed when the retries run out (another run may succeed);
- anything else, and a body over ``max_image_bytes``: refused, with no retry (no retry would change it).
"""

from __future__ import annotations

import asyncio
import random
import time
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from email.utils import parsedate_to_datetime
from typing import Any, Mapping

import aiohttp

from bioasset.download.ratelimit import AdaptiveRateLimiter
from bioasset.storage import filesystem_for

MISSING_STATUSES = frozenset({401, 403, 404, 410, 451})
RETRY_STATUSES = frozenset({408, 425, 500, 502, 503, 504}) | frozenset(range(505, 600))
#: Content types that are never image bytes: an HTML error page, a JSON error, …
NOT_IMAGE_CONTENT_TYPES = ("text/", "application/json", "application/xml", "application/xhtml")
USER_AGENT = "bioasset-image-download/0.1 (+https://github.com/inaturalist/inaturalist-open-data)"


@dataclass(frozen=True, slots=True)
class RetryPolicy:
    max_retries: int = 5  # retries of timeouts, 5xx and broken transfers (429s have their own budget)
    max_throttled_retries: int = 20
    backoff_base_s: float = 0.5
    backoff_max_s: float = 30.0
    max_retry_after_s: float = 120.0  # cap a server's Retry-After so one bad header cannot stall a run

    def backoff_s(self, retry: int) -> float:
        """Exponential backoff with "equal jitter": half fixed, half random, so that retries of a
        burst of failures spread out instead of arriving together."""
        ceiling = min(self.backoff_max_s, self.backoff_base_s * 2 ** (retry - 1))
        return ceiling / 2 + random.uniform(0, ceiling / 2)


@dataclass(frozen=True, slots=True)
class Fetched:
    """What a fetch ended with. ``kind``: ``ok``, ``wrong_content_type``, ``missing``, ``failed`` or ``refused``."""

    kind: str
    data: bytes = b""
    reason: str | None = None
    attempts: int = 1
    status: int | None = None


class _Transient(Exception):
    """A failure worth retrying after a backoff."""


class _TooLarge(Exception):
    def __init__(self, size: int, limit: int) -> None:
        super().__init__(f"image is {size} bytes, over max_image_bytes={limit}: raise the limit if it is genuine")


class _Throttled(Exception):
    def __init__(self, retry_after_s: float | None) -> None:
        super().__init__(f"429 Too Many Requests (Retry-After: {retry_after_s})")
        self.retry_after_s = retry_after_s


class Fetcher:
    """Fetches bytes for the engine; one per run, used on one event loop."""

    def __init__(
        self,
        *,
        concurrency: int,
        timeout_s: float,
        retry: RetryPolicy,
        max_image_bytes: int,
        max_rate: float | None = None,
        source_options: Mapping[str, Any] | None = None,
    ) -> None:
        self.timeout_s = timeout_s
        self.retry = retry
        self.max_image_bytes = max_image_bytes
        self.max_rate = max_rate
        self.source_options = dict(source_options or {})
        self.retries = 0
        self.limiters: dict[str, AdaptiveRateLimiter] = {}
        self._concurrency = concurrency
        #: Requests in flight. Only the request holds a slot: not the backoff before a retry, and not
        #: the decoding after it, so the network stays busy while the CPUs decode.
        self._slots = asyncio.Semaphore(concurrency)
        self._session: aiohttp.ClientSession | None = None
        self._io_pool: ThreadPoolExecutor | None = None

    async def __aenter__(self) -> Fetcher:
        connector = aiohttp.TCPConnector(limit=self._concurrency, limit_per_host=0, ttl_dns_cache=300)
        self._session = aiohttp.ClientSession(
            connector=connector,
            timeout=aiohttp.ClientTimeout(total=self.timeout_s, sock_connect=min(self.timeout_s, 10.0)),
            # Images are compressed already; and a body inflated by aiohttp could be a gzip bomb.
            # A server that gzips anyway hands over gzip bytes, which verify_image unwraps, bounded.
            headers={"User-Agent": USER_AGENT, "Accept": "image/*,*/*;q=0.5", "Accept-Encoding": "identity"},
            auto_decompress=False,
        )
        return self

    async def __aexit__(self, *exc_info: object) -> None:
        if self._session is not None:
            await self._session.close()
        if self._io_pool is not None:
            self._io_pool.shutdown(wait=False, cancel_futures=True)

    @property
    def throttled_responses(self) -> int:
        return sum(limiter.throttle_count for limiter in self.limiters.values())

    def limiter_for(self, url: str) -> AdaptiveRateLimiter:
        """One limiter per host: a 429 from one server says nothing about another."""
        host = "/".join(url.split("/", 3)[:3])  # "scheme://netloc", cheaper than urlsplit per item
        if host not in self.limiters:
            self.limiters[host] = AdaptiveRateLimiter(max_rate=self.max_rate)
        return self.limiters[host]

    async def fetch(self, url: str) -> Fetched:
        """The bytes at ``url`` after retries, or why there are none."""
        limiter = self.limiter_for(url)
        fetch_once = self._fetch_http if url.startswith(("http://", "https://")) else self._fetch_fsspec
        retries = throttles = 0
        while True:
            attempts = retries + throttles + 1
            try:
                async with self._slots:
                    await limiter.acquire()  # with the slot taken: the limiter sees when requests really start
                    fetched = await fetch_once(url)
            except _Throttled as throttled:
                throttles += 1
                if throttles > self.retry.max_throttled_retries:
                    return Fetched("failed", reason=f"{throttled} {throttles} times: the server keeps throttling; "
                                   "lower concurrency or max_rate", attempts=attempts, status=429)
                retry_after = throttled.retry_after_s
                if retry_after is not None:
                    retry_after = min(retry_after, self.retry.max_retry_after_s)
                limiter.throttled(retry_after, fallback_pause_s=self.retry.backoff_s(throttles))
                self.retries += 1
                continue
            except _TooLarge as too_large:
                return Fetched("refused", reason=str(too_large), attempts=attempts)
            except _Transient as transient:
                retries += 1
                if retries > self.retry.max_retries:
                    return Fetched("failed", reason=f"{transient} (gave up after {attempts} attempts; "
                                   "raise max_retries or timeout_s if the server is just slow)", attempts=attempts)
                self.retries += 1
                await asyncio.sleep(self.retry.backoff_s(retries))
                continue
            return Fetched(fetched.kind, fetched.data, fetched.reason, attempts, fetched.status)

    async def _fetch_http(self, url: str) -> Fetched:
        assert self._session is not None, "use the Fetcher as an async context manager"
        try:
            async with self._session.get(url) as response:
                status = response.status
                if status == 429:
                    raise _Throttled(parse_retry_after(response.headers.get("Retry-After")))
                if status in MISSING_STATUSES:
                    return Fetched("missing", reason=f"HTTP {status} {response.reason}", status=status)
                if status in RETRY_STATUSES:
                    raise _Transient(f"HTTP {status} {response.reason}")
                if not 200 <= status < 300:
                    return Fetched("refused", reason=f"HTTP {status} {response.reason}: not retried", status=status)
                body = await self._read_body(response)
                content_type = response.headers.get("Content-Type", "").lower()
                if content_type.startswith(NOT_IMAGE_CONTENT_TYPES):
                    return Fetched("wrong_content_type", body, f"content type {content_type!r} is not an image",
                                   status=status)
                return Fetched("ok", body, status=status)
        except (_Throttled, _Transient):
            raise
        except asyncio.TimeoutError as error:
            raise _Transient(f"no complete response within timeout_s={self.timeout_s}") from error
        except aiohttp.ClientPayloadError as error:
            raise _Transient(f"body cut short: {error}") from error
        except (aiohttp.ClientConnectionError, aiohttp.ClientResponseError, ConnectionError) as error:
            raise _Transient(f"connection failed: {type(error).__name__}: {error}") from error

    async def _read_body(self, response: aiohttp.ClientResponse) -> bytes:
        declared = response.content_length
        if declared is not None and declared > self.max_image_bytes:
            raise _TooLarge(declared, self.max_image_bytes)
        if declared is not None:
            return await response.read()
        chunks, total = [], 0
        async for chunk in response.content.iter_chunked(1 << 16):
            total += len(chunk)
            if total > self.max_image_bytes:
                raise _TooLarge(total, self.max_image_bytes)
            chunks.append(chunk)
        return b"".join(chunks)

    async def _fetch_fsspec(self, url: str) -> Fetched:
        if self._io_pool is None:
            self._io_pool = ThreadPoolExecutor(self._concurrency, thread_name_prefix="bioasset-fetch")
        loop = asyncio.get_running_loop()
        try:
            return await asyncio.wait_for(loop.run_in_executor(self._io_pool, self._read_fsspec, url), self.timeout_s)
        except asyncio.TimeoutError as error:
            raise _Transient(f"no complete read within timeout_s={self.timeout_s}") from error

    def _read_fsspec(self, url: str) -> Fetched:
        try:
            fs, path = filesystem_for(url, **self.source_options)
            data = fs.cat_file(path)
        except (FileNotFoundError, IsADirectoryError) as error:
            return Fetched("missing", reason=f"not found: {error}")
        except PermissionError as error:
            return Fetched("missing", reason=f"access denied: {error}")
        except (OSError, TimeoutError) as error:
            raise _Transient(f"read failed: {type(error).__name__}: {error}") from error
        if len(data) > self.max_image_bytes:
            raise _TooLarge(len(data), self.max_image_bytes)
        return Fetched("ok", data)



def parse_retry_after(value: str | None) -> float | None:
    """Seconds to wait from a ``Retry-After`` header: delta-seconds or an HTTP date."""
    if not value:
        return None
    try:
        return max(0.0, float(value))
    except ValueError:
        pass
    try:
        return max(0.0, parsedate_to_datetime(value).timestamp() - time.time())
    except (TypeError, ValueError):
        return None
