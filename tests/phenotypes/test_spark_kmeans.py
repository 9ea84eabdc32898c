"""Phenotypes on Spark: the cohort's vectors computed by the Spark feature executor equal
the Python evaluator's, the Spark preprocessing is the Python one, and MLlib k-means
agrees with scikit-learn's on the shared patients."""

from __future__ import annotations

import json
import subprocess
import sys

import numpy as np
import pytest

from population.features import record_tables
from population.phenotypes_spark import cohort_feature_frame, preprocessed_frame, run_on_fit
from tests.population_jobs.conftest import repo_env


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


#: A driver process for the cluster (a process holds one SparkContext, and this one holds
#: the local[2] session): the cohort's vectors and MLlib k-means, the assignments out.
CLUSTER_DRIVER = """
import json, sys
from datetime import date
from pathlib import Path

from fhir_adapters.bulk.ndjson import scan_folder
from models.phenotypes.preprocess import Preprocessing
from population.features import record_tables
from population.phenotypes_spark import cohort_frame, fit_spark_kmeans
from population.spark_session import SparkSettings, spark_session

bulk, master, job_file, out_file = sys.argv[1:5]
job = json.loads(Path(job_file).read_text())
spark = spark_session(SparkSettings(
    master=master, driver_memory="1g", executor_memory="1g", shuffle_partitions=4,
))
try:
    tables = record_tables(spark, scan_folder(Path(bulk)))
    frame = cohort_frame(tables, job["ids"], date.fromisoformat(job["day"]))
    found = fit_spark_kmeans(
        frame, Preprocessing.from_json(job["preprocessing"]), job["k"], job["seed"]
    )
    Path(out_file).write_text(json.dumps({"assignments": found.assignments, "cost": found.cost}))
finally:
    spark.stop()
"""


def test_mllib_kmeans_on_the_standalone_cluster_gives_the_local_clusters(  # type: ignore[no-untyped-def]
    tables, fitted, spark_cluster, synthea_ndjson, tmp_path
) -> None:
    """The same k-means job (Spark feature vectors, the shipped preprocessing in
    mapInPandas, MLlib) on a master and two workers on 127.0.0.1 and on local[2]: the
    same patients in the same clusters, the same cost."""
    from sklearn.metrics import adjusted_rand_score

    local = run_on_fit(tables, fitted).spark
    ids = [row.patient_id for row in fitted.cohort.rows]
    job = tmp_path / "job.json"
    job.write_text(
        json.dumps(
            {
                "ids": ids,
                "day": fitted.cohort.index_date.date().isoformat(),
                "preprocessing": fitted.preprocessing.to_json(),
                "k": fitted.kmeans.clusters,
                "seed": fitted.seed,
            }
        )
    )
    out = tmp_path / "cluster.json"
    before = len(spark_cluster.status()["completedapps"])
    done = subprocess.run(
        [sys.executable, "-c", CLUSTER_DRIVER, str(synthea_ndjson.root),
         spark_cluster.master_url, str(job), str(out)],
        env=repo_env(), capture_output=True, text=True, timeout=900,
    )  # fmt: skip
    assert done.returncode == 0, done.stderr[-4000:]
    assert len(spark_cluster.status()["completedapps"]) == before + 1  # it ran there

    cluster = json.loads(out.read_text())
    assert sorted(cluster["assignments"]) == sorted(local.assignments) == sorted(ids)
    assert len(set(local.assignments.values())) == fitted.kmeans.clusters > 1
    same = adjusted_rand_score(
        [local.assignments[p] for p in ids], [cluster["assignments"][p] for p in ids]
    )
    assert same == 1.0, same
    assert cluster["cost"] == pytest.approx(local.cost, rel=1e-9)
