"""``cds reviewers``, ``cds api`` and ``cds demo setup``: accounts and API clients that the
running service then accepts (commands run in-process with click's runner)."""

from __future__ import annotations

import json
import stat
from pathlib import Path
from typing import Any

import pytest
from click.testing import CliRunner

from cds.cli import main
from tests.compliance.conftest import SECRET, write_call
from tests.compliance.review_client import Reviewer
from tests.compliance.test_fhir_api import ISSUE
from tests.conftest import BASE_URL, AppFactory


@pytest.fixture
def cds(database_url: str, tmp_path: Path) -> Any:
    instance = tmp_path / "instance"
    env = {
        "DATABASE_URL": database_url,
        "WARDROUND_INSTANCE_PATH": str(instance),
        "WARDROUND_PUBLIC_BASE_URL": BASE_URL,
        "WARDROUND_API_ISSUERS": "",
        "WARDROUND_SECRET_KEY": "",
    }

    def run(*args: str, stdin: str | None = None, ok: bool = True) -> Any:
        result = CliRunner().invoke(main, list(args), env=env, input=stdin)
        assert (result.exit_code == 0) == ok, result.output
        return result

    run.instance = instance  # type: ignore[attr-defined]
    return run


def test_reviewer_accounts_from_the_command_line(cds: Any, make_app: AppFactory):
    cds("reviewers", "add", "nina", "--role", "reviewer", "--role", "auditor",
        "--password-stdin", stdin="first password 1\n")  # fmt: skip
    assert "nina\tauditor,reviewer\tactive" in cds("reviewers", "list").output
    assert (
        "12 to 256"
        in cds("reviewers", "add", "x", "--password-stdin", stdin="short\n", ok=False).output
    )
    assert (
        "exists"
        in cds("reviewers", "add", "nina", "--password-stdin", stdin="x" * 20, ok=False).output
    )
    assert "Invalid value" in cds("reviewers", "add", "y", "--role", "admin", ok=False).output
    assert "no reviewer" in cds("reviewers", "disable", "ghost", ok=False).output
    app = make_app(secret_key=SECRET)
    browser = Reviewer(app.test_client())
    assert browser.login("nina", "first password 1").status_code == 302
    cds("reviewers", "disable", "nina")
    assert "disabled" in cds("reviewers", "list").output
    assert browser.client.get("/review/").status_code == 302  # the session ended
    cds("reviewers", "enable", "nina")
    cds("reviewers", "passwd", "nina", "--password-stdin", stdin="second password 2\n")
    assert browser.login("nina", "first password 1").status_code == 200
    assert browser.login("nina", "second password 2").status_code == 302
    cds("reviewers", "roles", "nina", "--role", "reviewer")
    assert browser.client.get("/review/").status_code == 302  # role change: log in again
    browser.login("nina", "second password 2")
    assert browser.client.get("/review/access").status_code == 403


def test_demo_setup_and_api_tokens_work_against_the_service(cds: Any, make_app: AppFactory):
    cds("demo", "setup")
    instance: Path = cds.instance
    password = (instance / "demo-reviewer.txt").read_text().strip()
    for secret in ("demo-reviewer.txt", "demo-session-key", "demo-api/demo-private-key.pem"):
        assert stat.S_IMODE((instance / secret).stat().st_mode) == 0o600, secret
    cds("demo", "setup")  # idempotent: the same password, the same client
    assert (instance / "demo-reviewer.txt").read_text().strip() == password
    issuers = json.loads((instance / "api-issuers.json").read_text())["issuers"]
    assert [i["iss"] for i in issuers] == ["urn:wardround:api-client:demo"]

    app = make_app(
        api_issuers_file=instance / "api-issuers.json",
        secret_key=(instance / "demo-session-key").read_text(),
    )
    write_call(app, [ISSUE])
    assert Reviewer(app.test_client()).login("demo", password).status_code == 302
    client = app.test_client()
    auditor = cds("api", "token", "--role", "auditor").output.strip()
    answer = client.get("/fhir/AuditEvent", headers={"Authorization": f"Bearer {auditor}"})
    assert answer.status_code == 200 and answer.get_json()["entry"]
    scoped = cds("api", "token", "--scope", "system/DetectedIssue.read").output.strip()
    assert (
        client.get("/fhir/DetectedIssue", headers={"Authorization": f"Bearer {scoped}"}).status_code
        == 200
    )
    assert (
        client.get("/fhir/AuditEvent", headers={"Authorization": f"Bearer {scoped}"}).status_code
        == 403
    )

    # a site without an authorization server: a client of its own, revoked by removing it
    keys = instance.parent / "lab-keys"
    cds("api", "client-add", "lab", "--keys", str(keys))
    app = make_app(api_issuers_file=instance / "api-issuers.json")
    lab = cds("api", "token", "--key", str(keys / "lab-private-key.pem"), "--name", "lab",
              "--role", "reviewer").output.strip()  # fmt: skip
    client = app.test_client()
    assert (
        client.get("/fhir/GuidanceResponse", headers={"Authorization": f"Bearer {lab}"}).status_code
        == 200
    )
    assert "exists" in cds("api", "client-add", "lab", "--keys", str(keys), ok=False).output
    pretender = cds("api", "token", "--key", str(keys / "lab-private-key.pem"), "--name", "demo",
                    "--role", "auditor").output.strip()  # fmt: skip
    refused = client.get("/fhir/GuidanceResponse", headers={"Authorization": f"Bearer {pretender}"})
    assert refused.status_code == 401  # lab's key cannot sign as the demo client
