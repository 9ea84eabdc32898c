"""Drug-safety services end to end: real Synthea patients, a draft order, the real app.

Each case posts an ``order-sign`` (or ``order-select``) request whose prefetch holds a
shared Synthea patient's record and whose ``draftOrders`` holds the new order, and reads
the cards back as the EHR would (and the audit row).
"""

from __future__ import annotations

import copy
from datetime import UTC, datetime, timedelta
from functools import cache
from typing import Any

import pytest

from cds.audit.tables import Card as AuditCard
from cds.audit.tables import Invocation
from cds.cards import Card
from cds.demo import draft_medication_request, order_request
from fhir_adapters.synthea import load_bundle, resources_by_type
from models.drug import knowledge_sha256, model_version
from tests.conftest import synthea_bundles
from tests.test_audit_log import rows_of, verify

SIGN, SELECT = "drug-safety-sign", "drug-safety-select"
NAPROXEN = ("198014", "Naproxen 500 MG Oral Tablet")
VERAPAMIL = ("897718", "Verapamil Hydrochloride 40 MG")
AMOXICILLIN = ("308192", "Amoxicillin 500 MG Oral Tablet")
METFORMIN = ("860975", "24 HR Metformin hydrochloride 500 MG Extended Release Oral Tablet")
PERCOCET = ("1049221", "Acetaminophen 325 MG / oxyCODONE Hydrochloride 5 MG Oral Tablet")
AMLODIPINE = ("197361", "Amlodipine 5 MG Oral Tablet")
HL7 = "http://terminology.hl7.org/CodeSystem"


def _concept(system: str, code: str, display: str | None = None) -> dict[str, Any]:
    coding = {"system": system, "code": code} | ({"display": display} if display else {})
    return {"coding": [coding]}


@cache
def _patient_with_active(word: str):  # type: ignore[no-untyped-def]
    """The first shared Synthea patient with an active medication whose name holds ``word``."""
    for bundle in synthea_bundles():
        resources = resources_by_type(load_bundle(bundle))
        for med in resources.get("MedicationRequest", []):
            display = med["medicationCodeableConcept"]["coding"][0]["display"].lower()
            if med["status"] == "active" and word in display:
                return bundle, resources["Patient"][0]["id"]
    pytest.skip(f"no shared Synthea patient with active {word}")


@cache
def _patient_without_opioids_or_benzodiazepines():  # type: ignore[no-untyped-def]
    sedating = ("codone", "morphine", "fentanyl", "tramadol", "meperidine", "azepam", "alprazolam")
    for bundle in synthea_bundles():
        resources = resources_by_type(load_bundle(bundle))
        active = [
            m["medicationCodeableConcept"]["coding"][0]["display"].lower()
            for m in resources.get("MedicationRequest", [])
            if m["status"] == "active"
        ]
        if not any(word in name for name in active for word in sedating):
            return bundle, resources["Patient"][0]["id"]
    pytest.skip("every shared patient has an active opioid or benzodiazepine")


def _cards(hooks, service: str, body: dict[str, Any]) -> list[dict[str, Any]]:
    response = hooks.call(service, body)
    assert response.status_code == 200, response.json
    cards = response.json["cards"]
    for card in cards:
        Card.model_validate(card)  # spec-valid, IG invariants included
    return cards


def _one(cards: list[dict[str, Any]], *words: str) -> dict[str, Any]:
    matching = [c for c in cards if all(w.lower() in c["summary"].lower() for w in words)]
    assert len(matching) == 1, [c["summary"] for c in cards]
    return matching[0]


def test_warfarin_patient_ordering_naproxen(hooks, database_url):
    bundle, patient_id = _patient_with_active("warfarin")
    draft = draft_medication_request(patient_id, NAPROXEN, (1, "TAB"), (2, 1, "d"))
    cards = _cards(hooks, SIGN, order_request(bundle, "order-sign", [draft]))
    card = _one(cards, "warfarin", "naproxen")
    assert card["indicator"] in ("warning", "critical")
    assert "**Management**" in card["detail"] or "Management" in card["detail"]
    assert card["source"]["label"]
    assert cards.index(card) == 0 or cards[0]["indicator"] == "critical"
    [invocation] = rows_of(database_url, Invocation)
    assert invocation.model_versions == [
        {"id": "drug-safety", "version": model_version(), "hash": knowledge_sha256()}
    ]
    # The card's statement as data, in the same hash-chained row as the card.
    stored = {row.uuid: row.result for row in rows_of(database_url, AuditCard)}
    result = stored[card["uuid"]]
    assert result["kind"] == "detected-issue" and result["model"] == "drug-safety"
    assert result["code"]["code"] == "interaction"
    assert result["severity"] == {"critical": "high", "warning": "moderate"}[card["indicator"]]
    assert f"MedicationRequest/{draft['id']}" in result["implicated"]
    assert verify(database_url).ok


def test_digoxin_patient_ordering_verapamil(hooks):
    bundle, patient_id = _patient_with_active("digoxin")
    draft = draft_medication_request(patient_id, VERAPAMIL, (1, "TAB"), (3, 1, "d"))
    cards = _cards(hooks, SIGN, order_request(bundle, "order-sign", [draft]))
    card = _one(cards, "digoxin", "verapamil")
    assert card["indicator"] in ("warning", "critical")


