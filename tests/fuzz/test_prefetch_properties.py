"""Property tests: mutated real Synthea prefetch never breaks ``patient-summary``.

Each example takes a real patient-view request (Patient + active Conditions + active
MedicationRequests of a shared Synthea patient, built by ``cds.demo.patient_view_request``)
and mutates one resource: a field of the wrong JSON type, a required field removed, a code
no value set holds, a string of up to 100 kB, hostile unicode (lone surrogates escaped in
the JSON text, right-to-left overrides, emoji, NUL), deep nesting, an unknown member. The
body is sent as JSON text to the real app and audit log (SQLite and PostgreSQL).

* nothing in prefetch ever yields a 5xx;
* a bad Condition or MedicationRequest entry never loses the patient: 200, one card for
  the same patient, the bad entry skipped;
* a bad Patient is a 400 that names ``prefetch.patient`` (or a 200 with the card when the
  mutation kept it valid FHIR).

Only prefetch is mutated here: answers from the EHR's FHIR server (``fhirServer``) get the
same mutations in ``test_fhir_answer_properties.py``.
"""

from __future__ import annotations

import copy
import functools
import json
from typing import Any

import pytest
from conftest import synthea_bundles
from fuzz_harness import json_slots
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from cds.demo import patient_view_request

PATH = "/cds-services/patient-summary"
PATIENTS = 5
EXAMPLES = 100
SETTINGS = settings(
    max_examples=EXAMPLES,
    deadline=None,
    database=None,
    suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow],
)
#: Members FHIR R4 (or the service: Patient.id must match the context) cannot do without.
REQUIRED = {
    "Patient": ("resourceType", "id"),
    "Condition": ("resourceType", "subject"),
    "MedicationRequest": ("resourceType", "status", "intent", "subject"),
}
TEXT_KEYS = frozenset({"text", "display", "family", "given"})
CODE_KEYS = frozenset({"code", "status", "intent", "gender", "use", "system", "resourceType"})


@functools.cache
def requests_with_entries() -> tuple[dict[str, Any], ...]:
    """Real requests of the first Synthea patients with active conditions and medications."""
    found = []
    for bundle in synthea_bundles():
        request = patient_view_request(bundle)
        prefetch = request["prefetch"]
        if prefetch["conditions"]["entry"] and prefetch["medications"]["entry"]:
            found.append(request)
        if len(found) == PATIENTS:
            break
    if not found:
        pytest.skip("no shared Synthea patient with active conditions and medications")
    return tuple(found)


# --------------------------------------------------------------------------- hostile values
HOSTILE_TEXT = (
    "\u202egnp.exe",  # right-to-left override
    "مريض عربي",
    "חולה",
    "👩🏽‍⚕️🩺💊",
    "\x00",
    "before\x00after",
    "\ud800",  # lone surrogates: json.dumps escapes them as \\ud800 in the body
    "lone \udfff low",
    "\ufeffBOM",
    "\uffff\ufffe",
    "e\u0301\u0301\u0301",
    "",
    " ",
)
unicode_text = st.lists(st.sampled_from(HOSTILE_TEXT), min_size=1, max_size=4).map(
    "".join
) | st.text(
    st.characters(min_codepoint=0, max_codepoint=0x10FFFF, exclude_categories=()), max_size=40
)
huge_text = st.builds(
    lambda chunk, n: (chunk * n)[:100_000],
    st.sampled_from(["a", "é", "\U0001d518", "\u202e", "\x00", "\ud83d", "<div>", "0123456789"]),
    st.integers(1_000, 100_000),
)
scalars = (
    st.none()
    | st.booleans()
    | st.integers(min_value=-(2**70), max_value=2**70)
    | st.floats(allow_nan=False, allow_infinity=False)
    | unicode_text
)
json_values = st.recursive(
    scalars,
    lambda inner: st.lists(inner, max_size=3) | st.dictionaries(unicode_text, inner, max_size=3),
    max_leaves=10,
)


def _nest(depth: int, as_list: bool) -> Any:
    value: Any = "deep"
    for _ in range(depth):
        value = [value] if as_list else {"extension": value}
    return value


nested = st.builds(_nest, st.integers(1, 300), st.booleans())


def wrong_type(value: Any) -> st.SearchStrategy[Any]:
    """A JSON value of any type but ``value``'s."""
    if isinstance(value, str):
        return st.integers() | st.booleans() | st.lists(scalars, max_size=2) | st.just({})
    if isinstance(value, bool | int | float):
        return unicode_text | st.lists(scalars, max_size=2) | st.just({"value": value})
    if isinstance(value, list):
        return unicode_text | st.integers() | st.just({"0": value[:1]})
    if isinstance(value, dict):
        return unicode_text | st.integers() | st.just([value])
    return scalars.filter(lambda v: v is not None)


KINDS = ("wrong-type", "remove-required", "unknown-code", "huge", "unicode", "nesting", "unknown")


