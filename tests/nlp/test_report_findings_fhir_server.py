"""End to end through the real FHIR server: a DiagnosticReport with base64 text → a card.

A real IU chest X-ray report from the held-out test split (read from the shared data at
test time, never stored) is PUT on sekmet-fhir as a DiagnosticReport with base64
``presentedForm``; a patient-view call without prefetch makes the service fetch the
patient's reports and notes itself, read them and answer with the card, linked to the
report on that server, and audited (SQLite and PostgreSQL).
"""

from __future__ import annotations

import base64
import csv
import json
import uuid
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta

import pytest

from cds.audit.tables import Card as AuditCard
from cds.audit.tables import Invocation
from cds.cards import Card
from models.nlp import ARTIFACT_DIR, MODEL_ID
from models.nlp.iu_reports import report_text
from tests.conftest import BASE_URL, HookClient
from tests.support.fhir_server import fhir_authorization
from tests.support.missing import shared_file
from tests.test_audit_log import rows_of, verify

pytestmark = pytest.mark.fhir_server
SERVICE_ID = "report-findings"


def _held_out_pneumothorax_report() -> str:
    """The first held-out IU report indexed Pneumothorax whose impression names it."""
    path = shared_file("iu-xray-reports/reports.csv")
    test_ids = set(json.loads((ARTIFACT_DIR / "split.json").read_text())["test"])
    with path.open(newline="", encoding="utf-8") as handle:
        for row in csv.DictReader(handle):
            if (
                row["uid"] in test_ids
                and "Pneumothorax" in row["Problems"].split(";")
                and "pneumothorax" in row["impression"].lower()
            ):
                return report_text(row["findings"], row["impression"])
    pytest.fail("no held-out IU report indexed Pneumothorax")


@pytest.fixture
def report_on_server(fhir_server) -> Iterator[tuple[str, str, str]]:
    """A held-out IU report PUT on the session's FHIR server for one patient, removed after
    (the server is shared by the session: other tests compare its data with prefetch)."""
    text = _held_out_pneumothorax_report()
    patient_id = fhir_server.patient_ids[11]
    report_id = str(uuid.uuid4())
    report = {
        "resourceType": "DiagnosticReport",
        "id": report_id,
        "status": "final",
        "code": {"text": "XR Chest PA and lateral"},
        "subject": {"reference": f"Patient/{patient_id}"},
        "effectiveDateTime": (datetime.now(UTC) - timedelta(days=1)).isoformat(timespec="seconds"),
        "presentedForm": [
            {"contentType": "text/plain", "data": base64.b64encode(text.encode()).decode()}
        ],
    }
    put = fhir_server.request("PUT", f"DiagnosticReport/{report_id}", report)
    assert put.status_code in (200, 201), put.text
    try:
        yield patient_id, report_id, text
    finally:
        deleted = fhir_server.request("DELETE", f"DiagnosticReport/{report_id}")
        assert deleted.status_code in (200, 204), deleted.text


def test_a_report_on_the_fhir_server_becomes_a_linked_audited_card(
    make_app, mint, fhir_server, database_url, report_on_server
) -> None:
    # What is tested here is reading the fetched text, not the prefetch deadline (tested
    # elsewhere): a generous one keeps a busy CI machine from timing the fetch out.
    hooks = HookClient(make_app(prefetch_deadline_s=10.0).test_client(), mint)
    patient_id, report_id, text = report_on_server

    body = {
        "hook": "patient-view",
        "hookInstance": str(uuid.uuid4()),
        "context": {"userId": "Practitioner/example", "patientId": patient_id},
        "fhirServer": fhir_server.base_url,
        "fhirAuthorization": fhir_authorization(fhir_server.token),
    }
    response = hooks.call(SERVICE_ID, body)
    assert response.status_code == 200, response.json
    cards = [c for c in response.json["cards"] if "neumothorax" in c["summary"]]
    assert len(cards) == 1, (response.json, rows_of(database_url, Invocation)[-1].prefetch_fetched)
    card = Card.model_validate(cards[0])
    assert card.indicator in ("critical", "warning")
    link, model_card = card.links or []
    assert link.url == f"{fhir_server.base_url}/DiagnosticReport/{report_id}"
    assert model_card.url == f"{BASE_URL}/models/{MODEL_ID}/"
    quoted = card.detail.split("\n\n")[0].removeprefix("> ")  # type: ignore[union-attr]
    assert " ".join(quoted.split()).replace("\\", "") in " ".join(text.split())

    assert verify(database_url).ok
    (invocation,) = rows_of(database_url, Invocation)
    sources = {e["key"]: e["source"] for e in invocation.prefetch_fetched}
    assert sources["reports"] == "fetched" and sources["documents"] == "fetched"
    results = [r.result for r in rows_of(database_url, AuditCard) if r.uuid == card.uuid]
    assert results[0]["basis"] == [f"DiagnosticReport/{report_id}"]
    assert results[0]["code"] == {
        "system": "http://snomed.info/sct",
        "code": "36118008",
        "display": "Pneumothorax",
    }
