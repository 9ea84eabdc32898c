"""The scoring job: record rows in, a Parquet score table and RiskAssessment NDJSON out.

:func:`run_score_job` writes ``out/scores/`` (:data:`population.scoring.SCORE_SCHEMA`,
one row per patient and model) and then, reading that table back, ``out/fhir/
RiskAssessment.NNN.ndjson`` (one resource per eligible patient and model). Both are
streamed by the executors; the driver sees counts only (``DataFrame.observe``).
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import date
from pathlib import Path
from typing import TYPE_CHECKING, Any

from pyspark.sql import DataFrame, Observation

from population.risk_assessments import ModelWords, write_risk_assessments
from population.scoring import ScoringModel, score_counts, score_frame

if TYPE_CHECKING:
    from models.risk.learned import LearnedRiskModel

SCORES, FHIR = "scores", "fhir"


@dataclass(frozen=True)
class ScoreJobResult:
    #: Score rows (patients x models), eligible ones, and the bands of those.
    rows: int
    eligible: int
    elevated: int
    high: int
    resources: int
    files: tuple[Path, ...]
    per_model: dict[str, dict[str, int]] = field(default_factory=dict)


def run_score_job(
    spark: Any,
    tables: Mapping[str, DataFrame],
    models: Sequence[LearnedRiskModel],
    as_of: date,
    out: Path,
    on_step: Callable[[str], None] | None = None,
) -> ScoreJobResult:
    """Score every patient of ``tables`` with ``models`` on ``as_of`` into ``out``."""
    step = on_step or (lambda _: None)
    scores = score_frame(spark, tables, models, as_of)
    observed = Observation("scores")
    per_model = [agg for model in models for agg in _model_counts(model.id)]
    scores = scores.observe(observed, *score_counts(), *per_model)
    step("features and scores")
    scores.write.mode("errorifexists").parquet(str(out / SCORES))
    counts = {k: int(v) for k, v in observed.get.items()}
    step("RiskAssessment NDJSON")
    words = {m.id: ModelWords.of(ScoringModel.of(m)) for m in models}
    written = spark.read.parquet(str(out / SCORES))
    resources, files = write_risk_assessments(written, words, out / FHIR)
    return ScoreJobResult(
        rows=counts["rows"],
        eligible=counts["eligible"],
        elevated=counts["elevated"],
        high=counts["high"],
        resources=resources,
        files=tuple(files),
        per_model={
            m.id: {
                "eligible": counts[f"{m.id}:eligible"],
                "elevated": counts[f"{m.id}:elevated"],
                "high": counts[f"{m.id}:high"],
            }
            for m in models
        },
    )


def _model_counts(model_id: str) -> list[Any]:
    from pyspark.sql import functions as F

    mine = F.col("model_id") == model_id
    return [
        F.count_if(mine & F.col("eligible")).alias(f"{model_id}:eligible"),
        F.count_if(mine & (F.col("band") == "elevated")).alias(f"{model_id}:elevated"),
        F.count_if(mine & (F.col("band") == "high")).alias(f"{model_id}:high"),
    ]
