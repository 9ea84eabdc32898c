"""Serving a trained risk model: artifact in, calibrated probability and explanation out.

The artifact (``artifacts/<model-id>/``, hashed by ``manifest.json``) holds the xgboost
booster, the feature spec it was trained on, the Platt calibration and, in the manifest's
metadata, the outcome, who is scored, the action threshold and the held-out metrics.
:meth:`LearnedRiskModel.predict` evaluates the feature spec with the same evaluator as
training and explains the prediction with the booster's per-feature contributions
(``pred_contribs``, TreeSHAP) scaled onto the calibrated log-odds: they add up, with the
bias, to exactly the logit of the probability shown.
"""

from __future__ import annotations

import json
import math
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import xgboost as xgb

from fhir_adapters.patient_context import PatientContext
from models.artifacts import Artifact, ArtifactInvalid, ModelIdentity, load_artifact
from models.risk.catalog import Outcome
from models.risk.evidence import Evidence, as_of_datetime, today_of
from models.risk.features.evaluate import FeatureVector, evaluate
from models.risk.features.spec import FeatureSet, FeatureSpecInvalid
from models.risk.kb import CodeMatch

ARTIFACTS = Path(__file__).resolve().parent / "artifacts"
MODEL_CARD = Path(__file__).resolve().parent / "MODEL_CARD.md"
MODEL_FILE, SPEC_FILE, CALIBRATION_FILE = "model.json", "feature_spec.json", "calibration.json"


@dataclass(frozen=True)
class Factor:
    """One feature's push on this patient's risk."""

    feature: str
    label: str
    #: Contribution to the calibrated log-odds (positive raises the risk).
    contribution: float
    value: float
    evidence: Evidence | None

    @property
    def raises(self) -> bool:
        return self.contribution > 0


@dataclass(frozen=True)
class RiskPrediction:
    model_id: str
    probability: float
    #: "elevated" (>= threshold), "high" (>= high threshold) or None (below threshold).
    band: str | None
    threshold: float
    high_threshold: float
    #: Factors by absolute contribution, largest first.
    factors: tuple[Factor, ...]
    #: Calibrated log-odds of the average training sample (the explanation's baseline).
    baseline_logit: float
    vector: FeatureVector


class NotEligible(ValueError):
    """The model does not apply to this patient (age, prior outcome, deceased)."""


