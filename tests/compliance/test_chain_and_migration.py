"""The access log is part of the hash chain: verified with the rest, migrated onto an
existing chain without changing a hash; incremental verification and the monitor."""

from __future__ import annotations

import time
from typing import Any

from flask import Flask
from sqlalchemy import text

from cds.access import Principal, access_row
from cds.audit import AuditLog, verify_chain
from cds.audit.tables import Access
from cds.config import Settings
from cds.db import make_engine, make_sessionmaker, make_snapshot_sessionmaker
from cds.migrate import upgrade
from cds.review.chain_status import ChainMonitor
from tests.compliance.conftest import write_call
from tests.compliance.test_fhir_api import ISSUE
from tests.test_audit_log import (
    chain_head,
    raw_sql,
    rows_of,
    synthetic_card,
    synthetic_invocation,
    verify,
)

READER = Principal("fhir-api", "https://auth.test", "client", frozenset({"auditor"}))


def test_access_rows_are_chained_with_calls(app: Flask, database_url: str):
    audit: AuditLog = app.extensions["wardround.audit"]
    write_call(app, [ISSUE])
    [seq] = audit.record_access([access_row(READER, "search", status=200, count=1)])
    write_call(app, [ISSUE])
    result = verify(database_url)
    assert result.ok and result.rows == 5 and seq == 3
    with raw_sql(database_url) as sql:
        sql.execute(text("UPDATE audit_access SET result_count = 0"))
    broken = verify(database_url)
    assert (broken.ok, broken.broken_seq, broken.broken_table) == (False, 3, "audit_access")


def test_migration_0003_keeps_every_existing_hash(tmp_path: Any):
    url = f"sqlite:///{tmp_path / 'old.db'}"
    upgrade(url, "0002")
    engine = make_engine(url)
    audit = AuditLog(make_sessionmaker(engine))
    for i in range(3):
        audit.record_invocation(synthetic_invocation(f"old-{i}"), [synthetic_card(f"c-{i}")])
    engine.dispose()
    before = chain_head(url)  # (this code's verifier reads audit_access: not there yet)
    upgrade(url)
    after = verify(url)
    assert after.ok and (after.last_seq, after.last_hash) == before == (6, before[1])
    engine = make_engine(url)
    AuditLog(make_sessionmaker(engine)).record_access([access_row(READER, "read", status=200)])
    engine.dispose()
    assert verify(url).ok and len(rows_of(url, Access)) == 1


def test_incremental_verification_walks_only_new_rows(app: Flask, database_url: str):
    for _ in range(3):
        write_call(app, [ISSUE])
    engine = make_engine(database_url)
    sessions = make_snapshot_sessionmaker(engine)
    with sessions() as session:
        full = verify_chain(session)
    write_call(app, [ISSUE])
    with sessions() as session:
        step = verify_chain(session, after=(full.last_seq, full.last_hash))
        again = verify_chain(session)
    assert step.ok and step.rows == 2 and step.last_seq == full.last_seq + 2
    assert (step.last_seq, step.last_hash) == (again.last_seq, again.last_hash)
    with sessions() as session:
        wrong = verify_chain(session, after=(full.last_seq, "0" * 64))
    assert not wrong.ok and wrong.broken_seq == full.last_seq + 1
    engine.dispose()


def test_the_monitor_checks_in_the_background_and_catches_old_rows(app: Flask, database_url: str):
    write_call(app, [ISSUE])
    monitor = ChainMonitor(app.extensions["wardround.snapshot_sessions"], full_every_s=0.5)
    status = monitor.status(wait_s=5)
    assert status.ok and status.verified_seq == status.head_seq == 2
    assert status.full_check_at is not None
    write_call(app, [ISSUE])
    time.sleep(0.01)
    incremental = monitor.refresh()  # not due for a full walk: only the new rows
    assert incremental.ok and incremental.verified_seq == 4
    with raw_sql(database_url) as sql:  # an old row, which only a full walk reads again
        sql.execute(text("UPDATE audit_invocation SET latency_ms = 1 WHERE seq = 1"))
    assert monitor.refresh().ok  # incremental: rows 1-4 were verified before
    time.sleep(0.6)
    caught = monitor.refresh()
    assert (caught.ok, caught.broken_seq, caught.broken_table) == (False, 1, "audit_invocation")
    assert monitor.status(wait_s=0).ok is False  # stays reported


def test_settings_refuse_a_short_secret_key(tmp_path: Any):
    import pytest

    from cds.config import ConfigError

    with pytest.raises(ConfigError, match="WARDROUND_SECRET_KEY"):
        Settings(database_url="sqlite://", instance_path=tmp_path, secret_key="short")
    env = {"WARDROUND_SESSION_COOKIE_SECURE": "false", "WARDROUND_API_ISSUERS": "/x.json"}
    settings = Settings.from_env(env, instance_path=tmp_path)
    assert settings.session_cookie_secure is False and str(settings.api_issuers_file) == "/x.json"
    assert "secret" not in repr(Settings.from_env({"WARDROUND_SECRET_KEY": "k" * 40}, tmp_path))
