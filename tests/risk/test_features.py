"""The declared feature spec and its evaluator: real Synthea patients checked against the raw
FHIR JSON (values, units, dates), window and unit rules, and the spec's own validation."""

from __future__ import annotations

import json
import math
from datetime import UTC, date, datetime, timedelta

import pytest

from fhir_adapters.as_of import json_datetime
from fhir_adapters.synthea import load_bundle, resources_by_type
from models.risk.catalog import ACUTE_CARE_1Y, CVD_EVENT_3Y, LEARNED_MODELS
from models.risk.features.evaluate import FeaturesUnavailable, evaluate, required_keys
from models.risk.features.spec import (
    FeatureSet,
    FeatureSpec,
    FeatureSpecInvalid,
    encounter_class,
    loinc,
)
from models.risk.learned import ARTIFACTS, SPEC_FILE
from models.risk.training.dataset import context_as_of, record_end
from tests.conftest import synthea_bundles
from tests.risk.builders import encounter, patient, value

SYNTHEA_STATINS = {"316672", "312961", "259255"}  # simvastatin 10, 20; atorvastatin 80
DIABETES = {"44054006", "368581000119106", "422034002", "127013003"}


def _values_of(resource: dict, code: str) -> list[tuple[datetime, float, str]]:
    """(when, value, unit) of LOINC ``code`` in an Observation, itself or a component."""
    when = json_datetime(resource.get("effectiveDateTime", ""))
    holders = [resource, *resource.get("component", [])]
    return [
        (when, h["valueQuantity"]["value"], h["valueQuantity"].get("code"))
        for h in holders
        if any(c.get("code") == code for c in h.get("code", {}).get("coding", []))
        and "valueQuantity" in h
    ]


def _raw_latest(resources: dict, code: str, as_of: date, window: int):
    found = [
        v
        for o in resources.get("Observation", [])
        for v in _values_of(o, code)
        if v[0] is not None and as_of - timedelta(days=window) <= v[0].date() <= as_of
    ]
    return max(found, key=lambda v: v[0]) if found else None


def _in_window(when: str, as_of: date, window: int | None) -> bool:
    day = json_datetime(when).date()
    return day <= as_of and (window is None or (as_of - day).days <= window)


def _cases(count: int = 40):
    for bundle in synthea_bundles()[:count]:
        resources = resources_by_type(load_bundle(bundle))
        patient_id = resources["Patient"][0]["id"]
        end = record_end(resources)
        for at in (end, end - timedelta(days=900)):
            yield resources, patient_id, at


def test_features_match_the_raw_fhir_of_real_patients():
    checked = {"sbp": 0, "total_cholesterol": 0, "emergency_1y": 0, "diabetes": 0, "statin": 0}
    for resources, patient_id, at in _cases():
        context = context_as_of(resources, patient_id, at)
        as_of = at.date()
        cvd = evaluate(CVD_EVENT_3Y.features, context)
        acute = evaluate(ACUTE_CARE_1Y.features, context)
        got = cvd.as_dict() | acute.as_dict()
        birth = date.fromisoformat(resources["Patient"][0]["birthDate"])
        age = as_of.year - birth.year - ((as_of.month, as_of.day) < (birth.month, birth.day))
        assert got["age"] == age
        assert got["male"] == {"male": 1.0, "female": 0.0}[resources["Patient"][0]["gender"]]
        for name, code, window, unit in (
            ("sbp", "8480-6", 730, "mm[Hg]"),
            ("total_cholesterol", "2093-3", 1825, "mg/dL"),
        ):
            raw = _raw_latest(resources, code, as_of, window)
            if raw is None:
                assert math.isnan(got[name]), (patient_id, name)
                continue
            when, amount, raw_unit = raw
            assert raw_unit in (unit, "mmHg")
            assert got[name] == pytest.approx(amount)
            evidence = cvd.evidence[CVD_EVENT_3Y.features.names.index(name)]
            assert evidence.date == when and evidence.unit == unit
            assert evidence.reference.startswith("Observation/")
            checked[name] += 1
        emergencies = [
            e
            for e in resources.get("Encounter", [])
            if e["class"]["code"] == "EMER" and _in_window(e["period"]["start"], as_of, 365)
        ]
        assert got["emergency_1y"] == len(emergencies)
        checked["emergency_1y"] += bool(emergencies)
        diabetic = any(
            c["code"]["coding"][0]["code"] in DIABETES
            and _in_window(c["onsetDateTime"], as_of, None)
            for c in resources.get("Condition", [])
        )
        assert got["diabetes"] == float(diabetic)
        checked["diabetes"] += diabetic
        statin = any(
            m["medicationCodeableConcept"]["coding"][0]["code"] in SYNTHEA_STATINS
            and _in_window(m["authoredOn"], as_of, 730)
            for m in resources.get("MedicationRequest", [])
        )
        assert got["statin"] == float(statin)
        checked["statin"] += statin
    assert all(count >= 2 for count in checked.values()), checked