class LearnedRiskModel:
    def __init__(self, artifact: Artifact) -> None:
        self.artifact = artifact
        meta = artifact.metadata
        try:
            self.features = FeatureSet.from_json(json.loads(artifact.file(SPEC_FILE).read_text()))
            calibration = json.loads(artifact.file(CALIBRATION_FILE).read_text())
            self.platt_a, self.platt_b = float(calibration["a"]), float(calibration["b"])
            self.outcome = Outcome.from_json(meta["outcome"])
            self.title = str(meta["title"])
            self.min_age = int(meta["eligibility"]["min_age"])
            max_age = meta["eligibility"]["max_age"]
            self.max_age = int(max_age) if max_age is not None else None
            self.requires = tuple(
                CodeMatch.from_json(c) for c in meta["eligibility"].get("requires") or ()
            )
            self.threshold = float(meta["threshold"])
            self.high_threshold = float(meta["high_threshold"])
            self.advice = str(meta.get("advice") or "")
            self.advice_source = str(meta.get("advice_source") or "")
            self.base_rate = float(meta["training_data"]["prevalence"])
            self.metrics: dict[str, Any] = dict(meta.get("metrics") or {})
        except (KeyError, TypeError, ValueError, FeatureSpecInvalid) as exc:
            raise ArtifactInvalid(f"{artifact.id}: metadata unusable ({exc!r})") from None
        self.booster = xgb.Booster()
        self.booster.load_model(str(artifact.file(MODEL_FILE)))
        self.booster.set_param({"nthread": 1})
        if self.booster.feature_names != self.features.names:
            raise ArtifactInvalid(f"{artifact.id}: booster features differ from the feature spec")

    @property
    def identity(self) -> ModelIdentity:
        return self.artifact.identity

    @property
    def id(self) -> str:
        return self.artifact.id

    # ------------------------------------------------------------------------- eligibility
    def not_eligible(self, patient: PatientContext) -> str | None:
        """Why the model does not apply to this patient, or None."""
        if patient.deceased:
            return "the patient is deceased"
        age = patient.age_years
        if age is None:
            return "age unknown"
        if age < self.min_age or (self.max_age is not None and age > self.max_age):
            upper = f"-{self.max_age}" if self.max_age is not None else "+"
            return f"age {age} is outside {self.min_age}{upper}"
        if self.outcome.exclude_prior and self._recorded(patient, self.outcome.condition_codes):
            return "the predicted condition is already recorded"
        if self.requires and not self._recorded(patient, self.requires):
            return "the condition the model is for is not recorded"
        return None

    @staticmethod
    def _recorded(patient: PatientContext, codes: tuple[CodeMatch, ...]) -> bool:
        today = as_of_datetime(today_of(patient))
        return any(
            (p.onset is None or p.onset <= today)
            and any(code.matches(c) for code in codes for c in p.concept.codings)
            for p in (patient.conditions or patient.problems)
        )

    # ------------------------------------------------------------------------- predicting
    def _matrix(self, rows: np.ndarray) -> xgb.DMatrix:
        return xgb.DMatrix(rows, feature_names=self.features.names, missing=math.nan)

    def probabilities(self, rows: np.ndarray) -> np.ndarray:
        """Calibrated probabilities for feature rows (what training evaluates too)."""
        margin = self.booster.predict(self._matrix(rows), output_margin=True)
        return 1.0 / (1.0 + np.exp(-(self.platt_a * margin + self.platt_b)))

    def predict(self, patient: PatientContext, threshold: float | None = None) -> RiskPrediction:
        """Raises :class:`NotEligible` or ``FeaturesUnavailable``."""
        reason = self.not_eligible(patient)
        if reason is not None:
            raise NotEligible(reason)
        vector = evaluate(self.features, patient)
        row = np.array([vector.values], dtype=float)
        probability = float(self.probabilities(row)[0])
        contributions = self.booster.predict(self._matrix(row), pred_contribs=True)[0]
        *per_feature, bias = (float(c) for c in contributions)
        factors = sorted(
            (
                Factor(spec.name, spec.label, self.platt_a * c, value, item)
                for spec, c, value, item in zip(
                    self.features.features,
                    per_feature,
                    vector.values,
                    vector.evidence,
                    strict=True,
                )
                if c != 0.0
            ),
            key=lambda f: -abs(f.contribution),
        )
        limit = threshold if threshold is not None else self.threshold
        high = max(self.high_threshold, limit)
        if probability >= high:
            band: str | None = "high"
        elif probability >= limit:
            band = "elevated"
        else:
            band = None
        return RiskPrediction(
            model_id=self.id,
            probability=probability,
            band=band,
            threshold=limit,
            high_threshold=high,
            factors=tuple(factors),
            baseline_logit=self.platt_a * bias + self.platt_b,
            vector=vector,
        )


def load(model_id: str, folder: Path | None = None) -> LearnedRiskModel:
    """Load and verify ``artifacts/<model_id>`` (raises ArtifactInvalid)."""
    path = (folder or ARTIFACTS) / model_id
    if not path.is_dir():
        raise ArtifactInvalid(f"{model_id}: no artifact at {path} (train it: make models-risk)")
    artifact = load_artifact(path)
    if artifact.id != model_id:
        raise ArtifactInvalid(f"{path.name}: the manifest names {artifact.id}")
    return LearnedRiskModel(artifact)


def load_cvd_event_3y() -> LearnedRiskModel:
    """Model-registry loader."""
    return load("cvd-event-3y")


def load_acute_care_1y() -> LearnedRiskModel:
    """Model-registry loader."""
    return load("acute-care-1y")
