"""Inputs the fuzzers found that answered 503 (the audit write failed) instead of 400/200.

* text no database can store — NUL (PostgreSQL text and jsonb refuse it) or an unpaired
  surrogate (not UTF-8), both legal as JSON escapes — reached the audit row: in
  ``fhirServer``, in a prefetch key or an unknown Patient member (via the stored error
  detail), in a Condition's display text (via the stored card), in feedback comments;
* an ``outcomeTimestamp`` valid in ISO 8601 but outside the UTC range the audit log
  stores (``9999-12-31T23:59:59-12:00``).
"""

from __future__ import annotations

import copy
import json
from collections.abc import Callable
from typing import Any

import pytest

PATH = "/cds-services/patient-summary"
NUL, SURROGATE = "a\x00b", "a\ud800b"


def post(hooks, path: str, body: Any):  # type: ignore[no-untyped-def]
    """Send ``body`` as JSON text: NUL and lone surrogates travel as \\uXXXX escapes."""
    return hooks.client.post(
        path,
        data=json.dumps(body),
        content_type="application/json",
        headers={"Authorization": f"Bearer {hooks.mint(path)}"},
    )


def _set(*path: Any) -> Callable[[dict[str, Any], str], None]:
    def apply(request: dict[str, Any], text: str) -> None:
        target = request
        for key in path[:-1]:
            target = target[key]
        target[path[-1]] = text

    return apply


ENVELOPE = [
    ("fhirServer", _set("fhirServer"), "fhirServer"),
    ("context.userId", _set("context", "userId"), "context.userId"),
    ("prefetch key", lambda r, t: r["prefetch"].__setitem__(t, {}), "prefetch.a\\"),
    ("Patient name", _set("prefetch", "patient", "name", 0, "family"), "prefetch.patient"),
    ("Patient member", lambda r, t: r["prefetch"]["patient"].__setitem__(t, 1), "prefetch.patient"),
]


@pytest.mark.parametrize("text", [NUL, SURROGATE], ids=["NUL", "surrogate"])
@pytest.mark.parametrize(("where", "mutate", "field"), ENVELOPE, ids=[e[0] for e in ENVELOPE])
def test_unstorable_text_in_the_request_is_a_400_naming_the_field(
    hooks, patient_view_request, text, where, mutate, field
):  # type: ignore[no-untyped-def]
    request = copy.deepcopy(patient_view_request)
    mutate(request, text)
    answer = post(hooks, PATH, request)
    assert answer.status_code == 400, answer.get_json()
    assert answer.get_json()["field"].startswith(field)
    assert "\x00" not in answer.get_data(as_text=True)


@pytest.mark.parametrize("text", [NUL, SURROGATE], ids=["NUL", "surrogate"])
def test_unstorable_text_in_a_condition_skips_that_entry(hooks, patient_view_request, text):  # type: ignore[no-untyped-def]
    request = copy.deepcopy(patient_view_request)
    entries = request["prefetch"]["conditions"]["entry"]
    entries.append(copy.deepcopy(entries[0]))
    entries[-1]["resource"] |= {"id": "added", "code": {"text": text}}
    answer = post(hooks, PATH, request)
    assert answer.status_code == 200, answer.get_json()
    (card,) = answer.get_json()["cards"]
    assert f"{len(entries) - 1} active problems" in card["summary"]


@pytest.mark.parametrize(
    "reason",
    [{"userComment": NUL}, {"userComment": SURROGATE}, {"userComment": "ok", NUL: 1}],
    ids=["comment NUL", "comment surrogate", "member NUL"],
)
def test_unstorable_text_in_feedback_is_a_400(hooks, patient_view_request, reason):  # type: ignore[no-untyped-def]
    card = post(hooks, PATH, patient_view_request).get_json()["cards"][0]["uuid"]
    entry = {"card": card, "outcome": "overridden", "outcomeTimestamp": "2024-05-01T10:00:00Z"}
    answer = post(hooks, PATH + "/feedback", {"feedback": [entry | {"overrideReason": reason}]})
    assert answer.status_code == 400, answer.get_json()
    assert answer.get_json()["field"].startswith("feedback.0.overrideReason")


@pytest.mark.parametrize("timestamp", ["9999-12-31T23:59:59-12:00", "0001-01-01T00:00:00+05:00"])
def test_outcome_timestamp_outside_the_utc_range_is_a_400(hooks, patient_view_request, timestamp):  # type: ignore[no-untyped-def]
    card = post(hooks, PATH, patient_view_request).get_json()["cards"][0]["uuid"]
    entry = {"card": card, "outcome": "overridden", "outcomeTimestamp": timestamp}
    answer = post(hooks, PATH + "/feedback", {"feedback": [entry]})
    assert answer.status_code == 400, answer.get_json()
    assert answer.get_json()["field"] == "feedback.0.outcomeTimestamp"
