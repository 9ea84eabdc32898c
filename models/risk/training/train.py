"""Train the learned risk models from patient records and write their artifacts.

``cds models train <model-id>... --data <folder>`` calls :func:`train`. One pass over the
records builds every requested model's samples (the as-of PatientContext of each index
date is built once and shared), then each model is fitted, measured on its held-out
patients and written to ``artifacts/<model-id>/`` with ``models.artifacts.write_manifest``.
"""

from __future__ import annotations

import json
import math
import shutil
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path
from typing import Any

import numpy as np
import xgboost as xgb

from fhir_adapters.patient_context import PatientContext
from fhir_adapters.records import PatientRecord, read_records
from models.artifacts import Artifact, write_manifest
from models.risk.catalog import LEARNED_MODELS, SURVEYED_OUTCOMES, RiskModelSpec
from models.risk.learned import CALIBRATION_FILE, MODEL_FILE, SPEC_FILE
from models.risk.scores import pce
from models.risk.training import fit
from models.risk.training.dataset import Dataset, build_dataset, label

METRICS_FILE, TRAINING_DATA_FILE = "metrics.json", "training_data.json"
Progress = Callable[[Iterator[Any]], Iterator[Any]]


class TrainingError(ValueError):
    """The data cannot train the model (unknown id, no samples, a single class)."""


def _pce_risk(context: PatientContext) -> float | None:
    return pce.assess(context).risk


#: Comparators measured beside each model on the same held-out rows: a validated score
#: computed on the same as-of context, or the simplest baseline from the features.
COMPARATORS: dict[str, tuple[str, Callable[[PatientContext], float | None] | str]] = {
    "cvd-event-3y": ("ACC/AHA Pooled Cohort Equations 10-year risk (where computable)", _pce_risk),
    "acute-care-1y": ("emergency visits in the past year (count)", "emergency_1y"),
}


@dataclass(frozen=True)
class TrainReport:
    model_id: str
    artifact: Artifact
    metrics: dict[str, Any]


def specs_for(model_ids: Sequence[str]) -> list[RiskModelSpec]:
    unknown = [m for m in model_ids if m not in LEARNED_MODELS]
    if unknown:
        raise TrainingError(
            f"unknown model id(s) {', '.join(unknown)}; trainable: {', '.join(LEARNED_MODELS)}"
        )
    return [LEARNED_MODELS[m] for m in dict.fromkeys(model_ids)]


def _table(spec: RiskModelSpec, dataset: Dataset) -> tuple[fit.Table, list[int], list[datetime]]:
    rows, labels, patients, kept, dates = [], [], [], [], []
    for i, sample in enumerate(dataset.samples):
        y = label(spec, sample, dataset.data_end)
        if y is None:
            continue
        rows.append(sample.features[spec.id])
        labels.append(y)
        patients.append(sample.patient_id)
        kept.append(i)
        dates.append(sample.index)
    if not rows:
        raise TrainingError(f"{spec.id}: no eligible index dates with complete follow-up")
    table = fit.Table(np.array(rows, dtype=float), np.array(labels, dtype=int), np.array(patients))
    if len(set(labels)) < 2:
        raise TrainingError(f"{spec.id}: the outcome never (or always) occurs in these data")
    return table, kept, dates


def _threshold(probabilities: np.ndarray, quantile: float) -> float:
    return float(max(0.01, round(float(np.quantile(probabilities, quantile)), 2)))


def action_thresholds(train_probabilities: np.ndarray) -> tuple[float, float]:
    """The card thresholds from calibrated training-set risk: the 90th percentile, and 'high'
    from the 97.5th (at least one point above). Both trainers (this one and the Spark job)
    use this one rule, which the artefact's ``threshold_rule`` names."""
    threshold = _threshold(train_probabilities, 0.90)
    return threshold, max(_threshold(train_probabilities, 0.975), round(threshold + 0.01, 2))


