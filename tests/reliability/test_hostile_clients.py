"""Hostile clients against the running gunicorn: oversized, deeply nested, header floods, slow.

Raw sockets send what ``requests`` cannot (oversized heads, trickled bytes). Every case
must be refused with a 4xx or cut off within a bound, and never stop the service from
answering everyone else.
"""

from __future__ import annotations

import copy
import json
import select
import socket
import threading
import time
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

import pytest
import requests

from tests.reliability.harness import GunicornServer, PgCluster, audit_rows

SERVICE = "/cds-services/patient-summary"
READ_TIMEOUT_S = 5.0  # WARDROUND_REQUEST_READ_TIMEOUT_S for this module's server (default 10)
MB = 1024 * 1024


@pytest.fixture(scope="module")
def server(
    pg_cluster: PgCluster, trusted_issuers_file, tmp_path_factory
) -> Iterator[GunicornServer]:
    if not pg_cluster.is_running():
        pg_cluster.start()
    url = pg_cluster.create_database()
    server = GunicornServer(
        url,
        trusted_issuers_file,
        tmp_path_factory.mktemp("hostile"),
        extra_env={"WARDROUND_REQUEST_READ_TIMEOUT_S": str(READ_TIMEOUT_S)},
    )
    server.database_url = url  # type: ignore[attr-defined]
    try:
        yield server.start()
    finally:
        server.stop()
        print(f"--- gunicorn log tail ---\n{server.log_tail(3000)}")


def _post(server: GunicornServer, token_for, data: Any, **kwargs: Any) -> requests.Response:
    url = server.base_url + SERVICE
    headers = {"Authorization": f"Bearer {token_for(url)}", "Content-Type": "application/json"}
    return requests.post(url, data=data, headers=headers, timeout=10, **kwargs)


def _normal(server: GunicornServer, token_for, body: dict[str, Any]) -> tuple[int, float]:
    started = time.monotonic()
    response = _post(server, token_for, json.dumps(dict(body, hookInstance=str(uuid.uuid4()))))
    return response.status_code, time.monotonic() - started


def _total_rss(server: GunicornServer) -> int:
    return sum(server.rss_kib().values()) * 1024


def _head(server: GunicornServer, token: str | None, extra: str = "", length: int = 0) -> bytes:
    auth = f"Authorization: Bearer {token}\r\n" if token else ""
    return (
        f"POST {SERVICE} HTTP/1.1\r\nHost: 127.0.0.1:{server.port}\r\n{auth}"
        f"Content-Type: application/json\r\nContent-Length: {length}\r\n{extra}\r\n"
    ).encode()


def _read_status(sock: socket.socket, timeout: float) -> int | None:
    """The status code of the response on ``sock``, or None if it closed without one."""
    sock.settimeout(timeout)
    data = b""
    while b"\r\n" not in data:
        try:
            chunk = sock.recv(65536)
        except ConnectionResetError:
            break
        if not chunk:
            break
        data += chunk
    return int(data.split()[1]) if data.startswith(b"HTTP/") else None


