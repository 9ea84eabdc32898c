"""Trained classification heads over the encoder's report vectors, and their combinations.

Variants (the ablation of the model card; the artifact names the one it ships):

=================== ============================================================
``rules``           ConText rules only: a finding is reported when a mention is present
``head_full``       a logistic head per finding on the mean of all sentence embeddings
``head_filtered``   the same on the negation-filtered sentences (see ``features``)
``stack_full``      logistic stack of ``head_full``'s logit and the rules' assertion
``stack_filtered``  logistic stack of ``head_filtered``'s logit and the rules' assertion
``combined``        per finding, whichever of ``rules``, ``stack_full``, ``stack_filtered``
                    has the best out-of-fold F1 on the training split (the rules as a stack
                    that copies them: weight 20 on "present", bias -10)
=================== ============================================================

Inference is plain numpy (no scikit-learn at run time): the weights are stored in
``heads.npz``.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Literal

import numpy as np

from models.nlp.features import RULE_FEATURES, ReportFeatures
from models.nlp.findings import LABELS

Variant = Literal["rules", "head_full", "head_filtered", "stack_full", "stack_filtered", "combined"]
VARIANTS: tuple[Variant, ...] = (
    "rules",
    "head_full",
    "head_filtered",
    "stack_full",
    "stack_filtered",
    "combined",
)
FULL, FILTERED = 0, 1
#: A stack that reproduces the rules' decision: sigmoid(20 * present - 10).
RULES_STACK = (np.array([0.0, 20.0, 0.0, 0.0]), -10.0)


def sigmoid(x: np.ndarray) -> np.ndarray:
    return 1.0 / (1.0 + np.exp(-np.clip(x, -40, 40)))


def report_vectors(features: Sequence[ReportFeatures], source: int) -> np.ndarray:
    """[n_reports, 384]: the ``full`` (0) or ``filtered`` (1) report vectors."""
    which = "filtered" if source == FILTERED else "full"
    return np.stack([getattr(f, which) for f in features]).astype(np.float32)


def rule_matrix(features: Sequence[ReportFeatures]) -> np.ndarray:
    """[n_reports, n_labels, 3] one-hot rule assertions."""
    return np.stack([f.rule_vector() for f in features])


def rules_decision(features: Sequence[ReportFeatures]) -> np.ndarray:
    """[n_reports, n_labels] bool: the rules report the finding as present."""
    return rule_matrix(features)[:, :, RULE_FEATURES.index("present")] > 0


@dataclass(frozen=True)
class Heads:
    variant: Variant
    #: [n_labels, 384] and [n_labels]: per-finding logistic heads on report vectors.
    weights: np.ndarray
    bias: np.ndarray
    #: [n_labels, 4] and [n_labels]: the stack over (head logit, present, uncertain, absent).
    stack_weights: np.ndarray
    stack_bias: np.ndarray
    #: [n_labels]: decision thresholds on the probability (chosen on training folds).
    thresholds: np.ndarray
    #: [n_labels]: which report vector each head reads (FULL or FILTERED).
    sources: np.ndarray
    labels: tuple[str, ...] = LABELS

    def head_logits(self, features: Sequence[ReportFeatures]) -> np.ndarray:
        logits = np.zeros((len(features), len(self.labels)), dtype=np.float32)
        for source in (FULL, FILTERED):
            columns = np.flatnonzero(self.sources == source)
            if len(columns):
                vectors = report_vectors(features, source)
                logits[:, columns] = vectors @ self.weights[columns].T + self.bias[columns]
        return logits

    def probabilities(self, features: Sequence[ReportFeatures]) -> np.ndarray:
        """[n_reports, n_labels]: probability that each finding is reported present."""
        if not features:
            return np.zeros((0, len(self.labels)), dtype=np.float32)
        if self.variant == "rules":
            return rules_decision(features).astype(np.float32)
        logits = self.head_logits(features)
        if self.variant.startswith("head"):
            return sigmoid(logits).astype(np.float32)
        stacked = np.concatenate([logits[:, :, None], rule_matrix(features)], axis=2)
        z = (stacked * self.stack_weights[None]).sum(axis=2) + self.stack_bias
        return sigmoid(z).astype(np.float32)

    def decisions(self, features: Sequence[ReportFeatures]) -> np.ndarray:
        return self.probabilities(features) >= self.thresholds

    # ------------------------------------------------------------------ storage
    def save(self, path: Path) -> None:
        with path.open("wb") as handle:
            np.savez(
                handle,
                variant=np.array(self.variant),
                labels=np.array(self.labels),
                weights=self.weights.astype(np.float32),
                bias=self.bias.astype(np.float32),
                stack_weights=self.stack_weights.astype(np.float32),
                stack_bias=self.stack_bias.astype(np.float32),
                thresholds=self.thresholds.astype(np.float32),
                sources=self.sources.astype(np.int8),
            )

    @classmethod
    def load(cls, path: Path) -> Heads:
        with np.load(path, allow_pickle=False) as data:
            labels = tuple(str(x) for x in data["labels"])
            variant = str(data["variant"])
            if variant not in VARIANTS:
                raise ValueError(f"unknown head variant {variant!r}")
            heads = cls(
                variant=variant,  # type: ignore[arg-type]
                weights=data["weights"],
                bias=data["bias"],
                stack_weights=data["stack_weights"],
                stack_bias=data["stack_bias"],
                thresholds=data["thresholds"],
                sources=data["sources"].astype(np.int64),
                labels=labels,
            )
        n = len(labels)
        shapes = (
            heads.weights.shape[0],
            len(heads.bias),
            heads.stack_weights.shape[0],
            len(heads.thresholds),
            len(heads.sources),
        )
        if any(s != n for s in shapes) or heads.stack_weights.shape[1] != 1 + len(RULE_FEATURES):
            raise ValueError("heads.npz: weight shapes do not match its labels")
        return heads
