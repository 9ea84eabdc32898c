"""FAULT INJECTOR (a named test double): an HTTP proxy in front of the real FHIR server.

The real server (sekmet-fhir) never answers 429, 503 or hangs on demand; this proxy
causes exactly those faults, then forwards everything else (GET, DELETE, and POST with its
body) to the real server unchanged
(rewriting the server's own base URL in bodies and headers to the proxy's, as a reverse
proxy does, so ``next`` links keep pointing at the proxy).
"""

from __future__ import annotations

import sys
import threading
import time
from collections import deque
from collections.abc import Callable, Iterator
from contextlib import contextmanager, suppress
from dataclasses import dataclass
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import requests


@dataclass(frozen=True)
class Fault:
    """One scripted answer: ``status`` with ``headers``, after sleeping ``delay_s``.

    ``status=None`` forwards to the real server (after the delay). ``cut_after`` (with
    ``status=None``) sends the real answer's headers, full ``Content-Length`` included, but
    only that many body bytes, waits ``stall_s`` and drops the connection: a download
    that breaks off.
    """

    status: int | None = None
    headers: tuple[tuple[str, str], ...] = ()
    delay_s: float = 0.0
    body: bytes = b""
    cut_after: int | None = None
    stall_s: float = 0.0


PASS = Fault()
#: Answer headers passed on (with the upstream origin rewritten to the proxy's).
FORWARDED_HEADERS = frozenset(
    {
        "content-type", "etag", "last-modified", "www-authenticate",
        "content-location", "retry-after", "x-progress", "expires",
    }
)  # fmt: skip


class _Server(ThreadingHTTPServer):
    def handle_error(self, request: object, client_address: object) -> None:
        if not isinstance(sys.exc_info()[1], ConnectionError):  # a client gone is no news
            super().handle_error(request, client_address)  # type: ignore[arg-type]


class FaultProxy:
    def __init__(self, upstream: str) -> None:
        self.upstream = upstream.rstrip("/")
        self.faults: deque[Fault] = deque()
        #: Faults for requests whose path contains a fragment (taken before ``faults``).
        self.path_faults: dict[str, deque[Fault]] = {}
        #: When set, every request not scripted gets this (e.g. a hang).
        self.default = PASS
        #: When set, forwarded answers' bodies pass through it: (request path, body) → body.
        self.transform: Callable[[str, bytes], bytes] | None = None
        self.requests: list[str] = []
        self._session = requests.Session()
        self._server = _Server(("127.0.0.1", 0), self._handler())
        self._server.daemon_threads = True
        self._server.block_on_close = False  # a hanging fault must not hold up teardown
        self._thread = threading.Thread(target=self._server.serve_forever, daemon=True)

    @property
    def base_url(self) -> str:
        host, port = self._server.server_address[:2]
        path = self.upstream.split("/", 3)[3] if self.upstream.count("/") >= 3 else ""
        return f"http://{host}:{port}/{path}".rstrip("/")

    def script(self, *faults: Fault) -> None:
        self.faults.clear()
        self.faults.extend(faults)
        self.requests.clear()

    def script_path(self, fragment: str, *faults: Fault) -> None:
        """Answer the next requests whose path contains ``fragment`` with ``faults``."""
        self.path_faults[fragment] = deque(faults)

    def _next_fault(self, path: str = "") -> Fault:
        for fragment, queued in self.path_faults.items():
            if fragment in path and queued:
                return queued.popleft()
        try:
            return self.faults.popleft()
        except IndexError:
            return self.default

    def _handler(self) -> type[BaseHTTPRequestHandler]:
        proxy = self

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def log_message(self, format: str, *args: object) -> None:
                pass

            def do_GET(self) -> None:
                self._handle("GET")

            def do_DELETE(self) -> None:
                self._handle("DELETE")

            def do_POST(self) -> None:
                self._handle("POST")

            def _handle(self, method: str) -> None:
                proxy.requests.append(self.path if method == "GET" else f"{method} {self.path}")
                length = int(self.headers.get("Content-Length") or 0)
                # Read the request body first: an answered fault must leave the connection clean.
                self.request_body = self.rfile.read(length) if length else None
                fault = proxy._next_fault(self.path)
                if fault.delay_s:
                    time.sleep(fault.delay_s)
                if fault.status is not None:
                    self._answer(fault.status, list(fault.headers), fault.body)
                    return
                self._forward(method, fault)

            def _forward(self, method: str, fault: Fault) -> None:
                origin = proxy.upstream.split("/", 3)
                upstream_origin = "/".join(origin[:3])
                wanted = ("accept", "authorization", "prefer", "content-type")
                headers = {k: v for k, v in self.headers.items() if k.lower() in wanted}
                try:
                    answer = proxy._session.request(
                        method,
                        upstream_origin + self.path,
                        headers=headers,
                        data=self.request_body,
                    )
                except requests.RequestException:
                    self._answer(502, [], b"")
                    return
                mine = "/".join(proxy.base_url.split("/", 3)[:3])
                body = answer.content.replace(upstream_origin.encode(), mine.encode())
                if proxy.transform is not None:
                    body = proxy.transform(self.path, body)
                kept = [
                    (k, v.replace(upstream_origin, mine))
                    for k, v in answer.headers.items()
                    if k.lower() in FORWARDED_HEADERS
                ]
                self._answer(answer.status_code, kept, body, fault)

            def _answer(
                self,
                status: int,
                headers: list[tuple[str, str]],
                body: bytes,
                fault: Fault = PASS,
            ) -> None:
                self.send_response(status)
                for name, value in headers:
                    self.send_header(name, value)
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                with suppress(BrokenPipeError, ConnectionResetError):
                    if fault.cut_after is None:
                        self.wfile.write(body)
                        return
                    self.wfile.write(body[: fault.cut_after])
                    self.wfile.flush()
                    time.sleep(fault.stall_s)
                    self.close_connection = True

        return Handler

    def start(self) -> FaultProxy:
        self._thread.start()
        return self

    def stop(self) -> None:
        self._server.shutdown()
        self._server.server_close()
        self._session.close()


@contextmanager
def fault_proxy(upstream: str) -> Iterator[FaultProxy]:
    proxy = FaultProxy(upstream).start()
    try:
        yield proxy
    finally:
        proxy.stop()
