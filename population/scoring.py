"""Scoring a population with the registered learned risk models, on Spark.

The feature vectors come from :func:`population.features.feature_frame` and the
eligibility inputs from :func:`population.features.eligibility_frame`; the model itself
runs in ``mapInPandas``: each model's booster (the artifact's ``model.json`` bytes) and
its Platt calibration are broadcast once, and each Python worker loads a booster once
(cached by artifact hash) and scores whole Arrow batches. The arithmetic is
:class:`models.risk.learned.LearnedRiskModel`'s, so a patient gets the same probability,
band and factors here as on a card (a test holds both paths equal on every shared patient):

* eligibility in the same order and words (deceased, age unknown, age range, prior
  outcome recorded, required condition missing);
* probability = sigmoid(a · margin + b) with the booster's margin;
* factors = ``pred_contribs`` scaled by ``a``, zero contributions left out, largest
  absolute first (ties in feature order).

The result is a DataFrame of one row per patient and model (:data:`SCORE_SCHEMA`),
written as Parquet by the caller; nothing is collected to the driver.
"""

from __future__ import annotations

import math
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass
from datetime import date
from functools import reduce
from typing import TYPE_CHECKING, Any

import numpy as np
from pyspark.sql import DataFrame
from pyspark.sql import functions as F
from pyspark.sql.types import (
    ArrayType,
    BooleanType,
    DateType,
    DoubleType,
    IntegerType,
    StringType,
    StructField,
    StructType,
)

from population.features import BASIS, eligibility_frame, feature_frame

if TYPE_CHECKING:  # the executors import this module: it must not load the risk catalogue
    from models.risk.learned import LearnedRiskModel

#: How many factors each score keeps (largest absolute contribution first).
TOP_FACTORS = 5

FACTOR_SCHEMA = StructType(
    [
        StructField("feature", StringType(), False),
        StructField("label", StringType(), False),
        StructField("contribution", DoubleType(), False),
        StructField("value", DoubleType(), True),
        StructField("unit", StringType(), True),
        StructField("aggregation", StringType(), False),
        StructField("basis", StringType(), True),
    ]
)
SCORE_SCHEMA = StructType(
    [
        StructField("patient_id", StringType(), False),
        StructField("model_id", StringType(), False),
        StructField("model_version", StringType(), False),
        StructField("model_sha256", StringType(), False),
        StructField("as_of", DateType(), False),
        StructField("eligible", BooleanType(), False),
        StructField("not_eligible_reason", StringType(), True),
        StructField("age_years", IntegerType(), True),
        StructField("probability", DoubleType(), True),
        #: "high", "elevated", or null (below the model's action threshold).
        StructField("band", StringType(), True),
        StructField("threshold", DoubleType(), False),
        StructField("high_threshold", DoubleType(), False),
        StructField("baseline_logit", DoubleType(), True),
        StructField("factors", ArrayType(FACTOR_SCHEMA, False), True),
        #: FHIR references of the records the model's inputs rest on (feature order).
        StructField("basis", ArrayType(StringType(), False), True),
    ]
)


@dataclass(frozen=True)
class ScoringModel:
    """What an executor needs of one learned model: small, picklable, broadcast once."""

    id: str
    version: str
    sha256: str
    title: str
    booster: bytes
    features: tuple[str, ...]
    labels: tuple[str, ...]
    units: tuple[str | None, ...]
    aggregations: tuple[str, ...]
    platt_a: float
    platt_b: float
    threshold: float
    high_threshold: float
    min_age: int
    max_age: int | None
    exclude_prior: bool
    requires: bool
    outcome_code: str
    outcome_label: str
    horizon_days: int

    @classmethod
    def of(cls, model: LearnedRiskModel) -> ScoringModel:
        from models.risk.learned import MODEL_FILE

        specs = model.features.features
        return cls(
            id=model.id,
            version=model.identity.version,
            sha256=model.identity.sha256 or "",
            title=model.title,
            booster=model.artifact.file(MODEL_FILE).read_bytes(),
            features=tuple(s.name for s in specs),
            labels=tuple(s.label for s in specs),
            units=tuple(s.unit for s in specs),
            aggregations=tuple(s.aggregation for s in specs),
            platt_a=model.platt_a,
            platt_b=model.platt_b,
            threshold=model.threshold,
            high_threshold=model.high_threshold,
            min_age=model.min_age,
            max_age=model.max_age,
            exclude_prior=model.outcome.exclude_prior,
            requires=bool(model.requires),
            outcome_code=model.outcome.code,
            outcome_label=model.outcome.label,
            horizon_days=model.outcome.horizon_days,
        )

    def describe(self) -> dict[str, str]:
        """The model as the audit log records it (id, version, artifact hash)."""
        return {"id": self.id, "version": self.version, "hash": self.sha256}


# --------------------------------------------------------------------------- executors
_BOOSTERS: dict[str, Any] = {}


def _booster(model: ScoringModel) -> Any:
    """The model's booster in this Python worker, loaded once per artifact hash."""
    import xgboost as xgb

    booster = _BOOSTERS.get(model.sha256)
    if booster is None:
        booster = xgb.Booster()
        booster.load_model(bytearray(model.booster))
        booster.set_param({"nthread": 1})
        _BOOSTERS[model.sha256] = booster
    return booster


