"""CDS Hooks request handling: every status code the service answers with, and why."""

from __future__ import annotations

import copy
import json
import uuid
from typing import Any

import pytest

SERVICE_PATH = "/cds-services/patient-summary"


def post_raw(client, mint, data: bytes | str, content_type: str = "application/json"):  # type: ignore[no-untyped-def]
    return client.post(
        SERVICE_PATH,
        data=data,
        content_type=content_type,
        headers={"Authorization": f"Bearer {mint(SERVICE_PATH)}"},
    )


def test_valid_request_is_answered_200(hooks, patient_view_request):
    assert hooks.call("patient-summary", patient_view_request).status_code == 200


def test_unknown_service_is_404(hooks, patient_view_request):
    response = hooks.call("no-such-service", patient_view_request)
    assert response.status_code == 404
    assert response.json["error"] == "unknown_service"


@pytest.mark.parametrize(
    "content_type", ["text/plain", "application/x-www-form-urlencoded", "application/xml"]
)
def test_wrong_content_type_is_415(client, mint, patient_view_request, content_type):
    response = post_raw(client, mint, json.dumps(patient_view_request), content_type)
    assert response.status_code == 415
    assert response.json["error"] == "unsupported_media_type"


def test_json_with_charset_is_accepted(client, mint, patient_view_request):
    response = post_raw(
        client, mint, json.dumps(patient_view_request), "application/json; charset=utf-8"
    )
    assert response.status_code == 200


def test_body_over_the_limit_is_413(make_app, mint, patient_view_request):
    client = make_app(max_body_bytes=2048).test_client()
    response = post_raw(client, mint, json.dumps(patient_view_request))
    assert len(json.dumps(patient_view_request)) > 2048
    assert response.status_code == 413
    assert response.json["error"] == "payload_too_large"


def test_default_body_limit_is_5_mb(client, mint):
    body = b'{"hook": "' + b"x" * (5 * 1024 * 1024) + b'"}'
    response = post_raw(client, mint, body)
    assert response.status_code == 413


@pytest.mark.parametrize(
    "body",
    [
        b"{not json",
        b"",
        b'{"hook": "patient-view",',
        b"\xff\xfe garbage",
        b'{"n": NaN}',
        b"[" * 100_000 + b"]" * 100_000,  # nesting deeper than any parser stack
    ],
    ids=["broken", "empty", "truncated", "not-utf8", "nan", "deeply-nested"],
)
def test_malformed_json_is_400(client, mint, body):
    response = post_raw(client, mint, body)
    assert response.status_code == 400
    assert response.json["error"] == "malformed_json"


def _without(request: dict[str, Any], path: str) -> dict[str, Any]:
    request = copy.deepcopy(request)
    *parents, last = path.split(".")
    target = request
    for part in parents:
        target = target[part]
    del target[last]
    return request


def _with(request: dict[str, Any], path: str, value: Any) -> dict[str, Any]:
    request = copy.deepcopy(request)
    *parents, last = path.split(".")
    target = request
    for part in parents:
        target = target[part]
    target[last] = value
    return request


@pytest.mark.parametrize(
    "field", ["hook", "hookInstance", "context", "context.patientId", "context.userId"]
)
def test_missing_required_field_is_400_naming_it(hooks, patient_view_request, field):
    response = hooks.call("patient-summary", _without(patient_view_request, field))
    assert response.status_code == 400
    assert response.json["error"] == "invalid_request"
    assert response.json["field"] == field


@pytest.mark.parametrize(
    ("field", "value"),
    [
        ("hookInstance", "not-a-uuid"),
        ("hookInstance", 42),
        ("hook", "order-sign"),  # the service answers patient-view only
        ("context", "patient 1"),
        ("context.patientId", "has spaces/and slashes"),
        ("context.userId", "Organization/1"),  # users are Practitioner, PractitionerRole, …
        ("context.encounterId", ""),
        ("fhirServer", "not a url"),
        ("prefetch", ["patient"]),
        ("prefetch.patient", "Patient/1"),
    ],
)
def test_wrong_field_is_400_naming_it(hooks, patient_view_request, field, value):
    response = hooks.call("patient-summary", _with(patient_view_request, field, value))
    assert response.status_code == 400
    assert response.json["field"] == field
    if field != "hook" and isinstance(value, str) and len(value) > 3:
        assert value not in response.get_data(as_text=True)  # submitted values are not echoed


def test_body_that_is_not_an_object_is_400(hooks):
    response = hooks.call("patient-summary", ["patient-view"])
    assert response.status_code == 400
    assert response.json["field"] == "body"


def test_fhir_authorization_requires_fhir_server(hooks, patient_view_request):
    request = _with(
        patient_view_request,
        "fhirAuthorization",
        {
            "access_token": "secret-token-value",
            "token_type": "Bearer",
            "expires_in": 300,
            "scope": "patient/*.read",
            "subject": "cds-service",
        },
    )
    response = hooks.call("patient-summary", request)
    assert response.status_code == 400
    assert response.json["field"] == "fhirServer"
    assert "secret-token-value" not in response.get_data(as_text=True)


