"""What the models see of a report: its finding sentences, the rules' verdicts, embeddings.

For each report: the sentences of its finding sections, the ConText verdict per finding
(:func:`models.nlp.rules.read_rules`), one embedding per sentence, and two report vectors:

* ``full``: the normalised mean of all finding-sentence embeddings;
* ``filtered``: the same over the sentences that are *not negative-only* — a sentence
  whose finding mentions are all negated ("No pneumothorax or effusion.") is dropped, so
  the encoder sees what the report affirms or hedges. A report with nothing left gets the
  zero vector (and ``nothing_left``).

Rule features per finding: present / uncertain / absent (one-hot; all zero when the report
does not mention it).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Protocol

import numpy as np

from models.nlp.findings import LABELS
from models.nlp.rules import RuleFinding, mentions_in, read_rules
from models.nlp.text import FINDING_SECTIONS, Sentence, split_sentences

RULE_FEATURES = ("present", "uncertain", "absent")


class Encoder(Protocol):
    def encode(self, texts: Sequence[str]) -> np.ndarray: ...


@dataclass(frozen=True)
class ReportFeatures:
    sentences: tuple[Sentence, ...]
    rules: dict[str, RuleFinding]
    #: One row per sentence of ``sentences`` (float32, L2-normalised).
    embeddings: np.ndarray
    #: Which sentences are kept in ``filtered``.
    kept: np.ndarray
    full: np.ndarray
    filtered: np.ndarray

    @property
    def nothing_left(self) -> bool:
        return not bool(self.kept.any())

    def rule_vector(self) -> np.ndarray:
        """[n_labels, 3]: the rules' one-hot assertion per finding."""
        out = np.zeros((len(LABELS), len(RULE_FEATURES)), dtype=np.float32)
        for row, label in enumerate(LABELS):
            verdict = self.rules.get(label)
            if verdict is not None:
                out[row, RULE_FEATURES.index(verdict.assertion)] = 1.0
        return out


def _negative_only(sentence: Sentence) -> bool:
    found = [m for m in mentions_in(sentence) if m.current]
    return bool(found) and all(m.assertion == "absent" for m in found)


def _mean(vectors: np.ndarray) -> np.ndarray:
    if len(vectors) == 0:
        return np.zeros(vectors.shape[1], dtype=np.float32)
    mean = vectors.mean(axis=0)
    norm = float(np.linalg.norm(mean))
    return (mean / norm if norm > 0 else mean).astype(np.float32)


def featurize(encoder: Encoder, texts: Sequence[str]) -> list[ReportFeatures]:
    """Features of many reports; all their sentences go to the encoder in one batched call."""
    per_report = [
        tuple(s for s in split_sentences(text) if s.section in FINDING_SECTIONS) for text in texts
    ]
    flat = [s.clean for sentences in per_report for s in sentences]
    vectors = encoder.encode(flat) if flat else np.zeros((0, 384), dtype=np.float32)
    out, cursor = [], 0
    for sentences in per_report:
        rows = vectors[cursor : cursor + len(sentences)]
        cursor += len(sentences)
        kept = np.array([not _negative_only(s) for s in sentences], dtype=bool)
        out.append(
            ReportFeatures(
                sentences=sentences,
                rules=read_rules(sentences),
                embeddings=rows,
                kept=kept,
                full=_mean(rows),
                filtered=_mean(rows[kept]),
            )
        )
    return out