# --------------------------------------------------------------------------- (a) big bodies
def test_oversized_bodies_refused_quickly_without_memory_growth(server, token_for, hook_bodies):
    for _ in range(5):  # warm both workers up before measuring memory
        assert _normal(server, token_for, hook_bodies[0])[0] == 200
    before = _total_rss(server)
    url = server.base_url + SERVICE
    body = 6 * MB
    for _ in range(3):
        # Content-Length announces 6 MB: refused from the head, before the body is sent.
        with socket.create_connection(("127.0.0.1", server.port)) as sock:
            started = time.monotonic()
            sock.sendall(_head(server, token_for(url), length=body) + b" " * 65536)
            assert _read_status(sock, timeout=5) == 413
            assert time.monotonic() - started < 2.0
        # Chunked, no Content-Length: the server stops reading at the 5 MB limit.
        started = time.monotonic()
        chunks = (b" " * 65536 for _ in range(body // 65536))
        response = _post(server, token_for, chunks)
        assert response.status_code == 413, response.text
        assert response.json()["error"] == "payload_too_large"
        assert time.monotonic() - started < 5.0
    growth = _total_rss(server) - before
    print(f"RSS growth after 6 oversized bodies: {growth / MB:.1f} MiB")
    # Only the chunked bodies are read (up to the 5 MB limit), and freed after the answer;
    # glibc may keep a freed buffer in the reading thread's malloc arena. 4x one body
    # bounds that; a leak (growth with every request) or buffering whole bodies would not.
    assert growth <= 4 * body, f"RSS grew {growth / MB:.1f} MiB"
    assert _normal(server, token_for, hook_bodies[0])[0] == 200


# --------------------------------------------------------------------------- (b) deep nesting
def test_deeply_nested_json_is_a_400(server, token_for, hook_bodies):
    depth = 100_000
    for raw in ("[" * depth + "]" * depth, '{"a":' * depth + "1" + "}" * depth):
        response = _post(server, token_for, raw)
        assert response.status_code == 400, response.text
        assert response.json()["error"] == "malformed_json"

    # Valid JSON, nested just deep enough to exhaust the FHIR model's recursion.
    body = copy.deepcopy(hook_bodies[0])
    leaf: dict[str, Any] = {"url": "http://example.org/nested"}
    body["prefetch"]["patient"]["extension"] = [leaf]
    for _ in range(400):
        child = {"url": "http://example.org/nested"}
        leaf["extension"] = [child]
        leaf = child
    body["hookInstance"] = hook_instance = str(uuid.uuid4())
    response = _post(server, token_for, json.dumps(body))
    assert response.status_code == 400, response.text
    assert response.json()["field"] == "prefetch.patient"
    assert audit_rows(server.database_url)["by_instance"][hook_instance][1] == 400

    assert _normal(server, token_for, hook_bodies[0])[0] == 200


# --------------------------------------------------------------------------- (c) header floods
@pytest.mark.parametrize(
    ("name", "head", "expected"),
    [
        ("200 headers", "".join(f"X-Pad-{i}: v\r\n" for i in range(200)), 431),
        ("one 64 kB header", f"X-Big: {'a' * 65536}\r\n", 431),
        ("64 kB bearer token", None, 431),
        ("64 kB request line", "", 414),
    ],
)
def test_header_floods_are_refused(server, token_for, hook_bodies, name, head, expected):
    if name == "64 kB request line":
        raw = f"GET /cds-services?{'a' * 65536} HTTP/1.1\r\nHost: x\r\n\r\n".encode()
    elif head is None:
        raw = _head(server, "a" * 65536)
    else:
        raw = _head(server, token_for(server.base_url + SERVICE), extra=head)
    with socket.create_connection(("127.0.0.1", server.port)) as sock:
        started = time.monotonic()
        sock.sendall(raw)
        status = _read_status(sock, timeout=5)
        assert status == expected, name
        assert time.monotonic() - started < 2.0
        sock.settimeout(5)
        while sock.recv(65536):  # refused heads close the connection
            pass
    assert _normal(server, token_for, hook_bodies[0])[0] == 200


# --------------------------------------------------------------------------- (d) slow clients
@dataclass
class SlowClient:
    """Connects, sends ``head`` at once, then ``trickle`` one byte every ``interval`` s.

    Records when the server cut it off (answered or hung up), and the status if it answered.
    With nothing to trickle it just waits, as an idle connection does.
    """

    port: int
    head: bytes
    trickle: bytes
    interval: float = 0.5
    give_up_after: float = 30.0
    opened: float = 0.0
    closed: float | None = None
    status: int | None = None

    def run(self) -> None:
        with socket.create_connection(("127.0.0.1", self.port)) as sock:
            self.opened = time.monotonic()
            try:
                sock.sendall(self.head)
                for byte in self.trickle:
                    sock.send(bytes([byte]))
                    if self._cut_off(sock, self.interval):
                        return
                self._cut_off(sock, self.give_up_after)
            except OSError:
                self.closed = time.monotonic()

    def _cut_off(self, sock: socket.socket, wait: float) -> bool:
        readable, _, _ = select.select([sock], [], [], wait)
        if not readable:
            return time.monotonic() - self.opened > self.give_up_after
        try:
            data = sock.recv(65536)
        except OSError:
            data = b""
        if data.startswith(b"HTTP/"):
            self.status = int(data.split()[1])
        self.closed = time.monotonic()
        return True

    @property
    def held_for(self) -> float | None:
        return None if self.closed is None else self.closed - self.opened


def _start(clients: list[SlowClient]) -> list[threading.Thread]:
    threads = [threading.Thread(target=c.run, daemon=True) for c in clients]
    for thread in threads:
        thread.start()
    return threads


def _assert_cut_off(clients: list[SlowClient], threads: list[threading.Thread]) -> None:
    for thread in threads:
        thread.join(READ_TIMEOUT_S + 10)
    held = sorted(round(c.held_for, 2) for c in clients if c.held_for is not None)
    print(f"slow clients held for (s): {held}; answers: {[c.status for c in clients]}")
    for client in clients:
        assert client.held_for is not None, "a slow client was never cut off"
        assert client.held_for < READ_TIMEOUT_S + 2.5, client.held_for
        assert client.status is None or 400 <= client.status < 500, client.status


def test_slowloris_heads_are_cut_off_and_others_still_served(server, token_for, hook_bodies):
    token = token_for(server.base_url + SERVICE)
    trickling = [SlowClient(server.port, b"", _head(server, token, length=2)) for _ in range(15)]
    idle = [SlowClient(server.port, b"", b"") for _ in range(5)]  # connect, say nothing
    threads = _start(trickling + idle)
    time.sleep(1.0)  # every slow connection is open and holding on

    latencies = []
    for _ in range(5):
        status, seconds = _normal(server, token_for, hook_bodies[1])
        assert status == 200
        latencies.append(seconds)
    print(f"normal latency with 20 slow clients: max {max(latencies) * 1000:.0f} ms")
    assert max(latencies) < 2.0, latencies

    _assert_cut_off(trickling + idle, threads)
    assert _normal(server, token_for, hook_bodies[1])[0] == 200


def test_slow_body_is_cut_off_with_a_4xx(server, token_for, hook_bodies):
    body = json.dumps(dict(hook_bodies[2], hookInstance=str(uuid.uuid4()))).encode()
    slow = [
        SlowClient(
            server.port,
            _head(server, token_for(server.base_url + SERVICE), length=len(body)),
            body,  # 2 bytes a second: far slower than the read timeout allows
        )
        for _ in range(3)
    ]
    threads = _start(slow)
    time.sleep(1.0)
    status, seconds = _normal(server, token_for, hook_bodies[1])
    print(f"normal latency with 3 slow bodies: {seconds * 1000:.0f} ms")
    assert status == 200
    assert seconds < READ_TIMEOUT_S + 2.0
    _assert_cut_off(slow, threads)
