"""The FHIR API over HTTP on SQLite and PostgreSQL: results, search parameters, paging,
errors and the access log. Data comes through the real paths: hook calls (drug safety on
Synthea patients) and AuditLog.record_invocation with CardResults of every kind."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from typing import Any
from urllib.parse import parse_qs, urlsplit

import pytest
from flask import Flask

from cds.audit.tables import Access
from cds.fhir_api.search_params import CONTROL, MAX_COUNT, PARAMETERS
from cds.replay import replay
from cds.results import CardResult, Code, Factor, Input
from cds.services.drug_safety import FINDING_KIND_SYSTEM
from tests.compliance.conftest import Fhir, poster, write_call
from tests.compliance.fhir_checks import check_bundle, check_resource
from tests.conftest import HookClient, synthea_bundles
from tests.test_audit_log import refused_inserts, rows_of, verify

ISSUE = CardResult(
    kind="detected-issue",
    code=Code(system=FINDING_KIND_SYSTEM, code="allergy", display="Allergy"),
    model="drug-safety",
    severity="high",
    implicated=("MedicationRequest/d-1",),
    basis=("AllergyIntolerance/a-1",),
    text="Penicillin allergy",
)
RISK = CardResult(
    kind="risk-assessment",
    code=Code(system="http://snomed.info/sct", code="44054006", display="Type 2 diabetes"),
    model="risk-demo",
    probability=0.31,
    qualitative="high",
    horizon_years=3,
    factors=(Factor(name="HbA1c", contribution=0.9, value=6.4),),
    inputs=(Input(name="HbA1c", value=6.4, unit="%", date="2026-01-02"),),
    text="31 % in 3 years",
)
FINDING = CardResult(
    kind="observation",
    code=Code(system="http://snomed.info/sct", code="60046008", display="Pleural effusion"),
    model="risk-demo",
    assertion="present",
    basis=("DiagnosticReport/r-1",),
    text="small effusion",
)
T0 = datetime(2026, 3, 1, 12, 0, tzinfo=UTC)


def ids(resources: list[dict[str, Any]]) -> list[str]:
    return [r["id"] for r in resources]


def query_of(url: str) -> dict[str, list[str]]:
    return parse_qs(urlsplit(url).query)


# --------------------------------------------------------------------------- results
def test_results_of_every_kind_are_served_and_valid(app: Flask, fhir: Fhir):
    call = write_call(app, [ISSUE, RISK, FINDING, None])
    card_issue, card_risk, card_finding, _ = call.card_uuids
    for resource_type, card_uuid in (
        ("DetectedIssue", card_issue),
        ("RiskAssessment", card_risk),
        ("Observation", card_finding),
    ):
        [resource] = check_bundle(fhir.bundle(f"/fhir/{resource_type}"))
        assert resource["id"] == f"card-{card_uuid}"
        read = fhir.get(f"/fhir/{resource_type}/card-{card_uuid}")
        assert read.status_code == 200 and read.get_json() == resource
        check_resource(read.get_json())
        # a card of another kind is not this type
        assert fhir.get(f"/fhir/{resource_type}/card-{call.card_uuids[3]}").status_code == 404

    [risk] = fhir.everything("/fhir/RiskAssessment")
    assert risk["prediction"][0]["probabilityDecimal"] == 0.31
    assert risk["contained"][0]["version"] == [{"value": "2.0.0"}]
    [response] = check_bundle(fhir.bundle("/fhir/GuidanceResponse"))
    group = next(c for c in response["contained"] if c["resourceType"] == "RequestGroup")
    assert [a["id"] for a in group["action"]] == call.card_uuids
    event = fhir.get(f"/fhir/AuditEvent/inv-{call.seq}").get_json()
    cards = [e for e in event["entity"] if e.get("name")]
    assert [c["what"]["identifier"]["value"] for c in cards] == call.card_uuids
    assert [c["what"].get("reference") for c in cards] == [
        f"DetectedIssue/card-{card_issue}",
        f"RiskAssessment/card-{card_risk}",
        f"Observation/card-{card_finding}",
        None,
    ]


def test_drug_safety_calls_through_the_hooks_become_detected_issues(hooks: HookClient, fhir: Fhir):
    stats = replay(synthea_bundles()[:3], poster(hooks))
    assert set(stats.statuses) == {200}
    issues = fhir.everything("/fhir/DetectedIssue?_count=7")
    drug_cards = list(stats.outcomes)  # every drug-safety card (patient summaries assert nothing)
    assert sorted(i["id"] for i in issues) == sorted(f"card-{u}" for u in drug_cards)
    for issue in issues:
        check_resource(issue)
        assert issue["patient"]["reference"].startswith("Patient/")
        assert issue["contained"][0]["deviceName"][0]["name"] == "drug-safety"
    kinds = {
        c["code"] for i in issues for c in i["code"]["coding"] if c["system"] == FINDING_KIND_SYSTEM
    }
    assert "opioid" in kinds  # the oxycodone draft is 90 MME/day for every patient
    accepted = [u for u, outcome in stats.outcomes.items() if outcome == "accepted"]
    mitigated = [i["id"] for i in issues if "mitigation" in i]
    assert sorted(mitigated) == sorted(f"card-{u}" for u in accepted)
    responses = check_bundle(fhir.bundle("/fhir/GuidanceResponse?_count=50"))
    assert len(responses) == stats.calls


# --------------------------------------------------------------------------- searching
@pytest.fixture
def corpus(app: Flask) -> dict[str, Any]:
    """Two patients' calls on known days, a failed call, and feedback on one card."""
    a1 = write_call(app, [ISSUE], patient_id="pa", received_at=T0, user_id="Practitioner/d1")
    a2 = write_call(app, [RISK], patient_id="pa", received_at=T0 + timedelta(days=1),
                    service_id="other-svc", hook="order-sign")  # fmt: skip
    b1 = write_call(app, [FINDING], patient_id="pb", received_at=T0 + timedelta(days=2),
                    models=[{"id": "report-nlp", "version": "0.1"}])  # fmt: skip
    bad = write_call(app, [], patient_id="pb", received_at=T0 + timedelta(days=3), status_code=400)
    [fb] = app.extensions["wardround.audit"].record_feedback([{
        "received_at": T0 + timedelta(days=4), "card_uuid": a1.card_uuids[0],
        "service_id": "risk-demo", "client_iss": "https://ehr.test", "outcome": "overridden",
        "outcome_timestamp": T0 + timedelta(days=4), "accepted_suggestions": [],
        "override_reason": {"userComment": "known"},
    }])  # fmt: skip
    return {"a1": a1, "a2": a2, "b1": b1, "bad": bad, "fb": f"fb-{fb}"}


