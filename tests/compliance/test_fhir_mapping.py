"""Audit rows → FHIR resources, field by field (no database: rows built in memory).

Every field of ``cds.results.CardResult`` has a place in the resource of its kind (or a
``result-fact`` extension), and every resource validates (fhir.resources R4B plus the
JSON and contained-resource rules, tests/compliance/fhir_checks.py).
"""

from __future__ import annotations

import base64
import json
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest

from cds.audit.tables import Access, Card, Feedback, Invocation
from cds.fhir_api import codes
from cds.fhir_api.audit_events import access_event, feedback_event, invocation_event
from cds.fhir_api.guidance import guidance_response
from cds.fhir_api.result_resources import result_resource
from cds.results import CardResult, Code, Factor, Input
from cds.services.drug_safety import FINDING_KIND_SYSTEM
from tests.compliance.fhir_checks import check_resource

BASE = "https://cds.example.org"
WHEN = datetime(2026, 3, 4, 10, 11, 12, 345678, tzinfo=UTC)
MODELS = [
    {"id": "pce-ascvd", "version": "1.0.0", "hash": "a" * 64},
    {"id": "drug-safety", "version": "1.0.0+kb.abc", "hash": "b" * 64},
]


def invocation(**overrides: Any) -> Invocation:
    values: dict[str, Any] = {
        "seq": 7,
        "received_at": WHEN,
        "service_id": "drug-safety-sign",
        "hook": "order-sign",
        "hook_instance": "d1577c69-dfbe-44ad-ba6d-3e05e953b2ea",
        "client_iss": "https://ehr.example.org",
        "client_sub": "client-1",
        "user_id": "Practitioner/123",
        "patient_id": "pat-1",
        "encounter_id": "enc-1",
        "request_digest": "f" * 64,
        "prefetch_used": ["patient", "medications"],
        "prefetch_fetched": [
            {"key": "patient", "source": "supplied"},
            {"key": "observations", "source": "fetched", "ms": 12.5, "pages": 1},
        ],
        "model_versions": MODELS,
        "status_code": 200,
        "latency_ms": 42.25,
        "error_code": None,
        "error_detail": None,
    }
    return Invocation(**(values | overrides))


def card(result: CardResult | None, **card_json: Any) -> Card:
    uuid = "5f1d2d4e-0000-4000-8000-000000000001"
    body = {
        "uuid": uuid,
        "summary": "Warfarin + naproxen: bleeding risk",
        "indicator": "critical",
        "source": {"label": "ONC high-priority DDI", "url": "https://example.org/ddi"},
        "detail": "**Avoid** NSAIDs.",
    } | card_json
    return Card(
        seq=8,
        invocation_seq=7,
        uuid=uuid,
        service_id="drug-safety-sign",
        summary=body["summary"],
        indicator=body["indicator"],
        card_json=body,
        result=result.to_json() if result else None,
    )


def feedback(outcome: str, **overrides: Any) -> Feedback:
    values: dict[str, Any] = {
        "seq": 9,
        "received_at": WHEN + timedelta(seconds=30),
        "card_uuid": "5f1d2d4e-0000-4000-8000-000000000001",
        "service_id": "drug-safety-sign",
        "client_iss": "https://ehr.example.org",
        "outcome": outcome,
        "outcome_timestamp": WHEN + timedelta(seconds=20),
        "accepted_suggestions": [],
        "override_reason": None,
    }
    return Feedback(**(values | overrides))


def value_of(element: dict[str, Any]) -> Any:
    return next(v for k, v in element.items() if k.startswith("value"))


INPUTS = (
    Input(name="eGFR", value=28.5, unit="mL/min/1.73m2", date="2026-02-01", reference=None),
    Input(
        name="Creatinine",
        value=2.1,
        unit="mg/dL",
        date="2026-02-01T08:00:00Z",
        reference="Observation/cr-1",
    ),
    Input(name="Smoker", value=True),
    Input(name="Sex", value="female"),
)


