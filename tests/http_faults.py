"""A loopback HTTP server with fault injection, for download tests and benchmarks.

It serves bytes from an in-memory dict (path -> bytes) and/or a folder, over HTTP/1.1 with
keep-alive, on a free port of 127.0.0.1. Faults are injected per path (the first N requests) or at
random (a seeded probability), plus an optional global rate limit that answers 429:

    with FaultyHTTPServer({"/a.jpg": jpeg_bytes}) as server:
        server.inject("/a.jpg", Fault.error(503, times=2), Fault.truncated_body())
        server.inject_random(Fault.reset(), probability=0.1, seed=1)
        requests.get(server.url("/a.jpg"))
        assert server.request_count("/a.jpg") == 4

Every request is counted and logged (time, method, path, status) so tests can assert that an
image was fetched exactly once. Run it as a program to serve a folder to another process (a
benchmark): ``python tests/http_faults.py --directory DIR [--port N] [--latency-ms N]``.
"""

from __future__ import annotations

import argparse
import mimetypes
import random
import threading
import time
from collections import Counter
from collections.abc import Mapping
from dataclasses import dataclass, replace
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from urllib.parse import unquote, urlsplit

HTML_ERROR_PAGE = b"<!DOCTYPE html><html><body><h1>Service temporarily unavailable</h1></body></html>\n"


@dataclass(frozen=True)
class Fault:
    """One way to misbehave. ``times``: how many matching requests it hits (None: all of them).

    Build faults with the class methods; each says what a client sees.
    """

    kind: str
    times: int | None = 1
    status: int = 503
    delay_s: float = 0.0
    retry_after: str | None = None
    keep_fraction: float = 0.5

    @classmethod
    def error(cls, status: int = 503, times: int | None = 1) -> Fault:
        """An HTTP error status with a short text body (5xx bursts: ``times=N``)."""
        return cls("status", times, status=status)

    @classmethod
    def missing(cls, status: int = 404) -> Fault:
        """404 (or 403, 410) on every request: a deleted or hidden photo."""
        return cls("status", None, status=status)

    @classmethod
    def timeout(cls, delay_s: float = 2.0, times: int | None = 1) -> Fault:
        """No answer for ``delay_s`` (longer than the client's timeout), then the connection closes."""
        return cls("timeout", times, delay_s=delay_s)

    @classmethod
    def throttle(cls, retry_after: str | None = "1", times: int | None = 1) -> Fault:
        """429 Too Many Requests, with ``Retry-After`` (seconds or an HTTP date) unless None."""
        return cls("throttle", times, status=429, retry_after=retry_after)

    @classmethod
    def truncated_body(cls, keep_fraction: float = 0.5, times: int | None = 1) -> Fault:
        """The full Content-Length is announced, but only part of the body is sent before the
        connection closes: a transfer cut short."""
        return cls("truncated_body", times, keep_fraction=keep_fraction)

    @classmethod
    def cut_image(cls, keep_fraction: float = 0.5, times: int | None = None) -> Fault:
        """A well-formed response whose body is only the start of the image: a file broken at the source."""
        return cls("cut_image", times, keep_fraction=keep_fraction)

    @classmethod
    def html(cls, times: int | None = None) -> Fault:
        """200 with an HTML page and ``Content-Type: text/html`` instead of the image."""
        return cls("html", times)

    @classmethod
    def html_as_image(cls, times: int | None = None) -> Fault:
        """200 with an HTML page that claims ``Content-Type: image/jpeg``."""
        return cls("html_as_image", times)

    @classmethod
    def reset(cls, times: int | None = 1) -> Fault:
        """The connection closes without any response."""
        return cls("reset", times)


@dataclass(frozen=True)
class RequestRecord:
    time: float  # time.monotonic() when the request arrived
    method: str
    path: str
    status: int | None  # None when no status line was sent (timeout, reset)
    fault: str | None


