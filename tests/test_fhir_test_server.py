"""The sekmet-fhir test server serves the shared Synthea data as our FHIR adapters query it.

Every search is sent with ``Prefer: handling=strict``: sekmet then answers 400 for a search
parameter it does not know, instead of ignoring it (and returning more than asked for).
Expected results come from the Synthea bundle of the same patient.
"""

from __future__ import annotations

import base64
import uuid
from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pytest
import requests

from tests.support.dicom_fixtures import wado_rs_endpoint
from tests.support.fhir_server import (
    FHIR_JSON,
    INFORMATION_BUNDLES,
    FhirServer,
    bundle_files,
    patient_ids_of,
    read_bundle,
)

pytestmark = pytest.mark.fhir_server

Resource = dict[str, Any]
LOINC = "http://loinc.org"
OBSERVATION_CATEGORY = "http://terminology.hl7.org/CodeSystem/observation-category"
CONDITION_CLINICAL = "http://terminology.hl7.org/CodeSystem/condition-clinical"
SYSTOLIC = "8480-6"
NPI = "http://hl7.org/fhir/sid/us-npi"
BLOOD_PRESSURE_PANEL = "55284-4"  # this Synthea release; newer ones use 85354-9
#: Types searched per patient. Goal is loaded too, but sekmet has no search parameter for it.
PATIENT_SEARCHABLE = (
    "AllergyIntolerance", "CarePlan", "Claim", "Condition", "DiagnosticReport", "Encounter",
    "ExplanationOfBenefit", "ImagingStudy", "Immunization", "MedicationRequest", "Observation",
    "Procedure",
)  # fmt: skip


# --------------------------------------------------------------------------- Synthea side
@dataclass(frozen=True)
class SyntheaPatient:
    id: str
    bundle_path: Path
    resources: dict[str, list[Resource]]  # as in the bundle (urn:uuid references)

    def of_type(self, resource_type: str) -> list[Resource]:
        return self.resources.get(resource_type, [])


def _synthea_folder() -> Path:
    from tests.conftest import SYNTHEA

    return SYNTHEA


def _patient(path: Path) -> SyntheaPatient | None:
    bundle = read_bundle(path)
    patient_ids = patient_ids_of(bundle)
    if len(patient_ids) != 1:
        return None
    grouped: dict[str, list[Resource]] = {}
    for entry in bundle["entry"]:
        grouped.setdefault(entry["resource"]["resourceType"], []).append(entry["resource"])
    return SyntheaPatient(patient_ids[0], path, grouped)


def patient_where(test: Callable[[SyntheaPatient], bool]) -> SyntheaPatient:
    """The first shared Synthea patient (by bundle file name) that passes ``test``."""
    for path in bundle_files(_synthea_folder()):
        patient = _patient(path)
        if patient is not None and test(patient):
            return patient
    pytest.fail("no shared Synthea patient has what this test needs")


def codes(concept: Any) -> set[tuple[str | None, str | None]]:
    return {(c.get("system"), c.get("code")) for c in (concept or {}).get("coding", [])}


def has_code(concept: Any, system: str, code: str) -> bool:
    return (system, code) in codes(concept)


def in_category(resource: Resource, code: str) -> bool:
    return any(has_code(c, OBSERVATION_CATEGORY, code) for c in resource.get("category", []))


def active_conditions(patient: SyntheaPatient) -> list[Resource]:
    conditions = patient.of_type("Condition")
    return [
        c for c in conditions if has_code(c.get("clinicalStatus"), CONDITION_CLINICAL, "active")
    ]


def observations_coded(patient: SyntheaPatient, loinc: str) -> list[Resource]:
    return [o for o in patient.of_type("Observation") if has_code(o["code"], LOINC, loinc)]


def ids(resources: list[Resource]) -> set[str]:
    return {r["id"] for r in resources}


# --------------------------------------------------------------------------- server side
def get(fhir_server: FhirServer, url: str, **headers: str) -> requests.Response:
    """GET ``url`` (absolute, or relative to the FHIR base) with the bearer token."""
    absolute = url if url.startswith("http") else f"{fhir_server.base_url}/{url}"
    return requests.get(absolute, headers={**fhir_server.headers, **headers}, timeout=30)