@st.composite
def mutate(draw: st.DrawFn, resource: dict[str, Any]) -> tuple[dict[str, Any], str]:
    """``resource`` with one hostile change, and which kind it was."""
    resource = copy.deepcopy(resource)
    kind = draw(st.sampled_from(KINDS))
    slots = json_slots(resource, [])
    codes = [(c, k) for c, k in slots if k in CODE_KEYS and isinstance(c[k], str)]
    if kind == "remove-required":
        required = [k for k in REQUIRED.get(resource.get("resourceType"), ()) if k in resource]
        del resource[draw(st.sampled_from(required or list(resource)))]
    elif kind == "unknown-code" and codes:
        container, key = draw(st.sampled_from(codes))
        container[key] = draw(st.sampled_from(["zz-not-a-code", "ACTIVE", "🦄"]) | unicode_text)
    elif kind in ("huge", "unicode"):
        strings = [(c, k) for c, k in slots if isinstance(c[k], str)]
        shown = [(c, k) for c, k in strings if k in TEXT_KEYS]  # what the card may quote
        container, key = draw(
            st.sampled_from(shown) if shown and draw(st.booleans()) else st.sampled_from(strings)
        )
        container[key] = draw(huge_text if kind == "huge" else unicode_text)
    elif kind == "wrong-type":
        container, key = draw(st.sampled_from(slots))
        container[key] = draw(wrong_type(container[key]))
    elif kind == "nesting":
        container, key = draw(st.sampled_from(slots))
        container[key] = draw(nested)
    else:
        resource[draw(unicode_text.filter(bool))] = draw(json_values)
    return resource, kind


# --------------------------------------------------------------------------- calls
def post(hooks, body: dict[str, Any]):  # type: ignore[no-untyped-def]
    """Send ``body`` as JSON text (lone surrogates as \\uXXXX escapes), with a fresh JWT."""
    return hooks.client.post(
        PATH,
        data=json.dumps(body),
        content_type="application/json",
        headers={"Authorization": f"Bearer {hooks.mint(PATH)}"},
    )


def _who(summary: str) -> str:
    return summary.split(":", 1)[0]  # "Female, 72 y"


@pytest.fixture
def baselines(hooks) -> dict[str, str]:  # type: ignore[no-untyped-def]
    """Patient id → the card summary's who-part for the unmutated request."""
    who = {}
    for request in requests_with_entries():
        answer = post(hooks, request)
        assert answer.status_code == 200, answer.get_json()
        who[request["context"]["patientId"]] = _who(answer.get_json()["cards"][0]["summary"])
    return who


@SETTINGS
@given(data=st.data())
def test_bad_patient_is_400_naming_prefetch_patient(hooks, data: st.DataObject):  # type: ignore[no-untyped-def]
    request = copy.deepcopy(data.draw(st.sampled_from(requests_with_entries())))
    patient, kind = data.draw(mutate(request["prefetch"]["patient"]), label="patient")
    request["prefetch"]["patient"] = patient
    answer = post(hooks, request)
    body = answer.get_json()
    assert answer.status_code in (200, 400), (kind, answer.status_code, body)
    if answer.status_code == 400:
        assert body["error"] == "invalid_prefetch", body
        assert body["field"] == "prefetch.patient", body
    else:
        assert len(body["cards"]) == 1


@SETTINGS
@given(data=st.data())
def test_bad_entry_is_skipped_and_the_patient_kept(hooks, baselines, data: st.DataObject):  # type: ignore[no-untyped-def]
    request = copy.deepcopy(data.draw(st.sampled_from(requests_with_entries())))
    key = data.draw(st.sampled_from(["conditions", "medications"]), label="key")
    entries = request["prefetch"][key]["entry"]
    index = data.draw(st.integers(0, len(entries) - 1), label="index")
    if data.draw(st.booleans(), label="whole entry"):
        entries[index], kind = data.draw(mutate(entries[index]), label="entry")
    else:
        entries[index]["resource"], kind = data.draw(
            mutate(entries[index]["resource"]), label="resource"
        )
    answer = post(hooks, request)
    body = answer.get_json()
    assert answer.status_code == 200, (kind, answer.status_code, body)
    (card,) = body["cards"]
    assert _who(card["summary"]) == baselines[request["context"]["patientId"]]
    label = "active problems" if key == "conditions" else "active medications"
    listed = int(card["summary"].split(label)[0].rsplit(" ", 2)[-2])
    assert listed <= len(entries)


@SETTINGS
@given(data=st.data())
def test_anything_in_prefetch_is_never_a_5xx(hooks, data: st.DataObject):  # type: ignore[no-untyped-def]
    request = copy.deepcopy(data.draw(st.sampled_from(requests_with_entries())))
    key = data.draw(st.sampled_from(["patient", "conditions", "medications", "other"]))
    request["prefetch"][key] = data.draw(json_values | nested, label="value")
    answer = post(hooks, request)
    assert answer.status_code < 500, answer.get_json()
    if answer.status_code == 400:
        assert answer.get_json()["field"].startswith(f"prefetch.{key}")
