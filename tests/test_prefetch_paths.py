"""Every prefetch path through the hook endpoint, with the real FHIR server behind fhirServer.

CDS Hooks 2.0: a key the EHR sent is used as is (``null`` = no data, never re-fetched); an
absent key is fetched from ``fhirServer`` with the ``fhirAuthorization`` token; required
data that can be neither sent nor fetched is a 412. Faults the real server cannot make on
demand (hangs) come from the named fault injector in ``tests/support/fault_proxy.py``.
"""

from __future__ import annotations

import json
import logging
import time
import uuid

import pytest
from prometheus_client import REGISTRY

from cds.audit.tables import Invocation
from cds.demo import patient_view_request
from tests.conftest import synthea_bundles
from tests.support.fault_proxy import Fault, fault_proxy
from tests.support.fhir_server import fhir_authorization
from tests.test_audit_log import rows_of

pytestmark = pytest.mark.fhir_server
SERVICE = "patient-summary"
ALL_KEYS = ("patient", "conditions", "medications", "allergies")


def _request(prefetch_keys, server: str | None = None, token: str | None = None, bundle=None):
    body = patient_view_request(bundle or synthea_bundles()[0], keys=prefetch_keys)
    if not body["prefetch"]:
        del body["prefetch"]
    if server is not None:
        body["fhirServer"] = server
        body["fhirAuthorization"] = fhir_authorization(token or "")
    return body


def _sources(database_url: str) -> dict[str, str]:
    invocation = rows_of(database_url, Invocation)[-1]
    return {entry["key"]: entry["source"] for entry in invocation.prefetch_fetched}


def _card_text(response) -> tuple[str, str]:
    (card,) = response.json["cards"]
    return card["summary"], card["detail"]


def test_all_prefetched_nothing_is_fetched(hooks, fhir_server, database_url):
    with fault_proxy(fhir_server.base_url) as proxy:
        body = _request(ALL_KEYS, proxy.base_url, fhir_server.token)
        response = hooks.call(SERVICE, body)
        assert proxy.requests == []
    assert response.status_code == 200, response.json
    assert set(_sources(database_url).values()) == {"prefetch"}


def test_absent_keys_are_fetched_and_null_keys_are_not(hooks, fhir_server, database_url):
    body = _request(("patient", "allergies"), fhir_server.base_url, fhir_server.token)
    body["prefetch"]["conditions"] = None  # the EHR looked: no active problems
    full = hooks.call(SERVICE, _request(ALL_KEYS))
    response = hooks.call(SERVICE, body)
    assert response.status_code == 200, response.json
    assert _sources(database_url) == {
        "patient": "prefetch",
        "conditions": "prefetch-null",
        "medications": "fetched",
        "allergies": "prefetch",
    }
    summary, _ = _card_text(response)
    medications = _card_text(full)[0].split(", ")[-1]
    assert "0 active problems" in summary and summary.endswith(medications)


def test_no_prefetch_everything_is_fetched_and_timed_in_the_audit(hooks, fhir_server, database_url):
    body = _request((), fhir_server.base_url, fhir_server.token)
    response = hooks.call(SERVICE, body)
    assert response.status_code == 200, response.json
    assert _card_text(response) == _card_text(hooks.call(SERVICE, _request(ALL_KEYS)))
    invocation = rows_of(database_url, Invocation)[-2]
    assert invocation.prefetch_used == []
    for entry in invocation.prefetch_fetched:
        assert entry["source"] == "fetched" and entry["ms"] > 0, entry
    searches = [e for e in invocation.prefetch_fetched if e["key"] != "patient"]
    assert all(e["pages"] >= 1 and "entries" in e for e in searches)


def test_no_prefetch_and_no_fhir_server_is_412(hooks, database_url):
    response = hooks.call(SERVICE, _request(()))
    assert response.status_code == 412
    assert response.json["missing"] == ["patient"]
    assert response.json["reasons"] == {"patient": "no_fhir_server"}