def test_audit_event_search_parameters(corpus: dict[str, Any], fhir: Fhir):
    a1, a2, b1, bad, fb = (corpus[k] for k in ("a1", "a2", "b1", "bad", "fb"))
    search = lambda q: ids(fhir.everything(f"/fhir/AuditEvent?{q}"))  # noqa: E731
    calls = lambda q: [i for i in search(q) if i.startswith("inv-")]  # noqa: E731
    inv = lambda w: f"inv-{w.seq}"  # noqa: E731

    assert calls("patient=pa") == [inv(a2), inv(a1)]
    assert calls("patient=Patient/pb") == [inv(bad), inv(b1)]
    assert calls("patient=pa,pb") == [inv(bad), inv(b1), inv(a2), inv(a1)]
    assert calls("date=2026-03-02") == [inv(a2)]
    assert calls("date=ge2026-03-02&date=lt2026-03-04") == [inv(b1), inv(a2)]
    assert calls("date=gt2026-03-02") == [inv(bad), inv(b1)]
    assert calls("date=le2026-03-01") == [inv(a1)]
    assert calls("date=eq2026-03-01T12:00:00Z") == [inv(a1)]
    assert calls("date=2026-03-01T12:00:00.000001Z") == []
    assert calls("date=ne2026-03") == []
    assert calls("date=ge2026-03-01T13:00:00%2B01:00&date=lt2026-03-02") == [inv(a1)]
    assert calls("agent=Practitioner/d1") == [inv(a1)]
    assert set(calls("agent:identifier=urn:ietf:rfc:3986|https://ehr.test")) == {
        inv(a1), inv(a2), inv(b1), inv(bad),
    }  # fmt: skip
    assert calls("agent:identifier=https://ehr.test") == calls("patient=pa,pb")
    assert calls("entity=Patient/pb") == [inv(bad), inv(b1)]
    assert search(f"entity=GuidanceResponse/inv-{a2.seq}") == [inv(a2)]
    assert search(f"entity=RiskAssessment/card-{a2.card_uuids[0]}") == [inv(a2)]
    assert search(f"entity:identifier=urn:ietf:rfc:3986|urn:uuid:{b1.hook_instance}") == [inv(b1)]
    assert search(f"entity:identifier=urn:wardround:card|{a1.card_uuids[0]}") == [fb, inv(a1)]
    assert calls("entity:identifier=urn:wardround:model|report-nlp") == [inv(b1)]
    assert calls("outcome=4") == [inv(bad)]
    assert calls("outcome=0&patient=pb") == [inv(b1)]
    assert search("outcome=12") == []
    assert calls("subtype=order-sign") == [inv(a2)]
    assert calls("subtype=https://cds-hooks.org/hooks|patient-view&patient=pa") == [inv(a1)]
    assert calls("subtype=urn:wardround:cds-service|other-svc") == [inv(a2)]
    assert len(calls("subtype=cds-call")) == 4
    # feedback: an event of its own, about the card's patient, dated when it arrived
    assert search("subtype=cds-feedback") == [fb]
    assert search("patient=pa&subtype=cds-feedback,order-sign") == [fb, inv(a2)]
    assert search(f"entity=DetectedIssue/card-{a1.card_uuids[0]}") == [fb, inv(a1)]
    assert search("date=2026-03-05&subtype=cds-feedback,cds-call") == [fb]
    assert search("agent=Practitioner/d1") == [inv(a1)]  # feedback names no user
    assert fb in search("outcome=0")