def test_detected_issue_maps_every_field_and_the_act_code():
    result = CardResult(
        kind="detected-issue",
        code=Code(system=FINDING_KIND_SYSTEM, code="interaction", display="Interaction"),
        model="drug-safety",
        basis=("AllergyIntolerance/al-1",),
        inputs=INPUTS,
        text="Warfarin + naproxen: bleeding risk",
        severity="high",
        implicated=("MedicationRequest/draft-1", "MedicationRequest/active-2"),
        probability=0.3,  # not a DetectedIssue field: kept as a fact
        facts={"rule": "warfarin-nsaid", "pair": ["warfarin", "naproxen"], "mme": 12.5, "n": 3},
    )
    accepted = feedback("accepted", accepted_suggestions=["sugg-1"])
    row = card(result, suggestions=[{"uuid": "sugg-1", "label": "Remove naproxen"}])
    resource = result_resource(row, invocation(), [accepted, feedback("overridden", seq=10)])
    check_resource(resource)

    assert resource["id"] == f"card-{row.uuid}"
    assert resource["code"]["coding"][0] == {
        "system": codes.ACT_CODE, "code": "DRG", "display": "Drug Interaction Alert",
    }  # fmt: skip
    assert resource["code"]["coding"][1]["code"] == "interaction"
    assert resource["severity"] == "high"
    assert resource["patient"] == {"reference": "Patient/pat-1"}
    assert resource["identifiedDateTime"] == "2026-03-04T10:11:12.345678Z"
    assert [r["reference"] for r in resource["implicated"]] == list(result.implicated)
    evidence = [r["reference"] for r in resource["evidence"][0]["detail"]]
    assert evidence == ["AllergyIntolerance/al-1", "#input-1", "Observation/cr-1", "#input-3",
                        "#input-4"]  # fmt: skip
    assert resource["detail"] == result.text
    assert resource["reference"] == "https://example.org/ddi"
    device = resource["contained"][0]
    assert resource["author"] == {"reference": "#model"}
    assert device["deviceName"][0]["name"] == "drug-safety"
    assert device["version"] == [{"value": "1.0.0+kb.abc"}]
    assert device["identifier"] == [{"system": codes.MODEL_SHA256, "value": "b" * 64}]
    egfr = next(c for c in resource["contained"] if c["id"] == "input-1")
    assert egfr["valueQuantity"] == {"value": 28.5, "unit": "mL/min/1.73m2"}
    assert egfr["effectiveDateTime"] == "2026-02-01"
    facts = {
        ext["extension"][0]["valueString"]: ext["extension"][1] for ext in resource["extension"]
    }
    assert facts["probability"] == {"url": "value", "valueDecimal": 0.3}
    assert facts["rule"]["valueString"] == "warfarin-nsaid"
    assert json.loads(facts["pair"]["valueString"]) == ["warfarin", "naproxen"]
    assert facts["n"]["valueInteger"] == 3
    [mitigation] = resource["mitigation"]  # accepted suggestions only
    assert mitigation["action"]["text"] == "Accepted: Remove naproxen"


@pytest.mark.parametrize(
    ("kind", "facts", "act"),
    [
        ("allergy", {}, "ALGY"),
        ("duplicate", {}, "DUPTHPY"),
        ("renal", {}, "DOSECOND"),
        ("opioid", {"mme": 90}, "DOSEH"),
        ("opioid", {"benzodiazepine": True}, "DRG"),
        ("unidentified", {}, None),
    ],
)
def test_drug_safety_kinds_get_the_act_code_that_fits(kind: str, facts: dict, act: str | None):
    result = CardResult(
        kind="detected-issue",
        code=Code(system=FINDING_KIND_SYSTEM, code=kind),
        model="drug-safety",
        severity="moderate",
        facts=facts,
    )
    resource = result_resource(card(result), invocation())
    check_resource(resource)
    systems = [(c["system"], c["code"]) for c in resource["code"]["coding"]]
    assert (FINDING_KIND_SYSTEM, kind) in systems
    assert ((codes.ACT_CODE, act) in systems) if act else len(systems) == 1


