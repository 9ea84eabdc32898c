"""Train, evaluate and ablate the report reader on the IU reports; write artifact and model card.

One command regenerates everything (``cds nlp train``, ``make nlp-model``):

1. load the IU reports and their labels; split by seed into train and a held-out test
   split that nothing is fit or tuned on (:mod:`models.nlp.iu_reports`);
2. featurise every report once (sentences, ConText verdicts, sentence embeddings);
3. for every variant of :mod:`models.nlp.heads`: out-of-fold predictions on the training
   split (5 folds; stacks use out-of-fold head logits and a second level of folds) give the
   per-finding thresholds (best F1) and the out-of-fold macro-F1 that *selects* the variant
   to ship; then fit on the whole training split and measure on the test split;
4. write ``artifacts/report-nlp/`` (heads, split ids, manifest with metrics, encoder and
   lexicon hashes) and ``MODEL_CARD.md``.

Needs scikit-learn (training only; inference is numpy).
"""

from __future__ import annotations

import json
import logging
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from models.artifacts import Artifact, write_manifest
from models.nlp import ARTIFACT_DIR, MODEL_ID
from models.nlp.encoder import SentenceEncoder, encoder_identity
from models.nlp.features import ReportFeatures, featurize
from models.nlp.findings import BY_LABEL, LABELS
from models.nlp.heads import (
    FILTERED,
    FULL,
    RULES_STACK,
    VARIANTS,
    Heads,
    Variant,
    report_vectors,
    rule_matrix,
    rules_decision,
    sigmoid,
)
from models.nlp.iu_reports import (
    OTHER_ACUTE,
    PROBLEM_LABELS,
    SPLIT_SEED,
    TEST_FRACTION,
    IuReport,
    load_reports,
    split,
)
from models.nlp.lexicon import knowledge_sha256

log = logging.getLogger("models.nlp.training")

VERSION = "1.0.0"
MODEL_CARD = Path(__file__).resolve().parent / "MODEL_CARD.md"
FOLDS = 5
HEAD_C = 1.0
STACK_C = 1.0
BOOTSTRAP = 1000


# --------------------------------------------------------------------------- metrics
def scores(truth: np.ndarray, predicted: np.ndarray) -> dict[str, Any]:
    """Per-finding precision, recall, F1 and support; macro averages."""
    per: dict[str, dict[str, float]] = {}
    for column, label in enumerate(LABELS):
        y, p = truth[:, column], predicted[:, column]
        tp = int((y & p).sum())
        fp = int((~y & p).sum())
        fn = int((y & ~p).sum())
        precision = tp / (tp + fp) if tp + fp else 0.0
        recall = tp / (tp + fn) if tp + fn else 0.0
        f1 = 2 * precision * recall / (precision + recall) if precision + recall else 0.0
        per[label] = {
            "precision": round(precision, 4),
            "recall": round(recall, 4),
            "f1": round(f1, 4),
            "support": int(y.sum()),
            "tp": tp,
            "fp": fp,
            "fn": fn,
        }
    return {
        "per_finding": per,
        "macro_f1": round(float(np.mean([v["f1"] for v in per.values()])), 4),
        "macro_precision": round(float(np.mean([v["precision"] for v in per.values()])), 4),
        "macro_recall": round(float(np.mean([v["recall"] for v in per.values()])), 4),
    }


def _macro_f1(truth: np.ndarray, predicted: np.ndarray) -> float:
    tp = (truth & predicted).sum(0)
    fp = (~truth & predicted).sum(0)
    fn = (truth & ~predicted).sum(0)
    denominator = 2 * tp + fp + fn
    f1 = np.divide(2 * tp, denominator, out=np.zeros(len(tp)), where=denominator > 0)
    return float(f1.mean())


def bootstrap_ci(truth: np.ndarray, predicted: np.ndarray, seed: int = SPLIT_SEED) -> list[float]:
    """95 % percentile interval of macro-F1 over reports resampled with replacement."""
    rng = np.random.default_rng(seed)
    n = len(truth)
    values = [_macro_f1(truth[idx], predicted[idx]) for idx in rng.integers(0, n, (BOOTSTRAP, n))]
    return [
        round(float(np.percentile(values, 2.5)), 4),
        round(float(np.percentile(values, 97.5)), 4),
    ]


def best_threshold(truth: np.ndarray, probability: np.ndarray) -> float:
    """The probability threshold with the best F1 (midpoint between neighbouring scores)."""
    candidates = np.unique(probability)
    if len(candidates) == 0 or not truth.any():
        return 0.5
    best, best_f1 = 0.5, -1.0
    for value in candidates:
        predicted = probability >= value
        tp = int((truth & predicted).sum())
        f1 = 2 * tp / (truth.sum() + predicted.sum())
        if f1 > best_f1:
            best_f1 = f1
            lower = probability[probability < value]
            best = float((value + lower.max()) / 2) if len(lower) else float(value)
    return best


