"""Done-when: after replaying shared Synthea patients through the hooks, a reviewer finds
every card within three clicks, and the FHIR API returns the same facts as the page.

Both sides are read as a client would read them (HTML of /review, JSON of /fhir) and
reduced to the same plain facts per call, then compared; on SQLite and PostgreSQL.
"""

from __future__ import annotations

import base64
import json
import os
from typing import Any

from bs4 import BeautifulSoup

from cds.replay import replay
from tests.compliance.conftest import Fhir, poster
from tests.compliance.fhir_checks import check_resource
from tests.compliance.review_client import Reviewer
from tests.conftest import HookClient, synthea_bundles

#: Patients replayed (``WARDROUND_REPLAY_PATIENTS=299`` compares every shared patient).
PATIENTS = int(os.environ.get("WARDROUND_REPLAY_PATIENTS", "6"))
PRIORITY = {"info": "routine", "warning": "urgent", "critical": "stat"}


def page_facts(page: BeautifulSoup) -> dict[str, Any]:
    fields = {
        dd["data-field"]: dd.get_text(" ", strip=True) for dd in page.select("dd[data-field]")
    }
    cards = []
    for article in page.select("article.cds-card"):
        feedback = [
            (e["data-outcome"], e.get("data-reason")) for e in article.select(".feedback-entry")
        ]
        cards.append({
            "uuid": article["data-card"],
            "summary": article.select_one("h3.summary").get_text(strip=True),
            "indicator": article["data-indicator"],
            "result": article.get("data-result"),
            "feedback": feedback,
        })  # fmt: skip
    return {
        "service": fields["service"],
        "hook": fields["hook"],
        "hook_instance": fields["hook-instance"],
        "patient": fields["patient"],
        "user": fields["user"],
        "status": fields["status"].split()[0],
        "digest": fields["request-digest"].split()[0],
        "models": [
            (m["data-model"], m["data-version"], m["data-hash"] or None)
            for m in page.select("tr.model")
        ],
        "cards": cards,
    }


def _detail(entity: dict[str, Any], kind: str) -> str | None:
    return next((d.get("valueString") for d in entity.get("detail", []) if d["type"] == kind), None)


def fhir_facts(fhir: Fhir, seq: int) -> dict[str, Any]:
    event = fhir.get(f"/fhir/AuditEvent/inv-{seq}").get_json()
    check_resource(event)
    subtypes = {s["system"]: s["code"] for s in event["subtype"]}
    user = next(a for a in event["agent"] if a["requestor"])["who"]["reference"]
    entities = event["entity"]
    patient = next(e for e in entities if e.get("role", {}).get("code") == "1")
    request = next(e for e in entities if e.get("role", {}).get("code") == "24")
    models = [
        e
        for e in entities
        if e["what"].get("identifier", {}).get("system") == "urn:wardround:model"
    ]
    card_entities = [e for e in entities if e.get("name")]
    response = fhir.get(f"/fhir/GuidanceResponse/inv-{seq}").get_json()
    check_resource(response)
    group = next(c for c in response["contained"] if c["resourceType"] == "RequestGroup")
    actions = {a["id"]: a for a in group.get("action", [])}
    cards = []
    for entity in card_entities:
        uuid = entity["what"]["identifier"]["value"]
        exact = json.loads(base64.b64decode(next(
            d["valueBase64Binary"] for d in entity["detail"] if d["type"] == "card-json"
        )))  # fmt: skip
        assert exact["uuid"] == uuid and exact["summary"] == entity["name"]
        assert actions[uuid]["title"] == entity["name"]
        assert actions[uuid]["priority"] == PRIORITY[_detail(entity, "indicator")]
        reference = entity["what"].get("reference")
        if reference:
            check_resource(fhir.get(f"/fhir/{reference}").get_json())
        feedback = []
        for fb in fhir.everything(
            f"/fhir/AuditEvent?subtype=cds-feedback&entity:identifier=urn:wardround:card|{uuid}"
            "&_sort=date"
        ):
            card_entity = next(e for e in fb["entity"] if e.get("detail"))
            reason = _detail(card_entity, "overrideReason")
            feedback.append(
                (_detail(card_entity, "outcome"), reason.split("|")[1] if reason else None)
            )
        cards.append({
            "uuid": uuid,
            "summary": entity["name"],
            "indicator": _detail(entity, "indicator"),
            "result": reference,
            "feedback": feedback,
        })  # fmt: skip
    return {
        "service": subtypes["urn:wardround:cds-service"],
        "hook": subtypes["https://cds-hooks.org/hooks"],
        "hook_instance": request["what"]["identifier"]["value"].removeprefix("urn:uuid:"),
        "patient": patient["what"]["reference"].removeprefix("Patient/"),
        "user": user,
        "status": "200" if event["outcome"] == "0" else event["outcomeDesc"].split()[1],
        "digest": _detail(request, "request-sha256"),
        "models": [
            (m["what"]["identifier"]["value"], _detail(m, "version"), _detail(m, "artifact-sha256"))
            for m in models
        ],
        "cards": cards,
    }


def all_calls(reviewer: Reviewer) -> list[int]:
    """Every call's seq, page after page of the review list."""
    seqs: list[int] = []
    path: str | None = "/review/?size=200"
    while path:
        page = reviewer.page(path)
        seqs += [int(row["data-seq"]) for row in page.select("tr.call")]
        older = page.select_one("a#older")
        path = older["href"] if older else None
    return seqs


def test_the_page_and_the_fhir_api_give_the_same_facts(
    hooks: HookClient, reviewer: Reviewer, fhir: Fhir
):
    stats = replay(synthea_bundles()[:PATIENTS], poster(hooks))
    assert stats.calls == 2 * PATIENTS and stats.cards > PATIENTS

    calls = all_calls(reviewer)
    assert len(calls) == stats.calls
    compared_cards = 0
    for seq in calls:
        on_page = page_facts(reviewer.page(f"/review/calls/{seq}"))
        over_fhir = fhir_facts(fhir, seq)
        assert on_page == over_fhir, seq
        compared_cards += len(on_page["cards"])
    assert compared_cards == stats.cards


def test_any_card_is_three_clicks_away(hooks: HookClient, reviewer: Reviewer):
    """1: search by patient, 2: the card's link in the call's row, 3: (none needed) the
    card is on the page that opens, at its anchor."""
    stats = replay(synthea_bundles()[:PATIENTS], poster(hooks))
    found = 0
    for seq in all_calls(reviewer):
        patient = (
            reviewer.page(f"/review/calls/{seq}").select_one("dd[data-field=patient]").get_text()
        )
        listing = reviewer.page(f"/review/?patient={patient}")  # click 1: Search
        row = listing.select_one(f"tr.call[data-seq='{seq}']")
        for link in row.select("a.card-link"):  # click 2: the card in the row
            path, anchor = link["href"].split("#")
            detail = reviewer.page(path)
            card = detail.select_one(f"#{anchor}")
            assert card is not None and card["data-card"] == link["data-card"]
            assert card.select_one("h3.summary").get_text(strip=True) == link.get_text(strip=True)
            found += 1
    assert found == stats.cards
