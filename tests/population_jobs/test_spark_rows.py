"""Spark record rows equal the Python reference rows: every shared patient, and edge cases."""

from __future__ import annotations

import dataclasses
import json
from collections import Counter
from datetime import UTC, datetime
from typing import Any

import pytest
from pyspark.sql import Observation

from fhir_adapters.bulk.ndjson import BulkFolder, ReadStats, read_folder, scan_folder
from fhir_adapters.bulk.synthetic_clones import SYNTHETIC_TAG
from fhir_adapters.record_rows import RESOURCE_TYPES, TABLES, iter_record_rows
from population.bulk_frames import read_type
from population.spark_rows import SPARK_BUILDERS, input_checks, row_schema


def as_row(row_type: type, spark_row: Any) -> object:
    """A collected Spark row as the Python dataclass (timestamps back to aware UTC)."""
    values = spark_row.asDict()
    for name, value in values.items():
        if isinstance(value, datetime):
            values[name] = value.astimezone(UTC)  # PySpark hands back local naive times
        elif isinstance(value, list):
            values[name] = tuple(value)
    return row_type(**values)


def spark_rows(spark: Any, folder: BulkFolder) -> tuple[dict[str, Counter], dict[str, dict]]:
    rows: dict[str, Counter] = {}
    checks: dict[str, dict] = {}
    for resource_type, (table, build) in SPARK_BUILDERS.items():
        frame = read_type(spark, folder, resource_type)
        if frame is None:
            continue
        observed = Observation(resource_type)
        collected = build(frame.observe(observed, *input_checks(resource_type))).collect()
        rows[table] = Counter(as_row(TABLES[table][0], r) for r in collected)
        checks[resource_type] = {k: int(v) for k, v in observed.get.items()}
    return rows, checks


def test_row_schemas_are_the_dataclasses() -> None:
    for row_type, _ in TABLES.values():
        assert row_schema(row_type).names == [f.name for f in dataclasses.fields(row_type)]


def test_spark_rows_equal_python_rows_for_every_shared_patient(
    spark: Any, synthea_ndjson: BulkFolder, python_rows: dict[str, list[object]]
) -> None:
    rows, checks = spark_rows(spark, synthea_ndjson)
    assert set(rows) == set(python_rows)
    for table, expected in python_rows.items():
        assert rows[table] == Counter(expected), table
    assert len(rows["patients"]) == 299
    assert all(not any(v for k, v in c.items() if k != "lines") for c in checks.values())


def _patient(rid: str, **extra: Any) -> dict[str, Any]:
    return {"resourceType": "Patient", "id": rid, **extra}


SNOMED, LOINC, RXNORM = (
    "http://snomed.info/sct",
    "http://loinc.org",
    "http://www.nlm.nih.gov/research/umls/rxnorm",
)
CATEGORY = "http://terminology.hl7.org/CodeSystem/condition-category"
OBS_CATEGORY = "http://terminology.hl7.org/CodeSystem/observation-category"


def _obs(rid: str, code: dict, **extra: Any) -> dict[str, Any]:
    return {
        "resourceType": "Observation",
        "id": rid,
        "status": extra.pop("status", "final"),
        "code": code,
        "subject": {"reference": "Patient/p1"},
        **extra,
    }


def _loinc(code: str, display: str | None = None) -> dict[str, Any]:
    coding = {"system": LOINC, "code": code} | ({"display": display} if display else {})
    return {"coding": [coding]}


