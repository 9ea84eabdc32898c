"""The tamper-evident audit log, on real databases, real processes and a real server.

Tests that take ``database_url`` run twice: on a SQLite file and on the shared PostgreSQL
server. Tampering is done the way an attacker with database access would do it: raw SQL
on an engine of its own, never through the service.
"""

from __future__ import annotations

import hashlib
import json
import multiprocessing
import os
import subprocess
import sys
import threading
import time
import uuid
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from contextlib import contextmanager
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, TypeVar

import psycopg
import pytest
import requests
from flask import Flask
from flask.testing import FlaskClient
from sqlalchemy import Connection, select, text
from werkzeug.test import TestResponse

from cds import create_app
from cds.audit import AuditLog, AuditUnavailable, CardRecord, VerifyResult, verify_chain
from cds.audit.chain import canonical_content, row_hash, row_values
from cds.audit.store import utc_now
from cds.audit.tables import Card, ChainedRow, ChainHead, Feedback, Invocation
from cds.config import Settings
from cds.db import make_engine, make_sessionmaker
from cds.migrate import upgrade
from cds.services.patient_summary import VERSION
from tests.conftest import (
    ISSUER,
    PG_ADMIN_URL,
    HookClient,
    Mint,
    SigningKey,
    claims_for,
    reset_database,
    sign,
)
from tests.support.live_server import GunicornServer

SERVICE = "patient-summary"
BIN = Path(sys.executable).parent
CDS_CLI = BIN / "cds"
OVERRIDE = {
    "reason": {
        "system": "http://example.org/override",
        "code": "pt-declined",
        "display": "Patient declined",
    },
    "userComment": "x",
}
UNREACHABLE_PG = "postgresql://postgres@127.0.0.1:1/none"

Row = TypeVar("Row", bound=ChainedRow)


# --------------------------------------------------------------------------- helpers
def fresh(request: dict[str, Any]) -> dict[str, Any]:
    """The same request with a hookInstance of its own."""
    return {**request, "hookInstance": str(uuid.uuid4())}


def verify(url: str) -> VerifyResult:
    engine = make_engine(url)
    try:
        with make_sessionmaker(engine)() as session:
            return verify_chain(session)
    finally:
        engine.dispose()


def rows_of(url: str, table: type[Row]) -> list[Row]:
    """Every row of a chained table, in seq order, read on an engine of its own."""
    engine = make_engine(url)
    try:
        with make_sessionmaker(engine)() as session:
            return list(session.scalars(select(table).order_by(table.seq)))
    finally:
        engine.dispose()


def all_seqs(url: str) -> list[int]:
    return sorted(row.seq for table in (Invocation, Card, Feedback) for row in rows_of(url, table))


def chain_head(url: str) -> tuple[int, str]:
    engine = make_engine(url)
    try:
        with make_sessionmaker(engine)() as session:
            head = session.get(ChainHead, 1)
            assert head is not None
            return head.last_seq, head.last_hash
    finally:
        engine.dispose()


@contextmanager
def raw_sql(url: str) -> Iterator[Connection]:
    """A raw SQL connection of its own, committed on exit."""
    engine = make_engine(url)
    try:
        with engine.begin() as connection:
            yield connection
    finally:
        engine.dispose()


def make_calls(hooks: HookClient, request: dict[str, Any], count: int) -> list[dict[str, Any]]:
    """``count`` successful calls; return the cards the client received, in order."""
    cards: list[dict[str, Any]] = []
    for _ in range(count):
        response = hooks.call(SERVICE, fresh(request))
        assert response.status_code == 200, response.json
        cards.extend(response.json["cards"])
    return cards


def assert_audit_unavailable(response: TestResponse) -> None:
    assert response.status_code == 503, response.json
    assert response.headers["Retry-After"]
    assert response.json["error"] == "audit_unavailable"
    assert "cards" not in response.json


def synthetic_invocation(label: str) -> Invocation:
    return Invocation(
        received_at=utc_now(),
        service_id=SERVICE,
        hook="patient-view",
        hook_instance=str(uuid.uuid4()),
        user_id=label,
        request_digest=hashlib.sha256(label.encode()).hexdigest(),
        prefetch_used=[],
        prefetch_fetched=[],
        model_versions=[{"id": "synthetic", "version": "0"}],
        status_code=200,
        latency_ms=1.5,
    )


def synthetic_card(label: str) -> CardRecord:
    card_uuid = str(uuid.uuid4())
    card = {"uuid": card_uuid, "summary": label, "indicator": "info", "source": {"label": "t"}}
    return CardRecord(uuid=card_uuid, summary=label, indicator="info", card_json=card)


