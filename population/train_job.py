"""Train a learned risk model on Spark (``cds population train``): the data set and the
trees on the cluster, then the single-machine trainer's own calibration, metrics, artifact.

1. :func:`population.training_set.training_set`: one row per (patient, index date), the
   single-machine data set's rows, labels and features, with the patient-level split of
   ``fit.is_test_patient`` and a patient-grouped CV fold.
2. xgboost.spark (``SparkXGBClassifier``) with the model's ``xgb_params`` (native names
   mapped to the estimator's: ``eta`` → ``learning_rate``, ``lambda`` → ``reg_lambda``,
   ``seed`` → ``random_state``; ``nthread`` is Spark's ``spark.task.cpus``, 1). One
   difference: ``tree_method`` ``exact`` becomes ``hist`` (xgboost.spark refuses ``exact``,
   which cannot be distributed; ``hist`` bins each feature into at most 256 values):
   * rounds: 5-fold patient-grouped CV on the training patients, each fold fitted with
     early stopping on its held-out fold (log loss, ``fit.EARLY_STOP`` rounds, at most
     ``fit.MAX_ROUNDS``); the rounds are the folds' mean best count (at least 10). The
     single-machine trainer picks them with ``xgb.cv`` on the averaged curve instead;
   * out-of-fold margins: each fold model's margins on its own fold (each at its own best
     round), collected to the driver (one number per training row);
   * the final model: every training row, that many rounds.
3. On the driver: ``fit.platt_scaling`` on the out-of-fold margins, the held-out margins
   (the test patients: collected, they are a small share) → ``fit.evaluate_held_out``
   (AUROC, AUPRC, Brier with patient-bootstrap CIs, calibration curve, threshold), the
   comparator on the same held-out rows (a feature column, or a validated score such as
   the PCE computed by the hook path on each held-out patient's record:
   :mod:`population.comparators`), the action thresholds from the training predictions
   (``train.action_thresholds``), and
   ``train.write_artifact``: the same artifact files as ``cds models train`` writes, which
   ``models.risk.learned.load`` loads.

Driver code: it imports the single-machine trainer (and through it ``models.risk.catalog``).
The executors run Spark SQL, xgboost.spark's own training and prediction tasks, and for a
validated-score comparator the hook path on the held-out patients' records.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import numpy as np
from pyspark.sql import DataFrame
from pyspark.sql import functions as F

from fhir_adapters.bulk.ndjson import BulkFolder
from models.artifacts import Artifact
from models.risk.training import fit
from models.risk.training.train import COMPARATORS, action_thresholds, write_artifact
from population.comparators import comparator_scores
from population.training_set import (
    FOLD,
    FOLDS,
    INDEX_AT,
    LABEL,
    TEST,
    TrainingSet,
    TrainingTarget,
    from_micros,
    training_set,
)

FEATURES, VALID, MARGIN = "features", "is_valid", "margin"
#: ``xgb_params`` names → ``SparkXGBClassifier`` names.
PARAM_NAMES = {"eta": "learning_rate", "lambda": "reg_lambda", "seed": "random_state"}
#: Not passed: the classifier's objective is binary:logistic already; threads are
#: ``spark.task.cpus``.
PARAMS_NOT_PASSED = frozenset({"objective", "nthread"})
TRAINER = "xgboost.spark SparkXGBClassifier"


@dataclass(frozen=True)
class SparkTrainReport:
    model_id: str
    artifact: Artifact
    metrics: dict[str, Any]
    #: Rows of the Spark training set: all, training, held-out.
    rows: int
    seconds: dict[str, float]


def spark_params(params: Mapping[str, Any]) -> dict[str, Any]:
    found = {PARAM_NAMES.get(k, k): v for k, v in params.items() if k not in PARAMS_NOT_PASSED}
    if found.get("tree_method") == "exact":
        found["tree_method"] = "hist"  # xgboost.spark refuses exact (not distributable)
    return found


def _estimator(params: Mapping[str, Any], rounds: int, num_workers: int, validate: bool) -> Any:
    from xgboost.spark import SparkXGBClassifier

    extra: dict[str, Any] = {}
    if validate:
        extra = {"validation_indicator_col": VALID, "early_stopping_rounds": fit.EARLY_STOP}
    return SparkXGBClassifier(
        features_col=FEATURES,
        label_col=LABEL,
        num_workers=num_workers,
        n_estimators=rounds,
        missing=math.nan,
        **spark_params(params),
        **extra,
    )


def _margin(model: Any, rows: DataFrame, *columns: Any) -> DataFrame:
    from pyspark.ml.functions import vector_to_array

    raw = vector_to_array(F.col("rawPrediction"))
    return model.transform(rows).select(*columns, raw[1].alias(MARGIN))


def _best_rounds(model: Any) -> int:
    booster = model.get_booster()
    try:
        return int(booster.best_iteration) + 1
    except AttributeError:
        return int(booster.num_boosted_rounds())


def fit_on_spark(
    train: DataFrame,
    names: list[str],
    params: Mapping[str, Any],
    num_workers: int = 1,
    on_step: Callable[[str], None] | None = None,
) -> tuple[fit.Fitted, Any]:
    """CV rounds and out-of-fold margins, Platt on them, the final model (see the module)."""
    step = on_step or (lambda _: None)
    best: list[int] = []
    labels: list[np.ndarray] = []
    margins: list[np.ndarray] = []
    for k in range(FOLDS):
        step(f"CV fold {k + 1}/{FOLDS}")
        data = train.withColumn(VALID, F.col(FOLD) == k)
        model = _estimator(params, fit.MAX_ROUNDS, num_workers, validate=True).fit(data)
        best.append(_best_rounds(model))
        rows = _margin(model, train.filter(F.col(FOLD) == k), LABEL).collect()
        labels.append(np.array([r[LABEL] for r in rows], dtype=int))
        margins.append(np.array([r[MARGIN] for r in rows], dtype=float))
    rounds = max(round(float(np.mean(best))), 10)
    y, oof = np.concatenate(labels), np.concatenate(margins)
    platt = fit.platt_scaling(oof, y)
    step(f"final model ({rounds} rounds)")
    final = _estimator(params, rounds, num_workers, validate=False).fit(train)
    booster = final.get_booster()
    booster.feature_names = list(names)
    return fit.Fitted(booster, platt, rounds, fit.cv_metrics(y, platt.apply(oof))), final


def train_on_spark(
    tables: Mapping[str, DataFrame],
    folder: BulkFolder,
    spec: Any,
    index_specs: list[Any],
    out: Path,
    source: str,
    num_workers: int = 1,
    on_step: Callable[[str], None] | None = None,
) -> SparkTrainReport:
    """Train ``spec`` (a ``RiskModelSpec``) from the record-row ``tables`` of the bulk
    ``folder`` into ``out/<id>`` (the folder itself: a validated-score comparator reads the
    held-out patients' records whole)."""
    step = on_step or (lambda _: None)
    seconds: dict[str, float] = {}
    clock = datetime.now(UTC)

    def lap(name: str) -> None:
        nonlocal clock
        now = datetime.now(UTC)
        seconds[name] = round((now - clock).total_seconds(), 1)
        clock = now

    step("training data set")
    target = TrainingTarget.of(spec, index_specs)
    data: TrainingSet = training_set(tables, target)
    names = list(target.features.names)
    frame = data.frame.withColumn(FEATURES, F.array(*(F.col(n) for n in names))).cache()
    counts = frame.groupBy(TEST).agg(
        F.count("*").alias("rows"),
        F.sum(LABEL).alias("events"),
        F.countDistinct("patient_id").alias("patients"),
        F.countDistinct(F.when(F.col(LABEL) == 1, F.col("patient_id"))).alias("event_patients"),
        F.min(F.unix_micros(F.col(INDEX_AT))).alias("first"),
        F.max(F.unix_micros(F.col(INDEX_AT))).alias("last"),
    )
    by_side = {bool(r[TEST]): r.asDict() for r in counts.collect()}
    if set(by_side) != {False, True} or any(
        not 0 < (by_side[s]["events"] or 0) < by_side[s]["rows"] for s in by_side
    ):
        raise ValueError(f"{spec.id}: too few events to split into train and test")
    lap("data set")
    train_rows, test_rows = frame.filter(~F.col(TEST)), frame.filter(F.col(TEST))
    fitted, final = fit_on_spark(train_rows, names, spec.xgb_params, num_workers, step)
    lap("xgboost.spark")

    step("held-out metrics")
    comparator_name, how = COMPARATORS[spec.id]
    comparator = F.col(how) if isinstance(how, str) else F.lit(None).cast("double")
    held = _margin(
        final, test_rows, "patient_id", F.unix_micros(F.col(INDEX_AT)).alias("us"), LABEL,
        comparator.alias("comparator"),
    ).orderBy("patient_id", "us").collect()  # fmt: skip
    train_margin = np.array([r[MARGIN] for r in _margin(final, train_rows).collect()])
    train_p = fitted.calibration.apply(train_margin)
    threshold, high = action_thresholds(train_p)
    y = np.array([r[LABEL] for r in held], dtype=int)
    patients = np.array([r["patient_id"] for r in held])
    test_p = fitted.calibration.apply(np.array([r[MARGIN] for r in held], dtype=float))
    seed = int(spec.xgb_params.get("seed", 0))
    held_out = fit.evaluate_held_out(y, test_p, patients, seed, threshold)
    if isinstance(how, str):
        values = [r["comparator"] for r in held]
    else:  # a validated score: the hook path's code on each held-out patient's record
        by_key = comparator_scores(
            frame.sparkSession, folder, [(r["patient_id"], r["us"]) for r in held], how
        )
        values = [by_key[(r["patient_id"], r["us"])] for r in held]
    score = np.array([math.nan if v is None else v for v in values], dtype=float)
    defined = ~np.isnan(score)
    held_out["comparator"] = {
        "name": comparator_name,
        "auroc": fit.comparator_auroc(y, score),
        "model_auroc_same_rows": fit.comparator_auroc(y, np.where(defined, test_p, np.nan)),
        "rows": int(defined.sum()),
    }
    train_side, test_side = by_side[False], by_side[True]
    total = {k: train_side[k] + test_side[k] for k in ("rows", "events")}
    all_patients = train_side["patients"] + test_side["patients"]
    event_patients = train_side["event_patients"] + test_side["event_patients"]
    chosen = [*np.flatnonzero(y == 1)[:4], *np.flatnonzero(y == 0)[:4]]
    metrics = {
        "reference_predictions": [
            {
                "patient_id": str(held[i]["patient_id"]),
                "source": "ndjson",
                "index": from_micros(held[i]["us"]).isoformat(),
                "probability": float(test_p[i]),
                "outcome": int(y[i]),
            }
            for i in sorted(chosen)
        ],
        "held_out": held_out,
        "train_cv": fitted.cv,
        "rounds": fitted.rounds,
        "train": {
            "samples": int(train_side["rows"]),
            "patients": int(train_side["patients"]),
            "events": int(train_side["events"]),
        },
    }
    first = from_micros(min(train_side["first"], test_side["first"]))
    last = from_micros(max(train_side["last"], test_side["last"]))
    training_data = {
        "source": source,
        "records": data.records,
        "data_end": data.data_end.isoformat(),
        "index_dates": (
            f"{'/'.join(spec.landmark_classes)} encounters, at most one per "
            f"{spec.landmark_gap_days} days, age "
            + (f"{spec.min_age}-{spec.max_age}" if spec.max_age else f"{spec.min_age}+")
        ),
        "first_index": first.date().isoformat(),
        "last_index": last.date().isoformat(),
        "samples": int(total["rows"]),
        "patients": int(all_patients),
        "events": int(total["events"]),
        "event_patients": int(event_patients),
        "prevalence": float(total["events"] / total["rows"]),
        "split": "patient-level: SHA-256('wardround-risk-split:' + patient id), 30 % test",
        "test_patients": int(test_side["patients"]),
        "outcome_survey": [],
        "trainer": (
            f"{TRAINER} (cds population train), tree_method hist; CV folds from "
            "SHA-256 of the patient id"
        ),
    }
    artifact = write_artifact(spec, fitted, metrics, training_data, threshold, high, out)
    lap("metrics and artifact")
    frame.unpersist()
    return SparkTrainReport(spec.id, artifact, metrics, int(total["rows"]), seconds)
