"""Reviewer log-in on /review (SQLite and PostgreSQL): no access without it, a hardened
session cookie, CSRF on every form, lock-out, sessions that end at log-out, disabling,
idle time and their lifetime; log-ins are recorded in the access log."""

from __future__ import annotations

import time
from typing import Any

import pytest
from flask import Flask

from cds.audit.tables import Access
from tests.compliance.conftest import REVIEWER_PASSWORD, SECRET
from tests.compliance.review_client import Reviewer, add_reviewer, csrf_token
from tests.conftest import AppFactory
from tests.test_audit_log import rows_of

PAGES = (
    "/review/",
    "/review/summary",
    "/review/calls/1",
    "/review/cards/00000000-0000-0000-0000-000000000000",
    "/review/export.csv",
    "/review/export.ndjson",
    "/review/export.json",
    "/review/access",
)


@pytest.fixture
def reviewer(app: Flask) -> Reviewer:
    add_reviewer(app, "alice", ("reviewer",))
    add_reviewer(app, "audrey", ("auditor",))
    return Reviewer(app.test_client())


def test_no_page_without_a_login(reviewer: Reviewer):
    for path in PAGES:
        response = reviewer.client.get(path)
        assert response.status_code == 302, path
        assert response.location.startswith("/review/login?next=")
    # a form post without a session is refused before anything else: no CSRF token
    assert reviewer.client.post("/review/logout").status_code == 400


def test_log_in_sets_a_hardened_session_cookie(reviewer: Reviewer):
    response = reviewer.login(next_="/review/summary")
    assert response.status_code == 302 and response.location == "/review/summary"
    cookie = response.headers["Set-Cookie"]
    assert cookie.startswith("__Host-wardround-review=")
    for flag in ("Secure", "HttpOnly", "SameSite=Lax", "Path=/"):
        assert flag in cookie
    assert "Domain" not in cookie
    page = reviewer.client.get("/review/")
    assert page.status_code == 200
    csp = page.headers["Content-Security-Policy"]
    assert "default-src 'none'" in csp and "unsafe-inline" not in csp and "script-src" not in csp
    assert page.headers["X-Frame-Options"] == "DENY"
    assert page.headers["Cache-Control"] == "no-store"
    assert "<script" not in page.get_data(as_text=True)  # no JavaScript at all


def test_plain_http_demo_can_drop_the_secure_flag(make_app: AppFactory, api_issuers_file: Any):
    app = make_app(secret_key=SECRET, session_cookie_secure=False)
    add_reviewer(app)
    cookie = Reviewer(app.test_client()).login().headers["Set-Cookie"]
    assert cookie.startswith("wardround-review=") and "Secure" not in cookie
    assert "HttpOnly" in cookie


def test_next_stays_on_the_review_page(reviewer: Reviewer):
    for target in ("https://evil.example/", "//evil.example/review", "/fhir/AuditEvent"):
        response = reviewer.login(next_=target)
        assert response.location == "/review/", target


def test_forms_need_their_csrf_token(reviewer: Reviewer, app: Flask):
    form = {"username": "alice", "password": REVIEWER_PASSWORD}
    assert reviewer.client.post("/review/login", data=form).status_code == 400
    other = app.test_client()
    foreign = csrf_token(other.get("/review/login").get_data(as_text=True))
    refused = reviewer.client.post("/review/login", data=form | {"csrf_token": foreign})
    assert refused.status_code == 400  # a token of another session
    reviewer.login()
    assert reviewer.client.post("/review/logout", data={}).status_code == 400
    assert reviewer.client.get("/review/").status_code == 200  # still logged in


def test_wrong_passwords_lock_the_account(reviewer: Reviewer, app: Flask, database_url: str):
    for _ in range(5):
        answer = reviewer.login(password="wrong password 123")
        assert answer.status_code == 200 and "Wrong user name or password" in answer.get_data(
            as_text=True
        )
    locked = reviewer.login()  # the right password, but locked now
    assert locked.status_code == 200 and reviewer.client.get("/review/").status_code == 302
    unknown = reviewer.login(username="mallory")
    assert "Wrong user name or password" in unknown.get_data(as_text=True)  # same answer
    failures = [r for r in rows_of(database_url, Access) if r.action == "login-failed"]
    assert [(r.principal_id, r.status_code) for r in failures] == [("alice", 401)] * 6 + [
        ("mallory", 401)
    ]
    app.extensions["wardround.reviewers"].set_password("alice", REVIEWER_PASSWORD)
    assert reviewer.login().status_code == 302  # passwd lifts the lock


def test_log_out_ends_every_session_of_the_account(reviewer: Reviewer, app: Flask):
    other = Reviewer(app.test_client())
    reviewer.login()
    other.login()
    stolen = reviewer.client.get_cookie("__Host-wardround-review").value
    assert reviewer.logout().location == "/review/login"
    assert reviewer.client.get("/review/").status_code == 302
    assert other.client.get("/review/").status_code == 302
    replay = app.test_client()
    replay.set_cookie("__Host-wardround-review", stolen)
    assert replay.get("/review/").status_code == 302  # an old cookie is worthless


def test_disabling_an_account_ends_its_sessions(reviewer: Reviewer, app: Flask):
    reviewer.login()
    app.extensions["wardround.reviewers"].set_disabled("alice", True)
    assert reviewer.client.get("/review/").status_code == 302
    assert reviewer.login().status_code == 200  # and no new log-in


@pytest.mark.parametrize("field", ["ta", "t0"])
def test_idle_and_old_sessions_expire(reviewer: Reviewer, field: str):
    reviewer.login()
    with reviewer.client.session_transaction() as session:
        session[field] = time.time() - (31 * 60 if field == "ta" else 9 * 3600)
    assert reviewer.client.get("/review/").status_code == 302


def test_the_access_log_page_is_for_auditors(reviewer: Reviewer, app: Flask, database_url: str):
    reviewer.login()
    page = reviewer.page("/review/")
    assert not page.find("a", string="Access log")
    assert reviewer.client.get("/review/access").status_code == 403
    auditor = Reviewer(app.test_client())
    auditor.login("audrey")
    log = auditor.page("/review/access")
    actions = [row["data-action"] for row in log.select("tr.access-row")]
    assert actions[:2] == ["login", "page"]  # audrey's own log-in and first page, newest first
    assert {"login", "page"} <= set(actions)
    assert rows_of(database_url, Access)[-1].action == "access-log"


def test_without_a_secret_key_there_is_no_log_in(make_app: AppFactory):
    app = make_app()
    response = app.test_client().get("/review/login")
    assert response.status_code == 503
    assert "WARDROUND_SECRET_KEY" in response.get_data(as_text=True)
