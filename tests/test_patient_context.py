"""PatientContext: built from prefetch or from the real FHIR server, the same either way."""

from __future__ import annotations

import copy
import dataclasses
from concurrent.futures import ThreadPoolExecutor
from datetime import date

import pytest

from fhir_adapters import (
    PATIENT_CONTEXT_PREFETCH,
    ClientSettings,
    FhirSource,
    PatientLoader,
    PatientRequest,
    PrefetchDataInvalid,
    PrefetchFetcher,
    SessionPool,
    build_patient_context,
)
from fhir_adapters.patient_context import LOINC, RXNORM, SNOMED
from fhir_adapters.synthea import load_bundle, prefetch_for, resources_by_type
from tests.conftest import synthea_bundles

TODAY = date(2026, 11, 25)


def _prefetch(bundle_path):
    resources = resources_by_type(load_bundle(bundle_path))
    return resources["Patient"][0]["id"], prefetch_for(resources)


@pytest.fixture(scope="module")
def loader():
    pool = SessionPool(ClientSettings(timeout=(2.0, 10.0)))
    with ThreadPoolExecutor(8) as executor:
        yield PatientLoader(pool, PrefetchFetcher(executor, deadline_s=30.0))
    pool.close()


def _request(patient_id, source, supplied=None):
    return PatientRequest(
        templates=PATIENT_CONTEXT_PREFETCH,
        required=frozenset({"patient"}),
        supplied=supplied,
        context={"patientId": patient_id, "userId": "Practitioner/x"},
        source=source,
    )


# ----------------------------------------------------------------------------- from prefetch
def test_a_synthea_patient_in_full():
    patient_id, prefetch = _prefetch(synthea_bundles()[0])
    context = build_patient_context(prefetch, patient_id, today=TODAY)
    assert context.patient_id == patient_id
    assert context.sex in {"male", "female"}
    assert context.age_years is not None and context.age_years >= 0
    assert context.problems and all(p.snomed_codes for p in context.problems)
    assert all(p.clinical_status == "active" for p in context.problems)
    assert context.latest, "vital signs and labs by LOINC"
    assert context.warnings == ()


def _resolved_record():  # type: ignore[no-untyped-def]
    for bundle in synthea_bundles():
        resources = resources_by_type(load_bundle(bundle))
        if any(c.get("abatementDateTime") for c in resources.get("Condition", [])) and any(
            m["status"] == "active" for m in resources.get("MedicationRequest", [])
        ):
            return resources
    pytest.fail("no shared patient with a resolved condition and an active medication")


def test_the_record_over_time_conditions_medications_encounters_values():
    resources = _resolved_record()
    patient_id = resources["Patient"][0]["id"]
    context = build_patient_context(prefetch_for(resources), patient_id, today=TODAY)
    assert context.as_of == TODAY
    raw_conditions = resources["Condition"]
    assert sorted(p.id for p in context.conditions) == sorted(c["id"] for c in raw_conditions)
    resolved = [p for p in context.conditions if p.clinical_status == "resolved"]
    assert resolved and all(p.abatement is not None for p in resolved)
    assert {p.id for p in context.problems} == {
        c["id"] for c in raw_conditions if c["clinicalStatus"]["coding"][0]["code"] == "active"
    }
    assert len(context.medication_history) == len(resources["MedicationRequest"])
    assert {m.id for m in context.medications} == {
        m["id"] for m in resources["MedicationRequest"] if m["status"] == "active"
    }
    assert [e.id for e in context.encounters] == [
        e["id"] for e in sorted(resources["Encounter"], key=lambda e: e["period"]["start"])
    ]
    assert {e.class_code for e in context.encounters} <= {"AMB", "EMER", "IMP"}
    first = context.encounters[0]
    assert first.start.isoformat().startswith(
        sorted(e["period"]["start"] for e in resources["Encounter"])[0][:19]
    )
    systolic = [
        o for o in resources["Observation"]
        for c in o.get("component", [])
        if c["code"]["coding"][0]["code"] == "8480-6"
    ]  # fmt: skip
    assert len(context.history["8480-6"]) == len(systolic)
    assert context.history["8480-6"][-1] == context.latest["8480-6"]
    smoking = context.latest["72166-2"]
    assert smoking.value_concept.codes(SNOMED) and smoking.category == "survey"
    race = resources["Patient"][0]["extension"][0]["extension"][0]["valueCoding"]["code"]
    assert context.race[0].code == race and context.ethnicity


