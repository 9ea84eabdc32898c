"""A gunicorn worker is SIGKILLed under load: no partial audit rows, the service carries on.

Only the requests in flight on the killed worker's connections may fail, and only as a
connection error (reset / closed before the answer, or closed part-way through a chunked
body the worker had begun to send): never a 5xx. Gunicorn's master replaces the worker.
"""

from __future__ import annotations

import os
import signal
import time
from collections import Counter

from tests.reliability.harness import HookLoad, audit_rows, cds_audit_verify

CLIENTS = 4
CLIENT_TIMEOUT_S = 10.0
REPLACE_BOUND_S = 15.0
# What a socket closed by a dead worker looks like to requests: closed/reset before the
# status line, or mid-way through a chunked body the worker had started to send.
CONNECTION_CLOSED = ("ConnectionError", "ChunkedEncodingError")
ERROR_WINDOW_S = 1.0  # a request started this long after the kill may still hit the dead socket


def test_worker_sigkill_mid_load(audit_db, start_server, token_for, hook_bodies):
    server = start_server(audit_db)
    master = server.master_pid
    load = HookLoad(server.base_url, hook_bodies, token_for, timeout=CLIENT_TIMEOUT_S, pause=0.02)
    with load.running(clients=CLIENTS):
        time.sleep(3)
        victim = server.worker_pids()[0]
        os.kill(victim, signal.SIGKILL)
        killed_at = time.monotonic()
        deadline = killed_at + REPLACE_BOUND_S
        while time.monotonic() < deadline:
            pids = server.worker_pids()
            if victim not in pids and len(pids) == server.workers:
                break
            time.sleep(0.05)
        replaced_at = time.monotonic()
        time.sleep(4)
    outcomes = load.outcomes
    summary = str(Counter(o.status or o.error for o in outcomes))

    # The master replaced the worker and is the same process.
    assert server.proc is not None and server.proc.poll() is None
    assert server.master_pid == master
    pids = server.worker_pids()
    assert victim not in pids and len(pids) == server.workers, (victim, pids)
    assert replaced_at - killed_at < REPLACE_BOUND_S

    # HTTP answers are all 200: the kill never turns into a 5xx for anyone.
    assert {o.status for o in outcomes if o.status is not None} == {200}, summary
    errors = [o for o in outcomes if o.error]
    # Client-side errors: connection errors of requests in flight when the worker died,
    # at most one per client connection, none a timeout.
    assert len(errors) <= CLIENTS, summary
    for o in errors:
        assert o.error.startswith(CONNECTION_CLOSED), o.error
        assert o.started <= killed_at + ERROR_WINDOW_S, (o.started - killed_at, o.error)
    # ...and the service keeps answering: requests after the replacement all succeed.
    later = [o for o in outcomes if o.started > killed_at + ERROR_WINDOW_S]
    assert len(later) >= 20 and all(o.status == 200 for o in later), summary

    # No partial writes: each 200 invocation has exactly its one card, no card is orphaned,
    # and every card the clients received is audited.
    rows = audit_rows(audit_db)
    assert not rows["orphan_cards"]
    assert rows["cards_per_200"] and set(rows["cards_per_200"].values()) == {1}, rows
    for o in outcomes:
        if o.status == 200:
            seq, status = rows["by_instance"][o.hook_instance]
            assert status == 200
            assert [rows["card_invocation"].get(c) for c in o.card_uuids] == [seq]
    verify = cds_audit_verify(audit_db)
    assert verify.returncode == 0, verify.stdout + verify.stderr
    print(f"outcomes {summary}; worker replaced in {replaced_at - killed_at:.2f} s")