def test_feedback_and_reads_are_audit_events_too(hooks: HookClient, fhir: Fhir):
    stats = replay(synthea_bundles()[:1], poster(hooks))
    feedback = fhir.everything("/fhir/AuditEvent?subtype=cds-feedback")
    assert len(feedback) == stats.feedback >= 1
    for event in feedback:
        check_resource(event)
    patient = feedback[0]["entity"][0]["what"]["reference"]
    kinds = {e["id"].split("-")[0] for e in fhir.everything(f"/fhir/AuditEvent?patient={patient}")}
    assert kinds == {"inv", "fb"}  # nobody has read this patient's records yet
    fhir.bundle(f"/fhir/DetectedIssue?patient={patient}")  # now somebody has: twice
    reads = fhir.everything(f"/fhir/AuditEvent?subtype=audit-read&patient={patient}")
    assert [r["entity"][1]["description"] for r in reads] == [
        "fhir-api search DetectedIssue",
        "fhir-api search AuditEvent",
    ]
    [detail] = [d for d in reads[0]["entity"][1]["detail"] if d["type"] == "filter"]
    assert detail["valueString"] == f'{{"patient":["{patient}"]}}'


def test_paging_is_stable_under_concurrent_inserts(app: Flask, fhir: Fhir):
    written = [write_call(app, [RISK], patient_id="pp") for _ in range(7)]
    first = fhir.bundle("/fhir/RiskAssessment?patient=pp&_count=3")
    seen = ids([e["resource"] for e in first["entry"]])
    url = next(link["url"] for link in first["link"] if link["relation"] == "next")
    assert query_of(url)["_count"] == ["3"] and "_cursor" in query_of(url)
    while url:
        write_call(app, [RISK], patient_id="pp")  # a new card arrives between two pages
        page = fhir.bundle(url.removeprefix("http://localhost"))
        check_bundle(page)
        seen += ids([e["resource"] for e in page.get("entry", [])])
        url = next((link["url"] for link in page["link"] if link["relation"] == "next"), None)
    expected = [f"card-{w.card_uuids[0]}" for w in reversed(written)]
    assert seen == expected  # newest first, no duplicates, nothing skipped, nothing new
    ascending = ids(fhir.everything("/fhir/RiskAssessment?patient=pp&_count=4&_sort=date"))
    assert ascending[:7] == list(reversed(expected)) and len(ascending) == 7 + 2  # 2 new ones