def search_page(fhir_server: FhirServer, url: str) -> Resource:
    response = get(fhir_server, url, Prefer="handling=strict")
    assert response.status_code == 200, response.text[:2000]
    bundle = response.json()
    assert bundle["resourceType"] == "Bundle" and bundle["type"] == "searchset"
    return bundle


def next_link(bundle: Resource) -> str | None:
    return next((k["url"] for k in bundle.get("link", []) if k["relation"] == "next"), None)


def matches(bundle: Resource) -> list[Resource]:
    return [e["resource"] for e in bundle.get("entry", []) if e["search"]["mode"] == "match"]


def search_all(fhir_server: FhirServer, query: str) -> list[Resource]:
    """Every match of ``query``, following ``next`` links."""
    found: list[Resource] = []
    url: str | None = query
    while url is not None:
        bundle = search_page(fhir_server, url)
        found += matches(bundle)
        url = next_link(bundle)
    return found


def search_ids(fhir_server: FhirServer, query: str) -> set[str]:
    return ids(search_all(fhir_server, f"{query}&_count=1000"))


def total(fhir_server: FhirServer, query: str) -> int:
    return search_page(fhir_server, f"{query}&_summary=count")["total"]


def put(fhir_server: FhirServer, resource: Resource) -> requests.Response:
    return fhir_server.request("PUT", f"{resource['resourceType']}/{resource['id']}", resource)


# --------------------------------------------------------------------------- tests
def test_every_patient_bundle_is_loaded_with_its_synthea_ids(fhir_server: FhirServer) -> None:
    files = bundle_files(_synthea_folder())
    patient_bundles = [p for p in files if not p.name.startswith(INFORMATION_BUNDLES)]
    assert len(fhir_server.patient_ids) == len(patient_bundles)
    assert list(fhir_server.patient_ids) == sorted(set(fhir_server.patient_ids))
    on_server = {r["id"] for r in search_all(fhir_server, "Patient?_count=1000&_elements=id")}
    assert set(fhir_server.patient_ids) <= on_server


def test_reads_a_patient_by_its_synthea_id(fhir_server: FhirServer) -> None:
    synthea = patient_where(lambda p: True)
    response = get(fhir_server, f"Patient/{synthea.id}")
    assert response.status_code == 200
    assert response.headers["Content-Type"].startswith(FHIR_JSON)
    patient = response.json()
    assert patient["id"] == synthea.id
    assert patient["name"] == synthea.of_type("Patient")[0]["name"]


def test_references_are_relative_type_slash_id(fhir_server: FhirServer) -> None:
    synthea = patient_where(lambda p: bool(p.of_type("Observation")))
    observations = search_all(fhir_server, f"Observation?patient={synthea.id}&_count=50")
    assert observations
    assert {o["subject"]["reference"] for o in observations} == {f"Patient/{synthea.id}"}
    assert all(o["encounter"]["reference"].startswith("Encounter/") for o in observations)


def test_active_conditions(fhir_server: FhirServer) -> None:
    synthea = patient_where(lambda p: bool(active_conditions(p)))
    expected = ids(active_conditions(synthea))
    plain = f"Condition?patient={synthea.id}&clinical-status=active"
    with_system = f"Condition?patient={synthea.id}&clinical-status={CONDITION_CLINICAL}|active"
    assert search_ids(fhir_server, plain) == expected
    assert search_ids(fhir_server, with_system) == expected


def test_active_medication_requests(fhir_server: FhirServer) -> None:
    synthea = patient_where(
        lambda p: any(m["status"] == "active" for m in p.of_type("MedicationRequest"))
    )
    expected = ids([m for m in synthea.of_type("MedicationRequest") if m["status"] == "active"])
    found = search_ids(fhir_server, f"MedicationRequest?patient={synthea.id}&status=active")
    assert found == expected