EDGE_CASES: dict[str, list[Any]] = {
    "Patient.ndjson": [
        _patient("p1", gender="female", birthDate="1970-02-03"),
        _patient("p2", gender="other", birthDate="1970", deceasedDateTime="2020-05"),
        _patient("p3", deceasedBoolean=True, meta={"tag": [SYNTHETIC_TAG]}),
    ],
    "Condition.ndjson": [
        {
            "resourceType": "Condition",
            "id": "c1",
            "code": {
                "coding": [
                    {"system": SNOMED, "code": "44054006", "display": "Diabetes"},
                    {"system": "http://hl7.org/fhir/sid/icd-10", "code": "E11"},
                ],
                "text": "Type 2 diabetes",
            },
            "category": [
                {"coding": [{"system": CATEGORY, "code": "problem-list-item"}]},
                {"coding": [{"system": "http://other", "code": "x"}]},
            ],
            "clinicalStatus": {"coding": [{"code": "active"}]},
            "verificationStatus": {"coding": [{"display": "no code"}, {"code": "confirmed"}]},
            "subject": {"reference": "https://ehr.example/fhir/Patient/p2"},
            "onsetDateTime": "2019-03-02T10:00:00-05:00",
            "abatementDateTime": "2020",
        },
        {
            "resourceType": "Condition",
            "id": "c2",
            "code": {"text": "Back pain"},
            "subject": {"reference": "Patient/p1"},
            "recordedDate": "2018-06-01",
        },
        {"resourceType": "Condition", "id": "c3", "subject": {"reference": "Patient/p1"}},
        '{"resourceType": "Condition", "id": "broken", ',
        {"resourceType": "Observation", "id": "misfiled", "status": "final", "code": {}},
        {"resourceType": "Condition", "subject": {"reference": "Patient/p1"}},
        {"resourceType": "Condition", "id": "c4", "subject": {"reference": "Group/g1"}},
    ],
    "Observation.ndjson": [
        _obs(
            "o-bp",
            _loinc("85354-9", "Blood pressure panel"),
            category=[{"coding": [{"system": OBS_CATEGORY, "code": "vital-signs"}]}],
            effectiveDateTime="2021-01-02T03:04:05.678+01:00",
            component=[
                {"code": _loinc("8480-6"), "valueQuantity": {"value": 120, "code": "mm[Hg]"}},
                {"code": _loinc("8462-4"), "valueQuantity": {"value": 80.5, "unit": "mmHg"}},
                {"code": {"text": "no loinc"}, "valueQuantity": {"value": 1}},
            ],
        ),
        _obs(
            "o-coded",
            {"coding": [{"system": SNOMED, "code": "x"}, {"system": LOINC, "code": "5778-6"}]},
            category=[{"coding": [{"system": OBS_CATEGORY, "code": "laboratory"}]}],
            valueCodeableConcept={
                "coding": [{"system": SNOMED, "code": "371244009", "display": "Yellow"}]
            },
            effectivePeriod={"start": "2020-01-01", "end": "2020-01-02T00:00:00Z"},
        ),
        _obs("o-string", _loinc("8251-1"), valueString="feels fine", issued="2022-02-02T02:02:02Z"),
        _obs(
            "o-prelim",
            _loinc("8302-2"),
            status="preliminary",
            valueQuantity={"value": 170, "code": "cm"},
        ),
        _obs("o-snomed", {"coding": [{"system": SNOMED, "code": "1"}]}, valueString="x"),
        _obs(
            "o-temp",
            _loinc("8310-5", "Body temperature"),
            valueQuantity={"value": 98.6, "code": "[degF]"},
            effectiveDateTime="2021-07",
        ),
        _obs("o-weight", _loinc("29463-7"), valueQuantity={"value": 150, "code": "[lb_av]"}),
        _obs("o-stone", _loinc("29463-7"), valueQuantity={"value": 10, "code": "[stone_av]"}),
        _obs("o-novalue", _loinc("8867-4")),
        _obs("o-badvalue", _loinc("8867-4"), valueQuantity={"value": "abc"}),
    ],
    "MedicationRequest.ndjson": [
        {
            "resourceType": "MedicationRequest",
            "id": "m1",
            "status": "active",
            "intent": "order",
            "contained": [
                {
                    "resourceType": "Medication",
                    "id": "med1",
                    "code": {"coding": [{"system": RXNORM, "code": "197361"}]},
                },
            ],
            "medicationReference": {"reference": "#med1"},
            "subject": {"reference": "Patient/p1"},
            "authoredOn": "2020-02-02T10:00:00+02:00",
        },
        {
            "resourceType": "MedicationRequest",
            "id": "m2",
            "status": "stopped",
            "intent": "order",
            "medicationReference": {"reference": "Medication/xyz"},
            "subject": {"reference": "Patient/p1"},
        },
        {
            "resourceType": "MedicationRequest",
            "id": "m3",
            "status": "active",
            "intent": "plan",
            "medicationCodeableConcept": {
                "coding": [
                    {"system": RXNORM, "code": "1"},
                    {"system": RXNORM, "code": "2", "display": "two"},
                ],
                "text": "Two codes",
            },
            "subject": {"reference": "Patient/p3"},
        },
    ],
    "Encounter.ndjson": [
        {
            "resourceType": "Encounter",
            "id": "e1",
            "status": "in-progress",
            "class": {"system": "http://terminology.hl7.org/CodeSystem/v3-ActCode", "code": "EMER"},
            "subject": {"reference": "Patient/p1"},
            "period": {"start": "2023-03-03T03:03:03Z"},
        },
        {
            "resourceType": "Encounter",
            "id": "e2",
            "status": "finished",
            "class": {"code": "IMP"},
            "type": [
                {
                    "coding": [
                        {"system": SNOMED, "code": "32485007", "display": "Admission"},
                        {"code": "x"},
                    ]
                },
                {"coding": [{"system": SNOMED, "code": "other"}]},
            ],
            "subject": {"reference": "Patient/p2"},
            "period": {"start": "2023-03-03", "end": "2023-03-05"},
        },
    ],
}