def test_risk_assessment_maps_prediction_factors_horizon_and_model():
    result = CardResult(
        kind="risk-assessment",
        code=Code(system="http://snomed.info/sct", code="44054006", display="Type 2 diabetes"),
        model="pce-ascvd",
        basis=("Observation/hba1c-1",),
        inputs=INPUTS[:2],
        text="3-year risk 24 % (high)",
        probability=0.24,
        qualitative="high",
        horizon_years=3,
        factors=(
            Factor(name="HbA1c", contribution=0.81, value=6.2),
            Factor(name="BMI", contribution=-0.1, value="31"),
        ),
        facts={"calibrated": True},
    )
    resource = result_resource(card(result, indicator="warning"), invocation())
    check_resource(resource)
    assert resource["resourceType"] == "RiskAssessment"
    assert resource["subject"] == {"reference": "Patient/pat-1"}
    assert resource["method"]["coding"][0] == {"system": codes.MODEL, "code": "pce-ascvd"}
    assert resource["performer"] == {"reference": "#model"}
    device = resource["contained"][0]
    assert device["version"] == [{"value": "1.0.0"}]
    assert device["identifier"][0]["value"] == "a" * 64
    assert [b["reference"] for b in resource["basis"]] == [
        "Observation/hba1c-1", "#input-1", "Observation/cr-1",
    ]  # fmt: skip
    [prediction] = resource["prediction"]
    assert prediction["outcome"]["coding"][0]["code"] == "44054006"
    assert prediction["probabilityDecimal"] == 0.24
    assert prediction["qualitativeRisk"]["coding"][0] == {
        "system": codes.RISK_PROBABILITY, "code": "high",
    }  # fmt: skip
    assert prediction["whenPeriod"]["start"] == "2026-03-04T10:11:12.345678Z"
    assert prediction["whenPeriod"]["end"].startswith("2029-03-0")
    assert prediction["rationale"] == result.text
    factors = [
        {
            part["url"]: next(v for k, v in part.items() if k.startswith("value"))
            for part in ext["extension"]
        }
        for ext in prediction["extension"]
    ]
    assert factors == [
        {"name": "HbA1c", "contribution": 0.81, "value": 6.2},
        {"name": "BMI", "contribution": -0.1, "value": "31"},
    ]
    assert resource["extension"][0]["extension"][0]["valueString"] == "calibrated"


@pytest.mark.parametrize("assertion", ["present", "absent", "uncertain"])
def test_observation_maps_assertion_and_splits_derived_from(assertion: str):
    result = CardResult(
        kind="observation",
        code=Code(system="http://snomed.info/sct", code="60046008", display="Pleural effusion"),
        model="report-nlp",
        basis=("DiagnosticReport/rep-1", "DocumentReference/doc-1"),
        text="Small left pleural effusion.",
        assertion=assertion,  # type: ignore[arg-type]
    )
    resource = result_resource(card(result, indicator="info"), invocation())
    check_resource(resource)
    assert resource["resourceType"] == "Observation"
    assert resource["status"] == "final"
    assert resource["issued"] == "2026-03-04T10:11:12.345678Z"
    assert resource["device"] == {"reference": "#model"}
    value = resource["valueCodeableConcept"]
    assert value["text"] == assertion
    assert {"system": codes.ASSERTION, "code": assertion} in [
        {k: v for k, v in c.items() if k != "display"} for c in value["coding"]
    ]
    if assertion == "present":
        assert value["coding"][0]["code"] == "52101004"
    # R4 allows no DiagnosticReport in derivedFrom: it goes into workflow-supportingInfo.
    assert resource["derivedFrom"] == [{"reference": "DocumentReference/doc-1"}]
    supporting = [e for e in resource["extension"] if e["url"].endswith("workflow-supportingInfo")]
    assert supporting == [
        {
            "url": "http://hl7.org/fhir/StructureDefinition/workflow-supportingInfo",
            "valueReference": {"reference": "DiagnosticReport/rep-1"},
        }
    ]
    assert resource["note"] == [{"text": result.text}]
    # the model was not in this call's model_versions: a Device without version or hash
    assert "version" not in resource["contained"][0]


