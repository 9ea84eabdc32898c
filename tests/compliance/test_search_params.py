"""FHIR search syntax, parsed without a server: dates and their precision, escaping,
references, tokens, Prefer: handling, and what an error may echo."""

from __future__ import annotations

from datetime import UTC, datetime

import pytest
from werkzeug.datastructures import MultiDict

from cds.fhir_api.outcome import FhirError
from cds.fhir_api.search_params import (
    Reference,
    Token,
    parse_date,
    parse_reference,
    parse_search,
    parse_token,
    shown_name,
    split_values,
    wants_lenient,
)

D = datetime
DATES = [
    ("2026", "eq", D(2026, 1, 1), D(2027, 1, 1)),
    ("ge2026-02", "ge", D(2026, 2, 1), D(2026, 3, 1)),
    ("lt2026-12", "lt", D(2026, 12, 1), D(2027, 1, 1)),
    ("2026-02-28", "eq", D(2026, 2, 28), D(2026, 3, 1)),
    ("gt2026-03-01T10:15Z", "gt", D(2026, 3, 1, 10, 15), D(2026, 3, 1, 10, 16)),
    ("2026-03-01T10:15:30Z", "eq", D(2026, 3, 1, 10, 15, 30), D(2026, 3, 1, 10, 15, 31)),
    ("2026-03-01T10:15:30.25Z", "eq", D(2026, 3, 1, 10, 15, 30, 250000),
     D(2026, 3, 1, 10, 15, 30, 260000)),
    ("le2026-03-01T12:00:00+02:00", "le", D(2026, 3, 1, 10), D(2026, 3, 1, 10, 0, 1)),
    ("2026-03-01T10:00", "eq", D(2026, 3, 1, 10), D(2026, 3, 1, 10, 1)),  # no zone: UTC
]  # fmt: skip


@pytest.mark.parametrize(("text", "prefix", "low", "high"), DATES)
def test_dates_cover_the_range_their_precision_implies(
    text: str, prefix: str, low: datetime, high: datetime
):
    parsed = parse_date("date", text)
    assert parsed.prefix == prefix
    assert (parsed.low, parsed.high) == (low.replace(tzinfo=UTC), high.replace(tzinfo=UTC))


@pytest.mark.parametrize(
    "text", ["yesterday", "2026-1", "2026-02-30", "xx2026", "ap2026", "2026-03-01T25:00Z"]
)
def test_bad_dates_are_400(text: str):
    with pytest.raises(FhirError) as caught:
        parse_date("date", text)
    assert caught.value.status == 400 and text not in caught.value.diagnostics


def test_values_split_on_unescaped_commas():
    assert split_values(r"a,b\,c,d\|e,") == ["a", "b,c", "d|e", ""]
    assert parse_token("urn:x|y|z") == Token("urn:x", "y|z")
    assert parse_token("|y") == Token("", "y") and parse_token("y") == Token(None, "y")


def test_references():
    assert parse_reference("entity", "Patient/1") == Reference("Patient", "1")
    assert parse_reference("entity", "https://ehr/fhir/Patient/1") == Reference("Patient", "1")
    assert parse_reference("patient", "abc") == Reference(None, "abc")
    for bad in ("Patient/", "patient/1", "Patient/1/"):
        with pytest.raises(FhirError):
            parse_reference("entity", bad)
    with pytest.raises(FhirError, match="must refer to Patient"):
        parse_reference("patient", "Group/1")


def test_prefer_header():
    assert wants_lenient("handling=lenient")
    assert wants_lenient('return=minimal, handling="lenient"')
    assert not wants_lenient("handling=strict") and not wants_lenient(None)


def test_parameter_names_are_echoed_only_when_they_look_like_names():
    assert shown_name("identifier") == "'identifier'"
    assert shown_name("agent:identifier") == "'agent:identifier'"
    assert shown_name("Hana Example") == "(not a parameter name)"
    assert shown_name("1970-01-01") == "(not a parameter name)"


def test_applied_parameters_and_the_recorded_filter():
    args = MultiDict([("patient", "p1"), ("_count", "9999"), ("date", "ge2026"), ("x", "1")])
    search = parse_search("AuditEvent", args, lenient=True)
    assert search.count == 500 and search.ignored == ["x"]
    assert search.applied == [("patient", "p1"), ("_count", "9999"), ("date", "ge2026")]
    assert search.filter_json() == {"patient": ["p1"], "_count": ["9999"], "date": ["ge2026"]}
    assert search.single_patient() == "p1"
    two = parse_search("AuditEvent", MultiDict([("patient", "a,b")]), lenient=False)
    assert two.single_patient() is None
