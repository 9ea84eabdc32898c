"""Scores as FHIR R4 ``RiskAssessment`` resources, and their bulk NDJSON output.

One resource per eligible patient and model (a score row of :mod:`population.scoring`),
in the shape the service's FHIR API gives a risk card's result
(``cds/fhir_api/result_resources.py``; the code systems are the same strings):

=============================== ===========================================================
element                         value
=============================== ===========================================================
``id``                          UUID 5 of (model artifact hash, patient, as-of day): the
                                same run on the same data gives the same ids
``identifier``                  ``urn:wardround:risk-assessment`` ``model|patient|as-of``
``contained`` Device ``model``  model id, version, artifact SHA-256 (identifier
                                ``urn:wardround:model-artifact-sha256``)
``status``                      ``final``
``method`` / ``performer``      ``urn:wardround:model`` model id / the contained Device
``code``, ``prediction.outcome`` the predicted outcome (``urn:wardround:risk:outcome``)
``subject``                     ``Patient/<id>``
``occurrenceDateTime``          the as-of day
``basis``                       the records the model's inputs rest on (Observation,
                                Condition, MedicationRequest, Encounter)
``prediction[0]``               ``probabilityDecimal``; ``qualitativeRisk`` (the band);
                                ``whenPeriod`` as-of day → + the model's horizon;
                                ``rationale``: the top factors in clinical words;
                                ``extension`` per factor (``…:prediction-factor``: name,
                                contribution to the calibrated log-odds, value)
=============================== ===========================================================
"""

from __future__ import annotations

import json
import math
import shutil
import uuid
from collections.abc import Iterator, Mapping
from dataclasses import dataclass
from datetime import date, timedelta
from pathlib import Path
from typing import Any

from pyspark.sql import DataFrame, Observation
from pyspark.sql import functions as F

from population.scoring import ScoringModel

WR = "urn:wardround"
MODEL_SYSTEM = f"{WR}:model"
MODEL_SHA256_SYSTEM = f"{WR}:model-artifact-sha256"
OUTCOME_SYSTEM = f"{WR}:risk:outcome"
ASSESSMENT_SYSTEM = f"{WR}:risk-assessment"
FACTOR_EXTENSION = f"{WR}:fhir:extension:prediction-factor"
RISK_PROBABILITY = "http://terminology.hl7.org/CodeSystem/risk-probability"
ID_NAMESPACE = uuid.UUID("6f1b8f57-5a8e-4a36-9d4c-3f3c0b1f6a20")
#: The NDJSON files' stem (Bulk Data: one resource type per file).
RESOURCE_TYPE = "RiskAssessment"


@dataclass(frozen=True)
class ModelWords:
    """What a RiskAssessment says of its model (no booster: shipped inside a closure)."""

    id: str
    version: str
    sha256: str
    title: str
    outcome_code: str
    outcome_label: str
    horizon_days: int

    @classmethod
    def of(cls, model: ScoringModel) -> ModelWords:
        return cls(
            model.id,
            model.version,
            model.sha256,
            model.title,
            model.outcome_code,
            model.outcome_label,
            model.horizon_days,
        )


def _items(value: Any) -> list[Any]:
    """An array cell as a list (Arrow gives numpy arrays; null is None)."""
    return [] if value is None else list(value)


def _number(value: float) -> str:
    return f"{value:.1f}".rstrip("0").rstrip(".")


def factor_value(factor: Mapping[str, Any]) -> str:
    """A feature's value as a clinician reads it ("152 mm[Hg]", "yes", "not recorded")."""
    value = factor.get("value")
    if value is None or (isinstance(value, float) and math.isnan(value)):
        return "not recorded"
    aggregation = factor.get("aggregation")
    if aggregation in ("present", "active", "latest_in"):
        return "yes" if value else "no"
    if aggregation == "male":
        return "male" if value else "female"
    if aggregation == "age":
        return f"{int(value)} years"
    if aggregation == "days_since":
        return f"{int(value)} days ago"
    if aggregation == "count":
        return str(int(value))
    unit = factor.get("unit")
    return _number(float(value)) + (f" {unit}" if unit else "")


def rationale(row: Mapping[str, Any], words: ModelWords) -> str:
    factors = _items(row.get("factors"))
    years = words.horizon_days / 365
    horizon = f"{_number(years)} year{'s' if years != 1 else ''}"
    head = f"{row['probability']:.1%} risk of {words.outcome_label} within {horizon}"
    if not factors:
        return head + "."
    parts = [
        f"{f['label']}: {factor_value(f)} ({'raises' if f['contribution'] > 0 else 'lowers'} "
        "the risk)"
        for f in factors
    ]
    return f"{head}. Main factors: " + "; ".join(parts) + "."


