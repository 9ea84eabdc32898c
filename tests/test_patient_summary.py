"""The built-in patient-view service, end to end, on real Synthea patients."""

from __future__ import annotations

import copy
from datetime import date

from cds.audit import verify_chain
from cds.cards import Card
from cds.demo import patient_view_request
from cds.hook_request import parse_hook_request
from cds.services import BUILT_IN_SERVICES
from cds.services.patient_summary import SERVICE, summarise
from cds.services.registry import HookCall
from fhir_adapters import build_patient_context
from tests.conftest import synthea_bundles


def test_synthea_patient_gets_a_spec_valid_summary_card(hooks, patient_view_request, app):
    response = hooks.call("patient-summary", patient_view_request)
    assert response.status_code == 200, response.json
    cards = response.json["cards"]
    assert len(cards) == 1
    card = Card.model_validate(cards[0])  # round-trips through the strict model
    assert card.indicator == "info"
    assert card.source.label == "Wardround patient summary"
    assert len(card.summary) < 140
    assert "systemActions" not in response.json  # optional and empty: omitted, never null

    with app.extensions["wardround.sessions"]() as session:
        result = verify_chain(session)
    assert result.ok and result.rows == 2  # invocation + card


def _call(request: dict, today: date | None = None) -> HookCall:
    hook_request, context = parse_hook_request(request, "patient-view")
    prefetch = hook_request.prefetch or {}
    unavailable = {key: "not-fetchable" for key in SERVICE.prefetch if key not in prefetch}
    patient = build_patient_context(
        prefetch, context.patientId, unavailable=unavailable, today=today
    )
    return HookCall(request=hook_request, context=context, patient=patient, prefetch=prefetch)


def test_every_shared_synthea_patient_is_summarised():
    """All 300 shared patients parse with fhir.resources R4B and yield one valid card."""
    for bundle in synthea_bundles():
        request = patient_view_request(bundle)
        result = summarise(_call(request, today=date(2026, 11, 25)))
        assert len(result.cards) == 1, bundle.name
        summary = result.cards[0].summary
        conditions = {
            e["resource"]["code"]["text"] for e in request["prefetch"]["conditions"]["entry"]
        }
        assert f"{len(conditions)} active problems" in summary, bundle.name


def test_age_and_counts_are_computed_from_the_record(patient_view_request):
    request = copy.deepcopy(patient_view_request)
    patient = request["prefetch"]["patient"]
    patient["birthDate"] = "1970-11-26"
    patient["gender"] = "female"
    patient.pop("deceasedDateTime", None)
    result = summarise(_call(request, today=date(2026, 11, 25)))
    assert result.cards[0].summary.startswith("Female, 55 y: ")


def test_missing_optional_prefetch_is_said_not_guessed(patient_view_request):
    request = copy.deepcopy(patient_view_request)
    del request["prefetch"]["medications"]
    request["prefetch"]["conditions"] = None  # EHR looked: no data
    result = summarise(_call(request))
    assert "0 active problems, active medications: not available" in result.cards[0].summary


def test_null_patient_prefetch_means_no_card(hooks, patient_view_request):
    patient_view_request["prefetch"]["patient"] = None
    response = hooks.call("patient-summary", patient_view_request)
    assert response.status_code == 200
    assert response.json == {"cards": []}


def test_discovery_is_generated_from_the_registry(client, mint):
    response = client.get(
        "/cds-services", headers={"Authorization": f"Bearer {mint('/cds-services')}"}
    )
    assert response.status_code == 200
    assert response.json == {"services": [s.discovery_entry() for s in BUILT_IN_SERVICES]}
    entry = response.json["services"][0]
    assert entry["hook"] == "patient-view" and entry["id"] == "patient-summary"
    assert entry["prefetch"]["patient"] == "Patient/{{context.patientId}}"
    assert {"title", "description", "usageRequirements"} <= entry.keys()