def test_a_card_without_a_result_has_no_result_resource():
    assert result_resource(card(None), invocation()) is None


def test_call_audit_event_follows_balp():
    row = card(None, suggestions=[{"uuid": "s-1", "label": "x"}])
    event = invocation_event(invocation(), [row], BASE)
    check_resource(event)
    assert event["id"] == "inv-7"
    assert event["type"]["code"] == "rest"
    subtypes = {(s["system"], s["code"]) for s in event["subtype"]}
    assert {(codes.CDS_HOOKS, "order-sign"), (codes.SERVICE, "drug-safety-sign"),
            (codes.RESTFUL_INTERACTION, "operation")} <= subtypes  # fmt: skip
    assert event["action"] == "E"
    assert event["outcome"] == "0"
    assert event["period"] == {
        "start": "2026-03-04T10:11:12.345678Z", "end": "2026-03-04T10:11:12.387928Z",
    }  # fmt: skip
    ehr, user, server = event["agent"]
    assert ehr["type"]["coding"][0]["code"] == "110153"
    assert ehr["who"]["identifier"] == {"system": codes.URI, "value": "https://ehr.example.org"}
    assert (ehr["requestor"], ehr["altId"]) == (False, "client-1")
    assert (user["who"], user["requestor"]) == ({"reference": "Practitioner/123"}, True)
    assert server["type"]["coding"][0]["code"] == "110152"
    assert server["who"]["identifier"]["value"] == BASE + "/cds-services/drug-safety-sign"
    patient, request, answer, card_entity, *models = event["entity"]
    assert patient["what"] == {"reference": "Patient/pat-1"}
    assert request["what"]["identifier"]["value"] == "urn:uuid:" + invocation().hook_instance
    details = {d["type"]: d["valueString"] for d in request["detail"]}
    assert details["request-sha256"] == "f" * 64
    assert details["prefetch-used"] == "patient medications"
    assert details["prefetch-sources"] == "patient=supplied observations=fetched"
    assert answer["what"] == {"reference": "GuidanceResponse/inv-7"}
    assert card_entity["what"]["identifier"] == {"system": codes.CARD, "value": row.uuid}
    exact = next(d for d in card_entity["detail"] if d["type"] == "card-json")
    assert json.loads(base64.b64decode(exact["valueBase64Binary"])) == row.card_json
    assert [m["what"]["identifier"]["value"] for m in models] == ["pce-ascvd", "drug-safety"]


def test_a_failed_call_is_a_minor_failure_with_its_error():
    event = invocation_event(
        invocation(status_code=412, error_code="prefetch_required", error_detail="no patient"),
        [],
        BASE,
    )
    check_resource(event)
    assert event["outcome"] == "4"
    assert event["outcomeDesc"] == "HTTP 412 prefetch_required: no patient"
    assert not any(
        e.get("what", {}).get("reference", "").startswith("GuidanceResponse")
        for e in event["entity"]
    )
    response = guidance_response(
        invocation(status_code=412, error_code="prefetch_required"), [], BASE
    )
    check_resource(response)
    assert response["status"] == "data-required"
    assert "result" not in response


def test_feedback_audit_event_records_the_override_reason():
    reason = {
        "reason": {"system": "urn:x", "code": "benefit", "display": "Benefit outweighs risk"},
        "userComment": "discussed with patient",
    }
    row = card(CardResult(kind="detected-issue", code=Code(system="urn:x", code="y"), model="m"))
    event = feedback_event(feedback("overridden", override_reason=reason), row, invocation(), BASE)
    check_resource(event)
    assert event["id"] == "fb-9" and event["action"] == "C"
    patient, card_entity, answer = event["entity"]
    assert patient["what"]["reference"] == "Patient/pat-1"
    assert card_entity["what"]["reference"] == f"DetectedIssue/card-{row.uuid}"
    details = {d["type"]: d["valueString"] for d in card_entity["detail"]}
    assert details["outcome"] == "overridden"
    assert details["overrideReason"] == "urn:x|benefit"
    assert details["overrideReasonDisplay"] == "Benefit outweighs risk"
    assert details["overrideComment"] == "discussed with patient"
    assert answer["what"]["reference"] == "GuidanceResponse/inv-7"


