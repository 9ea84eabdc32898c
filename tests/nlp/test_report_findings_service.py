"""The report-findings service (patient-view): real app, real transformer, prefetched reports.

Each case posts a patient-view request whose prefetch holds a shared Synthea patient and a
DiagnosticReport (or DocumentReference) with base64 text, and reads the cards back as the
EHR would, plus the audit row (on SQLite and PostgreSQL).
"""

from __future__ import annotations

import base64
import uuid
from datetime import UTC, datetime, timedelta
from typing import Any

from cds.audit.tables import Card as AuditCard
from cds.audit.tables import Invocation
from cds.cards import Card, validate_fhir_resource
from cds.demo import patient_view_request
from cds.hook_request import parse_hook_request
from cds.services.registry import HookCall
from cds.services.report_findings import SERVICE, read_findings
from fhir_adapters import build_patient_context
from models import registry
from models.nlp import MODEL_ID
from tests.conftest import synthea_bundles
from tests.test_audit_log import rows_of, verify

SERVICE_ID = "report-findings"
KEYS = ("patient", "reports", "documents")


def _b64(text: str) -> str:
    return base64.b64encode(text.encode()).decode()


def diagnostic_report(
    patient_id: str, text: str, days_ago: float = 1, report_id: str | None = None
) -> dict[str, Any]:
    when = datetime.now(UTC) - timedelta(days=days_ago)
    return {
        "resourceType": "DiagnosticReport",
        "id": report_id or str(uuid.uuid4()),
        "status": "final",
        "code": {"text": "XR Chest 2 views"},
        "subject": {"reference": f"Patient/{patient_id}"},
        "effectiveDateTime": when.isoformat(timespec="seconds"),
        "presentedForm": [{"contentType": "text/plain; charset=utf-8", "data": _b64(text)}],
    }


def _request(*resources: dict[str, Any]) -> dict[str, Any]:
    body = patient_view_request(synthea_bundles()[0], keys=KEYS)
    patient_id = body["context"]["patientId"]
    for resource in resources:
        resource["subject"] = {"reference": f"Patient/{patient_id}"}
        key = "reports" if resource["resourceType"] == "DiagnosticReport" else "documents"
        body["prefetch"][key]["entry"].append(
            {"fullUrl": f"{resource['resourceType']}/{resource['id']}", "resource": resource}
        )
    return body


def _cards(hooks, body: dict[str, Any]) -> list[dict[str, Any]]:
    response = hooks.call(SERVICE_ID, body)
    assert response.status_code == 200, response.json
    for card in response.json["cards"]:
        Card.model_validate(card)  # spec-valid, IG invariants included
    return response.json["cards"]


PNEUMOTHORAX_REPORT = (
    "INDICATION: Chest pain.\nFINDINGS: Heart size is normal. There is a small right apical "
    "pneumothorax. No pleural effusion.\n\nIMPRESSION: Small right apical pneumothorax."
)


def test_a_pneumothorax_is_a_critical_card_with_its_sentence_and_audit_record(
    hooks, database_url
) -> None:
    report = diagnostic_report("x", PNEUMOTHORAX_REPORT)
    (card,) = _cards(hooks, _request(report))
    assert card["indicator"] == "critical"
    assert card["summary"].startswith("Pneumothorax in XR Chest 2 views")
    assert "> Small right apical pneumothorax." in card["detail"]
    assert f"DiagnosticReport/{report['id']}" in card["detail"]
    assert card["overrideReasons"]
    assert verify(database_url).ok
    (invocation,) = rows_of(database_url, Invocation)
    identity = registry.identity(MODEL_ID)
    assert {"id": MODEL_ID, "version": identity.version, "hash": identity.sha256} in (
        invocation.model_versions
    )
    (row,) = rows_of(database_url, AuditCard)
    result = row.result
    assert result["kind"] == "observation" and result["assertion"] == "present"
    assert result["code"]["code"] == "36118008" and result["model"] == MODEL_ID
    assert result["basis"] == [f"DiagnosticReport/{report['id']}"]
    assert result["text"] == "Small right apical pneumothorax."
    assert 0 < result["probability"] <= 1


def test_negated_findings_raise_no_card(hooks) -> None:
    text = (
        "FINDINGS: No pneumothorax. No suspicious pulmonary nodules or masses. "
        "IMPRESSION: No acute cardiopulmonary process."
    )
    assert _cards(hooks, _request(diagnostic_report("x", text))) == []


def test_uncertain_pneumothorax_is_worded_as_uncertain_and_is_not_critical(hooks) -> None:
    text = "IMPRESSION: A small right apical pneumothorax cannot be excluded."
    (card,) = _cards(hooks, _request(diagnostic_report("x", text)))
    assert card["indicator"] == "warning"
    assert card["summary"].startswith("Possible pneumothorax (uncertain)")
    assert "uncertainty" in card["detail"] and "overrideReasons" not in card


