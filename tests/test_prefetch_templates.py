"""Prefetch template rendering (CDS Hooks 2.0 §Prefetch tokens)."""

from __future__ import annotations

import pytest

from fhir_adapters.prefetch import TemplateError, is_read, render_template

CONTEXT = {
    "userId": "PractitionerRole/role-7",
    "patientId": "pat-1",
    "encounterId": "enc 9",
    "draftOrders": {"resourceType": "Bundle"},
}


@pytest.mark.parametrize(
    ("template", "rendered"),
    [
        ("Patient/{{context.patientId}}", "Patient/pat-1"),
        (
            "Observation?patient={{context.patientId}}&code=http://loinc.org|4548-4",
            "Observation?patient=pat-1&code=http://loinc.org|4548-4",
        ),
        ("Encounter/{{context.encounterId}}", "Encounter/enc%209"),  # values are URL-encoded
        ("PractitionerRole/{{userPractitionerRoleId}}", "PractitionerRole/role-7"),
        ("{{context.userId}}", "PractitionerRole%2Frole-7"),
        ("Patient/{{ context.patientId }}", "Patient/pat-1"),
    ],
)
def test_tokens_are_filled(template, rendered):
    assert render_template(template, CONTEXT) == rendered


@pytest.mark.parametrize(
    "template",
    [
        "Practitioner/{{userPractitionerId}}",  # the user is a PractitionerRole
        "Patient/{{userPatientId}}",
        "Bundle/{{context.draftOrders}}",  # not a primitive: not a token
        "Encounter/{{context.appointmentId}}",  # not in this context
        "Patient/{{patientId}}",  # unknown token
    ],
)
def test_a_token_without_a_value_is_refused_not_guessed(template):
    with pytest.raises(TemplateError):
        render_template(template, CONTEXT)


def test_practitioner_user_token():
    context = CONTEXT | {"userId": "Practitioner/doc-1"}
    assert render_template("Practitioner/{{userPractitionerId}}", context) == "Practitioner/doc-1"


@pytest.mark.parametrize(
    ("url", "read"),
    [
        ("Patient/123", True),
        ("Patient?_id=123", False),
        ("Observation?patient=1&_count=5", False),
        ("Patient/123/_history/2", False),
    ],
)
def test_read_or_search(url, read):
    assert is_read(url) is read