def test_observation_token_search_with_system_and_code(fhir_server: FhirServer) -> None:
    """Synthea codes blood pressure as a panel (55284-4) with systolic 8480-6 a component."""
    synthea = patient_where(lambda p: bool(observations_coded(p, BLOOD_PRESSURE_PANEL)))
    panels = ids(observations_coded(synthea, BLOOD_PRESSURE_PANEL))
    systolic = ids(observations_coded(synthea, SYSTOLIC))
    with_systolic = panels | systolic
    query = f"Observation?patient={synthea.id}"
    assert search_ids(fhir_server, f"{query}&code={LOINC}|{BLOOD_PRESSURE_PANEL}") == panels
    assert search_ids(fhir_server, f"{query}&code={LOINC}|{SYSTOLIC}") == systolic
    assert search_ids(fhir_server, f"{query}&combo-code={LOINC}|{SYSTOLIC}") == with_systolic
    assert search_ids(fhir_server, f"{query}&code=http://snomed.info/sct|{SYSTOLIC}") == set()


@pytest.mark.parametrize("category", ["vital-signs", "laboratory"])
def test_observation_category(fhir_server: FhirServer, category: str) -> None:
    synthea = patient_where(
        lambda p: any(in_category(o, category) for o in p.of_type("Observation"))
    )
    expected = ids([o for o in synthea.of_type("Observation") if in_category(o, category)])
    query = f"Observation?patient={synthea.id}&category"
    assert search_ids(fhir_server, f"{query}={category}") == expected
    assert search_ids(fhir_server, f"{query}={OBSERVATION_CATEGORY}|{category}") == expected


def _effective_utc(observation: Resource) -> datetime:
    return datetime.fromisoformat(observation["effectiveDateTime"]).astimezone(UTC)


def test_observation_date_range_and_sort(fhir_server: FhirServer) -> None:
    synthea = patient_where(lambda p: len(p.of_type("Observation")) > 20)
    year = sorted(_effective_utc(o).year for o in synthea.of_type("Observation"))[-1]
    expected = ids([o for o in synthea.of_type("Observation") if _effective_utc(o).year == year])
    query = f"Observation?patient={synthea.id}&date=ge{year}-01-01&date=lt{year + 1}-01-01"
    assert search_ids(fhir_server, query) == expected
    newest_first = search_all(
        fhir_server, f"Observation?patient={synthea.id}&_sort=-date&_count=1000"
    )
    times = [_effective_utc(o) for o in newest_first]
    assert times == sorted(times, reverse=True)


def test_allergy_intolerances(fhir_server: FhirServer) -> None:
    synthea = patient_where(lambda p: bool(p.of_type("AllergyIntolerance")))
    found = search_ids(fhir_server, f"AllergyIntolerance?patient={synthea.id}")
    assert found == ids(synthea.of_type("AllergyIntolerance"))


def test_imaging_studies(fhir_server: FhirServer) -> None:
    synthea = patient_where(lambda p: bool(p.of_type("ImagingStudy")))
    studies = search_all(fhir_server, f"ImagingStudy?patient={synthea.id}&_count=1000")
    assert ids(studies) == ids(synthea.of_type("ImagingStudy"))
    assert all(s["series"][0]["uid"] for s in studies)


def test_paging_follows_next_links_over_the_whole_set(fhir_server: FhirServer) -> None:
    synthea = patient_where(lambda p: len(p.of_type("Observation")) > 15)
    pages: list[list[Resource]] = []
    url: str | None = f"Observation?patient={synthea.id}&_count=5"
    while url is not None:
        bundle = search_page(fhir_server, url)
        assert bundle["total"] == len(synthea.of_type("Observation"))
        pages.append(matches(bundle))
        url = next_link(bundle)
        assert url is None or url.startswith(f"{fhir_server.base_url}/Observation?")
    assert len(pages) >= 3
    assert all(len(page) == 5 for page in pages[:-1]) and 1 <= len(pages[-1]) <= 5
    seen = [r["id"] for page in pages for r in page]
    assert len(seen) == len(set(seen))
    assert set(seen) == ids(synthea.of_type("Observation"))


