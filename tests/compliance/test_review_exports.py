"""Exports of the review page's filter (SQLite and PostgreSQL): CSV, NDJSON and a FHIR
Bundle of AuditEvents, streamed, recorded before they start, pinned to the chain head."""

from __future__ import annotations

import csv
import io
import json

import pytest
from flask import Flask

from cds.audit.tables import Access
from cds.replay import ReplayStats
from cds.review.exports import CSV_COLUMNS
from cds.review.queries import EXPORT_CHUNK
from tests.compliance.conftest import write_call
from tests.compliance.fhir_checks import check_bundle, check_resource
from tests.compliance.review_client import Reviewer
from tests.compliance.test_fhir_api import ISSUE, RISK
from tests.test_audit_log import rows_of


def test_csv_has_one_row_per_card_with_its_feedback(
    reviewer: Reviewer,
    replayed: ReplayStats,
    database_url: str,
):
    response = reviewer.client.get("/review/export.csv?service=drug-safety-sign")
    assert response.status_code == 200 and response.mimetype == "text/csv"
    assert response.is_streamed
    assert "attachment" in response.headers["Content-Disposition"]
    rows = list(csv.DictReader(io.StringIO(response.get_data(as_text=True))))
    assert list(rows[0]) == list(CSV_COLUMNS)
    assert {r["card_uuid"]: r["feedback_outcome"] or None for r in rows} == replayed.outcomes
    overridden = [r for r in rows if r["feedback_outcome"] == "overridden"]
    assert all(r["override_comment"] == "replayed: reviewed with the patient" for r in overridden)
    assert all(r["models"].startswith("drug-safety@1.0.0+kb.") for r in rows)
    [export] = [r for r in rows_of(database_url, Access) if r.action == "export-csv"]
    calls = {r["call_seq"] for r in rows}
    assert export.result_count == len(calls) and export.query["service"] == ["drug-safety-sign"]


def test_csv_cells_cannot_become_formulas(reviewer: Reviewer, app: Flask):
    write_call(app, [ISSUE], patient_id='=HYPERLINK("http://evil")')
    rows = list(
        csv.reader(io.StringIO(reviewer.client.get("/review/export.csv").get_data(as_text=True)))
    )
    patient = rows[1][CSV_COLUMNS.index("patient")]
    assert patient.startswith("'=")


def test_ndjson_and_bundle_hold_valid_audit_events(
    reviewer: Reviewer,
    replayed: ReplayStats,
):
    lines = reviewer.client.get("/review/export.ndjson").get_data(as_text=True).splitlines()
    events = [json.loads(line) for line in lines]
    for event in events:
        check_resource(event)
    assert len(events) == replayed.calls + replayed.feedback
    assert [e["id"] for e in events if e["id"].startswith("inv-")] == sorted(
        (e["id"] for e in events if e["id"].startswith("inv-")), key=lambda i: int(i[4:])
    )
    bundle_response = reviewer.client.get("/review/export.json")
    assert bundle_response.mimetype == "application/fhir+json" and bundle_response.is_streamed
    bundle = json.loads(bundle_response.get_data(as_text=True))
    assert bundle["type"] == "collection"
    assert check_bundle(bundle) == events


def test_an_empty_export_is_still_valid(reviewer: Reviewer):
    bundle = json.loads(reviewer.client.get("/review/export.json?patient=nobody").get_data())
    check_bundle(bundle)
    assert "entry" not in bundle
    assert reviewer.client.get("/review/export.ndjson?patient=nobody").get_data() == b""


@pytest.mark.parametrize("kind", ["csv", "json"])
def test_an_export_streams_only_what_existed_when_it_began(
    reviewer: Reviewer, app: Flask, kind: str
):
    # more calls than one chunk (EXPORT_CHUNK): the late one would otherwise be in a later one
    first = [write_call(app, [RISK], patient_id="stream").seq for _ in range(EXPORT_CHUNK + 10)]
    response = reviewer.client.get(f"/review/export.{kind}?patient=stream", buffered=False)
    chunks = iter(response.response)
    head = next(chunks)
    late = write_call(app, [RISK], patient_id="stream")  # arrives while the export streams
    body = (head if isinstance(head, str) else head.decode()) + "".join(
        c if isinstance(c, str) else c.decode() for c in chunks
    )
    response.close()
    assert f"inv-{late.seq}" not in body and f"\r\n{late.seq}," not in body
    for seq in (first[0], first[-1]):
        assert f"inv-{seq}" in body or f"\r\n{seq}," in body