class FaultyHTTPServer:
    """A threaded HTTP/1.1 server on loopback that serves files and injects faults."""

    def __init__(
        self,
        files: Mapping[str, bytes] | None = None,
        *,
        directory: str | Path | None = None,
        latency_s: float = 0.0,
        host: str = "127.0.0.1",
        port: int = 0,
    ) -> None:
        self.files: dict[str, bytes] = {_normalized(path): data for path, data in (files or {}).items()}
        self.directory = Path(directory).resolve() if directory is not None else None
        self.latency_s = latency_s
        self.requests: list[RequestRecord] = []
        self._lock = threading.Lock()
        self._stopping = threading.Event()
        self._faults: dict[str, list[list]] = {}  # path -> [[fault, remaining], …]
        self._random_faults: list[tuple[Fault, float, frozenset[str] | None]] = []
        self._rng = random.Random(0)
        self._bucket: _TokenBucket | None = None
        self._counts: Counter[tuple[str, str]] = Counter()
        self._httpd = _Server((host, port), _Handler)
        self._httpd.owner = self
        self._thread: threading.Thread | None = None

    # -- lifecycle -------------------------------------------------------------------------
    def start(self) -> FaultyHTTPServer:
        self._thread = threading.Thread(
            target=self._httpd.serve_forever, kwargs={"poll_interval": 0.05}, name="faulty-http", daemon=True
        )
        self._thread.start()
        return self

    def stop(self) -> None:
        self._stopping.set()  # wakes handlers that sleep in a timeout fault
        self._httpd.shutdown()
        self._httpd.server_close()

    def __enter__(self) -> FaultyHTTPServer:
        return self.start()

    def __exit__(self, *exc_info: object) -> None:
        self.stop()

    @property
    def base_url(self) -> str:
        host, port = self._httpd.server_address[:2]
        return f"http://{host}:{port}"

    def url(self, path: str) -> str:
        return self.base_url + _normalized(path)

    # -- content and faults ----------------------------------------------------------------
    def put(self, path: str, data: bytes) -> None:
        with self._lock:
            self.files[_normalized(path)] = data

    def inject(self, path: str, *faults: Fault) -> None:
        """Faults for one path, used in order: each hits its next ``times`` requests."""
        with self._lock:
            self._faults.setdefault(_normalized(path), []).extend([fault, fault.times] for fault in faults)

    def inject_random(self, fault: Fault, probability: float, *, seed: int = 0, paths=None) -> None:
        """Hit each request (to ``paths``, or to any path) with ``fault`` at ``probability``."""
        with self._lock:
            self._rng.seed(seed)
            scope = frozenset(_normalized(path) for path in paths) if paths is not None else None
            self._random_faults.append((replace(fault, times=None), probability, scope))

    def rate_limit(self, requests_per_s: float, *, burst: int = 1, retry_after: str | None = "1") -> None:
        """Answer 429 to requests beyond ``requests_per_s`` (a token bucket holding ``burst``)."""
        with self._lock:
            self._bucket = _TokenBucket(requests_per_s, burst, retry_after)

    def clear_faults(self) -> None:
        with self._lock:
            self._faults.clear()
            self._random_faults.clear()
            self._bucket = None

    # -- what happened ---------------------------------------------------------------------
    def request_count(self, path: str, method: str = "GET") -> int:
        with self._lock:
            return self._counts[(method, _normalized(path))]

    def records_for(self, path: str) -> list[RequestRecord]:
        path = _normalized(path)
        with self._lock:
            return [record for record in self.requests if record.path == path]

    def total_requests(self, method: str = "GET") -> int:
        with self._lock:
            return sum(count for (counted_method, _), count in self._counts.items() if counted_method == method)

    # -- serving ---------------------------------------------------------------------------
    def _next_fault(self, path: str) -> Fault | None:
        """Under the lock: the fault for this request, if any, consuming one use of it."""
        if self._bucket is not None and not self._bucket.take():
            return Fault.throttle(self._bucket.retry_after)
        queue = self._faults.get(path, [])
        while queue:
            fault, remaining = queue[0]
            if remaining is None:
                return fault
            if remaining > 0:
                queue[0][1] = remaining - 1
                return fault
            queue.pop(0)
        for fault, probability, scope in self._random_faults:
            if (scope is None or path in scope) and self._rng.random() < probability:
                return fault
        return None

    def _content(self, path: str) -> bytes | None:
        content = self.files.get(path)  # a dict read is atomic: no lock needed
        if content is not None:
            return content
        if self.directory is not None:
            candidate = (self.directory / path.lstrip("/")).resolve()
            if candidate.is_relative_to(self.directory) and candidate.is_file():
                return candidate.read_bytes()
        return None

    def _serve(self, handler: _Handler, method: str) -> None:
        path = _normalized(unquote(urlsplit(handler.path).path))
        with self._lock:
            self._counts[(method, path)] += 1
            fault = self._next_fault(path)
        content = self._content(path)  # outside the lock: handler threads read files in parallel
        if self.latency_s:
            self._stopping.wait(self.latency_s)
        status = self._respond(handler, method, path, fault, content)
        with self._lock:
            self.requests.append(RequestRecord(time.monotonic(), method, path, status, fault.kind if fault else None))

    def _respond(self, handler: _Handler, method: str, path: str, fault: Fault | None, content: bytes | None):
        content_type = mimetypes.guess_type(path)[0] or "application/octet-stream"
        kind = fault.kind if fault else None
        if kind == "timeout":
            self._stopping.wait(fault.delay_s)
            handler.close_connection = True
            return None
        if kind == "reset":
            handler.close_connection = True
            return None
        if kind in ("status", "throttle"):
            headers = {"Retry-After": fault.retry_after} if fault.retry_after is not None else {}
            return _send(handler, method, fault.status, f"injected {fault.status}\n".encode(), "text/plain", headers)
        if kind in ("html", "html_as_image"):
            html_type = "text/html; charset=utf-8" if kind == "html" else content_type
            return _send(handler, method, 200, HTML_ERROR_PAGE, html_type)
        if content is None:
            return _send(handler, method, 404, b"not found\n", "text/plain")
        if kind == "cut_image":
            return _send(handler, method, 200, content[: int(len(content) * fault.keep_fraction)], content_type)
        if kind == "truncated_body":
            handler.send_response(200)
            handler.send_header("Content-Type", content_type)
            handler.send_header("Content-Length", str(len(content)))
            handler.end_headers()
            if method == "GET":
                handler.wfile.write(content[: int(len(content) * fault.keep_fraction)])
            handler.close_connection = True
            return 200
        return _send(handler, method, 200, content, content_type)


