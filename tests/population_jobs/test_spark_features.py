"""The feature spec on Spark equals the hooks' evaluator, patient by patient.

For every shared Synthea patient (bulk NDJSON read by Spark) and the feature sets of both
registered learned risk models, :func:`population.features.feature_frame` gives the same
vector as ``evaluate`` on the PatientContext a hook would have built on the same day
(``context_as_of``), and the same record behind each value; on two as-of days, so that
records after the day, later abatements and later deaths are exercised too.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from datetime import date
from typing import Any

import pytest

from fhir_adapters.bulk.ndjson import BulkFolder
from models.risk.features.evaluate import evaluate
from models.risk.learned import load
from population.features import BASIS, eligibility_frame, feature_frame, record_tables
from tests.population_jobs.conftest import AS_OF

MODEL_IDS = ("cvd-event-3y", "acute-care-1y")
DAYS = (AS_OF, date(2015, 1, 1))


def _same(a: float, b: float) -> bool:
    if math.isnan(a) or math.isnan(b):
        return math.isnan(a) and math.isnan(b)
    return math.isclose(a, b, rel_tol=1e-12, abs_tol=1e-12)


@pytest.fixture(scope="module")
def tables(spark: Any, synthea_ndjson: BulkFolder) -> dict[str, Any]:
    return {name: frame.cache() for name, frame in record_tables(spark, synthea_ndjson).items()}


@pytest.mark.parametrize("day", DAYS, ids=str)
@pytest.mark.parametrize("model_id", MODEL_IDS)
def test_spark_feature_vectors_equal_the_hook_path(
    spark: Any,
    tables: dict[str, Any],
    contexts_as_of: Callable[[date], dict[str, Any]],
    model_id: str,
    day: date,
) -> None:
    features = load(model_id).features
    rows = feature_frame(spark, tables, features, day, with_basis=True).collect()
    contexts = contexts_as_of(day)
    assert len(contexts) == 299
    assert sorted(r["patient_id"] for r in rows) == sorted(contexts)

    informative = dict.fromkeys(features.names, 0)
    for row in rows:
        vector = evaluate(features, contexts[row["patient_id"]])
        for name, expected, evidence in zip(
            vector.names, vector.values, vector.evidence, strict=True
        ):
            got = row[name]
            assert _same(got, expected), (row["patient_id"], name, got, expected)
            if not math.isnan(expected) and expected != 0.0:
                informative[name] += 1
            spec = features.features[features.names.index(name)]
            if spec.source != "demographic":
                reference = evidence.reference if evidence is not None else None
                assert row[name + BASIS] == reference, (row["patient_id"], name)
    # the comparison is not of empty vectors: most features are informative somewhere
    assert informative["age"] > 200
    assert sum(1 for n in informative.values() if n > 0) >= len(features.names) * 0.6, informative


@pytest.mark.parametrize("model_id", MODEL_IDS)
def test_eligibility_inputs_equal_the_hook_path(
    tables: dict[str, Any], contexts_as_of: Callable[[date], dict[str, Any]], model_id: str
) -> None:
    model = load(model_id)
    sets = {"prior_outcome": model.outcome.condition_codes, "required": model.requires}
    rows = eligibility_frame(tables, AS_OF, sets).collect()
    contexts = contexts_as_of(AS_OF)
    assert len(rows) == len(contexts)
    for row in rows:
        context = contexts[row["patient_id"]]
        assert row["age_years"] == context.age_years
        assert row["deceased"] == context.deceased
        assert row["prior_outcome"] == model._recorded(context, model.outcome.condition_codes)
        if model.requires:
            assert row["required"] == model._recorded(context, model.requires)
    assert any(r["deceased"] for r in rows)
    if model.outcome.condition_codes:
        assert any(r["prior_outcome"] for r in rows)