def test_audit_event_pages_merge_calls_feedback_and_reads_by_seq(app: Flask, fhir: Fhir):
    for _ in range(4):
        write_call(app, [ISSUE])
        fhir.bundle("/fhir/DetectedIssue?_count=1")  # an access row after each call
    events = fhir.everything("/fhir/AuditEvent?_count=3")
    seqs = [int(e["id"].split("-")[1]) for e in events]
    assert seqs == sorted(seqs, reverse=True) and len(set(seqs)) == len(seqs)
    assert {e["id"].split("-")[0] for e in events} == {"inv", "acc"}


# --------------------------------------------------------------------------- errors
@pytest.mark.parametrize(
    ("query", "status", "words"),
    [
        ("foo=1", 400, "unknown search parameter 'foo'"),
        ("patient:exact=x", 400, "unknown search modifier"),
        ("date=yesterday", 400, "date: not a FHIR date"),
        ("date=ap2026", 400, "prefix 'ap' is not supported"),
        ("date=2026-02-30", 400, "not a valid date"),
        ("_count=0", 400, "_count"),
        ("_count=abc", 400, "_count"),
        ("_sort=status", 400, "_sort"),
        ("_cursor=x", 400, "_cursor"),
        ("_count=2&_count=3", 400, "once"),
        ("patient=", 400, "empty"),
        ("_format=xml", 406, "JSON"),
    ],
)
def test_bad_searches_get_an_operation_outcome(fhir: Fhir, query: str, status: int, words: str):
    response = fhir.get(f"/fhir/AuditEvent?{query}")
    assert response.status_code == status
    check_resource(response.get_json())
    assert response.get_json()["resourceType"] == "OperationOutcome"
    assert words in response.get_json()["issue"][0]["diagnostics"]


def test_lenient_handling_ignores_unknown_parameters_and_says_so(app: Flask, fhir: Fhir):
    write_call(app, [ISSUE], patient_id="lenient")
    response = fhir.get(
        "/fhir/DetectedIssue?patient=lenient&foo=1&_elements=id",
        headers={"Prefer": "return=representation, handling=lenient"},
    )
    assert response.status_code == 200
    bundle = response.get_json()
    check_bundle(bundle)
    assert query_of(bundle["link"][0]["url"]) == {"patient": ["lenient"]}
    outcome = bundle["entry"][-1]
    assert outcome["search"]["mode"] == "outcome"
    assert "'_elements', 'foo'" in outcome["resource"]["issue"][0]["diagnostics"]
    assert len(bundle["entry"]) == 2


def test_other_errors_are_operation_outcomes(fhir: Fhir):
    cases = [
        (fhir.get("/fhir/Patient"), 404),
        (fhir.get("/fhir/Patient/1"), 404),
        (fhir.get("/fhir/AuditEvent/inv-999999"), 404),
        (fhir.get("/fhir/AuditEvent/nonsense"), 404),
        (fhir.get("/fhir/DetectedIssue/card-00000000-0000-0000-0000-000000000000"), 404),
        (fhir.get("/fhir/AuditEvent/inv-1?patient=x"), 400),
        (fhir.get("/fhir/AuditEvent", headers={"Accept": "application/fhir+xml"}), 406),
        (fhir.client.post("/fhir/AuditEvent"), 405),
        (fhir.get("/fhir/AuditEvent/a/b/c"), 404),
    ]
    for response, status in cases:
        assert response.status_code == status, response.get_data(as_text=True)
        assert response.mimetype == "application/fhir+json"
        check_resource(response.get_json())
    assert "GET" in cases[7][0].headers["Allow"]


