"""Who may read what on /fhir (SQLite and PostgreSQL): 401 for a missing or refused token,
403 for a token without the grant (recorded in the access log); no PHI in any error."""

from __future__ import annotations

import time
from typing import Any

import pytest
from flask import Flask

from cds.audit.tables import Access
from tests.compliance.conftest import ApiToken, Fhir, write_call
from tests.compliance.test_fhir_api import ISSUE, RISK
from tests.conftest import BASE_URL, Mint, SigningKey, claims_for, sign
from tests.test_audit_log import rows_of

PATIENT = "Hana-Example-1970"


@pytest.fixture
def data(app: Flask, fhir: Fhir) -> dict[str, Any]:
    call = write_call(app, [ISSUE, RISK], patient_id=PATIENT)
    fhir.bundle("/fhir/DetectedIssue")  # one read, so that the access log has a row
    return {"call": call}


def refused(response: Any, status: int, reason: str | None = None) -> dict[str, Any]:
    assert response.status_code == status, response.get_data(as_text=True)
    assert response.mimetype == "application/fhir+json"
    body = response.get_json()
    assert body["resourceType"] == "OperationOutcome"
    assert PATIENT not in response.get_data(as_text=True)
    header = response.headers["WWW-Authenticate"]
    assert header.startswith('Bearer realm="wardround-fhir"')
    if reason:
        assert reason in header and reason in body["issue"][0]["diagnostics"]
    return body


def test_no_token_or_a_refused_token_is_401(
    data: dict[str, Any],
    fhir: Fhir,
    api_token: ApiToken,
    mint: Mint,
    api_key: SigningKey,
    es384_key: SigningKey,
):
    path = f"/fhir/DetectedIssue?patient={PATIENT}"
    now = int(time.time())
    cases = {
        "missing_token": fhir.client.get(path),
        # an EHR's hook token (aud = a CDS Hooks URL) is not an API token
        "untrusted_issuer": fhir.get(path, token=mint("/cds-services/drug-safety-sign")),
        # even with aud = /fhir: the EHR is trusted for hooks, not for the API
        "untrusted_issuer ": fhir.get(path, token=sign(es384_key, claims_for(BASE_URL + "/fhir"))),
        "invalid_audience": fhir.get(
            path, token=api_token(roles=["auditor"], aud=BASE_URL + "/cds-services/x")
        ),
        "expired": fhir.get(
            path, token=api_token(roles=["auditor"], iat=now - 1000, exp=now - 500)
        ),
        "invalid_signature": fhir.get(
            path,
            token=sign(
                es384_key,
                {**claims_for(BASE_URL + "/fhir"), "iss": "https://auth.test"},
                headers={"kid": api_key.kid},
            ),
        ),
        "missing_claim": fhir.get(path, token=api_token(roles=["auditor"], iat=None)),
    }
    for reason, response in cases.items():
        body = refused(response, 401, reason.strip())
        assert body["issue"][0]["code"] == "login"
    assert fhir.client.get("/fhir/metadata").status_code == 200  # the statement is public