def write_invocations(audit: AuditLog, label: str, count: int, barrier: Any) -> list[int]:
    """Wait for the other writers, then append ``count`` invocations with one card each."""
    barrier.wait(timeout=60)
    return [
        audit.record_invocation(
            synthetic_invocation(f"{label}-{i}"), [synthetic_card(f"{label}-{i}")]
        )
        for i in range(count)
    ]


def _process_writer(url: str, label: str, count: int, barrier: Any) -> None:
    """Target of a spawned process (module level, so that it can be imported there)."""
    engine = make_engine(url)
    try:
        write_invocations(AuditLog(make_sessionmaker(engine)), label, count, barrier)
    finally:
        engine.dispose()


def cli_env(database_url: str, instance: Path) -> dict[str, str]:
    """The test runner's environment without any WARDROUND_* setting (WARDROUND_AUTH included)."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("WARDROUND_")}
    env.pop("GUNICORN_CMD_ARGS", None)
    env["DATABASE_URL"] = database_url
    env["WARDROUND_INSTANCE_PATH"] = str(instance)
    return env


def run_cli(database_url: str, instance: Path, *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [str(CDS_CLI), *args],
        env=cli_env(database_url, instance),
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )


# --------------------------------------------------------------------------- 1. chain basics
def test_calls_append_invocations_and_cards_to_an_intact_chain(
    hooks: HookClient, patient_view_request: dict[str, Any], database_url: str
) -> None:
    cards = make_calls(hooks, patient_view_request, 3)

    result = verify(database_url)
    assert result.ok, result.describe()
    assert result.rows == 3 + len(cards) == 6
    assert all_seqs(database_url) == list(range(1, result.rows + 1))
    assert chain_head(database_url) == (result.last_seq, result.last_hash)


def test_audited_cards_are_exactly_the_cards_returned(
    hooks: HookClient, patient_view_request: dict[str, Any], database_url: str
) -> None:
    returned = make_calls(hooks, patient_view_request, 2)

    audited = rows_of(database_url, Card)
    assert [row.card_json for row in audited] == returned
    assert [(row.uuid, row.summary) for row in audited] == [
        (card["uuid"], card["summary"]) for card in returned
    ]
    invocation_seqs = [row.seq for row in rows_of(database_url, Invocation)]
    assert [row.invocation_seq for row in audited] == invocation_seqs


def test_invocation_row_records_the_call(
    client: FlaskClient, mint: Mint, patient_view_request: dict[str, Any], database_url: str
) -> None:
    body = fresh(patient_view_request)
    raw = json.dumps(body, separators=(", ", ": ")).encode()  # not Flask's own serialisation
    path = f"/cds-services/{SERVICE}"
    response = client.post(
        path,
        data=raw,
        content_type="application/json",
        headers={"Authorization": f"Bearer {mint(path)}"},
    )
    assert response.status_code == 200, response.json

    [invocation] = rows_of(database_url, Invocation)
    assert invocation.request_digest == hashlib.sha256(raw).hexdigest()
    assert invocation.hook == "patient-view"
    assert invocation.hook_instance == body["hookInstance"]
    assert invocation.service_id == SERVICE
    assert invocation.patient_id == body["context"]["patientId"]
    assert invocation.user_id == body["context"]["userId"]
    assert sorted(invocation.prefetch_used) == sorted(body["prefetch"])
    assert invocation.model_versions == [{"id": "patient-summary", "version": VERSION}]
    assert invocation.status_code == 200
    assert invocation.error_code is None
    assert invocation.latency_ms > 0
    assert invocation.client_iss == ISSUER


# --------------------------------------------------------------------------- 2. failed calls
def test_invalid_hook_instance_is_audited_as_400_without_cards(
    hooks: HookClient, patient_view_request: dict[str, Any], database_url: str
) -> None:
    response = hooks.call(SERVICE, {**patient_view_request, "hookInstance": "not-a-uuid"})
    assert response.status_code == 400
    assert response.json["field"] == "hookInstance"

    [invocation] = rows_of(database_url, Invocation)
    assert (invocation.status_code, invocation.error_code) == (400, "invalid_request")
    assert invocation.error_detail is not None
    assert invocation.error_detail.startswith("hookInstance")
    assert rows_of(database_url, Card) == []
    assert verify(database_url).ok


def test_missing_required_prefetch_is_audited_as_412_without_cards(
    hooks: HookClient, patient_view_request: dict[str, Any], database_url: str
) -> None:
    body = fresh(patient_view_request)
    body["prefetch"] = {k: v for k, v in body["prefetch"].items() if k != "patient"}
    response = hooks.call(SERVICE, body)
    assert response.status_code == 412
    assert response.json["missing"] == ["patient"]

    [invocation] = rows_of(database_url, Invocation)
    assert (invocation.status_code, invocation.error_code) == (412, "prefetch_required")
    assert invocation.hook_instance == body["hookInstance"]
    assert sorted(invocation.prefetch_used) == ["allergies", "conditions", "medications"]
    # Every declared key is accounted for: where it came from, or why it could not be had.
    assert {entry["key"]: entry["source"] for entry in invocation.prefetch_fetched} == {
        "patient": "not-fetchable",
        "conditions": "prefetch",
        "medications": "prefetch",
        "allergies": "prefetch",
    }
    assert response.json["reasons"] == {"patient": "no_fhir_server"}
    assert rows_of(database_url, Card) == []
    assert verify(database_url).ok


# --------------------------------------------------------------------------- 3. tampering
# Every tamper test starts from the same chain of three calls:
#   seq 1 invocation, 2 card, 3 invocation, 4 card, 5 invocation, 6 card.
@pytest.fixture
def chain(hooks: HookClient, patient_view_request: dict[str, Any], database_url: str) -> str:
    make_calls(hooks, patient_view_request, 3)
    kinds = {row.seq: type(row) for t in (Invocation, Card) for row in rows_of(database_url, t)}
    assert kinds == {1: Invocation, 2: Card, 3: Invocation, 4: Card, 5: Invocation, 6: Card}
    assert verify(database_url).ok
    return database_url


def test_changed_card_summary_is_detected(chain: str) -> None:
    with raw_sql(chain) as sql:
        sql.execute(text("UPDATE audit_card SET summary = 'Nothing to see' WHERE seq = 4"))

    result = verify(chain)
    assert not result.ok
    assert (result.broken_seq, result.broken_table) == (4, "audit_card")
    assert result.reason is not None and "modified" in result.reason


def test_changed_invocation_patient_is_detected(chain: str) -> None:
    with raw_sql(chain) as sql:
        sql.execute(text("UPDATE audit_invocation SET patient_id = 'someone-else' WHERE seq = 3"))

    result = verify(chain)
    assert not result.ok
    assert (result.broken_seq, result.broken_table) == (3, "audit_invocation")
    assert result.reason is not None and "modified" in result.reason


def test_deleted_middle_row_is_detected(chain: str) -> None:
    with raw_sql(chain) as sql:  # a card nobody gave feedback on: no foreign key stops it
        sql.execute(text("DELETE FROM audit_card WHERE seq = 4"))

    result = verify(chain)
    assert not result.ok
    assert result.broken_seq == 5  # the first row after the gap
    assert result.reason is not None
    assert "missing sequence" in result.reason and "expected 4" in result.reason


def test_deleted_tail_rows_are_detected_by_the_chain_head(chain: str) -> None:
    with raw_sql(chain) as sql:
        sql.execute(text("DELETE FROM audit_card WHERE seq = 6"))
        sql.execute(text("DELETE FROM audit_invocation WHERE seq = 5"))

    result = verify(chain)
    assert not result.ok
    assert (result.broken_seq, result.broken_table) == (6, "audit_chain_head")
    assert result.last_seq == 4
    assert result.reason is not None and "removed from the end" in result.reason


def test_deleted_tail_with_rewritten_head_needs_the_external_anchor(chain: str) -> None:
    # The limitation, stated plainly: an attacker with full write access who removes the
    # newest rows *and* moves the chain head back to the new last row (or recomputes every
    # hash after a change) leaves a chain that is internally consistent. No chain stored in
    # the same database can detect that. This is why `cds audit verify` prints the head seq
    # and hash: recorded outside the database (a ticket, a WORM store, a signed log), the
    # anchor shows the rewrite, as asserted below.
    anchor = verify(chain)
    with raw_sql(chain) as sql:
        sql.execute(text("DELETE FROM audit_card WHERE seq = 6"))
        sql.execute(text("DELETE FROM audit_invocation WHERE seq = 5"))
        new_last = sql.execute(text("SELECT hash FROM audit_card WHERE seq = 4")).scalar_one()
        sql.execute(
            text("UPDATE audit_chain_head SET last_seq = 4, last_hash = :h WHERE id = 1"),
            {"h": new_last},
        )

    result = verify(chain)
    assert result.ok  # undetectable from inside the database...
    assert result.rows == 4
    # ...but the head no longer matches the anchor printed before the rewrite.
    assert (result.last_seq, result.last_hash) != (anchor.last_seq, anchor.last_hash)


def test_modified_row_with_recomputed_hash_breaks_the_next_link(chain: str) -> None:
    with raw_sql(chain) as sql:
        sql.execute(text("UPDATE audit_invocation SET patient_id = 'someone-else' WHERE seq = 3"))
    [changed] = [row for row in rows_of(chain, Invocation) if row.seq == 3]
    with raw_sql(chain) as sql:
        sql.execute(
            text("UPDATE audit_invocation SET hash = :h WHERE seq = 3"), {"h": row_hash(changed)}
        )

    result = verify(chain)
    assert not result.ok
    assert (result.broken_seq, result.broken_table) == (4, "audit_card")
    assert result.reason is not None and "prev_hash" in result.reason


def test_changed_card_result_is_detected_and_null_results_hash_as_before(
    database_url: str,
) -> None:
    engine = make_engine(database_url)
    try:
        audit = AuditLog(make_sessionmaker(engine))
        plain = synthetic_card("no result")
        asserted = synthetic_card("with result")
        asserted = CardRecord(
            uuid=asserted.uuid,
            summary=asserted.summary,
            indicator=asserted.indicator,
            card_json=asserted.card_json,
            result={"kind": "risk-assessment", "model": "m", "probability": 0.2},
        )
        audit.record_invocation(synthetic_invocation("r"), [plain, asserted])
    finally:
        engine.dispose()
    rows = {row.uuid: row for row in rows_of(database_url, Card)}
    # A card without a result hashes exactly as rows written before the column existed.
    assert "result" not in canonical_content(Card, row_values(rows[plain.uuid]))
    assert canonical_content(Card, row_values(rows[asserted.uuid]))["result"]["model"] == "m"
    assert verify(database_url).ok

    with raw_sql(database_url) as sql:
        sql.execute(
            text("UPDATE audit_card SET result = NULL WHERE uuid = :u"), {"u": asserted.uuid}
        )
    result = verify(database_url)
    assert not result.ok
    assert (result.broken_seq, result.broken_table) == (rows[asserted.uuid].seq, "audit_card")


# --------------------------------------------------------------------------- 4. the CLI
def test_cli_verify_reports_an_intact_chain(
    hooks: HookClient, patient_view_request: dict[str, Any], database_url: str, tmp_path: Path
) -> None:
    make_calls(hooks, patient_view_request, 2)
    expected = verify(database_url)

    completed = run_cli(database_url, tmp_path, "audit", "verify")
    assert completed.returncode == 0, completed.stdout + completed.stderr
    assert "intact" in completed.stdout
    assert f"4 rows, head seq 4 {expected.last_hash}" in completed.stdout


def test_cli_verify_exits_1_naming_the_broken_seq(chain: str, tmp_path: Path) -> None:
    with raw_sql(chain) as sql:
        sql.execute(text("UPDATE audit_card SET summary = 'Nothing to see' WHERE seq = 2"))

    completed = run_cli(chain, tmp_path, "audit", "verify")
    assert completed.returncode == 1, completed.stdout + completed.stderr
    assert "BROKEN at seq 2 (audit_card)" in completed.stdout


def test_cli_db_upgrade_is_idempotent(database_url: str, tmp_path: Path) -> None:
    completed = run_cli(database_url, tmp_path, "db", "upgrade")
    assert completed.returncode == 0, completed.stderr
    assert "database at revision head" in completed.stdout
    current = run_cli(database_url, tmp_path, "db", "current")
    assert current.stdout.strip() == "0003"


def test_cli_db_upgrade_creates_the_schema_in_an_empty_database(tmp_path: Path) -> None:
    url = f"sqlite:///{tmp_path / 'new.db'}"

    upgraded = run_cli(url, tmp_path, "db", "upgrade")
    assert upgraded.returncode == 0, upgraded.stderr

    verified = run_cli(url, tmp_path, "audit", "verify")
    assert verified.returncode == 0, verified.stdout + verified.stderr
    assert "intact: 0 rows, head seq 0" in verified.stdout


# --------------------------------------------------------------------------- 5. concurrency
def assert_chain_of(url: str, invocations: int, cards: int) -> None:
    result = verify(url)
    assert result.ok, result.describe()
    assert len(rows_of(url, Invocation)) == invocations
    assert len(rows_of(url, Card)) == cards
    assert all_seqs(url) == list(range(1, invocations + cards + 1))  # no gap, no duplicate


def test_threads_writing_at_once_never_fork_the_chain(database_url: str) -> None:
    # One AuditLog shared by the threads, as in a gunicorn worker serving on several threads.
    threads, each = 8, 25
    barrier = threading.Barrier(threads)
    engine = make_engine(database_url)
    audit = AuditLog(make_sessionmaker(engine))
    try:
        with ThreadPoolExecutor(threads) as pool:
            futures = [
                pool.submit(write_invocations, audit, f"thread{t}", each, barrier)
                for t in range(threads)
            ]
            seqs = [seq for future in futures for seq in future.result()]
    finally:
        engine.dispose()

    assert len(set(seqs)) == threads * each
    assert_chain_of(database_url, invocations=threads * each, cards=threads * each)


def test_processes_writing_at_once_never_fork_the_chain(database_url: str) -> None:
    processes, each = 8, 10
    context = multiprocessing.get_context("spawn")
    barrier = context.Barrier(processes)
    workers = [
        context.Process(target=_process_writer, args=(database_url, f"proc{p}", each, barrier))
        for p in range(processes)
    ]
    try:
        for worker in workers:
            worker.start()
        for worker in workers:
            worker.join(timeout=90)
        assert [worker.exitcode for worker in workers] == [0] * processes
    finally:
        for worker in workers:
            if worker.is_alive():
                worker.kill()

    assert_chain_of(database_url, invocations=processes * each, cards=processes * each)


def wait_for_a_lock_wait(url: str) -> None:
    """Poll until a session of the database waits on a lock (bounded to 10 s)."""
    name = url.rsplit("/", 1)[1]
    deadline = time.monotonic() + 10
    with psycopg.connect(PG_ADMIN_URL, autocommit=True) as admin:
        while time.monotonic() < deadline:
            waiting = admin.execute(
                "SELECT count(*) FROM pg_stat_activity "
                "WHERE datname = %s AND wait_event_type = 'Lock'",
                (name,),
            ).fetchone()
            if waiting and waiting[0]:
                return
            time.sleep(0.05)  # the poll interval
    pytest.fail("no session started waiting on the chain-head lock")


@pytest.mark.postgres
def test_writes_held_up_past_their_timeout_report_what_really_happened(
    postgres_url: str,
) -> None:
    # A slow database (here: another transaction holding the chain-head lock) holds writes
    # up past their timeout. A write still queued is withdrawn and reported failed (the
    # request answers 503, so its rows must never turn up later); a write already inside
    # its transaction reports that transaction's real outcome, however late.
    reset_database(postgres_url)
    engine = make_engine(postgres_url)
    audit = AuditLog(make_sessionmaker(engine), timeout_s=1)
    in_flight, queued = synthetic_invocation("in-flight"), synthetic_invocation("queued")
    try:
        with ThreadPoolExecutor(1) as pool:
            with raw_sql(postgres_url) as blocker:
                blocker.execute(text("UPDATE audit_chain_head SET last_seq = last_seq"))
                held_up = pool.submit(audit.record_invocation, in_flight, [])
                wait_for_a_lock_wait(postgres_url)
                with pytest.raises(AuditUnavailable):
                    audit.record_invocation(queued, [])
            assert held_up.result(timeout=30) == 1
    finally:
        engine.dispose()

    audited = [row.hook_instance for row in rows_of(postgres_url, Invocation)]
    assert audited == [in_flight.hook_instance]
    assert verify(postgres_url).ok


def bearer(key: SigningKey, url: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {sign(key, claims_for(url))}"}


def test_gunicorn_workers_audit_every_card_they_return(
    database_url: str,
    trusted_issuers_file: Path,
    es384_key: SigningKey,
    patient_view_request: dict[str, Any],
    tmp_path: Path,
) -> None:
    """Three worker processes write one chain: on PostgreSQL they queue on the chain-head
    row lock, on SQLite on the database write lock (BEGIN IMMEDIATE)."""
    threads, each = 8, 10

    def call_repeatedly(base: str) -> list[tuple[int, str, list[str]]]:
        url = f"{base}/cds-services/{SERVICE}"
        results = []
        with requests.Session() as session:
            for _ in range(each):
                body = fresh(patient_view_request)
                response = session.post(url, json=body, headers=bearer(es384_key, url), timeout=30)
                cards = response.json().get("cards", []) if response.ok else []
                results.append(
                    (response.status_code, body["hookInstance"], [c["uuid"] for c in cards])
                )
        return results

    # gunicorn.conf.py with 3 workers, none of the test runner's WARDROUND_* settings
    server = GunicornServer(database_url, trusted_issuers_file, tmp_path, workers=3, clean_env=True)
    with server, ThreadPoolExecutor(threads) as pool:
        futures = [pool.submit(call_repeatedly, server.base_url) for _ in range(threads)]
        results = [result for future in futures for result in future.result()]

    assert [status for status, _, _ in results] == [200] * threads * each
    returned = {card for _, _, cards in results for card in cards}
    assert len(returned) == threads * each  # one card per call
    assert {row.uuid for row in rows_of(database_url, Card)} == returned
    sent = {hook_instance for _, hook_instance, _ in results}
    assert {row.hook_instance for row in rows_of(database_url, Invocation)} == sent
    assert_chain_of(database_url, invocations=threads * each, cards=threads * each)


# --------------------------------------------------------------------------- 6. database down
def app_on(url: str, tmp_path: Path, **overrides: Any) -> Flask:
    settings = Settings(
        database_url=url,
        instance_path=tmp_path / "instance",
        public_base_url="http://localhost",
        auth_mode="off",  # the first database touch is then the audit write itself
        db_connect_timeout_s=1,
    ).with_overrides(**overrides)
    app = create_app(settings)
    app.testing = True
    return app


@pytest.mark.parametrize("kind", ["postgresql", "sqlite"])
def test_unreachable_database_answers_503_and_releases_no_card(
    kind: str, patient_view_request: dict[str, Any], tmp_path: Path
) -> None:
    url = UNREACHABLE_PG if kind == "postgresql" else f"sqlite:///{tmp_path}/no-such-dir/a.db"
    app = app_on(url, tmp_path)
    try:
        response = app.test_client().post(f"/cds-services/{SERVICE}", json=patient_view_request)
        assert_audit_unavailable(response)
    finally:
        app.extensions["wardround.engine"].dispose()


def test_unreachable_database_with_jwt_auth_answers_503_not_401(
    patient_view_request: dict[str, Any], trusted_issuers_file: Path, mint: Mint, tmp_path: Path
) -> None:
    # With JWT auth on, the replay store is the first database touch.
    app = app_on(
        UNREACHABLE_PG, tmp_path, auth_mode="jwt", trusted_issuers_file=trusted_issuers_file
    )
    path = f"/cds-services/{SERVICE}"
    try:
        response = app.test_client().post(
            path, json=patient_view_request, headers={"Authorization": f"Bearer {mint(path)}"}
        )
        assert_audit_unavailable(response)
    finally:
        app.extensions["wardround.engine"].dispose()


@contextmanager
def refused_inserts(url: str, table: str) -> Iterator[None]:
    """A real write failure: a trigger makes the database reject every insert into ``table``."""
    sqlite = url.startswith("sqlite")
    create = (
        [
            f"CREATE TRIGGER refuse_insert BEFORE INSERT ON {table} "
            "BEGIN SELECT RAISE(ABORT, 'simulated write failure'); END"
        ]
        if sqlite
        else [
            "CREATE FUNCTION refuse_insert() RETURNS trigger LANGUAGE plpgsql AS "
            "$$ BEGIN RAISE EXCEPTION 'simulated write failure'; END $$",
            f"CREATE TRIGGER refuse_insert BEFORE INSERT ON {table} "
            "FOR EACH ROW EXECUTE FUNCTION refuse_insert()",
        ]
    )
    drop = (
        ["DROP TRIGGER refuse_insert"]
        if sqlite
        else [f"DROP TRIGGER refuse_insert ON {table}", "DROP FUNCTION refuse_insert()"]
    )
    with raw_sql(url) as sql:
        for statement in create:
            sql.execute(text(statement))
    try:
        yield
    finally:  # the PostgreSQL database is shared by the whole session
        with raw_sql(url) as sql:
            for statement in drop:
                sql.execute(text(statement))


def test_failed_card_write_rolls_back_the_invocation_and_answers_503(
    hooks: HookClient, patient_view_request: dict[str, Any], database_url: str
) -> None:
    make_calls(hooks, patient_view_request, 1)
    head_before = chain_head(database_url)

    with refused_inserts(database_url, "audit_card"):
        body = fresh(patient_view_request)
        assert_audit_unavailable(hooks.call(SERVICE, body))

    # The invocation row was written before the card failed: it went with the transaction.
    assert body["hookInstance"] not in {r.hook_instance for r in rows_of(database_url, Invocation)}
    assert chain_head(database_url) == head_before
    assert verify(database_url).ok
    make_calls(hooks, patient_view_request, 1)  # and the chain goes on from where it was
    assert verify(database_url).rows == 4


def test_failed_feedback_write_answers_503_and_stores_nothing(
    hooks: HookClient, patient_view_request: dict[str, Any], database_url: str
) -> None:
    [card] = make_calls(hooks, patient_view_request, 1)
    head_before = chain_head(database_url)

    with refused_inserts(database_url, "audit_feedback"):
        assert_audit_unavailable(hooks.feedback(SERVICE, feedback_for(card["uuid"])))

    assert rows_of(database_url, Feedback) == []
    assert chain_head(database_url) == head_before


# A real outage on the shared PostgreSQL server: the server itself cannot be stopped (other
# sessions use it), so a private database is closed to connections and its backends are
# terminated, which is what the service sees when its database goes away.
@pytest.fixture
def private_postgres(postgres_url: str) -> Iterator[str]:
    """A migrated database of this test's own (``postgres_url`` supplies the skip logic)."""
    name = f"wardround_outage_{uuid.uuid4().hex[:12]}"
    with psycopg.connect(PG_ADMIN_URL, autocommit=True) as admin:
        admin.execute(f'CREATE DATABASE "{name}"')
    url = PG_ADMIN_URL.rsplit("/", 1)[0] + f"/{name}"
    try:
        upgrade(url)
        yield url
    finally:
        with psycopg.connect(PG_ADMIN_URL, autocommit=True) as admin:
            admin.execute(f'ALTER DATABASE "{name}" ALLOW_CONNECTIONS true')
            admin.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')