def not_eligible(model: ScoringModel, row: Mapping[str, Any]) -> str | None:
    """``LearnedRiskModel.not_eligible`` over the eligibility columns (same words)."""
    if bool(row["deceased"]):
        return "the patient is deceased"
    age = row["age_years"]
    if age is None or (isinstance(age, float) and math.isnan(age)):
        return "age unknown"
    age = int(age)
    if age < model.min_age or (model.max_age is not None and age > model.max_age):
        upper = f"-{model.max_age}" if model.max_age is not None else "+"
        return f"age {age} is outside {model.min_age}{upper}"
    if model.exclude_prior and bool(row["prior_outcome"]):
        return "the predicted condition is already recorded"
    if model.requires and not bool(row["required"]):
        return "the condition the model is for is not recorded"
    return None


def _band(model: ScoringModel, probability: float) -> str | None:
    high = max(model.high_threshold, model.threshold)
    if probability >= high:
        return "high"
    if probability >= model.threshold:
        return "elevated"
    return None


def _score_batch(model: ScoringModel, batch: Any, as_of: date, top: int) -> Any:
    import pandas as pd
    import xgboost as xgb

    reasons = [not_eligible(model, row) for row in batch.to_dict("records")]
    eligible = np.array([r is None for r in reasons], dtype=bool)
    n = len(batch)
    probability: list[float | None] = [None] * n
    band: list[str | None] = [None] * n
    baseline: list[float | None] = [None] * n
    factors: list[list[dict[str, Any]] | None] = [None] * n
    basis_columns = [
        [b if isinstance(b, str) else None for b in batch[name + BASIS].tolist()]
        for name in model.features
    ]
    basis = [[c[i] for c in basis_columns if c[i] is not None] for i in range(n)]
    if eligible.any():
        rows = batch.loc[eligible, list(model.features)].to_numpy(dtype=float)
        matrix = xgb.DMatrix(rows, feature_names=list(model.features), missing=math.nan)
        booster = _booster(model)
        margin = booster.predict(matrix, output_margin=True)
        calibrated = 1.0 / (1.0 + np.exp(-(model.platt_a * margin + model.platt_b)))
        contributions = booster.predict(matrix, pred_contribs=True)
        for k, i in enumerate(np.flatnonzero(eligible)):
            p = float(calibrated[k])
            probability[i], band[i] = p, _band(model, p)
            *per_feature, bias = (float(c) for c in contributions[k])
            baseline[i] = model.platt_a * bias + model.platt_b
            scaled = [model.platt_a * c for c in per_feature]
            order = sorted(
                (j for j, c in enumerate(per_feature) if c != 0.0), key=lambda j: -abs(scaled[j])
            )
            factors[i] = [
                {
                    "feature": model.features[j],
                    "label": model.labels[j],
                    "contribution": scaled[j],
                    "value": float(rows[k, j]),
                    "unit": model.units[j],
                    "aggregation": model.aggregations[j],
                    "basis": basis_columns[j][i],
                }
                for j in order[:top]
            ]
    ages = batch["age_years"]
    return pd.DataFrame(
        {
            "patient_id": batch["patient_id"],
            "model_id": model.id,
            "model_version": model.version,
            "model_sha256": model.sha256,
            "as_of": as_of,
            "eligible": eligible,
            "not_eligible_reason": reasons,
            "age_years": [None if pd.isna(a) else int(a) for a in ages],
            "probability": probability,
            "band": band,
            "threshold": model.threshold,
            "high_threshold": max(model.high_threshold, model.threshold),
            "baseline_logit": baseline,
            "factors": factors,
            "basis": basis,
        }
    )


# --------------------------------------------------------------------------- the job
def _model_inputs(
    spark: Any, tables: Mapping[str, DataFrame], model: LearnedRiskModel, as_of: date
) -> DataFrame:
    features = feature_frame(spark, tables, model.features, as_of, with_basis=True)
    sets = {"prior_outcome": model.outcome.condition_codes, "required": model.requires}
    eligibility = eligibility_frame(tables, as_of, sets)
    return features.join(eligibility, "patient_id", "left")


def score_frame(
    spark: Any,
    tables: Mapping[str, DataFrame],
    models: Sequence[LearnedRiskModel],
    as_of: date,
    top_factors: int = TOP_FACTORS,
) -> DataFrame:
    """One row per patient and model (:data:`SCORE_SCHEMA`), lazily: write it, never
    collect it (a population does not fit in the driver)."""
    if not models:
        raise ValueError("no model to score with")
    frames = []
    for model in models:
        shipped = spark.sparkContext.broadcast(ScoringModel.of(model))

        def score(
            batches: Iterator[Any], shipped: Any = shipped
        ) -> Iterator[Any]:  # runs on executors
            scoring_model: ScoringModel = shipped.value
            for batch in batches:
                yield _score_batch(scoring_model, batch, as_of, top_factors)

        frames.append(_model_inputs(spark, tables, model, as_of).mapInPandas(score, SCORE_SCHEMA))
    return reduce(DataFrame.unionByName, frames)


def score_counts() -> list[Any]:
    """Aggregates for ``DataFrame.observe`` on a score frame: rows, eligible, banded."""
    return [
        F.count(F.lit(1)).alias("rows"),
        F.count_if(F.col("eligible")).alias("eligible"),
        F.count_if(F.col("band") == "elevated").alias("elevated"),
        F.count_if(F.col("band") == "high").alias("high"),
    ]
