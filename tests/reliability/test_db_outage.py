"""The audit database crashes under load and comes back: no card escapes unaudited.

Four EHR clients post real Synthea patient-view requests (fresh ES384 token and a new
hookInstance each) for about 15 s; after about 4 s the private PostgreSQL cluster is
stopped with ``pg_ctl stop -m immediate`` (a crash: clients are cut off, no checkpoint),
and about 5 s later it is started again. The same gunicorn keeps running throughout.
"""

from __future__ import annotations

import time
from collections import Counter

from tests.reliability.harness import HookLoad, Outcome, audit_rows, cds_audit_verify

CLIENT_TIMEOUT_S = 10.0
RUN_S = 15.0
DOWN_AT_S = 4.0
DOWN_FOR_S = 5.0
RECOVERY_BOUND_S = 6.0  # pool pre-ping + connect; the app needs no restart


def _summary(outcomes: list[Outcome]) -> str:
    return str(Counter(o.status or o.error for o in outcomes))


def test_database_crash_mid_load(pg, audit_db, start_server, token_for, hook_bodies):
    server = start_server(audit_db)
    workers_before = server.worker_pids()
    load = HookLoad(server.base_url, hook_bodies, token_for, timeout=CLIENT_TIMEOUT_S, pause=0.05)
    t0 = time.monotonic()
    with load.running(clients=4):
        time.sleep(DOWN_AT_S)
        pg.stop("immediate")
        down_at = time.monotonic()
        time.sleep(DOWN_FOR_S)
        pg.start()
        up_at = time.monotonic()
        time.sleep(max(0.0, RUN_S - (up_at - t0)))
    outcomes = load.outcomes
    summary = _summary(outcomes)

    # Every request got an HTTP answer, 200 or 503, in time: no 500, no hang, no reset.
    assert not [o for o in outcomes if o.error], summary
    assert {o.status for o in outcomes} <= {200, 503}, summary
    assert max(o.seconds for o in outcomes) < CLIENT_TIMEOUT_S, summary

    ok = [o for o in outcomes if o.status == 200]
    refused = [o for o in outcomes if o.status == 503]
    # The outage was real and seen: cards before it, refusals during it, cards after it.
    assert [o for o in ok if o.finished < down_at], summary
    assert [o for o in refused if down_at <= o.started <= up_at], summary
    after = [o for o in ok if o.started > up_at]
    assert after, summary
    first_after = min(o.finished for o in after) - up_at
    assert first_after < RECOVERY_BOUND_S, f"first 200 came {first_after:.1f} s after restart"

    # A 503 carries no decision support, and says when to come back.
    for o in refused:
        assert isinstance(o.body, dict) and "cards" not in o.body, o.body
        assert o.body.get("error") == "audit_unavailable", o.body
        assert o.headers.get("Retry-After"), o.headers

    # Every card the EHR received is in the audit log, under the invocation that made it.
    rows = audit_rows(audit_db)
    for o in ok:
        assert o.card_uuids, o.body
        assert o.hook_instance in rows["by_instance"], f"200 without audit row: {o.hook_instance}"
        seq, status = rows["by_instance"][o.hook_instance]
        assert status == 200
        for card in o.card_uuids:
            assert rows["card_invocation"].get(card) == seq, f"card {card} not audited"
    assert not rows["orphan_cards"]
    assert all(count == 1 for count in rows["cards_per_200"].values()), rows["cards_per_200"]

    verify = cds_audit_verify(audit_db)
    assert verify.returncode == 0, verify.stdout + verify.stderr
    assert "intact" in verify.stdout

    # Recovered without a restart: same master, same workers, and a fresh call succeeds.
    assert server.proc is not None and server.proc.poll() is None
    assert server.worker_pids() == workers_before
    with load.running(clients=1):
        time.sleep(0.5)
    assert load.outcomes[-1].status == 200, load.outcomes[-1]
    # Informational: 503s whose rows did commit (the reply to COMMIT was lost in the crash).
    committed_anyway = [o for o in refused if o.hook_instance in rows["by_instance"]]
    print(
        f"outcomes {summary}; first 200 {first_after:.2f} s after restart; "
        f"503s audited anyway: {len(committed_anyway)}"
    )
