"""Fit one risk model: patient-level split, xgboost, Platt calibration, held-out metrics.

* Split: each patient goes to the test set when the first two hex digits of
  SHA-256("wardround-risk-split:" + patient id) fall below ``test_fraction`` (all of a
  patient's index dates on one side; stable when patients are added).
* Trees: the number of boosting rounds is chosen by 5-fold patient-grouped cross-validation
  on the training patients (early stopping on log loss), with fixed, shallow parameters
  (``catalog.XGB_PARAMS``, one thread, fixed seed: the same data give the same model).
* Calibration: Platt scaling (a logistic regression on the booster's margin) fitted on the
  out-of-fold margins of those same folds, so the calibrator never sees a margin from a
  booster that trained on that patient. Platt, not isotonic: with tens of events an
  isotonic step function overfits.
* Metrics on the held-out patients: AUROC, AUPRC, Brier score, with 95 % percentile
  intervals from 1,000 patient-level bootstrap resamples; the calibration curve (observed
  event rate against mean predicted risk, in quantile bins).
"""

from __future__ import annotations

import hashlib
import math
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import xgboost as xgb
from sklearn.linear_model import LogisticRegression
from sklearn.metrics import average_precision_score, brier_score_loss, roc_auc_score
from sklearn.model_selection import GroupKFold

SPLIT_SALT = "wardround-risk-split:"
MAX_ROUNDS = 600
EARLY_STOP = 40
BOOTSTRAP = 1000


def is_test_patient(patient_id: str, test_fraction: float = 0.3) -> bool:
    digest = hashlib.sha256((SPLIT_SALT + patient_id).encode()).hexdigest()
    return int(digest[:2], 16) < round(256 * test_fraction)


@dataclass(frozen=True)
class Table:
    """A model's samples: one row per (patient, index date)."""

    X: np.ndarray
    y: np.ndarray
    patients: np.ndarray

    def rows(self, mask: np.ndarray) -> Table:
        return Table(self.X[mask], self.y[mask], self.patients[mask])


@dataclass(frozen=True)
class Platt:
    a: float
    b: float

    def apply(self, margin: np.ndarray) -> np.ndarray:
        return 1.0 / (1.0 + np.exp(-(self.a * margin + self.b)))

    def to_json(self) -> dict[str, Any]:
        return {
            "method": "platt",
            "a": self.a,
            "b": self.b,
            "formula": "p = 1 / (1 + exp(-(a * margin + b))), margin = booster log-odds",
        }


@dataclass
class Fitted:
    booster: xgb.Booster
    calibration: Platt
    rounds: int
    cv: dict[str, float] = field(default_factory=dict)


def _dmatrix(X: np.ndarray, y: np.ndarray | None, names: Sequence[str]) -> xgb.DMatrix:
    return xgb.DMatrix(X, label=y, feature_names=list(names), missing=math.nan)


def _folds(table: Table, k: int = 5) -> list[tuple[np.ndarray, np.ndarray]]:
    return list(GroupKFold(n_splits=k).split(table.X, table.y, table.patients))


def fit(table: Table, names: Sequence[str], params: dict[str, Any]) -> Fitted:
    """Boosting rounds by grouped CV, Platt on out-of-fold margins, final fit on all rows."""
    folds = _folds(table)
    data = _dmatrix(table.X, table.y, names)
    history = xgb.cv(
        params,
        data,
        num_boost_round=MAX_ROUNDS,
        folds=folds,
        early_stopping_rounds=EARLY_STOP,
        seed=int(params.get("seed", 0)),
        verbose_eval=False,
        as_pandas=False,  # the same shape whether or not pandas is installed
    )
    # xgb.cv returns metric name → per-round values, cut at the best round.
    rounds = max(len(next(iter(history.values()))), 10)
    oof = np.zeros(len(table.y))
    for train_idx, valid_idx in folds:
        booster = xgb.train(params, _dmatrix(table.X[train_idx], table.y[train_idx], names), rounds)
        oof[valid_idx] = booster.predict(
            _dmatrix(table.X[valid_idx], None, names), output_margin=True
        )
    platt = platt_scaling(oof, table.y)
    final = xgb.train(params, data, rounds)
    return Fitted(final, platt, rounds, cv_metrics(table.y, platt.apply(oof)))


