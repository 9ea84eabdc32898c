"""A one-minute soak inside the suite: steady rate, no errors, no memory or latency creep.

The same driver as ``make soak`` (``benchmarks/soak.py``), with looser bounds for a run
this short on a shared machine: RSS may grow 25 % and p99 may drift 100 % (or 25 ms)
after the first 20 % of the run, and not one request may fail.
"""

from __future__ import annotations

import os

from benchmarks.soak import run_soak
from tests.conftest import ISSUER
from tests.reliability.harness import cds_audit_verify

DURATION_S = float(os.environ.get("WARDROUND_SOAK_TEST_S", "60"))
RATE = float(os.environ.get("WARDROUND_SOAK_TEST_RATE", "20"))


def test_one_minute_soak(audit_db, start_server, es384_key, hook_bodies):
    server = start_server(audit_db)
    report = run_soak(
        server.base_url,
        server.master_pid,
        (es384_key.private_pem, ISSUER, es384_key.kid),
        hook_bodies,
        duration=DURATION_S,
        rate=RATE,
        senders=8,
        rss_growth_limit=0.25,
        p99_drift_limit=1.0,
        p99_slack_ms=25.0,
    )
    for window in report.windows:
        print(window)
    print(
        f"achieved {report.achieved_rate} req/s, RSS growth {report.rss_growth:.1%}, "
        f"p99 {report.p99_baseline_ms} -> {report.p99_final_ms} ms"
    )
    assert report.passed, report.failures
    assert report.requests == int(DURATION_S * RATE)
    verify = cds_audit_verify(audit_db)
    assert verify.returncode == 0, verify.stdout + verify.stderr
