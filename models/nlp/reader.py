"""The report reader as the service runs it: report texts in, findings with assertions out.

For each report and each finding of :mod:`models.nlp.findings`:

* **assertion** — what the text says, by ConText (present / absent / uncertain), from the
  deciding mention; when the report never names the finding but the trained model
  decides it is there, ``uncertain`` (suggested by the model, not stated in words);
* **probability** — the trained model's probability that the report describes the finding
  as present (for the ``rules`` variant 1 or 0);
* **evidence** — the sentence as written (the deciding mention's, or, for a model-only
  finding, the kept sentence that scores highest for it).

Findings the report does not mention and the model does not decide are left out, so an
empty list means nothing was found. Historical mentions and mentions about relatives are
not findings of the patient now and are left out too.
"""

from __future__ import annotations

import hashlib
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Literal

import numpy as np

from models.artifacts import Artifact, ArtifactInvalid, ModelIdentity
from models.nlp.context import Assertion
from models.nlp.encoder import SentenceEncoder, encoder_identity
from models.nlp.features import ReportFeatures, featurize
from models.nlp.findings import BY_LABEL, LABELS
from models.nlp.heads import Heads
from models.nlp.lexicon import knowledge_sha256
from models.nlp.text import SectionKind, Sentence


@dataclass(frozen=True)
class FindingResult:
    label: str
    display: str
    #: SNOMED CT (or the local system for "no acute finding").
    system: str
    code: str
    assertion: Assertion
    probability: float
    #: The sentence as written (the deciding mention's, or the model's best sentence).
    evidence: str
    section: SectionKind
    #: "text": stated in words (ConText); "model": only the trained model suggests it.
    basis: Literal["text", "model"]
    #: The model's decision (probability at or over the finding's threshold).
    decided: bool
    #: The ConText trigger that set the assertion ("negated: no"), if any.
    trigger: str | None = None

    def to_json(self) -> dict[str, object]:
        return {
            "label": self.label,
            "assertion": self.assertion,
            "probability": round(self.probability, 4),
            "evidence": self.evidence,
        }


@dataclass(frozen=True)
class ReportFindings:
    #: SHA-256 of the report text (what the embedding cache is keyed on, per sentence).
    text_sha256: str
    findings: tuple[FindingResult, ...]
    sentences: int

    def get(self, label: str) -> FindingResult | None:
        return next((f for f in self.findings if f.label == label), None)


class ReportReader:
    """The loaded model: verified artifact, encoder, heads (shared by all threads)."""

    def __init__(self, artifact: Artifact, encoder: SentenceEncoder | None = None) -> None:
        meta = artifact.metadata
        if meta.get("knowledge_sha256") != knowledge_sha256():
            raise ArtifactInvalid(
                f"{artifact.id}: the knowledge files changed since training (cds nlp train)"
            )
        recorded = (meta.get("encoder") or {}).get("weights_sha256")
        if recorded != encoder_identity().weights_sha256:
            raise ArtifactInvalid(f"{artifact.id}: the installed encoder is not the one trained on")
        try:
            self.heads = Heads.load(artifact.file("heads.npz"))
        except (OSError, ValueError, KeyError) as exc:
            raise ArtifactInvalid(f"{artifact.id}: heads.npz unreadable ({exc})") from exc
        if self.heads.labels != LABELS:
            raise ArtifactInvalid(f"{artifact.id}: trained on other labels {self.heads.labels}")
        self.artifact = artifact
        self.encoder = encoder or SentenceEncoder()

    @property
    def identity(self) -> ModelIdentity:
        return self.artifact.identity

    @property
    def variant(self) -> str:
        return self.heads.variant

    def read(self, texts: Sequence[str]) -> list[ReportFindings]:
        """Findings of each text, in order (all sentences encoded in batches, cached)."""
        features = featurize(self.encoder, texts)
        probabilities = self.heads.probabilities(features)
        return [
            self._findings(text, feature, row)
            for text, feature, row in zip(texts, features, probabilities, strict=True)
        ]

    def _findings(self, text: str, feature: ReportFeatures, probs: np.ndarray) -> ReportFindings:
        found = []
        for column, label in enumerate(LABELS):
            probability = float(probs[column])
            decided = probability >= float(self.heads.thresholds[column])
            kind = BY_LABEL[label]
            verdict = feature.rules.get(label)
            if verdict is not None:
                sentence = verdict.mention.sentence
                found.append(
                    FindingResult(
                        label,
                        kind.display,
                        kind.system,
                        kind.code,
                        verdict.assertion,
                        probability,
                        sentence.text,
                        sentence.section,
                        "text",
                        decided,
                        verdict.mention.context.trigger,
                    )
                )
            elif decided and feature.sentences:  # nothing to read, nothing to suggest
                sentence = self._best_sentence(feature, column)
                found.append(
                    FindingResult(
                        label,
                        kind.display,
                        kind.system,
                        kind.code,
                        "uncertain",
                        probability,
                        sentence.text,
                        sentence.section,
                        "model",
                        decided,
                    )
                )
        digest = hashlib.sha256(text.encode("utf-8")).hexdigest()
        return ReportFindings(digest, tuple(found), len(feature.sentences))

    def _best_sentence(self, feature: ReportFeatures, column: int) -> Sentence:
        """The kept sentence the finding's head scores highest (the model's evidence)."""
        candidates = (
            np.flatnonzero(feature.kept)
            if feature.kept.any()
            else np.arange(len(feature.sentences))
        )
        scores = feature.embeddings[candidates] @ self.heads.weights[column]
        return feature.sentences[int(candidates[int(np.argmax(scores))])]