def _qualitative(band: str | None) -> dict[str, Any]:
    if band == "high":
        return {"coding": [{"system": RISK_PROBABILITY, "code": "high"}], "text": "high"}
    if band == "elevated":
        return {"text": "elevated (at or above the model's action threshold)"}
    return {"text": "below the model's action threshold"}


def assessment_id(words: ModelWords, patient_id: str, as_of: date) -> str:
    return str(uuid.uuid5(ID_NAMESPACE, f"{words.sha256}|{patient_id}|{as_of.isoformat()}"))


def risk_assessment(row: Mapping[str, Any], words: ModelWords) -> dict[str, Any]:
    """The RiskAssessment of one eligible score row."""
    patient_id = str(row["patient_id"])
    as_of: date = row["as_of"]
    outcome = {
        "coding": [
            {"system": OUTCOME_SYSTEM, "code": words.outcome_code, "display": words.outcome_label}
        ],
        "text": words.outcome_label,
    }
    device = {
        "resourceType": "Device",
        "id": "model",
        "identifier": [{"system": MODEL_SHA256_SYSTEM, "value": words.sha256}],
        "deviceName": [{"name": words.id, "type": "model-name"}],
        "type": {"coding": [{"system": MODEL_SYSTEM, "code": words.id}], "text": words.title},
        "version": [{"value": words.version}],
    }
    factors = [
        {
            "url": FACTOR_EXTENSION,
            "extension": [
                {"url": "name", "valueString": str(f["label"])},
                {"url": "contribution", "valueDecimal": float(f["contribution"])},
                {"url": "value", "valueString": factor_value(f)},
            ],
        }
        for f in _items(row.get("factors"))
    ]
    prediction: dict[str, Any] = {
        "outcome": outcome,
        "probabilityDecimal": float(row["probability"]),
        "qualitativeRisk": _qualitative(row.get("band")),
        "whenPeriod": {
            "start": as_of.isoformat(),
            "end": (as_of + timedelta(days=words.horizon_days)).isoformat(),
        },
        "rationale": rationale(row, words),
    }
    if factors:
        prediction["extension"] = factors
    resource: dict[str, Any] = {
        "resourceType": "RiskAssessment",
        "id": assessment_id(words, patient_id, as_of),
        "contained": [device],
        "identifier": [
            {"system": ASSESSMENT_SYSTEM, "value": f"{words.id}|{patient_id}|{as_of.isoformat()}"}
        ],
        "status": "final",
        "method": {
            "coding": [{"system": MODEL_SYSTEM, "code": words.id, "display": words.title}],
            "text": f"{words.title} (version {words.version})",
        },
        "code": outcome,
        "subject": {"reference": f"Patient/{patient_id}"},
        "occurrenceDateTime": as_of.isoformat(),
        "performer": {"reference": "#model"},
    }
    basis = list(dict.fromkeys(str(b) for b in _items(row.get("basis"))))
    if basis:
        resource["basis"] = [{"reference": b} for b in basis]
    resource["prediction"] = [prediction]
    return resource


def write_risk_assessments(
    scores: DataFrame, models: Mapping[str, ModelWords], out: Path
) -> tuple[int, list[Path]]:
    """The eligible rows of ``scores`` as ``out/RiskAssessment.NNN.ndjson`` (one per
    Spark partition); (resources written, files). ``out`` must not hold such files yet."""
    import pandas as pd

    def to_json(batches: Iterator[Any]) -> Iterator[Any]:  # runs on executors
        for batch in batches:
            lines = [
                json.dumps(risk_assessment(row, models[row["model_id"]]), separators=(",", ":"))
                for row in batch.to_dict("records")
            ]
            yield pd.DataFrame({"value": lines})

    written = Observation("risk-assessments")
    lines = scores.filter(F.col("eligible")).mapInPandas(to_json, "value string")
    lines = lines.observe(written, F.count(F.lit(1)).alias("resources"))
    staging = out / f".{RESOURCE_TYPE}.parts"
    lines.write.mode("errorifexists").text(str(staging))
    out.mkdir(parents=True, exist_ok=True)
    files = []
    for part in sorted(staging.glob("part-*")):
        if part.stat().st_size == 0:
            continue
        target = out / f"{RESOURCE_TYPE}.{len(files):03d}.ndjson"
        if target.exists():
            raise FileExistsError(target)
        part.rename(target)
        files.append(target)
    shutil.rmtree(staging)
    return int(written.get["resources"]), files
