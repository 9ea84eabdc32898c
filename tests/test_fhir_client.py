"""The FHIR client against the real FHIR server (sekmet-fhir over HTTP).

Faults the real server cannot produce on demand (429, 503, a hang) come from the named
fault injector in ``tests/support/fault_proxy.py``, which forwards everything else to it.
"""

from __future__ import annotations

import time
from concurrent.futures import ThreadPoolExecutor

import pytest

from fhir_adapters.fhir_client import ClientSettings, FhirClient, FhirError, SessionPool
from fhir_adapters.prefetch import FAILED, FETCHED, TIMED_OUT, PrefetchFetcher
from tests.support.fault_proxy import Fault, fault_proxy

pytestmark = pytest.mark.fhir_server

FAST = ClientSettings(timeout=(1.0, 2.0), retries=2, backoff_factor=0.05, max_retry_after=2.0)


@pytest.fixture
def pool():
    sessions = SessionPool(FAST)
    yield sessions
    sessions.close()


@pytest.fixture
def client(fhir_server, pool):
    return FhirClient(fhir_server.base_url, fhir_server.token, pool)


@pytest.fixture
def proxy(fhir_server):
    with fault_proxy(fhir_server.base_url) as running:
        yield running


def test_read_a_patient(client, fhir_server):
    patient_id = fhir_server.patient_ids[0]
    patient = client.read("Patient", patient_id)
    assert patient["resourceType"] == "Patient" and patient["id"] == patient_id