def terminate_backends(url: str) -> None:
    name = url.rsplit("/", 1)[1]
    with psycopg.connect(PG_ADMIN_URL, autocommit=True) as admin:
        admin.execute(
            "SELECT pg_terminate_backend(pid) FROM pg_stat_activity "
            "WHERE datname = %s AND pid <> pg_backend_pid()",
            (name,),
        )


@contextmanager
def outage(url: str) -> Iterator[None]:
    name = url.rsplit("/", 1)[1]
    with psycopg.connect(PG_ADMIN_URL, autocommit=True) as admin:
        admin.execute(f'ALTER DATABASE "{name}" ALLOW_CONNECTIONS false')
    terminate_backends(url)
    try:
        yield
    finally:
        with psycopg.connect(PG_ADMIN_URL, autocommit=True) as admin:
            admin.execute(f'ALTER DATABASE "{name}" ALLOW_CONNECTIONS true')


@pytest.fixture
def outage_client(private_postgres: str, tmp_path: Path) -> Iterator[FlaskClient]:
    app = app_on(private_postgres, tmp_path)
    yield app.test_client()
    app.extensions["wardround.engine"].dispose()


@pytest.mark.postgres
def test_dropped_connections_are_replaced_without_a_503(
    outage_client: FlaskClient, private_postgres: str, patient_view_request: dict[str, Any]
) -> None:
    path = f"/cds-services/{SERVICE}"
    assert outage_client.post(path, json=fresh(patient_view_request)).status_code == 200
    terminate_backends(private_postgres)  # the pool still holds the dead connections

    assert outage_client.post(path, json=fresh(patient_view_request)).status_code == 200
    assert verify(private_postgres).rows == 4


