"""Held-out evaluation: AUROC, accuracy, sensitivity, specificity (bootstrap CIs), calibration.

Everything here is plain numpy / scikit-learn on labels and probabilities, so the numbers in
the model card can be recomputed from the saved predictions.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
from scipy.optimize import minimize_scalar
from sklearn.metrics import roc_auc_score, roc_curve

BOOTSTRAP_SEED = 20240607


def sigmoid(x: np.ndarray) -> np.ndarray:
    return 1.0 / (1.0 + np.exp(-x))


def fit_temperature(logits: np.ndarray, labels: np.ndarray) -> float:
    """Temperature T minimising the negative log-likelihood of sigmoid(logit / T)."""

    def nll(log_t: float) -> float:
        z = logits / np.exp(log_t)
        # log(1 + e^z) - y z, computed stably
        return float(np.mean(np.logaddexp(0.0, z) - labels * z))

    found = minimize_scalar(nll, bounds=(np.log(0.05), np.log(20.0)), method="bounded")
    return float(np.exp(found.x))


def threshold_for_sensitivity(labels: np.ndarray, probs: np.ndarray, target: float) -> float:
    """The highest threshold t with sensitivity(p >= t) >= target (on these labels)."""
    positives = np.sort(probs[labels == 1])[::-1]
    if positives.size == 0:
        raise ValueError("no positive cases to set a sensitivity target on")
    needed = int(np.ceil(target * positives.size))
    return float(positives[needed - 1])


def expected_calibration_error(labels: np.ndarray, probs: np.ndarray, bins: int = 10) -> float:
    edges = np.linspace(0.0, 1.0, bins + 1)
    which = np.clip(np.digitize(probs, edges[1:-1]), 0, bins - 1)
    error = 0.0
    for b in range(bins):
        mask = which == b
        if mask.any():
            error += mask.mean() * abs(probs[mask].mean() - labels[mask].mean())
    return float(error)


def point_metrics(labels: np.ndarray, probs: np.ndarray, threshold: float) -> dict[str, float]:
    predicted = probs >= threshold
    positives, negatives = labels == 1, labels == 0
    return {
        "auroc": float(roc_auc_score(labels, probs)),
        "accuracy": float(np.mean(predicted == positives)),
        "sensitivity": float(predicted[positives].mean()),
        "specificity": float((~predicted[negatives]).mean()),
    }


@dataclass(frozen=True)
class Evaluation:
    n: int
    positives: int
    threshold: float
    #: metric → {"value", "ci_low", "ci_high"} (95 % percentile bootstrap).
    metrics: dict[str, dict[str, float]]
    brier: float
    ece: float

    def to_json(self) -> dict[str, Any]:
        return {
            "n": self.n,
            "positives": self.positives,
            "threshold": round(self.threshold, 6),
            "metrics": {
                name: {k: round(v, 4) for k, v in values.items()}
                for name, values in self.metrics.items()
            },
            "brier": round(self.brier, 4),
            "ece": round(self.ece, 4),
        }


def evaluate(
    labels: np.ndarray, probs: np.ndarray, threshold: float, resamples: int = 2000
) -> Evaluation:
    """Point estimates and 95 % bootstrap intervals (stratified resampling, fixed seed)."""
    point = point_metrics(labels, probs, threshold)
    rng = np.random.default_rng(BOOTSTRAP_SEED)
    pos, neg = np.flatnonzero(labels == 1), np.flatnonzero(labels == 0)
    samples: dict[str, list[float]] = {name: [] for name in point}
    for _ in range(resamples):
        index = np.concatenate(
            [rng.choice(pos, pos.size, replace=True), rng.choice(neg, neg.size, replace=True)]
        )
        for name, value in point_metrics(labels[index], probs[index], threshold).items():
            samples[name].append(value)
    metrics = {
        name: {
            "value": point[name],
            "ci_low": float(np.percentile(samples[name], 2.5)),
            "ci_high": float(np.percentile(samples[name], 97.5)),
        }
        for name in point
    }
    return Evaluation(
        n=int(labels.size),
        positives=int(pos.size),
        threshold=threshold,
        metrics=metrics,
        brier=float(np.mean((probs - labels) ** 2)),
        ece=expected_calibration_error(labels, probs),
    )


def roc_plot(labels: np.ndarray, probs: np.ndarray, threshold: float, path: Path) -> None:
    """ROC curve with the operating point, as a PNG without time stamps (reproducible)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fpr, tpr, _ = roc_curve(labels, probs)
    point = point_metrics(labels, probs, threshold)
    figure, axes = plt.subplots(figsize=(4.5, 4.5), dpi=100)
    axes.plot(fpr, tpr, color="#1f77b4", label=f"CNN (AUROC {point['auroc']:.3f})")
    axes.plot([0, 1], [0, 1], color="#999999", linestyle="--", linewidth=1, label="chance")
    axes.scatter(
        [1 - point["specificity"]],
        [point["sensitivity"]],
        color="#d62728",
        zorder=3,
        label=f"operating point (p ≥ {threshold:.2f})",
    )
    axes.set_xlabel("1 - specificity")
    axes.set_ylabel("sensitivity")
    axes.set_title(f"Held-out test set (n = {labels.size})")
    axes.set_xlim(0, 1)
    axes.set_ylim(0, 1.01)
    axes.legend(loc="lower right", fontsize=8)
    figure.tight_layout()
    figure.savefig(path, metadata={"Software": None})
    plt.close(figure)
