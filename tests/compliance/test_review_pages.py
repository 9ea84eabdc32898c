"""What the review page shows (SQLite and PostgreSQL): filters, paging, the detail of a
call, the summary figures, the hash chain's status; every view recorded first."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from typing import Any

from bs4 import BeautifulSoup
from flask import Flask
from sqlalchemy import text

from cds.audit.tables import Access, Invocation
from cds.replay import ReplayStats
from tests.compliance.conftest import write_call
from tests.compliance.review_client import Reviewer
from tests.compliance.test_fhir_api import ISSUE, RISK
from tests.test_audit_log import raw_sql, refused_inserts, rows_of


def call_rows(page: BeautifulSoup) -> list[int]:
    return [int(row["data-seq"]) for row in page.select("tr.call")]


def calls_of(database_url: str, **where: Any) -> list[int]:
    rows = rows_of(database_url, Invocation)
    return sorted(
        (r.seq for r in rows if all(getattr(r, k) == v for k, v in where.items())), reverse=True
    )


def test_filters_find_the_calls(
    reviewer: Reviewer, replayed: ReplayStats, app: Flask, database_url: str
):
    write_call(app, [RISK], patient_id="synthetic", models=[{"id": "risk-demo", "version": "2"}])
    everything = call_rows(reviewer.page("/review/"))
    assert everything == calls_of(database_url) and len(everything) == replayed.calls + 1
    patient = rows_of(database_url, Invocation)[0].patient_id
    assert call_rows(reviewer.page(f"/review/?patient={patient}")) == calls_of(
        database_url, patient_id=patient
    )
    assert call_rows(reviewer.page("/review/?service=drug-safety-sign")) == calls_of(
        database_url, service_id="drug-safety-sign"
    )
    critical = call_rows(reviewer.page("/review/?indicator=critical"))
    assert critical and set(critical) <= set(calls_of(database_url, service_id="drug-safety-sign"))
    accepted = call_rows(reviewer.page("/review/?outcome=accepted"))
    overridden = call_rows(reviewer.page("/review/?outcome=overridden"))
    silent = call_rows(reviewer.page("/review/?outcome=none"))
    assert (bool(accepted), bool(overridden)) == (
        "accepted" in replayed.outcomes.values(),
        "overridden" in replayed.outcomes.values(),
    )
    # calls whose cards got no feedback at all: the patient summaries and the synthetic one
    assert set(calls_of(database_url, service_id="patient-summary")) <= set(silent)
    assert call_rows(reviewer.page("/review/?model=risk-demo")) == [everything[0]]
    assert call_rows(reviewer.page("/review/?model=drug-safety")) == calls_of(
        database_url, service_id="drug-safety-sign"
    )
    today = datetime.now(UTC).date()
    assert call_rows(reviewer.page(f"/review/?date_from={today}&date_to={today}")) == everything
    tomorrow = today + timedelta(days=1)
    page = reviewer.page(f"/review/?date_from={tomorrow}")
    assert call_rows(page) == [] and page.select_one("p.empty")
    bad = reviewer.page("/review/?date_from=2026-13-40", status=400)
    assert "Bad filter" in bad.get_text()
    reviewer.page(f"/review/?date_from={today}&date_to={today - timedelta(days=2)}", status=400)
    reviewer.page("/review/?indicator=fatal", status=400)
    reviewer.page("/review/?patient=%3Cscript%3E", status=400)


def test_pages_cover_every_call_once_while_calls_arrive(reviewer: Reviewer, app: Flask):
    written = [write_call(app, [ISSUE], patient_id="pager").seq for _ in range(30)]
    seen: list[int] = []
    page = reviewer.page("/review/?patient=pager&size=25")
    while True:
        seen += call_rows(page)
        write_call(app, [ISSUE], patient_id="pager")
        older = page.select_one("a#older")
        if older is None:
            break
        page = reviewer.page(older["href"])
    assert seen == list(reversed(written))


def test_detail_shows_what_the_clinician_saw_and_did(
    reviewer: Reviewer, replayed: ReplayStats, app: Flask, database_url: str
):
    overridden = next(u for u, o in replayed.outcomes.items() if o == "overridden")
    found = reviewer.client.get(f"/review/cards/{overridden}")
    assert found.status_code == 302 and found.location.endswith(f"#card-{overridden}")
    page = reviewer.page(found.location.split("#")[0])
    invocation = next(
        r
        for r in rows_of(database_url, Invocation)
        if r.seq == int(page.select_one("#call")["data-seq"])
    )
    facts = {dd["data-field"]: dd.get_text(" ", strip=True) for dd in page.select("dd[data-field]")}
    assert facts["request-digest"].startswith(invocation.request_digest)
    assert facts["hook-instance"] == invocation.hook_instance
    assert facts["patient"] == invocation.patient_id
    assert facts["user"] == invocation.user_id
    assert facts["latency"] == f"{invocation.latency_ms:.1f} ms"
    prefetch = {
        row["data-key"]: (row["data-source"], row.select("td")[1].get_text())
        for row in page.select("tr.prefetch-key")
    }
    assert prefetch == {
        entry["key"]: (entry["source"], "yes" if entry["key"] in invocation.prefetch_used else "no")
        for entry in invocation.prefetch_fetched
    }
    models = [(m["data-model"], m["data-version"], m["data-hash"]) for m in page.select("tr.model")]
    assert models == [(m["id"], m["version"], m.get("hash", "")) for m in invocation.model_versions]
    card = page.select_one(f"#card-{overridden}")
    entry = card.select_one(".feedback-entry")
    assert entry["data-outcome"] == "overridden"
    assert (
        entry.select_one(".override-reason").get_text()
        == "Benefit outweighs the risk for this patient"
    )
    assert "replayed: reviewed with the patient" in entry.select_one(".override-comment").get_text()
    assert card.select_one(".detail")  # the card's markdown detail, rendered
    assert reviewer.client.get("/review/cards/not-a-uuid").status_code == 404
    assert reviewer.client.get("/review/calls/999999").status_code == 404


def test_card_markdown_cannot_inject_html(reviewer: Reviewer, app: Flask):
    from cds.audit import CardRecord

    hostile = {
        "uuid": "11111111-2222-4333-8444-555555555555",
        "summary": "<img src=x onerror=alert(1)>",
        "indicator": "warning",
        "source": {"label": "x", "url": "javascript:alert(1)"},
        "detail": "<script>alert(1)</script> [click](javascript:alert(2)) **ok**",
    }
    invocation = Invocation(
        received_at=datetime.now(UTC), service_id="x", request_digest="0" * 64,
        prefetch_used=[], prefetch_fetched=[], model_versions=[], status_code=200, latency_ms=1.0,
    )  # fmt: skip
    app.extensions["wardround.audit"].record_invocation(
        invocation, [CardRecord(hostile["uuid"], hostile["summary"], "warning", hostile)]
    )
    html = reviewer.client.get(f"/review/calls/{invocation.seq}").get_data(as_text=True)
    assert "<script>" not in html and "<img" not in html
    assert 'href="javascript:' not in html
    assert "&lt;script&gt;" in html and "<strong>ok</strong>" in html


def test_summary_figures_match_the_calls(reviewer: Reviewer, replayed: ReplayStats):
    page = reviewer.page("/review/summary")
    rows = {row["data-service"]: row for row in page.select("#rates-per-service tr[data-service]")}
    drug = rows["drug-safety-sign"]
    outcomes = list(replayed.outcomes.values())
    assert int(drug["data-cards"]) == len(outcomes)
    assert int(drug["data-accepted"]) == outcomes.count("accepted")
    assert int(drug["data-overridden"]) == outcomes.count("overridden")
    assert int(rows["patient-summary"]["data-cards"]) == replayed.patients
    per_type = page.select("#rates-per-type tr[data-service='drug-safety-sign']")
    assert sum(int(r["data-cards"]) for r in per_type) == len(outcomes)
    assert "opioid" in {r["data-type"] for r in per_type}
    bars = page.select("svg[data-chart='cards-per-day'] rect[data-count]")
    assert sum(int(b["data-count"]) for b in bars) == replayed.cards
    assert page.select("svg[data-chart='per-service'] rect[data-rate]")
    assert "30 days" in page.get_text() or "the last 30 days" in page.get_text()


def test_every_view_is_recorded_with_its_filter(reviewer: Reviewer, app: Flask, database_url: str):
    call = write_call(app, [ISSUE], patient_id="watched")
    reviewer.page("/review/?patient=watched&indicator=warning")
    reviewer.page(f"/review/calls/{call.seq}")
    reviewer.page("/review/summary?patient=watched")
    page, detail, summary = rows_of(database_url, Access)[-3:]
    assert (page.action, page.query, page.patient_id, page.result_count) == (
        "page", {"patient": ["watched"], "indicator": ["warning"]}, "watched", 1,
    )  # fmt: skip
    assert (page.principal_id, page.channel, page.grants) == (
        "alice", "review", ["role:auditor", "role:reviewer"],
    )  # fmt: skip
    assert (detail.action, detail.target, detail.patient_id) == (
        "detail", f"GuidanceResponse/inv-{call.seq}", "watched",
    )  # fmt: skip
    assert (summary.action, summary.patient_id, summary.result_count) == ("summary", "watched", 1)


def test_a_view_that_cannot_be_recorded_is_not_shown(
    reviewer: Reviewer, app: Flask, database_url: str
):
    call = write_call(app, [ISSUE], patient_id="hidden-patient")
    with refused_inserts(database_url, "audit_access"):
        for path in ("/review/?patient=hidden-patient", f"/review/calls/{call.seq}",
                     "/review/export.csv"):  # fmt: skip
            response = reviewer.client.get(path)
            assert response.status_code == 503, path
            assert "hidden-patient" not in response.get_data(as_text=True)


def test_the_chain_status_is_on_every_page_and_catches_tampering(
    reviewer: Reviewer, app: Flask, database_url: str
):
    call = write_call(app, [ISSUE, RISK], patient_id="chain")
    status = reviewer.page("/review/").select_one("#chain-status")
    assert status["data-ok"] == "True"
    assert int(status["data-verified-seq"]) >= call.seq + 2
    assert "verified up to row" in status.get_text()
    with raw_sql(database_url) as sql:
        sql.execute(
            text("UPDATE audit_card SET summary = 'edited' WHERE seq = :s"), {"s": call.seq + 1}
        )
    monitor = app.extensions["wardround.chain_monitor"]
    monitor._last_full = float("-inf")  # a full walk is due (normally every 15 minutes)
    monitor.refresh()
    status = reviewer.page("/review/summary").select_one("#chain-status")
    assert status["data-ok"] == "False"
    assert int(status["data-broken-seq"]) == call.seq + 1
    assert "BROKEN" in status.get_text() and "audit_card" in status.get_text()