def platt_scaling(margins: np.ndarray, y: np.ndarray) -> Platt:
    """Platt scaling: a logistic regression of the outcome on the out-of-fold margins."""
    model = LogisticRegression(C=1e6, max_iter=1000).fit(margins.reshape(-1, 1), y)
    return Platt(float(model.coef_[0][0]), float(model.intercept_[0]))


def cv_metrics(y: np.ndarray, oof_p: np.ndarray) -> dict[str, float]:
    """The cross-validation metrics of the calibrated out-of-fold predictions."""
    return {
        "cv_auroc": float(roc_auc_score(y, oof_p)),
        "cv_auprc": float(average_precision_score(y, oof_p)),
        "cv_brier": float(brier_score_loss(y, oof_p)),
    }


def predict(fitted: Fitted, X: np.ndarray, names: Sequence[str]) -> np.ndarray:
    margin = fitted.booster.predict(_dmatrix(X, None, names), output_margin=True)
    return fitted.calibration.apply(margin)


def _metrics(y: np.ndarray, p: np.ndarray) -> dict[str, float]:
    if len(set(y.tolist())) < 2:
        return {"auroc": math.nan, "auprc": math.nan, "brier": float(brier_score_loss(y, p))}
    return {
        "auroc": float(roc_auc_score(y, p)),
        "auprc": float(average_precision_score(y, p)),
        "brier": float(brier_score_loss(y, p)),
    }


def bootstrap(
    y: np.ndarray, p: np.ndarray, patients: np.ndarray, seed: int, n: int = BOOTSTRAP
) -> dict[str, tuple[float, float]]:
    """95 % percentile intervals, resampling patients (all their rows) with replacement."""
    rng = np.random.default_rng(seed)
    unique = np.unique(patients)
    rows_of = {pid: np.flatnonzero(patients == pid) for pid in unique}
    draws: dict[str, list[float]] = {"auroc": [], "auprc": [], "brier": []}
    for _ in range(n):
        chosen = rng.choice(unique, size=len(unique), replace=True)
        idx = np.concatenate([rows_of[pid] for pid in chosen])
        if len(set(y[idx].tolist())) < 2:
            continue
        for name, value in _metrics(y[idx], p[idx]).items():
            draws[name].append(value)
    return {
        name: (float(np.percentile(v, 2.5)), float(np.percentile(v, 97.5)))
        for name, v in draws.items()
        if v
    }


def calibration_curve(y: np.ndarray, p: np.ndarray, bins: int = 5) -> list[dict[str, float]]:
    """Observed rate vs mean predicted risk in ``bins`` quantile bins of the predictions."""
    order = np.argsort(p, kind="stable")
    out = []
    for chunk in np.array_split(order, bins):
        if len(chunk) == 0:
            continue
        out.append(
            {
                "mean_predicted": float(p[chunk].mean()),
                "observed": float(y[chunk].mean()),
                "n": len(chunk),
                "events": int(y[chunk].sum()),
            }
        )
    return out


def evaluate_held_out(
    y: np.ndarray, p: np.ndarray, patients: np.ndarray, seed: int, threshold: float
) -> dict[str, Any]:
    flagged = p >= threshold
    positives = int(y.sum())
    return {
        **_metrics(y, p),
        "ci95": bootstrap(y, p, patients, seed),
        "calibration": calibration_curve(y, p),
        "samples": len(y),
        "patients": len(np.unique(patients)),
        "events": positives,
        "event_patients": len(np.unique(patients[y == 1])),
        "prevalence": float(y.mean()) if len(y) else math.nan,
        "mean_predicted": float(p.mean()) if len(p) else math.nan,
        "at_threshold": {
            "threshold": threshold,
            "flagged": int(flagged.sum()),
            "sensitivity": float((flagged & (y == 1)).sum() / positives) if positives else math.nan,
            "ppv": float((flagged & (y == 1)).sum() / flagged.sum()) if flagged.any() else math.nan,
        },
    }


def comparator_auroc(y: np.ndarray, score: np.ndarray) -> float | None:
    """AUROC of a simple comparator score on the rows where it is defined."""
    defined = ~np.isnan(score)
    if defined.sum() < 2 or len(set(y[defined].tolist())) < 2:
        return None
    return float(roc_auc_score(y[defined], score[defined]))