def _errors(resource_type: str, reason: str) -> float:
    labels = {"resource_type": resource_type, "reason": reason}
    return REGISTRY.get_sample_value("wardround_fhir_fetch_errors_total", labels) or 0.0


def test_a_fhir_server_that_refuses_the_token_is_412(hooks, fhir_server, database_url):
    before = _errors("Patient", "http_status")
    response = hooks.call(SERVICE, _request((), fhir_server.base_url, "not-the-token"))
    assert response.status_code == 412
    assert _errors("Patient", "http_status") == before + 1
    assert response.json["reasons"] == {"patient": "http_status"}
    invocation = rows_of(database_url, Invocation)[-1]
    refused = {e["key"]: e.get("status") for e in invocation.prefetch_fetched}
    assert set(refused.values()) == {401}


def test_a_hanging_fhir_server_cannot_hold_the_hook_past_its_deadline(
    make_app, mint, fhir_server, database_url
):
    app = make_app(prefetch_deadline_s=0.5)
    client = app.test_client()
    with fault_proxy(fhir_server.base_url) as proxy:
        proxy.default = Fault(delay_s=6.0)
        path = f"/cds-services/{SERVICE}"
        started = time.perf_counter()
        response = client.post(
            path,
            json=_request((), proxy.base_url, fhir_server.token),
            headers={"Authorization": f"Bearer {mint(path)}"},
        )
        elapsed = time.perf_counter() - started
        proxy.default = Fault()
    assert response.status_code == 412
    assert response.json["reasons"] == {"patient": "deadline"}
    assert elapsed < 1.5


def test_optional_keys_that_time_out_are_reported_not_guessed(
    make_app, mint, fhir_server, database_url
):
    app = make_app(prefetch_deadline_s=0.5)
    with fault_proxy(fhir_server.base_url) as proxy:
        proxy.default = Fault(delay_s=3.0)
        path = f"/cds-services/{SERVICE}"
        response = app.test_client().post(
            path,
            json=_request(("patient",), proxy.base_url, fhir_server.token),
            headers={"Authorization": f"Bearer {mint(path)}"},
        )
        proxy.default = Fault()
    assert response.status_code == 200, response.json
    summary, detail = _card_text(response)
    assert "active problems: not available" in summary
    assert "**Allergies**: not available from the EHR" in detail
    sources = _sources(database_url)
    assert sources["patient"] == "prefetch"
    assert {sources[k] for k in ("conditions", "medications", "allergies")} == {"timeout"}


def test_the_fhir_token_is_never_stored_or_logged(hooks, fhir_server, database_url, caplog):
    caplog.set_level(logging.DEBUG)
    marker = f"{fhir_server.token}"
    response = hooks.call(SERVICE, _request((), fhir_server.base_url, fhir_server.token))
    assert response.status_code == 200
    response = hooks.call(SERVICE, _request((), fhir_server.base_url, "x" + uuid.uuid4().hex))
    assert response.status_code == 412
    invocations = rows_of(database_url, Invocation)
    stored = json.dumps([{c.name: str(getattr(i, c.name)) for c in i.__table__.columns}
                         for i in invocations])  # fmt: skip
    assert marker not in stored
    assert marker not in caplog.text


@pytest.mark.parametrize("database_url", ["sqlite"], indirect=True)
def test_every_shared_patient_gets_the_same_card_with_or_without_prefetch(hooks, fhir_server):
    """Done-when of the adapters issue: full prefetch vs none (fetched from the server)."""
    for bundle in synthea_bundles():
        prefetched = hooks.call(SERVICE, _request(ALL_KEYS, bundle=bundle))
        fetched = hooks.call(
            SERVICE, _request((), fhir_server.base_url, fhir_server.token, bundle=bundle)
        )
        assert prefetched.status_code == fetched.status_code == 200, bundle.name
        assert _card_text(prefetched) == _card_text(fetched), bundle.name