@pytest.mark.parametrize(
    ("grant", "allowed", "denied"),
    [
        ({"scope": "system/*.read"}, ["AuditEvent", "DetectedIssue", "GuidanceResponse"], []),
        ({"scope": "user/*.read"}, ["RiskAssessment", "AuditEvent"], []),
        (
            {"scope": "system/DetectedIssue.read"},
            ["DetectedIssue"],
            ["AuditEvent", "RiskAssessment"],
        ),
        ({"scope": "system/AuditEvent.rs"}, ["AuditEvent"], ["GuidanceResponse"]),
        ({"scope": "system/AuditEvent.r"}, [], ["AuditEvent"]),  # read only, no search
        ({"scope": "patient/*.read"}, [], ["AuditEvent", "DetectedIssue"]),
        ({"scope": "openid launch"}, [], ["Observation"]),
        ({"roles": ["reviewer"]}, ["AuditEvent", "Observation"], []),
        ({"roles": ["nurse"]}, [], ["AuditEvent"]),
        ({}, [], ["AuditEvent", "GuidanceResponse"]),
    ],
)
def test_scopes_and_roles_grant_searches(
    data: dict[str, Any],
    fhir: Fhir,
    api_token: ApiToken,
    database_url: str,
    grant: dict[str, Any],
    allowed: list[str],
    denied: list[str],
):
    token = api_token(**grant)
    for resource_type in allowed:
        assert fhir.get(f"/fhir/{resource_type}?patient={PATIENT}", token).status_code == 200
    before = len(rows_of(database_url, Access))
    for resource_type in denied:
        body = refused(fhir.get(f"/fhir/{resource_type}?patient={PATIENT}", token), 403)
        assert body["issue"][0]["code"] == "forbidden"
    refusals = rows_of(database_url, Access)[before:]
    assert [(r.action, r.target, r.status_code) for r in refusals] == [
        ("search", t, 403) for t in denied
    ]
    assert all(r.query == {"patient": [PATIENT]} and r.result_count is None for r in refusals)


def test_read_needs_a_read_grant(data: dict[str, Any], fhir: Fhir, api_token: ApiToken):
    seq = data["call"].seq
    assert (
        fhir.get(f"/fhir/AuditEvent/inv-{seq}", api_token(scope="system/AuditEvent.r")).status_code
        == 200
    )
    refused(fhir.get(f"/fhir/AuditEvent/inv-{seq}", api_token(scope="system/AuditEvent.s")), 403)
    refused(
        fhir.get(f"/fhir/GuidanceResponse/inv-{seq}", api_token(scope="system/AuditEvent.read")),
        403,
    )


def test_only_auditors_see_who_read_the_audit(
    data: dict[str, Any], fhir: Fhir, api_token: ApiToken
):
    reviewer, auditor = api_token(roles=["reviewer"]), api_token(roles=["auditor"])
    scoped = api_token(scope="system/AuditEvent.read")
    kinds = lambda token: {  # noqa: E731
        e["id"].split("-")[0] for e in fhir.everything("/fhir/AuditEvent?_count=100", token)
    }
    assert kinds(reviewer) == {"inv"}
    assert kinds(auditor) == {"inv", "acc"}
    assert kinds(scoped) == {"inv", "acc"}
    assert fhir.everything("/fhir/AuditEvent?subtype=audit-read", reviewer) == []
    first_read = fhir.everything("/fhir/AuditEvent?subtype=audit-read&_sort=date", auditor)[0]
    refused(fhir.get(f"/fhir/AuditEvent/{first_read['id']}", reviewer), 403)
    assert fhir.get(f"/fhir/AuditEvent/{first_read['id']}", auditor).status_code == 200


def test_errors_carry_no_phi(data: dict[str, Any], fhir: Fhir, api_token: ApiToken):
    token = api_token(roles=["auditor"])
    for query in (
        f"patient={PATIENT}&date=not-a-date",
        f"patient={PATIENT}&{PATIENT}=1",
        f"patient={PATIENT}/x/",
        f"patient={PATIENT}&_count=-1",
    ):
        response = fhir.get(f"/fhir/AuditEvent?{query}", token)
        assert response.status_code == 400
        assert PATIENT not in response.get_data(as_text=True)
    missing = fhir.get(f"/fhir/DetectedIssue/card-{data['call'].card_uuids[1]}", token)
    assert missing.status_code == 404 and PATIENT not in missing.get_data(as_text=True)


def test_auth_off_is_for_development_only(make_app: Any, tmp_path: Any):
    app = make_app(auth_mode="off")
    write_call(app, [ISSUE])
    client = app.test_client()
    response = client.get("/fhir/DetectedIssue")
    assert response.status_code == 200
    assert len(response.get_json()["entry"]) == 1