@pytest.mark.postgres
def test_database_outage_mid_stream_answers_503_then_recovers(
    outage_client: FlaskClient, private_postgres: str, patient_view_request: dict[str, Any]
) -> None:
    path = f"/cds-services/{SERVICE}"
    assert outage_client.post(path, json=fresh(patient_view_request)).status_code == 200

    refused = [fresh(patient_view_request) for _ in range(3)]
    with outage(private_postgres):
        for body in refused:
            assert_audit_unavailable(outage_client.post(path, json=body))

    after = outage_client.post(path, json=fresh(patient_view_request))
    assert after.status_code == 200, after.json
    result = verify(private_postgres)
    assert result.ok, result.describe()
    assert result.rows == 4
    audited = {row.hook_instance for row in rows_of(private_postgres, Invocation)}
    assert audited.isdisjoint(body["hookInstance"] for body in refused)


@pytest.mark.postgres
def test_feedback_during_an_outage_answers_503_and_stores_nothing(
    outage_client: FlaskClient, private_postgres: str, patient_view_request: dict[str, Any]
) -> None:
    response = outage_client.post(f"/cds-services/{SERVICE}", json=fresh(patient_view_request))
    [card] = response.json["cards"]
    path = f"/cds-services/{SERVICE}/feedback"

    with outage(private_postgres):
        assert_audit_unavailable(outage_client.post(path, json=feedback_for(card["uuid"])))

    assert rows_of(private_postgres, Feedback) == []
    assert verify(private_postgres).rows == 2
    assert outage_client.post(path, json=feedback_for(card["uuid"])).status_code == 200
    assert verify(private_postgres).rows == 3