@pytest.mark.parametrize(
    ("tablets", "every_hours", "mme", "indicator"),
    [(2, 6, 60, "warning"), (2, 3, 120, "critical")],
)
def test_oxycodone_acetaminophen_mme(hooks, tablets, every_hours, mme, indicator):
    bundle, patient_id = _patient_without_opioids_or_benzodiazepines()
    draft = draft_medication_request(
        patient_id, PERCOCET, (tablets, "TAB"), (1, every_hours, "h"), order_id="percocet-1"
    )
    cards = _cards(hooks, SIGN, order_request(bundle, "order-sign", [draft]))
    card = _one(cards, "MME")
    assert card["indicator"] == indicator
    assert f"{mme} MME" in card["summary"]
    assert "1.5" in card["detail"]  # the arithmetic is shown (oxycodone factor)
    naloxone = [
        a["resource"]
        for s in card.get("suggestions", [])
        for a in s["actions"]
        if a["type"] == "create"
    ]
    assert naloxone and "naloxone" in str(naloxone[0]).lower()
    if indicator == "critical":
        assert card["overrideReasons"]


def test_penicillin_allergy_and_amoxicillin(hooks):
    bundle, patient_id = _patient_without_opioids_or_benzodiazepines()
    body = order_request(
        bundle,
        "order-sign",
        [draft_medication_request(patient_id, AMOXICILLIN, (1, "TAB"), (3, 1, "d"), "amox-1")],
    )
    allergy = {
        "resourceType": "AllergyIntolerance",
        "id": "pen-allergy",
        "clinicalStatus": _concept(f"{HL7}/allergyintolerance-clinical", "active"),
        "verificationStatus": _concept(f"{HL7}/allergyintolerance-verification", "confirmed"),
        "type": "allergy",
        "category": ["medication"],
        "criticality": "high",
        "code": _concept("http://snomed.info/sct", "764146007", "Penicillin"),
        "patient": {"reference": f"Patient/{patient_id}"},
    }
    body["prefetch"]["allergies"] = {
        "resourceType": "Bundle",
        "type": "searchset",
        "entry": [{"resource": allergy}],
    }
    cards = _cards(hooks, SIGN, body)
    card = _one(cards, "penicillin", "amoxicillin")
    assert card["indicator"] == "critical"
    deletes = [a for s in card["suggestions"] for a in s["actions"] if a["type"] == "delete"]
    assert deletes[0]["resourceId"] == ["MedicationRequest/amox-1"]
    assert card["overrideReasons"]

    refuted = copy.deepcopy(body)
    entry = refuted["prefetch"]["allergies"]["entry"][0]["resource"]
    entry["verificationStatus"]["coding"][0]["code"] = "refuted"
    assert not [c for c in _cards(hooks, SIGN, refuted) if "penicillin" in c["summary"].lower()]


def test_metformin_at_egfr_25(hooks):
    bundle, patient_id = _patient_without_opioids_or_benzodiazepines()
    body = order_request(
        bundle, "order-sign", [draft_medication_request(patient_id, METFORMIN, (1, "TAB"))]
    )
    when = (datetime.now(UTC) - timedelta(days=3)).isoformat()
    egfr = {
        "resourceType": "Observation",
        "id": "egfr-25",
        "status": "final",
        "category": [_concept(f"{HL7}/observation-category", "laboratory")],
        "code": _concept("http://loinc.org", "33914-3", "eGFR (MDRD)"),
        "subject": {"reference": f"Patient/{patient_id}"},
        "effectiveDateTime": when,
        "valueQuantity": {
            "value": 25,
            "unit": "mL/min/{1.73_m2}",
            "system": "http://unitsofmeasure.org",
            "code": "mL/min/{1.73_m2}",
        },
    }
    body["prefetch"]["observations"]["entry"].append({"resource": egfr})
    cards = _cards(hooks, SIGN, body)
    card = _one(cards, "metformin")
    assert card["indicator"] == "critical"
    assert "25" in card["summary"] or "25" in card["detail"]


def test_nothing_wrong_is_silent(hooks):
    bundle, patient_id = _patient_without_opioids_or_benzodiazepines()
    draft = draft_medication_request(patient_id, AMLODIPINE, (1, "TAB"), (1, 1, "d"))
    cards = _cards(hooks, SIGN, order_request(bundle, "order-sign", [draft]))
    assert [c for c in cards if c["indicator"] != "info"] == []


def test_order_select_checks_the_selected_order(hooks):
    bundle, patient_id = _patient_with_active("warfarin")
    naproxen = draft_medication_request(patient_id, NAPROXEN, (1, "TAB"), (2, 1, "d"), "nap-1")
    amlodipine = draft_medication_request(patient_id, AMLODIPINE, (1, "TAB"), None, "aml-1")
    body = order_request(
        bundle, "order-select", [naproxen, amlodipine], ["MedicationRequest/nap-1"]
    )
    cards = _cards(hooks, SELECT, body)
    _one(cards, "warfarin", "naproxen")
    body["context"]["selections"] = ["MedicationRequest/aml-1"]
    body["hookInstance"] = "5b3a8c61-0e34-4cd5-9d5e-0d7f59a6e0a1"
    assert not [c for c in _cards(hooks, SELECT, body) if "warfarin" in c["summary"].lower()]


def test_an_unidentifiable_drug_is_said_not_skipped(hooks):
    bundle, patient_id = _patient_without_opioids_or_benzodiazepines()
    draft = draft_medication_request(patient_id, ("0000000", "Zyxoflam 10 MG Oral Tablet"))
    cards = _cards(hooks, SIGN, order_request(bundle, "order-sign", [draft]))
    card = _one(cards, "could not identify")
    assert card["indicator"] == "info"


def test_a_draft_order_that_is_not_fhir_is_a_400_naming_it(hooks):
    bundle, patient_id = _patient_without_opioids_or_benzodiazepines()
    draft = draft_medication_request(patient_id, AMLODIPINE)
    draft["status"] = 42
    response = hooks.call(SIGN, order_request(bundle, "order-sign", [draft]))
    assert response.status_code == 400
    assert response.json["field"] == "context.draftOrders.entry.0.resource"