@pytest.mark.parametrize("authorization", [None, "Bearer not-the-token", "Basic dXNlcjpwYXNz"])
def test_a_wrong_or_missing_token_is_401(
    fhir_server: FhirServer, authorization: str | None
) -> None:
    headers = {"Accept": FHIR_JSON} | ({"Authorization": authorization} if authorization else {})
    url = f"{fhir_server.base_url}/Patient/{fhir_server.patient_ids[0]}"
    response = requests.get(url, headers=headers, timeout=30)
    assert response.status_code == 401
    assert response.headers["WWW-Authenticate"].startswith("Bearer")
    outcome = response.json()
    assert outcome["resourceType"] == "OperationOutcome"
    assert outcome["issue"][0]["code"] == "login"


def test_counts_per_type_equal_the_bundle(fhir_server: FhirServer) -> None:
    from fhir_adapters.synthea import load_bundle, resources_by_type

    synthea = patient_where(lambda p: len(p.resources) >= 10)
    expected = resources_by_type(load_bundle(synthea.bundle_path))
    for resource_type in PATIENT_SEARCHABLE:
        found = total(fhir_server, f"{resource_type}?patient={synthea.id}")
        assert found == len(expected.get(resource_type, [])), resource_type


def test_conditional_reference_resolves_inside_a_transaction(fhir_server: FhirServer) -> None:
    """How newer Synthea bundles point at practitioners loaded from another bundle."""
    npi = f"test-{uuid.uuid4().hex}"
    practitioner = {
        "resourceType": "Practitioner",
        "id": f"test-{uuid.uuid4().hex[:20]}",
        "identifier": [{"system": NPI, "value": npi}],
    }
    assert put(fhir_server, practitioner).status_code == 201
    eid = f"test-{uuid.uuid4().hex[:20]}"
    encounter = {
        "resourceType": "Encounter",
        "id": eid,
        "status": "finished",
        "class": {"system": "http://terminology.hl7.org/CodeSystem/v3-ActCode", "code": "AMB"},
        "subject": {"reference": f"Patient/{fhir_server.patient_ids[0]}"},
        "participant": [{"individual": {"reference": f"Practitioner?identifier={NPI}|{npi}"}}],
    }
    transaction = {
        "resourceType": "Bundle",
        "type": "transaction",
        "entry": [{"resource": encounter, "request": {"method": "PUT", "url": "Encounter/" + eid}}],
    }
    try:
        response = requests.post(
            fhir_server.base_url,
            json=transaction,
            headers={**fhir_server.headers, "Content-Type": FHIR_JSON},
            timeout=30,
        )
        assert response.status_code == 200, response.text[:2000]
        stored = get(fhir_server, f"Encounter/{eid}").json()
        reference = stored["participant"][0]["individual"]["reference"]
        assert reference == f"Practitioner/{practitioner['id']}"
    finally:
        # The encounter belongs to a shared patient: other tests compare that patient's
        # data on this session's server with its prefetch (encounters included).
        fhir_server.request("DELETE", f"Encounter/{eid}")


def test_binary_round_trip_as_fhir_json(fhir_server: FhirServer) -> None:
    data = base64.b64encode(b"FINDINGS: no acute disease.").decode()
    binary = {
        "resourceType": "Binary",
        "id": f"test-{uuid.uuid4().hex[:20]}",
        "contentType": "text/plain",
        "data": data,
    }
    assert put(fhir_server, binary).status_code == 201
    stored = get(fhir_server, f"Binary/{binary['id']}").json()
    assert (stored["contentType"], stored["data"]) == ("text/plain", data)


def test_endpoint_resources_can_be_stored_and_searched(fhir_server: FhirServer) -> None:
    endpoint = wado_rs_endpoint(f"test-{uuid.uuid4().hex[:20]}", "http://127.0.0.1:8042/dicom-web")
    assert put(fhir_server, endpoint).status_code == 201
    found = search_ids(fhir_server, f"Endpoint?_id={endpoint['id']}&connection-type=dicom-wado-rs")
    assert found == {endpoint["id"]}
