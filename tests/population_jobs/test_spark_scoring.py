"""Scoring on Spark gives every shared patient the score a card would show.

The score job (features, eligibility, mapInPandas scoring, Parquet, RiskAssessment NDJSON)
runs on ``local[2]`` over every shared Synthea patient with both registered learned risk
models; for each patient and model the Parquet row equals ``LearnedRiskModel.predict`` on
the hook path's PatientContext of the same day: the same eligibility (and reason), the
same calibrated probability, band and top factors. Each RiskAssessment is valid FHIR R4
(``fhir.resources.R4B``) and says what the row says.
"""

from __future__ import annotations

import json
import math
from collections.abc import Callable
from datetime import date
from pathlib import Path
from typing import Any

import pytest
from fhir.resources.R4B.riskassessment import RiskAssessment

from fhir_adapters.bulk.ndjson import BulkFolder
from models.risk.learned import LearnedRiskModel, NotEligible, load
from population.features import record_tables
from population.score_job import FHIR, SCORES, ScoreJobResult, run_score_job
from population.scoring import TOP_FACTORS
from tests.population_jobs.conftest import AS_OF

MODEL_IDS = ("cvd-event-3y", "acute-care-1y")


@pytest.fixture(scope="module")
def models() -> list[LearnedRiskModel]:
    return [load(model_id) for model_id in MODEL_IDS]


@pytest.fixture(scope="module")
def scored(
    spark: Any,
    synthea_ndjson: BulkFolder,
    models: list[LearnedRiskModel],
    tmp_path_factory: pytest.TempPathFactory,
) -> tuple[Path, ScoreJobResult]:
    out = tmp_path_factory.mktemp("scores") / "out"
    tables = record_tables(spark, synthea_ndjson)
    return out, run_score_job(spark, tables, models, AS_OF, out)


def _expected(model: LearnedRiskModel, context: Any) -> dict[str, Any]:
    try:
        prediction = model.predict(context)
    except NotEligible as exc:
        return {"eligible": False, "reason": str(exc)}
    return {
        "eligible": True,
        "probability": prediction.probability,
        "band": prediction.band,
        "baseline": prediction.baseline_logit,
        "factors": [
            (f.feature, f.contribution, f.value, f.evidence.reference if f.evidence else None)
            for f in prediction.factors[:TOP_FACTORS]
        ],
    }


def test_spark_scores_equal_the_hook_path(
    spark: Any,
    scored: tuple[Path, ScoreJobResult],
    models: list[LearnedRiskModel],
    contexts_as_of: Callable[[date], dict[str, Any]],
) -> None:
    out, result = scored
    rows = spark.read.parquet(str(out / SCORES)).collect()
    contexts = contexts_as_of(AS_OF)
    assert result.rows == len(rows) == len(contexts) * len(models)
    by_model = {m.id: m for m in models}
    eligible = dict.fromkeys(MODEL_IDS, 0)
    for row in rows:
        model = by_model[row["model_id"]]
        assert (row["model_version"], row["model_sha256"]) == (
            model.identity.version,
            model.identity.sha256,
        )
        assert row["as_of"] == AS_OF
        expected = _expected(model, contexts[row["patient_id"]])
        assert row["eligible"] == expected["eligible"], (row["patient_id"], model.id, expected)
        if not expected["eligible"]:
            assert row["not_eligible_reason"] == expected["reason"]
            assert row["probability"] is None
            continue
        eligible[model.id] += 1
        assert row["probability"] == expected["probability"], row["patient_id"]
        assert row["band"] == expected["band"]
        assert row["baseline_logit"] == pytest.approx(expected["baseline"], abs=1e-12)
        got = [(f["feature"], f["contribution"], f["value"], f["basis"]) for f in row["factors"]]
        assert len(got) == len(expected["factors"])
        for (name, contribution, value, basis), (e_name, e_contribution, e_value, e_basis) in zip(
            got, expected["factors"], strict=True
        ):
            assert name == e_name and basis == e_basis
            assert contribution == pytest.approx(e_contribution, abs=1e-12)
            # a missing value (NaN) is stored as null
            assert (value is None and math.isnan(e_value)) or value == e_value
    # both models score a real share of the panel, and the job's counts say so
    assert eligible["cvd-event-3y"] > 50 and eligible["acute-care-1y"] > 100, eligible
    assert result.eligible == sum(eligible.values())
    assert {k: v["eligible"] for k, v in result.per_model.items()} == eligible


def test_risk_assessments_are_valid_fhir_and_match_the_scores(
    spark: Any, scored: tuple[Path, ScoreJobResult], models: list[LearnedRiskModel]
) -> None:
    out, result = scored
    rows = {
        (r["model_id"], r["patient_id"]): r
        for r in spark.read.parquet(str(out / SCORES)).collect()
        if r["eligible"]
    }
    files = sorted((out / FHIR).iterdir())
    assert files and [f.name for f in files] == [p.name for p in result.files]
    assert all(f.name.startswith("RiskAssessment.") and f.suffix == ".ndjson" for f in files)
    seen = set()
    with_basis = 0
    horizons = {m.id: m.outcome.horizon_days for m in models}
    for path in files:
        for line in path.read_text().splitlines():
            data = json.loads(line)
            resource = RiskAssessment.model_validate(data)
            assert resource.status == "final"
            model_id = data["method"]["coding"][0]["code"]
            patient_id = data["subject"]["reference"].removeprefix("Patient/")
            row = rows[(model_id, patient_id)]
            device = data["contained"][0]
            assert device["identifier"][0]["value"] == row["model_sha256"]
            assert device["version"][0]["value"] == row["model_version"]
            prediction = data["prediction"][0]
            assert prediction["probabilityDecimal"] == row["probability"]
            assert data["occurrenceDateTime"] == AS_OF.isoformat()
            start = date.fromisoformat(prediction["whenPeriod"]["start"])
            end = date.fromisoformat(prediction["whenPeriod"]["end"])
            assert (end - start).days == horizons[model_id]
            assert [b["reference"] for b in data.get("basis", [])] == list(
                dict.fromkeys(row["basis"])
            )
            labels = [f["label"] for f in row["factors"]]
            assert all(label in prediction["rationale"] for label in labels)
            seen.add((model_id, patient_id))
            with_basis += bool(data.get("basis"))
    assert seen == set(rows) and result.resources == len(rows)
    assert with_basis > len(rows) * 0.9