def test_active_problems_come_from_the_history_when_only_it_is_sent():
    resources = _resolved_record()
    patient_id = resources["Patient"][0]["id"]
    prefetch = prefetch_for(resources)
    narrow = build_patient_context(
        {k: prefetch[k] for k in ("patient", "conditions", "medications")}, patient_id
    )
    history = build_patient_context(
        {k: prefetch[k] for k in ("patient", "condition_history", "medication_history")},
        patient_id,
    )
    assert narrow.problems == history.problems and narrow.medications == history.medications
    assert narrow.conditions == () and narrow.encounters == ()
    assert len(history.conditions) > len(history.problems)


def test_latest_vitals_are_the_newest_and_panels_are_split_into_components():
    for bundle in synthea_bundles()[:20]:
        patient_id, prefetch = _prefetch(bundle)
        context = build_patient_context(prefetch, patient_id, today=TODAY)
        systolic = context.measurement("8480-6")
        if systolic is None:
            continue
        panels = [
            e["resource"]
            for e in prefetch["observations"]["entry"]
            if any(c["code"] == "55284-4" for c in e["resource"]["code"]["coding"])
            or any(c["code"] == "85354-9" for c in e["resource"]["code"]["coding"])
        ]
        newest = max(panels, key=lambda r: r["effectiveDateTime"])
        assert systolic.observation_id == newest["id"]
        assert systolic.unit == "mm[Hg]" and systolic.normalised.unit == "mm[Hg]"
        return
    pytest.fail("no Synthea patient with a blood pressure panel in the first 20")


def test_medications_carry_rxnorm_codes():
    for bundle in synthea_bundles():
        patient_id, prefetch = _prefetch(bundle)
        context = build_patient_context(prefetch, patient_id, today=TODAY)
        if context.medications:
            assert all(m.rxnorm_codes for m in context.medications)
            assert all(m.concept.has_code(RXNORM, m.rxnorm_codes[0]) for m in context.medications)
            return
    pytest.fail("no Synthea patient with an active medication")


def test_allergies_keep_substance_codes_and_criticality():
    seen = 0
    for bundle in synthea_bundles():
        patient_id, prefetch = _prefetch(bundle)
        wanted = {key: prefetch[key] for key in ("patient", "allergies")}
        context = build_patient_context(wanted, patient_id, today=TODAY)
        for allergy in context.allergies:
            assert allergy.substance.codes(SNOMED) or allergy.substance.label
            assert allergy.criticality in {None, "low", "high", "unable-to-assess"}
            seen += 1
    assert seen > 0


def test_one_bad_observation_does_not_lose_the_patient():
    patient_id, prefetch = _prefetch(synthea_bundles()[0])
    prefetch = copy.deepcopy(prefetch)
    entries = prefetch["observations"]["entry"]
    bad_id = entries[0]["resource"]["id"]
    entries[0]["resource"]["status"] = "not-a-status"
    entries[0]["resource"]["valueQuantity"] = {"value": "lots"}
    context = build_patient_context(prefetch, patient_id, today=TODAY)
    assert context.latest
    assert all(m.observation_id != bad_id for m in context.latest.values())
    assert any(w.startswith("observations.entry[0]") for w in context.warnings)


def test_another_patients_resource_is_skipped_with_a_warning():
    patient_id, prefetch = _prefetch(synthea_bundles()[0])
    _, other = _prefetch(synthea_bundles()[1])
    prefetch = copy.deepcopy(prefetch)
    stranger = other["conditions"]["entry"][0]
    prefetch["conditions"]["entry"].append(stranger)
    context = build_patient_context(prefetch, patient_id, today=TODAY)
    assert all(p.id != stranger["resource"]["id"] for p in context.problems)
    assert any("is not this patient's" in w for w in context.warnings)


def test_a_prefetched_key_that_is_not_a_bundle_is_refused():
    patient_id, prefetch = _prefetch(synthea_bundles()[0])
    prefetch = prefetch | {"conditions": {"resourceType": "Patient"}}
    with pytest.raises(PrefetchDataInvalid) as caught:
        build_patient_context(prefetch, patient_id, supplied_keys=frozenset(prefetch))
    assert caught.value.key == "conditions"