def test_a_sized_nodule_gets_a_fleischner_follow_up_ct_suggestion(hooks, database_url) -> None:
    text = "FINDINGS: There is a 7 mm nodule in the right upper lobe. No pleural effusion."
    report = diagnostic_report("x", text, days_ago=2)
    (card,) = _cards(hooks, _request(report))
    assert card["indicator"] == "warning"
    assert card["summary"].startswith("Lung nodule/mass, 7 mm in XR Chest 2 views")
    assert "CT at 6-12 months" in card["detail"] and "Assumptions" in card["detail"]
    (suggestion,) = card["suggestions"]
    (action,) = suggestion["actions"]
    resource = action["resource"]
    validate_fhir_resource(resource)
    assert resource["resourceType"] == "ServiceRequest" and resource["status"] == "draft"
    assert resource["code"]["coding"][0]["code"] == "169069000"
    assert resource["reasonReference"] == [{"reference": f"DiagnosticReport/{report['id']}"}]
    report_day = datetime.fromisoformat(report["effectiveDateTime"]).date()
    start = datetime.fromisoformat(resource["occurrencePeriod"]["start"]).date()
    assert 175 <= (start - report_day).days <= 190  # six months after the report
    (row,) = rows_of(database_url, AuditCard)
    assert row.result["facts"]["size_mm"] == 7 and row.result["facts"]["fleischner"] == "6-8 mm"


def test_an_unsized_nodule_is_a_warning_without_an_order(hooks) -> None:
    text = "IMPRESSION: Nodule in the left lower lobe."
    (card,) = _cards(hooks, _request(diagnostic_report("x", text)))
    assert card["indicator"] == "warning" and "suggestions" not in card
    assert "Size not stated" in card["detail"]


def test_a_calcified_nodule_raises_nothing(hooks) -> None:
    text = "FINDINGS: Calcified 5 mm nodule in the right upper lobe, benign."
    assert _cards(hooks, _request(diagnostic_report("x", text))) == []


def test_the_newest_report_decides_a_resolved_pneumothorax_is_quiet(hooks) -> None:
    old = diagnostic_report("x", PNEUMOTHORAX_REPORT, days_ago=5)
    new = diagnostic_report("x", "IMPRESSION: The right pneumothorax has resolved.", days_ago=1)
    assert _cards(hooks, _request(old, new)) == []


def test_the_look_back_is_configurable(make_app, mint) -> None:
    from tests.conftest import HookClient

    body = _request(diagnostic_report("x", PNEUMOTHORAX_REPORT, days_ago=200))
    default = HookClient(make_app().test_client(), mint)
    assert _cards(default, body) == []  # 90 days by default
    longer = HookClient(make_app(report_lookback_days=365).test_client(), mint)
    assert len(_cards(longer, body)) == 1


def test_a_note_is_read_and_history_is_not_a_finding(hooks) -> None:
    note = {
        "resourceType": "DocumentReference",
        "id": str(uuid.uuid4()),
        "status": "current",
        "type": {"text": "Progress note"},
        "date": (datetime.now(UTC) - timedelta(days=3)).isoformat(timespec="seconds"),
        "content": [{"attachment": {"contentType": "text/plain", "data": _b64(
            "# History of Present Illness\nHistory of pneumothorax in 2019.\n\n"
            "# Assessment and Plan\nPatient reports a 12 mm lung nodule on outside CT."
        )}}],
    }  # fmt: skip
    (card,) = _cards(hooks, _request(note))
    assert card["summary"].startswith("Lung nodule/mass, 12 mm in Progress note")
    assert f"DocumentReference/{note['id']}" in card["detail"]
    (suggestion,) = card["suggestions"]
    assert "reasonReference" not in suggestion["actions"][0]["resource"]


def test_unreadable_report_content_is_skipped_and_audited_not_a_500(hooks, database_url) -> None:
    """A PDF and a resource with broken base64 are skipped (with a warning), never a 500;
    the readable report beside them is still read."""
    pdf = diagnostic_report("x", "")
    pdf["presentedForm"] = [{"contentType": "application/pdf", "data": _b64("%PDF-1.4")}]
    bad_base64 = diagnostic_report("x", "")
    bad_base64["presentedForm"] = [{"contentType": "text/plain", "data": "***not base64***"}]
    good = diagnostic_report("x", PNEUMOTHORAX_REPORT)
    (card,) = _cards(hooks, _request(pdf, bad_base64, good))
    assert card["indicator"] == "critical"
    (invocation,) = rows_of(database_url, Invocation)
    reports = next(e for e in invocation.prefetch_fetched if e["key"] == "reports")
    assert reports["skipped"] >= 1  # the invalid resource, named in the audit row


def test_discovery_lists_the_service_with_its_prefetch(client, mint) -> None:
    response = client.get(
        "/cds-services", headers={"Authorization": f"Bearer {mint('/cds-services')}"}
    )
    entry = next(s for s in response.json["services"] if s["id"] == SERVICE_ID)
    assert entry["hook"] == "patient-view"
    assert set(entry["prefetch"]) == set(KEYS)


def test_every_shared_synthea_patient_stays_quiet() -> None:
    """The shared Synthea records' reports are lab panels without text: no card, ever.

    Read with an unlimited look-back, so that no report is skipped for its age.
    """
    texts = 0
    for bundle in synthea_bundles():
        request = patient_view_request(bundle, keys=KEYS)
        hook_request, context = parse_hook_request(request, "patient-view")
        patient = build_patient_context(hook_request.prefetch or {}, context.patientId)
        texts += len(patient.reports)
        call = HookCall(hook_request, context, patient, hook_request.prefetch or {})
        result = read_findings(call, lookback_days=365_000, now=datetime.now(UTC))
        assert result.cards == [], bundle.name
    assert len(synthea_bundles()) >= 299
    assert texts == 0  # the shared bundles hold no report or note text at all
    assert SERVICE.required_prefetch == frozenset({"patient"})
