"""Fit the phenotypes on a cohort and write the versioned artifact.

:func:`fit_phenotypes` is pure (cohort in, :class:`PhenotypeFit` out; deterministic for a
seed); :func:`write_artifact` writes the artifact through ``models.artifacts`` (feature
spec, preprocessing, centroids, descriptions, metrics; hashed manifest). Patient ids never
enter the artifact.
"""

from __future__ import annotations

import json
import shutil
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from models.artifacts import Artifact, write_manifest
from models.phenotypes.clustering import (
    KChoice,
    MethodResult,
    nearest,
    run_dbscan,
    run_hdbscan,
    run_kmeans,
)
from models.phenotypes.cohort import OUTCOMES, Cohort
from models.phenotypes.describe import SampleOutcomes, describe_clusters
from models.phenotypes.features import COUNTS, GROUPS, PHENOTYPE_FEATURES, labels
from models.phenotypes.model import (
    ARTIFACT,
    CENTROIDS_FILE,
    DESCRIPTIONS_FILE,
    METRICS_FILE,
    MODEL_ID,
    PREPROCESSING_FILE,
    SPEC_FILE,
)
from models.phenotypes.preprocess import Preprocessing, fit_preprocessing

VERSION = "1.0.0"
SEED = 20261129
NAMED_BY = 2


@dataclass
class PhenotypeFit:
    cohort: Cohort
    raw: np.ndarray
    preprocessing: Preprocessing
    space: np.ndarray
    kmeans: MethodResult
    k_choice: KChoice
    centroids: np.ndarray
    dbscan: MethodResult
    k_distance: np.ndarray
    hdbscan: MethodResult
    descriptions: dict[str, Any]
    seed: int

    @property
    def methods(self) -> list[MethodResult]:
        return [self.kmeans, self.dbscan, self.hdbscan]

    def metrics(self) -> dict[str, Any]:
        """Validation numbers (no timings: the same data and seed give the same artifact)."""
        pre = self.preprocessing
        methods = []
        for m in self.methods:
            entry = m.to_json()
            entry.pop("seconds")
            methods.append(entry)
        return {
            "cohort": {
                "records": self.cohort.records,
                "patients": len(self.cohort.rows),
                "index_date": self.cohort.index_date.date().isoformat(),
                "data_end": self.cohort.data_end.date().isoformat(),
            },
            "preprocessing": {
                "features": len(pre.names),
                "dimensions": pre.dimensions,
                "pca": pre.uses_pca,
                "explained_variance": round(sum(pre.explained), 4) if pre.uses_pca else 1.0,
                "missing_share": dict(zip(pre.names, pre.missing_share, strict=True)),
            },
            "k_selection": {"table": self.k_choice.table, "rule": self.k_choice.rule},
            "methods": methods,
            "seed": self.seed,
        }


def _name(description: dict[str, Any], index: int) -> str:
    top = [f["label"] for f in description["over_represented"][:NAMED_BY]]
    tail = ", ".join(top) if top else "no condition or medication over-represented"
    return f"Phenotype {index + 1} (median age {description['age']['median']:g}): {tail}"


def fit_phenotypes(cohort: Cohort, seed: int = SEED) -> PhenotypeFit:
    names = PHENOTYPE_FEATURES.names
    raw = cohort.matrix
    preprocessing = fit_preprocessing(raw, names, COUNTS, GROUPS, seed)
    space = preprocessing.transform(raw)
    kmeans, choice, centroids = run_kmeans(space, seed)
    dbscan, k_distance = run_dbscan(space, seed)
    hdbscan = run_hdbscan(space, seed)
    sample_phenotypes, _ = nearest(preprocessing.transform(cohort.sample_matrix), centroids)
    samples = SampleOutcomes(
        sample_phenotypes,
        [s.patient_id for s in cohort.samples],
        {spec.id: [s.outcomes.get(spec.id) for s in cohort.samples] for spec in OUTCOMES},
    )
    ages = [r.age for r in cohort.rows]
    descriptions = describe_clusters(raw, names, kmeans.labels, samples, ages)
    for key, description in descriptions["clusters"].items():
        description["name"] = _name(description, int(key))
    descriptions["labels"] = labels()
    descriptions["samples"] = {
        "landmarks": len(cohort.samples),
        "patients": len({s.patient_id for s in cohort.samples}),
        "index_dates": "ambulatory encounters, at most one a year, adults (risk training's)",
    }
    descriptions["other_methods"] = {
        m.method: describe_clusters(raw, names, m.labels, None, ages)["clusters"]
        for m in (dbscan, hdbscan)
    }
    return PhenotypeFit(
        cohort,
        raw,
        preprocessing,
        space,
        kmeans,
        choice,
        centroids,
        dbscan,
        k_distance,
        hdbscan,
        descriptions,
        seed,
    )


def _dump(path: Path, data: Any) -> None:
    path.write_text(json.dumps(data, indent=2, sort_keys=True) + "\n")


def outcome_definitions() -> list[dict[str, Any]]:
    return [
        {"outcome": s.outcome.to_json(), "min_age": s.min_age, "max_age": s.max_age}
        for s in OUTCOMES
    ]


def write_artifact(fit: PhenotypeFit, folder: Path = ARTIFACT) -> Artifact:
    if folder.exists():
        shutil.rmtree(folder)
    folder.mkdir(parents=True)
    (folder / SPEC_FILE).write_text(PHENOTYPE_FEATURES.dumps())
    _dump(folder / PREPROCESSING_FILE, fit.preprocessing.to_json())
    _dump(folder / CENTROIDS_FILE, [[round(float(v), 10) for v in c] for c in fit.centroids])
    _dump(folder / DESCRIPTIONS_FILE, fit.descriptions)
    metrics = fit.metrics()
    _dump(folder / METRICS_FILE, metrics)
    return write_manifest(
        folder,
        MODEL_ID,
        VERSION,
        {
            "title": "Patient phenotypes (k-means on the phenotype feature set)",
            "k": fit.kmeans.clusters,
            "silhouette": metrics["methods"][0]["silhouette"],
            "stability_ari": metrics["methods"][0]["stability"]["mean_ari"],
            "index_date": metrics["cohort"]["index_date"],
            "patients": metrics["cohort"]["patients"],
            "outcomes": outcome_definitions(),
            "training_data": "299 synthetic Synthea patients (shared dev split)",
        },
    )
