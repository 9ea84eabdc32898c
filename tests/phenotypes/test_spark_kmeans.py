"""Phenotypes on Spark: the cohort's vectors computed by the Spark feature executor equal
the Python evaluator's, the Spark preprocessing is the Python one, and MLlib k-means
agrees with scikit-learn's on the shared patients."""

from __future__ import annotations

import numpy as np
import pytest

from population.features import record_tables
from population.phenotypes_spark import cohort_feature_frame, preprocessed_frame, run_on_fit


@pytest.fixture(scope="module")
def tables(spark, synthea_ndjson):  # type: ignore[no-untyped-def]
    return record_tables(spark, synthea_ndjson)


def test_spark_vectors_are_the_python_evaluators(tables, fitted) -> None:  # type: ignore[no-untyped-def]
    ids = [row.patient_id for row in fitted.cohort.rows]
    names = list(fitted.preprocessing.names)
    rows = cohort_feature_frame(tables, fitted).collect()
    assert sorted(r["patient_id"] for r in rows) == sorted(ids)
    by_id = {r["patient_id"]: [r[name] for name in names] for r in rows}
    spark_raw = np.array([by_id[pid] for pid in ids], dtype=float)
    assert np.isnan(spark_raw).sum() > 0  # missing labs stay missing (NaN), never imputed
    assert np.array_equal(np.isnan(spark_raw), np.isnan(fitted.raw))
    close = np.isclose(spark_raw, fitted.raw, rtol=1e-9, atol=1e-9, equal_nan=True)
    differ = [
        (ids[i], names[j], float(spark_raw[i, j]), float(fitted.raw[i, j]))
        for i, j in zip(*np.nonzero(~close), strict=True)
    ]
    assert differ == []


def test_the_spark_preprocessing_is_the_python_one(tables, fitted) -> None:  # type: ignore[no-untyped-def]
    ids = [row.patient_id for row in fitted.cohort.rows]
    rows = preprocessed_frame(cohort_feature_frame(tables, fitted), fitted.preprocessing).collect()
    by_id = {r["patient_id"]: np.asarray(r["features"]) for r in rows}
    spark_space = np.array([by_id[pid] for pid in ids])
    assert np.allclose(spark_space, fitted.space, atol=1e-9)


def test_mllib_and_scikit_learn_assignments_agree(tables, fitted) -> None:  # type: ignore[no-untyped-def]
    """The same objective, reached by both: near-equal within-cluster sums of squares and
    assignments that agree (ARI 0.87 on the shipped data; the phenotypes' bootstrap
    stability is 0.80, so near-equal optima that move a few border patients exist)."""
    comparison = run_on_fit(tables, fitted)
    assert comparison.k == fitted.kmeans.clusters
    inertia = float(((fitted.space - fitted.centroids[fitted.kmeans.labels]) ** 2).sum())
    assert comparison.spark.cost == pytest.approx(inertia, rel=0.01)
    assert comparison.ari >= 0.85, comparison.ari
    # Every MLlib centroid has a scikit-learn centroid close to it.
    for centre in comparison.spark.centroids:
        gaps = np.linalg.norm(fitted.centroids - centre, axis=1)
        assert gaps.min() < 0.25 * np.linalg.norm(fitted.centroids, axis=1).mean()