def test_access_audit_events_for_reads_exports_and_log_ins():
    base = {
        "seq": 11, "at": WHEN, "principal_system": "urn:wardround:reviewer",
        "principal_id": "alice", "grants": ["role:auditor", "system/*.read"],
        "patient_id": "pat-1", "result_count": 3, "status_code": 200,
        "remote_addr": "10.0.0.7", "target": "calls",
        "query": {"patient": ["pat-1"], "date_from": ["2026-03-01"]},
    }  # fmt: skip
    cases = {
        ("review", "page"): ("110112", "review-page"),
        ("review", "export-csv"): ("110106", "review-export-csv"),
        ("fhir-api", "search"): ("rest", "search-type"),
        ("fhir-api", "read"): ("rest", "read"),
        ("review", "login"): ("110114", "110122"),
    }
    for (channel, action), (event_type, subtype) in cases.items():
        event = access_event(Access(**base, channel=channel, action=action), BASE)
        check_resource(event)
        assert event["type"]["code"] == event_type
        assert subtype in {s["code"] for s in event["subtype"]}
        who = event["agent"][0]
        assert who["who"]["identifier"] == {"system": "urn:wardround:reviewer", "value": "alice"}
        assert who["network"] == {"address": "10.0.0.7", "type": "2"}
        assert {c["coding"][0]["code"] for c in who["role"]} == {"auditor", "system/*.read"}
    query = event["entity"][1]
    assert json.loads(query["detail"][0]["valueString"]) == base["query"]


def test_guidance_response_contains_the_cards_as_a_request_group():
    naloxone = {
        "resourceType": "MedicationRequest",
        "id": "new-1",
        "status": "draft",
        "intent": "order",
        "medicationCodeableConcept": {"text": "naloxone"},
        "subject": {"reference": "Patient/pat-1"},
    }
    row = card(
        None,
        selectionBehavior="at-most-one",
        suggestions=[
            {"uuid": "s-1", "label": "Remove naproxen",
             "actions": [{"type": "delete", "description": "remove",
                          "resourceId": ["MedicationRequest/draft-1"]}]},
            {"uuid": "s-2", "label": "Add naloxone",
             "actions": [{"type": "create", "description": "add", "resource": naloxone}]},
        ],
        links=[{"label": "Guideline", "url": "https://example.org/g", "type": "absolute"}],
    )  # fmt: skip
    response = guidance_response(invocation(), [row], BASE)
    check_resource(response)
    assert response["status"] == "success"
    assert response["moduleUri"] == BASE + "/cds-services/drug-safety-sign"
    assert response["requestIdentifier"]["value"] == "urn:uuid:" + invocation().hook_instance
    device = next(c for c in response["contained"] if c["resourceType"] == "Device")
    versions = [
        (v["type"]["coding"][0]["code"], v["value"], v["component"]["value"])
        for v in device["version"]
    ]
    assert versions == [(m["id"], m["version"], m["hash"]) for m in MODELS]
    group = next(c for c in response["contained"] if c["resourceType"] == "RequestGroup")
    [action] = group["action"]
    assert (action["id"], action["title"], action["priority"]) == (row.uuid, row.summary, "stat")
    assert action["description"] == "**Avoid** NSAIDs."
    assert action["selectionBehavior"] == "at-most-one"
    assert [d["url"] for d in action["documentation"]] == [
        "https://example.org/ddi", "https://example.org/g",
    ]  # fmt: skip
    remove, create = action["action"]
    assert remove["action"][0]["resource"] == {"reference": "MedicationRequest/draft-1"}
    assert remove["action"][0]["type"]["coding"][0]["code"] == "remove"
    local = create["action"][0]["resource"]["reference"]
    copied = next(c for c in response["contained"] if "#" + c["id"] == local)
    assert copied["medicationCodeableConcept"] == naloxone["medicationCodeableConcept"]
