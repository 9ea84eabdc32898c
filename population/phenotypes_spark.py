"""Phenotypes for populations: Spark MLlib k-means on the same preprocessing.

The input is a DataFrame with ``patient_id`` and one double column per phenotype feature
(null or NaN = missing), as ``population.features.feature_frame(spark, tables, features,
as_of)`` returns it. Each partition is preprocessed by the *same* numpy code as the
scikit-learn path (``models.phenotypes.preprocess.Preprocessing.transform`` inside
``mapInPandas``; the fitted parameters travel as JSON), assembled into vectors and
clustered by ``pyspark.ml.clustering.KMeans`` with the k the single-machine fit chose,
restarted from :data:`N_INIT` seeds and the lowest-cost model kept (scikit-learn's
``n_init``; one k-means|| start may stop in another local optimum).

:func:`cohort_feature_frame` computes that DataFrame with the Spark feature executor from
the record-row tables, for the patients of a scikit-learn fit (the engine comparison).
"""

from __future__ import annotations

import json
import time
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass
from datetime import date
from typing import TYPE_CHECKING, Any

import numpy as np

from models.phenotypes.preprocess import Preprocessing

if TYPE_CHECKING:
    import pandas as pd
    from pyspark.sql import DataFrame

    from fhir_adapters.bulk.ndjson import BulkFolder
    from models.phenotypes.fit import PhenotypeFit

MAX_ITER = 100
N_INIT = 10
TOLERANCE = 1e-6


def cohort_feature_frame(tables: Mapping[str, DataFrame], fit: PhenotypeFit) -> DataFrame:
    """The fit's cohort through the Spark feature executor: the phenotype features on the
    cohort's index day (``population.features.feature_frame``), for the patients the
    scikit-learn fit clustered (adults alive on that day), so both engines see the same
    patients."""
    ids = [row.patient_id for row in fit.cohort.rows]
    return cohort_frame(tables, ids, fit.cohort.index_date.date())


def cohort_frame(
    tables: Mapping[str, DataFrame], patient_ids: Sequence[str], day: date
) -> DataFrame:
    """The phenotype features of ``patient_ids`` on ``day``, by the Spark feature executor."""
    from pyspark.sql import functions as F

    from models.phenotypes.features import PHENOTYPE_FEATURES
    from population.features import feature_frame

    spark = tables["patients"].sparkSession
    ids = spark.createDataFrame([(pid,) for pid in patient_ids], "patient_id string")
    frame = feature_frame(spark, tables, PHENOTYPE_FEATURES, day)
    return frame.join(F.broadcast(ids), "patient_id")


def preprocessed_frame(frame: DataFrame, preprocessing: Preprocessing) -> DataFrame:
    """``patient_id`` + ``features`` (a vector in the preprocessed space), per partition."""
    from pyspark.ml.feature import VectorAssembler
    from pyspark.sql.types import DoubleType, StringType, StructField, StructType

    spec = json.dumps(preprocessing.to_json())
    names = list(preprocessing.names)
    outputs = [f"d{i}" for i in range(preprocessing.dimensions)]
    schema = StructType(
        [StructField("patient_id", StringType(), False)]
        + [StructField(name, DoubleType(), False) for name in outputs]
    )

    def transform(batches: Iterator[pd.DataFrame]) -> Iterator[pd.DataFrame]:
        import pandas as pd

        pipeline = Preprocessing.from_json(json.loads(spec))
        for batch in batches:
            raw = batch[names].astype(float).to_numpy()
            space = pipeline.transform(raw)
            out = pd.DataFrame(space, columns=outputs)
            out.insert(0, "patient_id", batch["patient_id"].to_numpy())
            yield out

    transformed = frame.select("patient_id", *names).mapInPandas(transform, schema)
    return VectorAssembler(inputCols=outputs, outputCol="features").transform(transformed)


@dataclass(frozen=True)
class SparkKMeansResult:
    k: int
    centroids: np.ndarray
    #: patient id → cluster (MLlib's numbering).
    assignments: dict[str, int]
    #: Sum of squared distances to the nearest centroid (scikit-learn's inertia).
    cost: float
    seconds: float


def fit_spark_kmeans(
    frame: DataFrame, preprocessing: Preprocessing, k: int, seed: int
) -> SparkKMeansResult:
    from pyspark.ml.clustering import KMeans

    started = time.perf_counter()
    vectors = preprocessed_frame(frame, preprocessing).cache()
    models = [
        KMeans(k=k, seed=seed + i, maxIter=MAX_ITER, tol=TOLERANCE).fit(vectors)
        for i in range(N_INIT)
    ]
    model = min(models, key=lambda m: (m.summary.trainingCost, models.index(m)))
    predicted = model.transform(vectors).select("patient_id", "prediction").collect()
    vectors.unpersist()
    return SparkKMeansResult(
        k,
        np.array([np.asarray(c) for c in model.clusterCenters()]),
        {row["patient_id"]: int(row["prediction"]) for row in predicted},
        float(model.summary.trainingCost),
        time.perf_counter() - started,
    )


@dataclass(frozen=True)
class EngineComparison:
    k: int
    ari: float
    seconds: float
    spark: SparkKMeansResult


def compare(fit: PhenotypeFit, result: SparkKMeansResult) -> float:
    """Adjusted Rand index between MLlib's and scikit-learn's assignments."""
    from sklearn.metrics import adjusted_rand_score

    ids = [row.patient_id for row in fit.cohort.rows]
    spark_labels = [result.assignments[pid] for pid in ids]
    return float(adjusted_rand_score(fit.kmeans.labels, spark_labels))


def run_on_fit(tables: Mapping[str, DataFrame], fit: PhenotypeFit) -> EngineComparison:
    """MLlib k-means on the fit's cohort, its vectors computed by Spark from ``tables``
    (the record-row tables of the same records, ``population.features.record_tables``)."""
    frame = cohort_feature_frame(tables, fit)
    result = fit_spark_kmeans(frame, fit.preprocessing, fit.kmeans.clusters, fit.seed)
    return EngineComparison(result.k, compare(fit, result), result.seconds, result)


def compare_engines(
    fit: PhenotypeFit, bulk: BulkFolder, master: str, **settings: Any
) -> EngineComparison:
    """Start Spark on ``master``, compute the fit's cohort vectors from the bulk NDJSON
    folder of the same records and run MLlib k-means on them, stop Spark."""
    from population.features import record_tables
    from population.spark_session import SparkSettings, spark_session

    session = spark_session(SparkSettings(master=master, **settings))
    try:
        return run_on_fit(record_tables(session, bulk), fit)
    finally:
        session.stop()