def test_ucum_normalisation_converts_units_models_need():
    patient_id, prefetch = _prefetch(synthea_bundles()[0])
    observation = {
        "resourceType": "Observation",
        "id": "chol-mmol",
        "status": "final",
        "code": {"coding": [{"system": LOINC, "code": "2093-3"}]},
        "subject": {"reference": f"Patient/{patient_id}"},
        "effectiveDateTime": "2099-01-01T00:00:00Z",
        "valueQuantity": {"value": 5.0, "unit": "mmol/L", "system": "http://unitsofmeasure.org",
                          "code": "mmol/L"},
    }  # fmt: skip
    prefetch = copy.deepcopy(prefetch)
    prefetch["observations"]["entry"].append({"resource": observation})
    cholesterol = build_patient_context(prefetch, patient_id).measurement("2093-3")
    assert (cholesterol.value, cholesterol.unit) == (5.0, "mmol/L")
    assert cholesterol.normalised.unit == "mg/dL"
    assert cholesterol.normalised.value == pytest.approx(193.35)


def test_the_context_is_immutable():
    patient_id, prefetch = _prefetch(synthea_bundles()[0])
    context = build_patient_context(prefetch, patient_id)
    with pytest.raises(dataclasses.FrozenInstanceError):
        context.age_years = 1  # type: ignore[misc]
    with pytest.raises(TypeError):
        context.latest["8480-6"] = None  # type: ignore[index]
    assert isinstance(context.problems, tuple)


def test_draft_orders_are_typed_and_selections_marked():
    patient_id, prefetch = _prefetch(synthea_bundles()[0])
    order = {
        "resourceType": "MedicationRequest",
        "id": "draft-1",
        "status": "draft",
        "intent": "order",
        "subject": {"reference": f"Patient/{patient_id}"},
        "medicationCodeableConcept": {
            "coding": [{"system": RXNORM, "code": "197361", "display": "Amlodipine 5 MG"}]
        },
        "dosageInstruction": [
            {
                "timing": {"repeat": {"frequency": 1, "period": 1, "periodUnit": "d"}},
                "route": {"coding": [{"system": SNOMED, "code": "26643006", "display": "Oral"}]},
                "doseAndRate": [{"doseQuantity": {"value": 5, "unit": "mg", "code": "mg"}}],
            }
        ],
    }
    bundle = {"resourceType": "Bundle", "type": "collection", "entry": [{"resource": order}]}
    context = build_patient_context(
        prefetch, patient_id, draft_orders_bundle=bundle, selections=("MedicationRequest/draft-1",)
    )
    (draft,) = context.draft_orders
    assert draft.selected and draft.medication is not None
    assert draft.medication.rxnorm_codes == ("197361",)
    dosage = draft.medication.dosages[0]
    assert dosage.dose.value == 5 and dosage.dose.unit == "mg"
    assert dosage.doses_per_day == 1 and dosage.route.label == "Oral"


# ----------------------------------------------------------------------------- from the server
@pytest.mark.fhir_server
def test_every_shared_patient_gives_the_same_context_from_prefetch_and_from_the_server(
    fhir_server, loader
):
    source = FhirSource(fhir_server.base_url, fhir_server.token)
    bundles = synthea_bundles()
    assert len(bundles) == len(fhir_server.patient_ids)
    for bundle in bundles:
        patient_id, prefetch = _prefetch(bundle)
        from_prefetch = loader.load(_request(patient_id, FhirSource(None), prefetch))
        from_server = loader.load(_request(patient_id, source))
        assert {o.source for o in from_server.prefetch.outcomes} == {"fetched"}, bundle.name
        assert from_server.patient.warnings == (), bundle.name
        assert from_server.patient == from_prefetch.patient, bundle.name


@pytest.mark.fhir_server
def test_a_partly_prefetched_request_fetches_only_what_is_absent(fhir_server, loader):
    patient_id, prefetch = _prefetch(synthea_bundles()[5])
    supplied = {"patient": prefetch["patient"], "conditions": prefetch["conditions"]}
    supplied["allergies"] = None  # the EHR looked: none. Not fetched again.
    loaded = loader.load(
        _request(patient_id, FhirSource(fhir_server.base_url, fhir_server.token), supplied)
    )
    sources = {o.key: o.source for o in loaded.prefetch.outcomes}
    assert sources["patient"] == sources["conditions"] == "prefetch"
    assert sources["allergies"] == "prefetch-null"
    assert sources["observations"] == sources["medications"] == "fetched"
    assert loaded.patient.allergies == ()
