"""Serving the phenotypes: artifact in, a patient's phenotype and (when it adds
information) the comparison the ``similar-patients`` card shows.

The artifact (``artifacts/patient-phenotypes/``, hashed by ``manifest.json``) holds the
feature spec, the preprocessing, the k-means centroids in the preprocessed space, the
clinical description of each phenotype and the validation metrics.

**When is there something to say** (:meth:`PhenotypeModel.similar`)? For an outcome of the
risk models that applies to the patient (age range, not already had):

1. the patient's phenotype has at least :data:`MIN_PATIENTS` patients with a known outcome
   and its rate's 95 % Wilson interval lies wholly **above** the population rate;
2. a **lower-risk** phenotype exists: at least :data:`MIN_PATIENTS` patients, its rate
   below the population rate and its interval's upper end below the patient's phenotype
   rate;
3. and the two differ in **modifiable** factors (labs, vitals, medications, smoking,
   utilisation; never age or sex) by at least half a pooled standard deviation.

Otherwise nothing is said: a phenotype with average outcomes, or one whose better-off
neighbours differ only in age, adds nothing a clinician could use.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from fhir_adapters.patient_context import PatientContext
from models.artifacts import Artifact, ArtifactInvalid, ModelIdentity, load_artifact
from models.phenotypes.clustering import nearest
from models.phenotypes.describe import modifiable_differences
from models.phenotypes.preprocess import Preprocessing
from models.risk.catalog import Outcome
from models.risk.features.evaluate import FeatureVector, evaluate
from models.risk.features.spec import FeatureSet, FeatureSpecInvalid

MODEL_ID = "patient-phenotypes"
ARTIFACT = Path(__file__).resolve().parent / "artifacts" / MODEL_ID
SPEC_FILE, PREPROCESSING_FILE = "feature_spec.json", "preprocessing.json"
CENTROIDS_FILE, DESCRIPTIONS_FILE, METRICS_FILE = (
    "centroids.json",
    "descriptions.json",
    "metrics.json",
)
MIN_PATIENTS = 10


@dataclass(frozen=True)
class Assignment:
    phenotype: int
    distance: float
    vector: FeatureVector


@dataclass(frozen=True)
class OutcomeContrast:
    outcome: str
    label: str
    horizon_years: float
    #: The patient's phenotype, the population and the lower-risk phenotype: rate, CI, n.
    mine: dict[str, Any]
    population: dict[str, Any]
    lower: dict[str, Any]
    lower_phenotype: int
    differences: list[dict[str, Any]]


@dataclass(frozen=True)
class SimilarPatients:
    assignment: Assignment
    name: str
    size: int
    contrasts: list[OutcomeContrast]


class PhenotypeModel:
    def __init__(self, artifact: Artifact) -> None:
        self.artifact = artifact
        try:
            self.features = FeatureSet.from_json(json.loads(artifact.file(SPEC_FILE).read_text()))
            self.preprocessing = Preprocessing.from_json(
                json.loads(artifact.file(PREPROCESSING_FILE).read_text())
            )
            self.centroids = np.array(json.loads(artifact.file(CENTROIDS_FILE).read_text()))
            self.descriptions: dict[str, Any] = json.loads(
                artifact.file(DESCRIPTIONS_FILE).read_text()
            )
            self.metrics: dict[str, Any] = json.loads(artifact.file(METRICS_FILE).read_text())
            self.outcomes = {
                o["outcome"]["code"]: (Outcome.from_json(o["outcome"]), o["min_age"], o["max_age"])
                for o in artifact.metadata["outcomes"]
            }
        except (KeyError, TypeError, ValueError, FeatureSpecInvalid) as exc:
            raise ArtifactInvalid(f"{artifact.id}: unreadable ({exc!r})") from exc
        if self.features.names != list(self.preprocessing.names):
            raise ArtifactInvalid(f"{artifact.id}: feature spec and preprocessing disagree")

    @property
    def identity(self) -> ModelIdentity:
        return self.artifact.identity

    def phenotype_name(self, phenotype: int) -> str:
        return str(self.descriptions["clusters"][str(phenotype)]["name"])

    def assign_vectors(self, raw: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        return nearest(self.preprocessing.transform(raw), self.centroids)

    def assign(self, patient: PatientContext) -> Assignment:
        """The patient's phenotype from today's record (raises FeaturesUnavailable)."""
        vector = evaluate(self.features, patient)
        labels, distances = self.assign_vectors(np.array([vector.values], dtype=float))
        return Assignment(int(labels[0]), float(distances[0]), vector)

    def _applies(self, patient: PatientContext, outcome_id: str) -> bool:
        outcome, min_age, max_age = self.outcomes[outcome_id]
        age = patient.age_years
        if age is None or age < min_age or (max_age is not None and age > max_age):
            return False
        if outcome.exclude_prior and outcome.condition_codes:
            return not any(
                code.matches(c)
                for p in patient.conditions
                for code in outcome.condition_codes
                for c in p.concept.codings
            )
        return True

    def contrasts(self, phenotype: int, outcome_ids: list[str]) -> list[OutcomeContrast]:
        """The rule of the module docstring, for one phenotype (no patient data)."""
        clusters = self.descriptions["clusters"]
        population = self.descriptions["population"]["outcomes"]
        mine = clusters[str(phenotype)]
        found = []
        for outcome_id in outcome_ids:
            own, base = mine["outcomes"][outcome_id], population[outcome_id]
            if own["n"] < MIN_PATIENTS or base["rate"] is None or own["ci95"][0] <= base["rate"]:
                continue
            candidates = []
            for other, description in clusters.items():
                theirs = description["outcomes"][outcome_id]
                if (
                    int(other) == phenotype
                    or theirs["n"] < MIN_PATIENTS
                    or theirs["rate"] >= base["rate"]
                    or theirs["ci95"][1] >= own["rate"]
                ):
                    continue
                differences = modifiable_differences(
                    self.descriptions["profiles"][str(phenotype)],
                    self.descriptions["profiles"][other],
                    self.descriptions["pooled_sd"],
                )
                if differences:
                    candidates.append((theirs["rate"], int(other), theirs, differences))
            if not candidates:
                continue
            _, lower_id, lower, differences = min(candidates, key=lambda c: (c[0], c[1]))
            outcome = self.outcomes[outcome_id][0]
            found.append(
                OutcomeContrast(
                    outcome_id,
                    outcome.label,
                    outcome.horizon_years,
                    own,
                    base,
                    lower,
                    lower_id,
                    differences,
                )
            )
        return found

    def similar(self, patient: PatientContext) -> SimilarPatients | None:
        """The card's content, or None when the phenotype adds nothing (module docstring)."""
        applicable = [o for o in self.outcomes if self._applies(patient, o)]
        if not applicable:
            return None
        assignment = self.assign(patient)
        found = self.contrasts(assignment.phenotype, applicable)
        if not found:
            return None
        description = self.descriptions["clusters"][str(assignment.phenotype)]
        return SimilarPatients(
            assignment, str(description["name"]), int(description["size"]), found
        )


def load(folder: Path = ARTIFACT) -> PhenotypeModel:
    """The registry's loader (``models.registry``)."""
    return PhenotypeModel(load_artifact(folder))