def test_metadata_lists_exactly_what_is_implemented(fhir: Fhir, app: Flask):
    response = fhir.client.get("/fhir/metadata")  # public: no token
    statement = response.get_json()
    check_resource(statement)
    rest = statement["rest"][0]
    assert {r["type"] for r in rest["resource"]} == set(PARAMETERS)
    for resource in rest["resource"]:
        names = {p["name"] for p in resource["searchParam"]}
        assert names == {p.name for p in PARAMETERS[resource["type"]] + CONTROL}
        assert {i["code"] for i in resource["interaction"]} == {"read", "search-type"}
        samples = {"date": "ge2026-01-01", "reference": "Patient/x", "token": "x",
                   "number": "5", "string": "-date"}  # fmt: skip
        for parameter in PARAMETERS[resource["type"]] + CONTROL:
            if parameter.name in ("_cursor", "_format"):
                continue
            value = samples[parameter.type]
            answer = fhir.get(f"/fhir/{resource['type']}?{parameter.name}={value}")
            assert answer.status_code == 200, (resource["type"], parameter.name)
        assert fhir.get(f"/fhir/{resource['type']}?identifier=x").status_code == 400


def test_count_is_capped(app: Flask, fhir: Fhir):
    bundle = fhir.bundle("/fhir/AuditEvent?_count=100000")
    assert query_of(bundle["link"][0]["url"])["_count"] == ["100000"]
    for _ in range(2):
        write_call(app, [])
    # the cap is what the next link carries when there is a next page
    page = fhir.bundle("/fhir/GuidanceResponse?_count=1")
    assert query_of(page["link"][1]["url"])["_count"] == ["1"]
    assert MAX_COUNT == 500


# --------------------------------------------------------------------------- the access log
def test_every_read_is_recorded_before_it_is_released(
    app: Flask, fhir: Fhir, database_url: str, api_token: Any
):
    call = write_call(app, [ISSUE], patient_id="audited")
    token = api_token(scope="system/DetectedIssue.read system/AuditEvent.read", sub="bi-tool")
    fhir.bundle("/fhir/DetectedIssue?patient=audited&_count=5", token)
    fhir.get(f"/fhir/DetectedIssue/card-{call.card_uuids[0]}", token)
    rows = rows_of(database_url, Access)
    search, read = rows[-2:]
    assert (search.channel, search.action, search.target) == ("fhir-api", "search", "DetectedIssue")
    assert (search.principal_system, search.principal_id) == ("https://auth.test", "bi-tool")
    assert search.grants == ["system/AuditEvent.read", "system/DetectedIssue.read"]
    assert search.query == {"patient": ["audited"], "_count": ["5"]}
    assert (search.patient_id, search.result_count, search.status_code) == ("audited", 1, 200)
    assert (read.action, read.target) == ("read", f"DetectedIssue/card-{call.card_uuids[0]}")
    assert (read.patient_id, read.result_count) == ("audited", 1)
    assert verify(database_url).ok
    served = fhir.get(f"/fhir/AuditEvent/acc-{search.seq}", token).get_json()
    check_resource(served)
    assert served["agent"][0]["who"]["identifier"]["value"] == "bi-tool"
    assert served["entity"][0]["what"] == {"reference": "Patient/audited"}


def test_no_data_leaves_when_the_read_cannot_be_recorded(app: Flask, fhir: Fhir, database_url: str):
    write_call(app, [ISSUE], patient_id="secret-patient")
    with refused_inserts(database_url, "audit_access"):
        response = fhir.get("/fhir/DetectedIssue?patient=secret-patient")
        read = fhir.get("/fhir/AuditEvent/inv-1")
    for answer in (response, read):
        assert answer.status_code == 503
        assert answer.headers["Retry-After"]
        body = answer.get_data(as_text=True)
        assert "secret-patient" not in body and "entry" not in body
        check_resource(answer.get_json())
    assert rows_of(database_url, Access) == []
    assert fhir.get("/fhir/DetectedIssue?patient=secret-patient").status_code == 200
