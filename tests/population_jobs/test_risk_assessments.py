"""A score row → RiskAssessment: each element from the row, valid FHIR R4, stable ids."""

from __future__ import annotations

import math
from datetime import date

import numpy as np
from fhir.resources.R4B.riskassessment import RiskAssessment

from population.risk_assessments import ModelWords, factor_value, rationale, risk_assessment

WORDS = ModelWords(
    "cvd-event-3y", "1.0.0", "ab" * 32, "Cardiovascular event", "cvd-event-3y",
    "a first cardiovascular event", 1095,
)  # fmt: skip


def _row(**changes: object) -> dict[str, object]:
    factors = np.array(
        [
            {"feature": "sbp", "label": "Systolic blood pressure", "contribution": 0.4,
             "value": 152.0, "unit": "mm[Hg]", "aggregation": "latest",
             "basis": "Observation/o1"},
            {"feature": "statin", "label": "Statin", "contribution": -0.1, "value": 0.0,
             "unit": None, "aggregation": "present", "basis": None},
            {"feature": "ldl", "label": "LDL cholesterol", "contribution": 0.05, "value": None,
             "unit": "mg/dL", "aggregation": "latest", "basis": None},
        ],
        dtype=object,
    )  # fmt: skip
    row: dict[str, object] = {
        "patient_id": "p1",
        "model_id": WORDS.id,
        "as_of": date(2020, 6, 30),
        "probability": 0.1234,
        "band": "elevated",
        "factors": factors,
        "basis": np.array(["Observation/o1", "Condition/c1", "Observation/o1"], dtype=object),
    }
    return row | changes


def test_the_resource_says_what_the_row_says() -> None:
    data = risk_assessment(_row(), WORDS)
    resource = RiskAssessment.model_validate(data)
    assert resource.status == "final" and data["subject"] == {"reference": "Patient/p1"}
    assert data["occurrenceDateTime"] == "2020-06-30"
    assert [b["reference"] for b in data["basis"]] == ["Observation/o1", "Condition/c1"]
    prediction = data["prediction"][0]
    assert prediction["probabilityDecimal"] == 0.1234
    assert prediction["whenPeriod"] == {"start": "2020-06-30", "end": "2023-06-30"}
    assert "elevated" in prediction["qualitativeRisk"]["text"]
    assert prediction["rationale"] == (
        "12.3% risk of a first cardiovascular event within 3 years. Main factors: "
        "Systolic blood pressure: 152 mm[Hg] (raises the risk); Statin: no (lowers the "
        "risk); LDL cholesterol: not recorded (raises the risk)."
    )
    assert len(prediction["extension"]) == 3
    device = data["contained"][0]
    assert device["identifier"][0]["value"] == WORDS.sha256
    assert device["version"][0]["value"] == "1.0.0"
    assert data["performer"] == {"reference": "#model"}
    # the same row gives the same id; another patient, day or model artefact another one
    assert risk_assessment(_row(), WORDS)["id"] == data["id"]
    assert risk_assessment(_row(patient_id="p2"), WORDS)["id"] != data["id"]
    assert risk_assessment(_row(as_of=date(2020, 7, 1)), WORDS)["id"] != data["id"]


def test_a_row_without_factors_or_basis_is_still_valid() -> None:
    data = risk_assessment(_row(factors=None, basis=None, band=None), WORDS)
    RiskAssessment.model_validate(data)
    assert "basis" not in data and "extension" not in data["prediction"][0]
    assert data["prediction"][0]["qualitativeRisk"]["text"].startswith("below")
    assert rationale(_row(factors=None), WORDS).endswith("within 3 years.")


def test_values_read_as_a_clinician_reads_them() -> None:
    assert factor_value({"value": math.nan, "aggregation": "latest"}) == "not recorded"
    assert factor_value({"value": 1.0, "aggregation": "present"}) == "yes"
    assert factor_value({"value": 3.0, "aggregation": "count"}) == "3"
    assert factor_value({"value": 67.0, "aggregation": "age"}) == "67 years"
    assert factor_value({"value": 1.0, "aggregation": "male"}) == "male"
    assert factor_value({"value": 12.0, "aggregation": "days_since"}) == "12 days ago"
    assert factor_value({"value": 5.25, "aggregation": "latest", "unit": "%"}) == "5.2 %"