def test_window_edges_units_and_missing_values():
    spec = FeatureSet(
        (
            FeatureSpec("sbp", "SBP", "observation", "latest", loinc("8480-6"), 730, "mm[Hg]"),
            FeatureSpec("tc", "TC", "observation", "mean", loinc("2093-3"), 365, "mg/dL"),
            FeatureSpec("n_tc", "TC count", "observation", "count", loinc("2093-3"), 365, "mg/dL"),
            FeatureSpec("er", "ER", "encounter", "days_since", encounter_class("EMER"), None),
        )
    )
    today = date(2024, 6, 1)
    edge = (today - timedelta(days=730)).isoformat()
    record = patient(
        values=[
            value("8480-6", 130, "mm[Hg]", edge),
            value("2093-3", 5.0, "mmol/L", "2024-01-01"),  # converted: 193.35 mg/dL
            value("2093-3", 200, "mg/dL", "2024-03-01"),
            value("2093-3", 1.9, "g/L", "2024-04-01"),  # not convertible: left out
        ],
        encounters=[encounter("EMER", "2024-05-02")],
        today=today,
    )
    got = evaluate(spec, record).as_dict()
    assert got["sbp"] == 130, "a value exactly window_days old is inside"
    assert got["tc"] == pytest.approx((5.0 * 38.67 + 200) / 2)
    assert got["n_tc"] == 2
    assert got["er"] == 30
    older = patient(
        values=[value("8480-6", 130, "mm[Hg]", (today - timedelta(days=731)).isoformat())],
        today=today,
    )
    assert math.isnan(evaluate(spec, older).as_dict()["sbp"])
    assert math.isnan(evaluate(spec, older).as_dict()["er"])


def test_features_refuse_when_their_data_could_not_be_had():
    assert required_keys(ACUTE_CARE_1Y.features) == {
        "observations",
        "condition_history",
        "medication_history",
        "encounters",
    }
    assert "smoking_status" in required_keys(CVD_EVENT_3Y.features)
    with pytest.raises(FeaturesUnavailable, match="encounters"):
        evaluate(ACUTE_CARE_1Y.features, patient(unavailable={"encounters": "deadline"}))


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"source": "observation", "aggregation": "present", "codes": loinc("1-8")}, "not allowed"),
        ({"source": "condition", "aggregation": "present"}, "need codes"),
        ({"source": "observation", "aggregation": "latest", "codes": loinc("1-8")}, "need a unit"),
        (
            {"source": "observation", "aggregation": "latest_in", "codes": loinc("1-8")},
            "value_codes",
        ),
        ({"source": "demographic", "aggregation": "age", "window_days": 0}, "positive"),
    ],
)
def test_feature_spec_rules(kwargs, message):
    with pytest.raises(FeatureSpecInvalid, match=message):
        FeatureSpec(name="x", label="x", **kwargs)


def test_feature_sets_round_trip_and_match_the_shipped_artifacts():
    for model_id, spec in LEARNED_MODELS.items():
        assert FeatureSet.from_json(spec.features.to_json()) == spec.features
        shipped = json.loads((ARTIFACTS / model_id / SPEC_FILE).read_text())
        assert FeatureSet.from_json(shipped) == spec.features, (
            f"{model_id}: the catalog's features differ from the shipped artifact: retrain "
            "(make models-risk)"
        )
    with pytest.raises(FeatureSpecInvalid, match="unique"):
        FeatureSet((CVD_EVENT_3Y.features.features[0],) * 2)
    with pytest.raises(FeatureSpecInvalid, match="version"):
        FeatureSet.from_json({"version": 99, "features": []})


def test_evaluation_date_is_the_contexts_as_of_day():
    record = patient(encounters=[encounter("EMER", "2024-05-31")], today=date(2024, 6, 1))
    vector = evaluate(ACUTE_CARE_1Y.features, record)
    assert vector.as_of == date(2024, 6, 1)
    assert vector.as_dict()["emergency_1y"] == 1
    later = patient(encounters=[encounter("EMER", "2024-05-31")], today=date(2025, 6, 2))
    assert evaluate(ACUTE_CARE_1Y.features, later).as_dict()["emergency_1y"] == 0
    assert datetime(2024, 5, 31, tzinfo=UTC) == vector.evidence[2].date