def test_fhir_authorization_fields_are_checked(hooks, patient_view_request):
    request = _with(patient_view_request, "fhirServer", "https://ehr.example.org/fhir")
    request["fhirAuthorization"] = {"access_token": "t", "token_type": "MAC"}
    response = hooks.call("patient-summary", request)
    assert response.status_code == 400
    assert response.json["field"].startswith("fhirAuthorization.")


def test_missing_required_prefetch_without_fhir_server_is_412(hooks, patient_view_request):
    response = hooks.call("patient-summary", _without(patient_view_request, "prefetch.patient"))
    assert response.status_code == 412
    assert response.json["error"] == "prefetch_required"
    assert response.json["missing"] == ["patient"]


def test_no_prefetch_at_all_is_412(hooks, patient_view_request):
    response = hooks.call("patient-summary", _without(patient_view_request, "prefetch"))
    assert response.status_code == 412


@pytest.mark.parametrize(
    ("mutation", "reason"),
    [
        (lambda p: p.update(resourceType="Practitioner"), "expected a Patient"),
        (lambda p: p.update(id="someone-else"), "does not match context.patientId"),
        (lambda p: p.update(gender="sometimes"), "gender"),
        (lambda p: p.update(birthDate="yesterday"), "birthDate"),
        (lambda p: p.update(name="Smith"), "name"),
    ],
    ids=["wrong-type", "wrong-patient", "bad-code", "bad-date", "bad-structure"],
)
def test_wrong_fhir_in_prefetch_is_400(hooks, patient_view_request, mutation, reason):
    request = copy.deepcopy(patient_view_request)
    mutation(request["prefetch"]["patient"])
    response = hooks.call("patient-summary", request)
    assert response.status_code == 400, response.json
    assert response.json["error"] == "invalid_prefetch"
    assert response.json["field"] == "prefetch.patient"
    assert reason in response.json["message"]


def test_one_bad_condition_does_not_lose_the_patient(hooks, patient_view_request):
    request = copy.deepcopy(patient_view_request)
    entries = request["prefetch"]["conditions"]["entry"]
    assert entries, "fixture patient needs at least one active condition"
    good = len(entries)
    entries.append({"resource": {"resourceType": "Condition", "subject": "not a reference"}})
    response = hooks.call("patient-summary", request)
    assert response.status_code == 200
    assert f"{good} active problems" in response.json["cards"][0]["summary"]


def test_extensions_and_unknown_context_fields_are_tolerated(hooks, patient_view_request):
    request = copy.deepcopy(patient_view_request)
    request["extension"] = {"com.example.flag": True}
    request["context"]["com.example.extra"] = "x"
    assert hooks.call("patient-summary", request).status_code == 200


def test_same_hook_instance_twice_is_answered_twice(hooks, patient_view_request):
    """hookInstance identifies the hook event; an EHR retry is answered, not refused."""
    first = hooks.call("patient-summary", patient_view_request)
    second = hooks.call("patient-summary", patient_view_request)
    assert first.status_code == second.status_code == 200
    assert first.json["cards"][0]["uuid"] != second.json["cards"][0]["uuid"]


def test_wrong_method_is_405_json(client, mint):
    response = client.get(SERVICE_PATH, headers={"Authorization": f"Bearer {mint(SERVICE_PATH)}"})
    assert response.status_code == 405
    assert response.is_json


def test_hook_instance_is_uuid_checked_not_trusted(hooks, patient_view_request):
    request = _with(patient_view_request, "hookInstance", str(uuid.uuid4()).upper())
    assert hooks.call("patient-summary", request).status_code == 200


def test_a_defect_in_the_adapters_is_an_audited_500_not_a_crash(
    app, hooks, patient_view_request, database_url, monkeypatch, caplog
):
    """FAULT INJECTED (a named test double): the loader raises an unexpected error, which
    real inputs cannot cause. The call is still audited and answered with a clear 500."""
    from cds.audit.tables import Invocation
    from tests.test_audit_log import rows_of

    def broken(request):  # type: ignore[no-untyped-def]
        raise RuntimeError("Jane Doe, born 1970-01-01")  # text that must not reach the logs

    monkeypatch.setattr(app.extensions["wardround.patient_loader"], "load", broken)
    response = hooks.call("patient-summary", patient_view_request)
    assert response.status_code == 500
    assert response.json["error"] == "service_error"
    [invocation] = rows_of(database_url, Invocation)
    assert (invocation.status_code, invocation.error_code) == (500, "service_error")
    logged = [r for r in caplog.records if r.getMessage() == "patient data failed"]
    assert [r.error for r in logged] == ["RuntimeError"]
    assert all("Jane" not in str(vars(r)) for r in caplog.records)
