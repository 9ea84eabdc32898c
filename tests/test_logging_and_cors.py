"""Application logs are JSON and carry no PHI; CORS is off unless origins are configured."""

from __future__ import annotations

import json
import logging

from pythonjsonlogger.json import JsonFormatter

from tests.conftest import HookClient


def _log_text(caplog) -> str:  # type: ignore[no-untyped-def]
    return "\n".join(json.dumps(record.__dict__, default=str) for record in caplog.records)


def test_logs_carry_no_phi(make_app, mint, patient_view_request, caplog):
    caplog.set_level(logging.DEBUG)
    client = make_app().test_client()
    hooks = HookClient(client, mint)
    patient = patient_view_request["prefetch"]["patient"]
    assert hooks.call("patient-summary", patient_view_request).status_code == 200
    bad = json.loads(json.dumps(patient_view_request))
    bad["prefetch"]["patient"]["birthDate"] = "not-a-date"
    assert hooks.call("patient-summary", bad).status_code == 400

    text = _log_text(caplog)
    assert "request" in {r.getMessage() for r in caplog.records}
    family = patient["name"][0]["family"]
    for phi in (family, patient["name"][0]["given"][0], patient["birthDate"], patient["id"]):
        assert phi not in text
    for condition in patient_view_request["prefetch"]["conditions"]["entry"]:
        assert condition["resource"]["code"]["coding"][0]["display"] not in text


def test_patient_ids_are_logged_only_when_configured(make_app, mint, patient_view_request, caplog):
    caplog.set_level(logging.INFO)
    hooks = HookClient(make_app(log_patient_ids=True).test_client(), mint)
    assert hooks.call("patient-summary", patient_view_request).status_code == 200
    assert patient_view_request["context"]["patientId"] in _log_text(caplog)


def test_log_lines_are_json(make_app, mint, patient_view_request, caplog):
    caplog.set_level(logging.INFO)
    hooks = HookClient(make_app().test_client(), mint)
    hooks.call("patient-summary", patient_view_request)
    (formatter,) = {
        h.formatter for h in logging.getLogger().handlers if isinstance(h.formatter, JsonFormatter)
    }
    record = next(r for r in caplog.records if r.getMessage() == "request")
    line = json.loads(formatter.format(record))
    assert line["status"] == 200 and line["level"] == "INFO" and line["logger"] == "cds.app"


def test_cors_is_off_by_default(client):
    response = client.options(
        "/cds-services",
        headers={"Origin": "https://ehr.example.org", "Access-Control-Request-Method": "GET"},
    )
    assert "Access-Control-Allow-Origin" not in response.headers


def test_cors_allows_configured_origins_only(make_app):
    client = make_app(cors_origins=("https://ehr.example.org",)).test_client()
    preflight = client.options(
        "/cds-services/patient-summary",
        headers={
            "Origin": "https://ehr.example.org",
            "Access-Control-Request-Method": "POST",
            "Access-Control-Request-Headers": "Authorization, Content-Type",
        },
    )
    assert preflight.status_code == 200
    assert preflight.headers["Access-Control-Allow-Origin"] == "https://ehr.example.org"
    assert "authorization" in preflight.headers["Access-Control-Allow-Headers"].lower()

    other = client.options(
        "/cds-services/patient-summary",
        headers={"Origin": "https://evil.example", "Access-Control-Request-Method": "POST"},
    )
    assert "Access-Control-Allow-Origin" not in other.headers