# --------------------------------------------------------------------------- fitting
def _logistic(c: float) -> Any:
    from sklearn.linear_model import LogisticRegression

    return LogisticRegression(C=c, class_weight="balanced", max_iter=5000)


def _folds(n: int, seed: int) -> list[np.ndarray]:
    order = np.random.default_rng(seed).permutation(n)
    return [order[i::FOLDS] for i in range(FOLDS)]


def _fit_head(x: np.ndarray, y: np.ndarray) -> tuple[np.ndarray, float]:
    if y.all() or not y.any():  # one class only: a constant head
        return np.zeros(x.shape[1]), 20.0 if y.all() else -20.0
    model = _logistic(HEAD_C).fit(x, y)
    return model.coef_[0], float(model.intercept_[0])


def _stack_inputs(logit: np.ndarray, rules: np.ndarray) -> np.ndarray:
    return np.concatenate([logit[:, None], rules], axis=1)


def _fit_stack(logit: np.ndarray, rules: np.ndarray, y: np.ndarray) -> tuple[np.ndarray, float]:
    inputs = _stack_inputs(logit, rules)
    if y.all() or not y.any():
        return np.zeros(inputs.shape[1]), 20.0 if y.all() else -20.0
    model = _logistic(STACK_C).fit(inputs, y)
    return model.coef_[0], float(model.intercept_[0])


def _out_of_fold(
    n: int, seed: int, fit_predict: Callable[[np.ndarray, np.ndarray], np.ndarray]
) -> np.ndarray:
    out: np.ndarray | None = None
    for held in _folds(n, seed):
        train_idx = np.setdiff1d(np.arange(n), held)
        predicted = fit_predict(train_idx, held)
        if out is None:
            out = np.zeros((n, *predicted.shape[1:]), dtype=np.float64)
        out[held] = predicted
    assert out is not None
    return out


def _head_logits(x: np.ndarray, y: np.ndarray, seed: int) -> np.ndarray:
    """Out-of-fold head logits [n, n_labels]."""

    def fit_predict(train_idx: np.ndarray, held: np.ndarray) -> np.ndarray:
        columns = []
        for column in range(y.shape[1]):
            w, b = _fit_head(x[train_idx], y[train_idx, column])
            columns.append(x[held] @ w + b)
        return np.stack(columns, axis=1)

    return _out_of_fold(len(x), seed, fit_predict)


@dataclass(frozen=True)
class VariantResult:
    variant: Variant
    heads: Heads
    oof_macro_f1: float
    oof_probability: np.ndarray
    #: ``combined`` only: the variant each finding was taken from.
    choice: tuple[str, ...] = ()


def _f1(truth: np.ndarray, predicted: np.ndarray) -> float:
    tp = int((truth & predicted).sum())
    denominator = int(truth.sum() + predicted.sum())
    return 2 * tp / denominator if denominator else 0.0


def train_variant(
    variant: Variant,
    features: Sequence[ReportFeatures],
    y: np.ndarray,
    seed: int = SPLIT_SEED,
    trained: dict[str, VariantResult] | None = None,
) -> VariantResult:
    """Fit one variant; ``combined`` picks per finding among already ``trained`` variants."""
    n_labels = len(LABELS)
    dim = features[0].full.shape[0]
    if variant == "combined":
        return _combined(y, trained or {})
    sources = np.full(n_labels, FILTERED if variant.endswith("filtered") else FULL)
    if variant == "rules":
        decided = rules_decision(features)
        stack_w = np.tile(RULES_STACK[0], (n_labels, 1))
        heads = Heads(
            variant, np.zeros((n_labels, dim)), np.zeros(n_labels), stack_w,
            np.full(n_labels, RULES_STACK[1]), np.full(n_labels, 0.5), sources,
        )  # fmt: skip
        return VariantResult(variant, heads, _macro_f1(y, decided), decided.astype(float))
    x = report_vectors(features, int(sources[0])).astype(np.float64)
    rules = rule_matrix(features).astype(np.float64)
    oof_logits = _head_logits(x, y, seed)
    if variant.startswith("head"):
        oof_probability = sigmoid(oof_logits)
    else:

        def stack_fit_predict(train_idx: np.ndarray, held: np.ndarray) -> np.ndarray:
            columns = []
            for c in range(n_labels):
                w, b = _fit_stack(oof_logits[train_idx, c], rules[train_idx, c], y[train_idx, c])
                columns.append(sigmoid(_stack_inputs(oof_logits[held, c], rules[held, c]) @ w + b))
            return np.stack(columns, axis=1)

        oof_probability = _out_of_fold(len(x), seed + 1, stack_fit_predict)
    thresholds = np.array([best_threshold(y[:, c], oof_probability[:, c]) for c in range(n_labels)])
    fitted = [_fit_head(x, y[:, c]) for c in range(n_labels)]
    weights = np.stack([w for w, _ in fitted])
    bias = np.array([b for _, b in fitted])
    stack_w, stack_b = np.zeros((n_labels, 4)), np.zeros(n_labels)
    if variant.startswith("stack"):
        for c in range(n_labels):
            stack_w[c], stack_b[c] = _fit_stack(oof_logits[:, c], rules[:, c], y[:, c])
    heads = Heads(variant, weights, bias, stack_w, stack_b, thresholds, sources)
    oof_macro = _macro_f1(y, oof_probability >= thresholds)
    return VariantResult(variant, heads, oof_macro, oof_probability)