def _comparator(spec: RiskModelSpec, dataset: Dataset, kept: list[int]) -> np.ndarray:
    _, how = COMPARATORS[spec.id]
    if isinstance(how, str):
        column = spec.features.names.index(how)
        return np.array([dataset.samples[i].features[spec.id][column] for i in kept], dtype=float)
    values = [dataset.samples[i].comparators.get(spec.id) for i in kept]
    return np.array([math.nan if v is None else v for v in values], dtype=float)


def _fit_one(
    spec: RiskModelSpec, dataset: Dataset, source: str, out: Path, survey: list[dict[str, Any]]
) -> TrainReport:
    table, kept, dates = _table(spec, dataset)
    test = np.array([fit.is_test_patient(p) for p in table.patients])
    train_rows, test_rows = table.rows(~test), table.rows(test)
    if len(set(train_rows.y.tolist())) < 2 or len(set(test_rows.y.tolist())) < 2:
        raise TrainingError(f"{spec.id}: too few events to split into train and test")
    names = spec.features.names
    fitted = fit.fit(train_rows, names, spec.xgb_params)
    train_p = fit.predict(fitted, train_rows.X, names)
    threshold, high = action_thresholds(train_p)
    test_p = fit.predict(fitted, test_rows.X, names)
    seed = int(spec.xgb_params.get("seed", 0))
    held_out = fit.evaluate_held_out(test_rows.y, test_p, test_rows.patients, seed, threshold)
    comparator_name, _ = COMPARATORS[spec.id]
    comparator = _comparator(spec, dataset, kept)[test]
    defined = ~np.isnan(comparator)
    held_out["comparator"] = {
        "name": comparator_name,
        "auroc": fit.comparator_auroc(test_rows.y, comparator),
        "model_auroc_same_rows": fit.comparator_auroc(
            test_rows.y, np.where(defined, test_p, np.nan)
        ),
        "rows": int(defined.sum()),
    }
    metrics = {
        "reference_predictions": _references(dataset, kept, test, test_p, table.y),
        "held_out": held_out,
        "train_cv": fitted.cv,
        "rounds": fitted.rounds,
        "train": {
            "samples": len(train_rows.y),
            "patients": len(np.unique(train_rows.patients)),
            "events": int(train_rows.y.sum()),
        },
    }
    training_data = {
        "source": source,
        "records": dataset.records,
        "data_end": dataset.data_end.isoformat(),
        "index_dates": (
            f"{'/'.join(spec.landmark_classes)} encounters, at most one per "
            f"{spec.landmark_gap_days} days, age "
            + (f"{spec.min_age}-{spec.max_age}" if spec.max_age else f"{spec.min_age}+")
        ),
        "first_index": min(dates).date().isoformat(),
        "last_index": max(dates).date().isoformat(),
        "samples": len(table.y),
        "patients": len(np.unique(table.patients)),
        "events": int(table.y.sum()),
        "event_patients": len(np.unique(table.patients[table.y == 1])),
        "prevalence": float(table.y.mean()),
        "split": "patient-level: SHA-256('wardround-risk-split:' + patient id), 30 % test",
        "test_patients": len(np.unique(test_rows.patients)),
        "outcome_survey": survey,
    }
    artifact = write_artifact(spec, fitted, metrics, training_data, threshold, high, out)
    return TrainReport(spec.id, artifact, metrics)


def _references(
    dataset: Dataset, kept: list[int], test: np.ndarray, test_p: np.ndarray, y: np.ndarray
) -> list[dict[str, Any]]:
    """A few held-out samples with the probability the training pipeline gave them, so a
    test can replay them through the service (train/serve skew)."""
    rows = [kept[i] for i in np.flatnonzero(test)]
    labels = y[test]
    chosen = [*np.flatnonzero(labels == 1)[:4], *np.flatnonzero(labels == 0)[:4]]
    return [
        {
            "patient_id": dataset.samples[rows[i]].patient_id,
            "source": dataset.samples[rows[i]].source,
            "index": dataset.samples[rows[i]].index.isoformat(),
            "probability": float(test_p[i]),
            "outcome": int(labels[i]),
        }
        for i in sorted(chosen)
    ]


