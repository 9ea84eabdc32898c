"""Property tests: mutated answers from the EHR's FHIR server never break ``patient-summary``.

The request carries no prefetch, so the service fetches Patient, Conditions,
MedicationRequests and AllergyIntolerances from the real FHIR server (sekmet-fhir). The
named fault injector (``tests/support/fault_proxy.py``) sits in between and mutates one
resource of one answer with the same hostile changes as the prefetch properties (wrong
types, required fields removed, unknown codes, huge or hostile unicode strings, deep
nesting, unknown members):

* nothing the FHIR server answers ever yields a 5xx;
* a bad Condition, MedicationRequest or AllergyIntolerance never loses the patient: 200,
  one card for the same patient;
* an unusable Patient is a 412 naming ``patient`` (the EHR's server, not the request, is
  at fault), or a 200 when the mutation kept it valid FHIR.
"""

from __future__ import annotations

import json
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from test_prefetch_properties import SETTINGS, _who, mutate, post

from cds.demo import patient_view_request
from tests.conftest import synthea_bundles
from tests.support.fault_proxy import fault_proxy
from tests.support.fhir_server import fhir_authorization

pytestmark = pytest.mark.fhir_server
FEWER = settings(SETTINGS, max_examples=50)  # each example makes two real FHIR round trips
SEARCHES = {"conditions": "/Condition?", "medications": "/MedicationRequest?",
            "allergies": "/AllergyIntolerance?"}  # fmt: skip


@pytest.fixture(scope="module")
def patients() -> list[str]:
    """Shared Synthea patients with active conditions and medications (bundle paths)."""
    found = []
    for bundle in synthea_bundles():
        prefetch = patient_view_request(bundle)["prefetch"]
        if prefetch["conditions"]["entry"] and prefetch["medications"]["entry"]:
            found.append(bundle)
        if len(found) == 4:
            return found
    pytest.skip("no shared Synthea patient with active conditions and medications")


@pytest.fixture
def proxy(fhir_server):  # type: ignore[no-untyped-def]
    with fault_proxy(fhir_server.base_url) as running:
        yield running


def _request(bundle, proxy, fhir_server) -> dict[str, Any]:  # type: ignore[no-untyped-def]
    body = patient_view_request(bundle, keys=())
    del body["prefetch"]
    body["fhirServer"] = proxy.base_url
    body["fhirAuthorization"] = fhir_authorization(fhir_server.token)
    return body


def _replacing(wanted: str, resource_id: str, replacement: dict[str, Any]):  # type: ignore[no-untyped-def]
    """A body transform putting ``replacement`` in place of resource ``resource_id`` in the
    answer whose path contains ``wanted``. Drawn beforehand, in the test's own thread."""

    def transform(path: str, body: bytes) -> bytes:
        if wanted not in path:
            return body
        answer = json.loads(body)
        if answer.get("resourceType") != "Bundle":
            return json.dumps(replacement).encode()
        for entry in answer.get("entry") or []:
            if (entry.get("resource") or {}).get("id") == resource_id:
                entry["resource"] = replacement
        return json.dumps(answer).encode()

    return transform


@FEWER
@given(data=st.data())
def test_a_bad_resource_from_the_fhir_server_never_loses_the_patient(  # type: ignore[no-untyped-def]
    hooks, fhir_server, proxy, patients, data
):
    bundle = data.draw(st.sampled_from(patients), label="patient")
    proxy.transform = None
    baseline = post(hooks, _request(bundle, proxy, fhir_server))
    assert baseline.status_code == 200, baseline.get_json()
    prefetch = patient_view_request(bundle)["prefetch"]
    key = data.draw(
        st.sampled_from([k for k in sorted(SEARCHES) if prefetch[k]["entry"]]), label="key"
    )
    original = data.draw(st.sampled_from(prefetch[key]["entry"]), label="entry")["resource"]
    mutated, kind = data.draw(mutate(original), label="resource")
    proxy.transform = _replacing(SEARCHES[key], original["id"], mutated)
    answer = post(hooks, _request(bundle, proxy, fhir_server))
    body = answer.get_json()
    assert answer.status_code == 200, (kind, answer.status_code, body)
    (card,) = body["cards"]
    assert _who(card["summary"]) == _who(baseline.get_json()["cards"][0]["summary"])


@FEWER
@given(data=st.data())
def test_a_bad_patient_from_the_fhir_server_is_a_412_not_a_5xx(  # type: ignore[no-untyped-def]
    hooks, fhir_server, proxy, patients, data
):
    bundle = data.draw(st.sampled_from(patients), label="patient")
    patient = patient_view_request(bundle)["prefetch"]["patient"]
    mutated, kind = data.draw(mutate(patient), label="patient resource")
    proxy.transform = _replacing("/Patient/", patient["id"], mutated)
    answer = post(hooks, _request(bundle, proxy, fhir_server))
    body = answer.get_json()
    assert answer.status_code in (200, 412), (kind, answer.status_code, body)
    if answer.status_code == 412:
        assert body["missing"] == ["patient"], body
    else:
        assert len(body["cards"]) == 1