COMBINED_FROM: tuple[Variant, ...] = ("rules", "stack_full", "stack_filtered")


def _combined(y: np.ndarray, trained: dict[str, VariantResult]) -> VariantResult:
    """Per finding, the candidate with the best out-of-fold F1 (ties: the earlier, simpler)."""
    candidates = [trained[v] for v in COMBINED_FROM]
    first = candidates[0].heads
    names = ("weights", "bias", "stack_weights", "stack_bias", "thresholds")
    parts = {name: np.array(getattr(first, name), dtype=np.float64, copy=True) for name in names}
    sources = first.sources.copy()
    oof = np.zeros_like(candidates[0].oof_probability, dtype=np.float64)
    decided = np.zeros_like(y)
    choice = []
    for c in range(y.shape[1]):
        best = max(
            candidates,
            key=lambda r: _f1(y[:, c], r.oof_probability[:, c] >= r.heads.thresholds[c]),
        )
        for name in parts:
            parts[name][c] = getattr(best.heads, name)[c]
        sources[c] = best.heads.sources[c]
        choice.append(best.variant)
        oof[:, c] = best.oof_probability[:, c]
        decided[:, c] = best.oof_probability[:, c] >= best.heads.thresholds[c]
    heads = Heads("combined", sources=sources, **parts)  # type: ignore[arg-type]
    return VariantResult("combined", heads, _macro_f1(y, decided), oof, tuple(choice))


# --------------------------------------------------------------------------- error analysis
def error_analysis(
    features: Sequence[ReportFeatures], uids: Sequence[str], y: np.ndarray, predicted: np.ndarray
) -> dict[str, Any]:
    """Per finding: false negatives and positives by what the text layer said, with uids."""
    out: dict[str, Any] = {}
    for column, label in enumerate(LABELS):
        kinds: dict[str, list[str]] = {}
        for row, feature in enumerate(features):
            truth, guess = bool(y[row, column]), bool(predicted[row, column])
            if truth == guess:
                continue
            verdict = feature.rules.get(label)
            said = verdict.assertion if verdict else "not mentioned"
            kind = f"{'FN' if truth else 'FP'}: text {said}"
            kinds.setdefault(kind, []).append(uids[row])
        out[label] = {k: sorted(v, key=int) for k, v in sorted(kinds.items())}
    return out


# --------------------------------------------------------------------------- the whole run
def _truth(reports: Sequence[IuReport]) -> np.ndarray:
    return np.array([[label in r.labels for label in LABELS] for r in reports], dtype=bool)