@pytest.fixture(scope="module")
def edge_cases(tmp_path_factory: pytest.TempPathFactory) -> BulkFolder:
    folder = tmp_path_factory.mktemp("edge-cases")
    for name, lines in EDGE_CASES.items():
        text = [line if isinstance(line, str) else json.dumps(line) for line in lines]
        (folder / name).write_text("\n".join(text) + "\n")
    return scan_folder(folder)


def test_spark_rows_equal_python_rows_on_edge_cases(spark: Any, edge_cases: BulkFolder) -> None:
    stats, invalid = ReadStats(), []
    expected: dict[str, Counter] = {}
    resources = read_folder(edge_cases, tuple(sorted(RESOURCE_TYPES)), stats)
    for table, row in iter_record_rows(resources, invalid.append):
        expected.setdefault(table, Counter())[row] += 1

    rows, checks = spark_rows(spark, edge_cases)

    assert rows == expected
    assert stats.problem_counts == {"invalid-json": 1, "wrong-type": 1}
    assert len(invalid) == 1  # o-badvalue: not a FHIR decimal
    assert checks["Condition"] == {
        "lines": 7, "invalid": 1, "wrong_type": 1, "no_id": 1, "no_patient": 1,
    }  # fmt: skip
    assert checks["Observation"]["invalid"] == 1  # o-badvalue does not fit the schema
    by_id = {(r.observation_id, r.loinc): r for r in rows["observations"]}
    assert set(by_id) == {
        ("o-bp", "8480-6"), ("o-bp", "8462-4"), ("o-coded", "5778-6"), ("o-string", "8251-1"),
        ("o-temp", "8310-5"), ("o-weight", "29463-7"), ("o-stone", "29463-7"),
    }  # fmt: skip
    assert by_id[("o-bp", "8462-4")].normalised_unit == "mm[Hg]"
    assert by_id[("o-temp", "8310-5")].normalised_value == pytest.approx(37.0)
    assert by_id[("o-stone", "29463-7")].normalised_value is None
    assert by_id[("o-coded", "5778-6")].value_text == "Yellow"
    assert by_id[("o-bp", "8480-6")].effective == datetime(2021, 1, 2, 2, 4, 5, 678000, UTC)
    c1_rows = sorted((r for r in rows["conditions"] if r.condition_id == "c1"), key=str)
    assert [r.system for r in c1_rows] == ["http://hl7.org/fhir/sid/icd-10", SNOMED]
    c1 = c1_rows[0]
    assert c1.patient_id == "p2" and c1.categories == ("problem-list-item",)
    assert c1.verification_status == "confirmed" and c1.abatement == datetime(
        2020, 1, 1, tzinfo=UTC
    )
    (m1,) = [r for r in rows["medications"] if r.medication_request_id == "m1"]
    assert m1.code == "197361"
    patients = {r.patient_id: r for r in rows["patients"]}
    assert patients["p2"].birth_date is None and patients["p2"].deceased
    assert patients["p3"].synthetic_clone and not patients["p1"].synthetic_clone