def write_artifact(
    spec: RiskModelSpec,
    fitted: fit.Fitted,
    metrics: dict[str, Any],
    training_data: dict[str, Any],
    threshold: float,
    high: float,
    out: Path,
) -> Artifact:
    folder = out / spec.id
    if folder.exists():
        shutil.rmtree(folder)
    folder.mkdir(parents=True)
    booster: xgb.Booster = fitted.booster
    booster.save_model(str(folder / MODEL_FILE))
    (folder / SPEC_FILE).write_text(spec.features.dumps())
    (folder / CALIBRATION_FILE).write_text(
        json.dumps(fitted.calibration.to_json(), indent=2) + "\n"
    )
    (folder / METRICS_FILE).write_text(json.dumps(metrics, indent=2, sort_keys=True) + "\n")
    (folder / TRAINING_DATA_FILE).write_text(json.dumps(training_data, indent=2) + "\n")
    held = metrics["held_out"]
    metadata = {
        "title": spec.title,
        "outcome": spec.outcome.to_json(),
        "eligibility": spec.eligibility_json(),
        "threshold": threshold,
        "high_threshold": high,
        "threshold_rule": "90th (high: 97.5th) percentile of calibrated training-set risk",
        "advice": spec.advice,
        "advice_source": spec.advice_source,
        "xgb_params": spec.xgb_params,
        "rounds": fitted.rounds,
        "metrics": {
            "auroc": held["auroc"],
            "auprc": held["auprc"],
            "brier": held["brier"],
            "ci95": held["ci95"],
            "test_samples": held["samples"],
            "test_patients": held["patients"],
            "test_events": held["events"],
        },
        "training_data": training_data,
        "xgboost": xgb.__version__,
    }
    return write_manifest(folder, spec.id, spec.version, metadata)


def train(
    model_ids: Sequence[str],
    data: Path,
    out: Path,
    workers: int = 1,
    progress: Progress | None = None,
) -> list[TrainReport]:
    specs = specs_for(model_ids)
    records: Iterator[PatientRecord] = read_records(data)
    dataset = build_dataset(
        records,
        specs,
        workers=workers,
        progress=progress,
        comparators=_comparator_functions(specs),
        survey=[*SURVEYED_OUTCOMES, *(s for s in LEARNED_MODELS.values() if s not in specs)],
    )
    if not dataset.samples:
        raise TrainingError(f"{data}: no patient had an eligible index date")
    survey = outcome_survey(dataset)
    return [_fit_one(spec, dataset, data.name, out, survey) for spec in specs]


def outcome_survey(dataset: Dataset) -> list[dict[str, Any]]:
    """Eligible index dates and events of every candidate outcome, with these index dates."""
    found = []
    for spec in (*LEARNED_MODELS.values(), *SURVEYED_OUTCOMES):
        labels = [label(spec, s, dataset.data_end) for s in dataset.samples]
        events = {s.patient_id for s, y in zip(dataset.samples, labels, strict=True) if y == 1}
        found.append(
            {
                "id": spec.id,
                "outcome": spec.title,
                "trained": spec.id in LEARNED_MODELS,
                "samples": sum(y is not None for y in labels),
                "events": sum(y == 1 for y in labels),
                "event_patients": len(events),
            }
        )
    return found


def _comparator_functions(
    specs: Sequence[RiskModelSpec],
) -> dict[str, Callable[[PatientContext], float | None]]:
    found = {}
    for spec in specs:
        _, how = COMPARATORS.get(spec.id, ("", ""))
        if callable(how):
            found[spec.id] = how
    return found
