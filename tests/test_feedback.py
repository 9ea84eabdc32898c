"""CDS Hooks 2.0 feedback: stored against the audited card, never silently dropped."""

from __future__ import annotations

import uuid
from typing import Any

import pytest
from sqlalchemy import func, select

from cds.audit import verify_chain
from cds.audit.tables import Feedback

REASON = {
    "system": "http://example.org/override-reasons",
    "code": "pt-declined",
    "display": "Patient declined",
}


def _card(hooks, patient_view_request) -> dict[str, Any]:  # type: ignore[no-untyped-def]
    response = hooks.call("patient-summary", patient_view_request)
    assert response.status_code == 200
    return response.json["cards"][0]


def _count(app) -> int:  # type: ignore[no-untyped-def]
    with app.extensions["wardround.sessions"]() as session:
        return session.scalar(select(func.count()).select_from(Feedback))


def overridden(card_uuid: str, **extra: Any) -> dict[str, Any]:
    return {
        "card": card_uuid,
        "outcome": "overridden",
        "overrideReason": {"reason": REASON, "userComment": "discussed with patient"},
        "outcomeTimestamp": "2026-11-25T10:00:00Z",
    } | extra


def test_override_feedback_is_stored_and_chained(hooks, patient_view_request, app):
    card = _card(hooks, patient_view_request)
    response = hooks.feedback("patient-summary", {"feedback": [overridden(card["uuid"])]})
    assert response.status_code == 200
    with app.extensions["wardround.sessions"]() as session:
        row = session.scalars(select(Feedback)).one()
        assert row.card_uuid == card["uuid"]
        assert row.outcome == "overridden"
        assert row.override_reason == {"reason": REASON, "userComment": "discussed with patient"}
        assert row.client_iss == "https://ehr.test"
        assert verify_chain(session).ok


def test_several_entries_in_one_request_are_all_stored(hooks, patient_view_request, app):
    cards = [_card(hooks, patient_view_request)["uuid"] for _ in range(3)]
    body = {"feedback": [overridden(c) for c in cards]}
    assert hooks.feedback("patient-summary", body).status_code == 200
    assert _count(app) == 3


def test_feedback_on_unknown_card_is_404_and_nothing_is_stored(hooks, patient_view_request, app):
    known = _card(hooks, patient_view_request)["uuid"]
    unknown = str(uuid.uuid4())
    body = {"feedback": [overridden(known), overridden(unknown)]}
    response = hooks.feedback("patient-summary", body)
    assert response.status_code == 404
    assert response.json["error"] == "unknown_card"
    assert response.json["cards"] == [unknown]
    assert _count(app) == 0  # all or nothing: the known entry was not stored either


def test_feedback_on_another_services_card_is_404(hooks, patient_view_request):
    card = _card(hooks, patient_view_request)
    response = hooks.feedback("no-such-service", {"feedback": [overridden(card["uuid"])]})
    assert response.status_code == 404


def test_accepted_needs_accepted_suggestions(hooks, patient_view_request):
    """cds-fb-2."""
    card = _card(hooks, patient_view_request)
    entry = {
        "card": card["uuid"],
        "outcome": "accepted",
        "outcomeTimestamp": "2026-11-25T10:00:00Z",
    }
    response = hooks.feedback("patient-summary", {"feedback": [entry]})
    assert response.status_code == 400
    assert response.json["field"] == "feedback.0.acceptedSuggestions"


def test_accepted_suggestion_must_belong_to_the_card(hooks, patient_view_request, app):
    card = _card(hooks, patient_view_request)  # the summary card offers no suggestions
    entry = {
        "card": card["uuid"],
        "outcome": "accepted",
        "acceptedSuggestions": [{"id": str(uuid.uuid4())}],
        "outcomeTimestamp": "2026-11-25T10:00:00Z",
    }
    response = hooks.feedback("patient-summary", {"feedback": [entry]})
    assert response.status_code == 400
    assert response.json["field"] == "feedback.0.acceptedSuggestions.0.id"
    assert _count(app) == 0


@pytest.mark.parametrize(
    ("entry_changes", "field"),
    [
        ({"outcome": "ignored"}, "feedback.0.outcome"),
        ({"card": "not-a-uuid"}, "feedback.0.card"),
        ({"outcomeTimestamp": "yesterday"}, "feedback.0.outcomeTimestamp"),
        ({"outcomeTimestamp": "2026-11-25T10:00:00"}, "feedback.0.outcomeTimestamp"),  # no zone
        ({"overrideReason": {}}, "feedback.0.overrideReason"),  # cds-fb-3
        ({"overrideReason": {"reason": {"code": "x"}}}, "feedback.0.overrideReason.reason.system"),
        ({"acceptedSuggestions": [{"id": str(uuid.uuid4())}]}, "feedback.0.acceptedSuggestions"),
    ],
)
def test_invalid_feedback_is_400_naming_the_field(
    hooks, patient_view_request, entry_changes, field
):
    card = _card(hooks, patient_view_request)
    response = hooks.feedback(
        "patient-summary", {"feedback": [overridden(card["uuid"], **entry_changes)]}
    )
    assert response.status_code == 400
    assert response.json["field"] == field


@pytest.mark.parametrize("body", [{}, {"feedback": []}, {"feedback": {}}, []])
def test_feedback_envelope_is_checked(hooks, body):
    assert hooks.feedback("patient-summary", body).status_code == 400


def test_override_with_comment_only_is_accepted(hooks, patient_view_request, app):
    card = _card(hooks, patient_view_request)
    entry = overridden(card["uuid"], overrideReason={"userComment": "not relevant today"})
    assert hooks.feedback("patient-summary", {"feedback": [entry]}).status_code == 200
    assert _count(app) == 1