# --------------------------------------------------------------------------- 7. feedback
def feedback_for(card_uuid: str, timestamp: str = "2026-11-25T10:15:00Z") -> dict[str, Any]:
    return {
        "feedback": [
            {
                "card": card_uuid,
                "outcome": "overridden",
                "overrideReason": OVERRIDE,
                "outcomeTimestamp": timestamp,
            }
        ]
    }


def as_utc(value: datetime) -> datetime:
    """SQLite hands datetimes back naive; they are stored in UTC."""
    return value if value.tzinfo else value.replace(tzinfo=UTC)


def test_feedback_is_chained_after_the_card_it_names(
    hooks: HookClient, patient_view_request: dict[str, Any], database_url: str
) -> None:
    [card] = make_calls(hooks, patient_view_request, 1)

    response = hooks.feedback(SERVICE, feedback_for(card["uuid"]))
    assert response.status_code == 200, response.json
    assert response.json == {}

    [card_row] = rows_of(database_url, Card)
    [entry] = rows_of(database_url, Feedback)
    assert (entry.card_uuid, entry.service_id, entry.client_iss) == (card["uuid"], SERVICE, ISSUER)
    assert entry.outcome == "overridden"
    assert entry.override_reason == OVERRIDE
    assert entry.accepted_suggestions == []
    assert as_utc(entry.outcome_timestamp) == datetime(2026, 11, 25, 10, 15, tzinfo=UTC)
    assert (entry.seq, entry.prev_hash) == (card_row.seq + 1, card_row.hash)
    result = verify(database_url)
    assert result.ok, result.describe()
    assert (result.rows, result.last_hash) == (3, entry.hash)