class _Server(ThreadingHTTPServer):
    daemon_threads = True  # a handler asleep in a timeout fault never blocks shutdown
    allow_reuse_address = True
    request_queue_size = 128
    owner: FaultyHTTPServer

    def handle_error(self, request, client_address) -> None:
        pass  # clients that time out or hang up are part of the tests


class _Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"  # keep-alive, as real image servers do
    disable_nagle_algorithm = True  # headers and body go out in two writes: do not let Nagle hold the body

    def do_GET(self) -> None:
        self.server.owner._serve(self, "GET")

    def do_HEAD(self) -> None:
        self.server.owner._serve(self, "HEAD")

    def log_message(self, format: str, *args: object) -> None:
        pass


def _send(handler, method: str, status: int, body: bytes, content_type: str, headers: Mapping[str, str] = {}) -> int:
    handler.send_response(status)
    handler.send_header("Content-Type", content_type)
    handler.send_header("Content-Length", str(len(body)))
    for name, value in headers.items():
        handler.send_header(name, value)
    handler.end_headers()
    if method == "GET":
        handler.wfile.write(body)
    return status


class _TokenBucket:
    def __init__(self, rate: float, burst: int, retry_after: str | None) -> None:
        self.rate = rate
        self.capacity = float(burst)
        self.retry_after = retry_after
        self.tokens = float(burst)
        self.updated = time.monotonic()

    def take(self) -> bool:
        now = time.monotonic()
        self.tokens = min(self.capacity, self.tokens + (now - self.updated) * self.rate)
        self.updated = now
        if self.tokens >= 1:
            self.tokens -= 1
            return True
        return False


def _normalized(path: str) -> str:
    return "/" + path.lstrip("/")


def main() -> None:
    parser = argparse.ArgumentParser(description="Serve a folder over loopback HTTP/1.1 (keep-alive).")
    parser.add_argument("--directory", required=True, help="folder to serve; URL paths map to files under it")
    parser.add_argument("--port", type=int, default=0, help="port on 127.0.0.1; 0 picks a free one")
    parser.add_argument("--latency-ms", type=float, default=0.0, help="delay added to every response")
    arguments = parser.parse_args()
    server = FaultyHTTPServer(directory=arguments.directory, port=arguments.port, latency_s=arguments.latency_ms / 1000)
    server.start()
    print(server.base_url, flush=True)
    try:
        threading.Event().wait()
    except KeyboardInterrupt:
        server.stop()


if __name__ == "__main__":
    main()
