"""Report and note text through the real FHIR server: inline, and a Binary fetched by url."""

from __future__ import annotations

import base64
import csv
import html
import uuid
from concurrent.futures import ThreadPoolExecutor

import pytest

from fhir_adapters import (
    PATIENT_CONTEXT_PREFETCH,
    ClientSettings,
    FhirSource,
    PatientLoader,
    PatientRequest,
    PrefetchFetcher,
    SessionPool,
)
from tests.conftest import SHARED_DATA

pytestmark = pytest.mark.fhir_server


def _iu_report(index: int) -> str:
    """Findings and impression of a real IU chest X-ray report (read at test time only)."""
    path = SHARED_DATA / "iu-xray-reports" / "reports.csv"
    if not path.is_file():
        pytest.skip(f"IU X-ray reports missing at {path}")
    with path.open(newline="", encoding="utf-8") as handle:
        rows = [r for r in csv.DictReader(handle) if r["findings"] and r["impression"]]
    row = rows[index]
    return f"FINDINGS: {row['findings']}\n\nIMPRESSION: {row['impression']}"


def _put(fhir_server, resource: dict) -> None:
    response = fhir_server.request("PUT", f"{resource['resourceType']}/{resource['id']}", resource)
    assert response.status_code in (200, 201), response.text


def test_report_texts_inline_and_by_binary_url_reach_the_patient_context(fhir_server):
    patient_id = fhir_server.patient_ids[7]
    inline_text, binary_text = _iu_report(0), _iu_report(1)
    binary_id, report_id, document_id = (str(uuid.uuid4()) for _ in range(3))
    _put(
        fhir_server,
        {
            "resourceType": "Binary",
            "id": binary_id,
            "contentType": "text/plain; charset=utf-8",
            "data": base64.b64encode(binary_text.encode()).decode(),
        },
    )
    _put(
        fhir_server,
        {
            "resourceType": "DiagnosticReport",
            "id": report_id,
            "status": "final",
            "code": {"text": "XR Chest 2 views"},
            "subject": {"reference": f"Patient/{patient_id}"},
            "effectiveDateTime": "2030-01-02T10:00:00Z",
            "presentedForm": [
                {
                    "contentType": "text/html",
                    "data": base64.b64encode(
                        f"<html><body><p>{html.escape(inline_text)}</p><script>x()</script></body></html>".encode()
                    ).decode(),
                }
            ],
        },
    )
    _put(
        fhir_server,
        {
            "resourceType": "DocumentReference",
            "id": document_id,
            "status": "current",
            "type": {"text": "Radiology note"},
            "subject": {"reference": f"Patient/{patient_id}"},
            "date": "2030-01-01T10:00:00Z",
            "content": [
                {"attachment": {"contentType": "text/plain", "url": f"Binary/{binary_id}"}}
            ],
        },
    )
    pool = SessionPool(ClientSettings())
    with ThreadPoolExecutor(8) as executor:
        loader = PatientLoader(pool, PrefetchFetcher(executor, deadline_s=10.0))
        loaded = loader.load(
            PatientRequest(
                templates=PATIENT_CONTEXT_PREFETCH,
                required=frozenset({"patient"}),
                supplied=None,
                context={"patientId": patient_id, "userId": "Practitioner/x"},
                source=FhirSource(fhir_server.base_url, fhir_server.token),
            )
        )
    pool.close()
    texts = {(r.source, r.resource_id): r for r in loaded.patient.reports}
    from_report = texts[("DiagnosticReport", report_id)]
    from_binary = texts[("DocumentReference", document_id)]
    assert " ".join(inline_text.split()) in " ".join(from_report.text.split())
    assert "x()" not in from_report.text
    assert from_binary.text.strip() == binary_text.strip()
    assert from_report.code_text == "XR Chest 2 views"
    # Newest first.
    ordered = [r.resource_id for r in loaded.patient.reports]
    assert ordered.index(report_id) < ordered.index(document_id)