def test_feedback_timestamp_with_an_offset_keeps_the_chain_intact(
    hooks: HookClient, patient_view_request: dict[str, Any], database_url: str
) -> None:
    [card] = make_calls(hooks, patient_view_request, 1)

    timestamp = "2026-11-25T12:15:00+02:00"
    assert hooks.feedback(SERVICE, feedback_for(card["uuid"], timestamp)).status_code == 200

    [entry] = rows_of(database_url, Feedback)
    assert as_utc(entry.outcome_timestamp) == datetime(2026, 11, 25, 10, 15, tzinfo=UTC)
    result = verify(database_url)
    assert result.ok, result.describe()


def test_changed_feedback_outcome_is_detected(
    hooks: HookClient, patient_view_request: dict[str, Any], database_url: str
) -> None:
    [card] = make_calls(hooks, patient_view_request, 1)
    assert hooks.feedback(SERVICE, feedback_for(card["uuid"])).status_code == 200

    with raw_sql(database_url) as sql:
        sql.execute(text("UPDATE audit_feedback SET outcome = 'accepted' WHERE seq = 3"))

    result = verify(database_url)
    assert (result.ok, result.broken_seq, result.broken_table) == (False, 3, "audit_feedback")


def test_feedback_for_an_unknown_card_is_404_and_stores_nothing(
    hooks: HookClient, patient_view_request: dict[str, Any], database_url: str
) -> None:
    make_calls(hooks, patient_view_request, 1)
    head_before = chain_head(database_url)
    stranger = str(uuid.uuid4())

    response = hooks.feedback(SERVICE, feedback_for(stranger))
    assert response.status_code == 404
    assert response.json["error"] == "unknown_card"
    assert response.json["cards"] == [stranger]

    assert rows_of(database_url, Feedback) == []
    assert chain_head(database_url) == head_before
    assert verify(database_url).rows == 2


# =========================================================================== jti memory
def test_service_calls_forget_expired_jtis(database_url: str) -> None:
    """Audited writes (not only discovery) purge jtis whose tokens have expired."""
    from datetime import timedelta

    from cds.audit.jti import SeenToken
    from cds.audit.tables import JwtReplay

    engine = make_engine(database_url)
    sessions = make_sessionmaker(engine)
    try:
        long_gone = SeenToken("https://ehr.test", "expired-jti", utc_now() - timedelta(hours=1))
        audit = AuditLog(sessions, purge_every=1)
        audit.record_invocation(synthetic_invocation("old"), [], token=long_gone)
        live = SeenToken("https://ehr.test", str(uuid.uuid4()), utc_now() + timedelta(minutes=5))
        audit.record_invocation(synthetic_invocation("new"), [], token=live)
        with sessions() as session:
            remembered = set(session.scalars(select(JwtReplay.jti)))
        assert remembered == {live.jti}
    finally:
        engine.dispose()