def test_search_follows_next_links_across_pages(client, fhir_server):
    patient_id = fhir_server.patient_ids[3]
    one_page = client.get(f"Observation?patient={patient_id}&_count=1000")
    expected = {e["resource"]["id"] for e in one_page["entry"]}
    assert len(expected) > 20

    result = client.search(f"Observation?patient={patient_id}&_count=7")
    got = [e["resource"]["id"] for e in result.bundle["entry"]]
    assert result.pages == -(-len(expected) // 7) and not result.truncated
    assert len(got) == len(set(got)) and set(got) == expected


def test_paging_stops_at_max_pages(fhir_server):
    settings = ClientSettings(timeout=(1.0, 2.0), max_pages=3)
    client = FhirClient(fhir_server.base_url, fhir_server.token, SessionPool(settings))
    result = client.search(f"Observation?patient={fhir_server.patient_ids[3]}&_count=5")
    assert result.pages == 3 and result.truncated
    assert len(result.bundle["entry"]) == 15


def test_wrong_token_is_a_refusal_not_retried(fhir_server, pool, proxy):
    client = FhirClient(proxy.base_url, "not-the-token", pool)
    with pytest.raises(FhirError) as caught:
        client.read("Patient", fhir_server.patient_ids[0])
    assert caught.value.status == 401 and caught.value.refused
    assert len(proxy.requests) == 1  # a 4xx is never retried


def test_operation_outcome_text_is_surfaced(client):
    with pytest.raises(FhirError) as caught:
        client.read("Patient", "no-such-patient")
    assert caught.value.status == 404
    assert "HTTP 404" in str(caught.value)
    assert str(caught.value) != "HTTP 404: error"  # the server's OperationOutcome text


def test_429_then_success_honours_retry_after(fhir_server, pool, proxy):
    proxy.script(Fault(429, (("Retry-After", "1"),)))
    client = FhirClient(proxy.base_url, fhir_server.token, pool)
    started = time.perf_counter()
    patient = client.read("Patient", fhir_server.patient_ids[0])
    elapsed = time.perf_counter() - started
    assert patient["id"] == fhir_server.patient_ids[0]
    assert len(proxy.requests) == 2
    assert elapsed >= 1.0  # waited as long as the server asked


@pytest.mark.parametrize("status", [502, 503, 504])
def test_gateway_errors_are_retried_with_backoff(fhir_server, pool, proxy, status):
    proxy.script(Fault(status), Fault(status))
    client = FhirClient(proxy.base_url, fhir_server.token, pool)
    assert client.read("Patient", fhir_server.patient_ids[0])["resourceType"] == "Patient"
    assert len(proxy.requests) == 3


def test_retries_are_bounded(fhir_server, pool, proxy):
    proxy.script(*[Fault(503)] * 5)
    client = FhirClient(proxy.base_url, fhir_server.token, pool)
    with pytest.raises(FhirError) as caught:
        client.read("Patient", fhir_server.patient_ids[0])
    assert caught.value.status == 503
    assert len(proxy.requests) == FAST.retries + 1


def test_a_retry_after_longer_than_the_budget_fails_at_once(fhir_server, pool, proxy):
    proxy.script(Fault(429, (("Retry-After", "120"),)))
    client = FhirClient(proxy.base_url, fhir_server.token, pool)
    started = time.perf_counter()
    with pytest.raises(FhirError) as caught:
        client.read("Patient", fhir_server.patient_ids[0])
    assert caught.value.code == "rate_limited" and caught.value.status == 429
    assert time.perf_counter() - started < 1.0
    assert len(proxy.requests) == 1


def test_a_400_is_not_retried(fhir_server, pool, proxy):
    proxy.script(Fault(400, (("Content-Type", "application/fhir+json"),)))
    client = FhirClient(proxy.base_url, fhir_server.token, pool)
    with pytest.raises(FhirError) as caught:
        client.read("Patient", fhir_server.patient_ids[0])
    assert caught.value.status == 400
    assert len(proxy.requests) == 1


def test_a_next_link_to_another_origin_is_not_followed(fhir_server, pool, proxy):
    """The bearer token must never be sent to a host other than fhirServer."""
    client = FhirClient(proxy.base_url, fhir_server.token, pool)
    with pytest.raises(FhirError) as caught:
        client.get(fhir_server.base_url + "/Patient/" + fhir_server.patient_ids[0])
    assert caught.value.code == "foreign_url"
    assert proxy.requests == []


def test_a_hanging_server_cannot_hold_the_request_past_its_deadline(fhir_server, pool, proxy):
    proxy.default = Fault(delay_s=8.0)  # every call hangs for 8 s, then answers
    client = FhirClient(proxy.base_url, fhir_server.token, pool)
    with ThreadPoolExecutor(4) as executor:
        fetcher = PrefetchFetcher(executor, deadline_s=0.5)
        started = time.perf_counter()
        resolved = fetcher.resolve(
            {
                "patient": "Patient/{{context.patientId}}",
                "conditions": "Condition?patient={{context.patientId}}",
            },
            {},
            {"patientId": fhir_server.patient_ids[0], "userId": "Practitioner/x"},
            client,
        )
        elapsed = time.perf_counter() - started
        proxy.default = Fault()
    assert elapsed < 0.8
    assert {o.key: o.source for o in resolved.outcomes} == {
        "patient": TIMED_OUT,
        "conditions": TIMED_OUT,
    }
    assert resolved.unavailable == {"patient": "deadline", "conditions": "deadline"}


def test_fetches_run_in_parallel_and_record_their_timings(fhir_server, pool, proxy):
    proxy.default = Fault(delay_s=0.4)
    client = FhirClient(proxy.base_url, fhir_server.token, pool)
    templates = {
        "patient": "Patient/{{context.patientId}}",
        "conditions": "Condition?patient={{context.patientId}}",
        "medications": "MedicationRequest?patient={{context.patientId}}",
        "allergies": "AllergyIntolerance?patient={{context.patientId}}",
    }
    with ThreadPoolExecutor(8) as executor:
        started = time.perf_counter()
        resolved = PrefetchFetcher(executor, deadline_s=2.0).resolve(
            templates, {}, {"patientId": fhir_server.patient_ids[0]}, client
        )
        elapsed = time.perf_counter() - started
    proxy.default = Fault()
    assert elapsed < 4 * 0.4  # four 0.4-s calls overlapped
    assert all(o.source == FETCHED and o.ms >= 400 for o in resolved.outcomes)
    assert set(resolved.data) == set(templates)


def test_a_refusal_is_recorded_per_key(fhir_server, pool):
    client = FhirClient(fhir_server.base_url, "wrong", pool)
    with ThreadPoolExecutor(2) as executor:
        resolved = PrefetchFetcher(executor).resolve(
            {"patient": "Patient/{{context.patientId}}"},
            {},
            {"patientId": fhir_server.patient_ids[0]},
            client,
        )
    (outcome,) = resolved.outcomes
    assert (outcome.source, outcome.status) == (FAILED, 401)
    assert resolved.refused({"patient"})