def train(
    data: Path | None = None,
    artifact_dir: Path = ARTIFACT_DIR,
    model_card: Path | None = MODEL_CARD,
    progress: Callable[[str], None] = log.info,
) -> Artifact:
    started = time.perf_counter()
    reports = load_reports(data)
    by_uid = {r.uid: r for r in reports}
    train_uids, test_uids = split(reports)
    train_reports = [by_uid[u] for u in train_uids]
    test_reports = [by_uid[u] for u in test_uids]
    progress(f"{len(reports)} reports: {len(train_uids)} train, {len(test_uids)} test")

    encoder = SentenceEncoder()
    t0 = time.perf_counter()
    train_features = featurize(encoder, [r.text for r in train_reports])
    test_features = featurize(encoder, [r.text for r in test_reports])
    encode_s = time.perf_counter() - t0
    progress(f"featurised in {encode_s:.1f} s ({encoder.encoded_units} sentences encoded)")
    y_train, y_test = _truth(train_reports), _truth(test_reports)

    results: dict[str, VariantResult] = {}
    test_metrics: dict[str, Any] = {}
    predictions: dict[str, np.ndarray] = {}
    for variant in VARIANTS:
        result = train_variant(variant, train_features, y_train, trained=results)
        results[variant] = result
        predicted = result.heads.decisions(test_features)
        predictions[variant] = predicted
        test_metrics[variant] = scores(y_test, predicted) | {
            "macro_f1_ci95": bootstrap_ci(y_test, predicted),
            "oof_macro_f1_train": round(result.oof_macro_f1, 4),
        }
        progress(
            f"{variant}: out-of-fold macro-F1 {result.oof_macro_f1:.3f}, "
            f"test macro-F1 {test_metrics[variant]['macro_f1']:.3f}"
        )
    # The shipped variant is chosen on the training folds only, never on the test split.
    chosen = max(VARIANTS, key=lambda v: (results[v].oof_macro_f1, VARIANTS.index(v)))
    heads = results[chosen].heads
    progress(f"shipping {chosen}")

    artifact_dir.mkdir(parents=True, exist_ok=True)
    for stale in artifact_dir.iterdir():
        if stale.is_file():
            stale.unlink()
    heads.save(artifact_dir / "heads.npz")
    (artifact_dir / "split.json").write_text(
        json.dumps({"seed": SPLIT_SEED, "train": train_uids, "test": test_uids}) + "\n"
    )
    identity = encoder_identity()
    metadata = {
        "variant": chosen,
        "combined_choice": dict(zip(LABELS, results["combined"].choice, strict=True)),
        "labels": {
            label: {
                "display": BY_LABEL[label].display,
                "system": BY_LABEL[label].system,
                "code": BY_LABEL[label].code,
            }
            for label in LABELS
        },
        "thresholds": {
            label: round(float(t), 6) for label, t in zip(LABELS, heads.thresholds, strict=True)
        },
        "metrics": {
            "held_out_test": test_metrics,
            "selection": "variant with the best out-of-fold macro-F1 on the training split",
        },
        "errors_on_test": error_analysis(test_features, test_uids, y_test, predictions[chosen]),
        "training_data": {
            "source": "IU chest X-ray reports (Open-i), shared dev split, reports.csv",
            "reports": len(reports),
            "train": len(train_uids),
            "test": len(test_uids),
            "split": f"report-level, seed {SPLIT_SEED}, {TEST_FRACTION:.0%} test, stratified on "
            "each report's rarest label; ids in split.json",
            "labels": "Problems column mapped to findings (models/nlp/iu_reports.py)",
            "label_map": {k: list(v) for k, v in PROBLEM_LABELS.items()},
            "other_acute_terms": sorted(OTHER_ACUTE),
            "positives_train": {lb: int(y_train[:, i].sum()) for i, lb in enumerate(LABELS)},
            "positives_test": {lb: int(y_test[:, i].sum()) for i, lb in enumerate(LABELS)},
        },
        "encoder": {
            "package": identity.package,
            "version": identity.version,
            "weights_sha256": identity.weights_sha256,
            "pooling": "mean over tokens, L2-normalised; one sentence per unit",
        },
        "knowledge_sha256": knowledge_sha256(),
        "training": {
            "head_C": HEAD_C,
            "stack_C": STACK_C,
            "folds": FOLDS,
            "class_weight": "balanced",
            "seconds": round(time.perf_counter() - started, 1),
            "featurise_seconds": round(encode_s, 1),
        },
    }
    artifact = write_manifest(artifact_dir, MODEL_ID, VERSION, metadata)
    if model_card is not None:
        from models.nlp.model_card import render

        model_card.write_text(render(artifact))
    progress(f"artifact {artifact.sha256[:12]} written to {artifact_dir}")
    return artifact


def evaluate(
    artifact: Artifact, data: Path | None = None, encoder: SentenceEncoder | None = None
) -> dict[str, Any]:
    """The shipped heads measured again on the recorded test split (to check a rebuild)."""
    split_ids = json.loads(artifact.file("split.json").read_text())
    by_uid = {r.uid: r for r in load_reports(data)}
    missing = [u for u in split_ids["test"] if u not in by_uid]
    if missing:
        raise ValueError(f"{len(missing)} test reports are not in the data (e.g. uid {missing[0]})")
    reports = [by_uid[u] for u in split_ids["test"]]
    heads = Heads.load(artifact.file("heads.npz"))
    features = featurize(encoder or SentenceEncoder(), [r.text for r in reports])
    return scores(_truth(reports), heads.decisions(features))
