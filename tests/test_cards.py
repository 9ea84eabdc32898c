"""Card models enforce CDS Hooks 2.0 and the HL7 IG's CDSHooksResponse invariants."""

from __future__ import annotations

import uuid
from typing import Any

import pytest
from pydantic import ValidationError

from cds.cards import Action, Card, CdsResponse, Coding, Link, Source, Suggestion

SOURCE = Source(label="Wardround test")
STATIN = {
    "resourceType": "MedicationRequest",
    "status": "draft",
    "intent": "proposal",
    "subject": {"reference": "Patient/123"},
    "medicationCodeableConcept": {
        "coding": [
            {
                "system": "http://www.nlm.nih.gov/research/umls/rxnorm",
                "code": "617311",
                "display": "atorvastatin 40 MG Oral Tablet",
            }
        ]
    },
}


def card(**fields: Any) -> Card:
    return Card(**({"summary": "Test", "indicator": "info", "source": SOURCE} | fields))


def test_minimal_card_json_has_no_empty_or_null_members():
    body = card().to_json()
    assert set(body) == {"uuid", "summary", "indicator", "source"}
    uuid.UUID(body["uuid"])


def test_every_card_and_suggestion_gets_a_distinct_uuid():
    suggestions = [Suggestion(label="a"), Suggestion(label="b")]
    a = card(suggestions=suggestions, selectionBehavior="any")
    b = card()
    assert a.uuid != b.uuid
    assert suggestions[0].uuid != suggestions[1].uuid


@pytest.mark.parametrize("length", [139])
def test_summary_under_140_characters_is_accepted(length):
    assert len(card(summary="x" * length).summary) == length


@pytest.mark.parametrize("summary", ["x" * 140, "x" * 500, ""])
def test_summary_of_140_or_more_or_empty_is_refused(summary):
    with pytest.raises(ValidationError):
        card(summary=summary)


@pytest.mark.parametrize("indicator", ["hard-stop", "success", "INFO", ""])
def test_indicator_must_be_info_warning_or_critical(indicator):
    with pytest.raises(ValidationError):
        card(indicator=indicator)


def test_source_label_is_required():
    with pytest.raises(ValidationError):
        Source(label="")
    with pytest.raises(ValidationError):
        Card(summary="s", indicator="info", source={})


def test_suggestions_require_selection_behavior():
    with pytest.raises(ValidationError, match="selectionBehavior is required"):
        card(suggestions=[Suggestion(label="Order statin")])


def test_at_most_one_allows_only_one_recommended_suggestion():
    """cds-resp-1."""
    two = [Suggestion(label="a", isRecommended=True), Suggestion(label="b", isRecommended=True)]
    with pytest.raises(ValidationError, match="cds-resp-1"):
        card(suggestions=two, selectionBehavior="at-most-one")
    assert card(suggestions=two, selectionBehavior="any").selectionBehavior == "any"


def test_create_action_resource_must_be_valid_fhir_r4():
    action = Action(type="create", description="Order atorvastatin", resource=STATIN)
    assert action.to_json()["resource"]["resourceType"] == "MedicationRequest"
    with pytest.raises(ValidationError):
        Action(type="create", description="x", resource=STATIN | {"status": ["draft"]})
    with pytest.raises(ValidationError, match="unknown FHIR resourceType"):
        Action(type="create", description="x", resource={"resourceType": "NotAResource"})
    with pytest.raises(ValidationError):
        Action(type="update", description="x")


def test_r5_only_shape_is_refused_as_r4():
    """R5's MedicationRequest.medication (CodeableReference) is not R4."""
    r5 = {k: v for k, v in STATIN.items() if k != "medicationCodeableConcept"}
    r5["medication"] = {"concept": {"text": "atorvastatin"}}
    with pytest.raises(ValidationError):
        Action(type="create", description="x", resource=r5)


def test_delete_action_carries_resource_id_not_resource():
    """cds-resp-2."""
    ok = Action(type="delete", description="Stop order", resourceId=["MedicationRequest/1"])
    assert ok.to_json() == {
        "type": "delete",
        "description": "Stop order",
        "resourceId": ["MedicationRequest/1"],
    }
    with pytest.raises(ValidationError, match="cds-resp-2"):
        Action(type="delete", description="x", resource=STATIN)
    with pytest.raises(ValidationError):
        Action(type="delete", description="x", resourceId=["http://x/MedicationRequest/1"])


def test_action_needs_a_description():
    """cds-resp-5."""
    with pytest.raises(ValidationError):
        Action(type="create", resource=STATIN)  # type: ignore[call-arg]


@pytest.mark.parametrize("action_type", ["remove", "CREATE", ""])
def test_action_type_is_create_update_or_delete(action_type):
    with pytest.raises(ValidationError):
        Action(type=action_type, description="x", resource=STATIN)


def test_override_reasons_are_codings_with_display():
    """cds-resp-4."""
    reason = Coding(system="http://example.org/reasons", code="no-benefit", display="No benefit")
    assert card(overrideReasons=[reason]).to_json()["overrideReasons"][0]["display"]
    with pytest.raises(ValidationError):
        Coding(system="http://example.org/reasons", code="x")  # type: ignore[call-arg]


def test_links_are_absolute_and_app_context_only_on_smart():
    """cds-resp-3."""
    smart = Link(label="App", url="https://app.example.org/launch", type="smart", appContext="x")
    assert card(links=[smart]).to_json()["links"][0]["appContext"] == "x"
    with pytest.raises(ValidationError, match="cds-resp-3"):
        Link(label="Doc", url="https://example.org", type="absolute", appContext="x")
    with pytest.raises(ValidationError, match="absolute"):
        Link(label="Doc", url="/relative/path", type="absolute")
    with pytest.raises(ValidationError):
        Link(label="Doc", url="https://example.org", type="relative")


def test_unknown_fields_are_refused():
    with pytest.raises(ValidationError):
        card(colour="red")


def test_response_always_has_cards_and_omits_empty_system_actions():
    assert CdsResponse().to_json() == {"cards": []}
    action = Action(type="create", description="x", resource=STATIN)
    assert CdsResponse(systemActions=[action]).to_json()["systemActions"][0]["type"] == "create"


def test_full_card_round_trips():
    full = card(
        detail="**Markdown** detail",
        indicator="warning",
        source=Source(
            label="s", url="https://example.org", topic=Coding(system="s", code="c", display="d")
        ),
        suggestions=[
            Suggestion(
                label="Order atorvastatin",
                isRecommended=True,
                actions=[Action(type="create", description="Order", resource=STATIN)],
            )
        ],
        selectionBehavior="at-most-one",
        overrideReasons=[Coding(system="s", code="c", display="d")],
        links=[Link(label="Guideline", url="https://example.org/g", type="absolute")],
    )
    assert Card.model_validate(full.to_json()) == full
