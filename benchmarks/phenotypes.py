"""`make bench-phenotypes`: phenotype fit and assignment time, 299 and 10,000 patients.

* 299 shared Synthea records: the cohort's vectors (baseline + landmark samples, the
  Python evaluator, 2 worker processes), the scikit-learn fit (k selection with bootstrap
  stability, DBSCAN, HDBSCAN, descriptions), Spark MLlib k-means on the same
  preprocessing (``local[2]``; the cohort's vectors computed by the Spark feature executor
  from the same records as bulk NDJSON), and assignment
  of every record from its FHIR resources (``assign_records``, one process).
* 10,000 patients: vectors cloned from the baseline (rows drawn with replacement, as the
  scale generator's clones repeat their sources; throughput only, never metrics). Timed:
  assignment of the vectors (preprocessing + nearest centroid), scikit-learn k-means and
  MLlib k-means at the chosen k (10 starts each; the vectors go to Spark as a DataFrame:
  k-means alone, the Spark feature executor's throughput is `make bench-population`'s). Not run at 10,000: feature evaluation
  from FHIR (linear in patients, per-patient time from the 299 row) and the k selection
  (20 bootstraps x 7 values of k).
Writes the figures into BENCHMARKS.md between its markers.
"""

from __future__ import annotations

import math
import sys
import tempfile
import time
import warnings
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))

import numpy as np  # noqa: E402

from benchmarks.report import publish  # noqa: E402
from fhir_adapters.bulk.ndjson import scan_folder  # noqa: E402
from fhir_adapters.bulk.synthea_ndjson import bundle_files, convert_bundles  # noqa: E402
from fhir_adapters.records import read_records  # noqa: E402
from models.phenotypes.assign import assign_records  # noqa: E402
from models.phenotypes.clustering import kmeans, nearest  # noqa: E402
from models.phenotypes.cohort import build_cohort  # noqa: E402
from models.phenotypes.fit import SEED, fit_phenotypes  # noqa: E402
from models.phenotypes.model import PhenotypeModel  # noqa: E402
from tests.conftest import SYNTHEA  # noqa: E402

MARKERS = ("<!-- phenotypes-bench:start -->", "<!-- phenotypes-bench:end -->")
CLONES = 10_000


def _timed(function, *args, **kwargs):  # type: ignore[no-untyped-def]
    started = time.perf_counter()
    value = function(*args, **kwargs)
    return value, round(time.perf_counter() - started, 2)


def vectors_frame(spark, ids, vectors, names):  # type: ignore[no-untyped-def]
    """Ready-made vectors as the DataFrame the feature executor returns (NaN → null):
    the input of the k-means-alone timing at 10,000 rows."""
    rows = [
        (pid, *(None if math.isnan(v) else float(v) for v in row))
        for pid, row in zip(ids, vectors.tolist(), strict=True)
    ]
    return spark.createDataFrame(rows, ["patient_id", *names])


def main() -> None:
    warnings.simplefilter("ignore", FutureWarning)
    from models.artifacts import load_artifact
    from models.phenotypes.model import ARTIFACT
    from population.features import record_tables
    from population.phenotypes_spark import cohort_feature_frame, compare, fit_spark_kmeans
    from population.spark_session import SparkSettings, spark_session

    cohort, vectors_s = _timed(build_cohort, lambda: read_records(SYNTHEA), workers=2)
    fit, fit_s = _timed(fit_phenotypes, cohort, SEED)
    model = PhenotypeModel(load_artifact(ARTIFACT))
    assigned, assign_s = _timed(lambda: list(assign_records(model, read_records(SYNTHEA))))
    spark, start_s = _timed(spark_session, SparkSettings(master="local[2]", driver_memory="1g"))
    names = list(fit.preprocessing.names)
    k = fit.kmeans.clusters
    bulk = Path(tempfile.mkdtemp(prefix="phenotypes-bench-")) / "bulk"
    convert_bundles(bundle_files(SYNTHEA), bulk)
    frame = cohort_feature_frame(record_tables(spark, scan_folder(bulk)), fit)
    small, spark_small_s = _timed(fit_spark_kmeans, frame, fit.preprocessing, k, SEED)

    rng = np.random.default_rng(SEED)
    clone_rows = fit.raw[rng.integers(0, len(fit.raw), CLONES)]
    (labels, _), assign_big_s = _timed(model.assign_vectors, clone_rows)
    space = fit.preprocessing.transform(clone_rows)
    _, sk_big_s = _timed(kmeans, space, k, SEED)
    big_frame = vectors_frame(spark, [f"clone-{i}" for i in range(CLONES)], clone_rows, names)
    big, spark_big_s = _timed(fit_spark_kmeans, big_frame, fit.preprocessing, k, SEED)
    spark.stop()
    same = np.array_equal(labels, nearest(space, model.centroids)[0])
    result = {
        "k": k,
        "patients_299": {
            "records": cohort.records,
            "baseline": len(cohort.rows),
            "landmarks": len(cohort.samples),
            "vectors_s": vectors_s,
            "fit_sklearn_s": fit_s,
            "spark_start_s": start_s,
            "fit_mllib_s": round(small.seconds, 2),
            "mllib_ari": round(compare(fit, small), 3),
            "assign_from_fhir_s": assign_s,
            "assigned": len(assigned),
        },
        "clones_10000": {
            "assign_vectors_s": assign_big_s,
            "assign_consistent": bool(same),
            "kmeans_sklearn_s": sk_big_s,
            "kmeans_mllib_s": round(big.seconds, 2),
        },
    }
    del spark_small_s, spark_big_s
    publish(REPO / "BENCHMARKS.md", MARKERS, result, render)


def render(r: dict) -> str:
    a, b = r["patients_299"], r["clones_10000"]
    per_patient = 1000 * a["assign_from_fhir_s"] / a["assigned"]
    return "\n".join(
        [
            MARKERS[0],
            "## Phenotypes: fit and assignment (`make bench-phenotypes`)",
            "",
            f"{r['when']}, {r['machine']}; the machine was shared with another helper's work "
            "(times are upper bounds). Command: `make bench-phenotypes` "
            "(`python benchmarks/phenotypes.py`).",
            "",
            "| patients | step | seconds |",
            "| ---: | --- | ---: |",
            f"| 299 | vectors from FHIR: {a['baseline']} baseline + {a['landmarks']:,} landmark "
            f"samples (Python evaluator, 2 processes) | {a['vectors_s']} |",
            f"| 299 | scikit-learn fit: k selection (7 k x 20 bootstraps), DBSCAN, HDBSCAN, "
            f"descriptions | {a['fit_sklearn_s']} |",
            f"| 299 | Spark MLlib k-means, k = {r['k']}, 10 starts, local[2] (start-up "
            f"{a['spark_start_s']} s not included; ARI vs scikit-learn {a['mllib_ari']}) | "
            f"{a['fit_mllib_s']} |",
            f"| 299 | assign every record from its FHIR resources (one process; "
            f"{per_patient:.0f} ms per patient) | {a['assign_from_fhir_s']} |",
            f"| 10,000 | assign cloned vectors (preprocessing + nearest centroid) | "
            f"{b['assign_vectors_s']} |",
            f"| 10,000 | scikit-learn k-means, k = {r['k']}, 10 starts | {b['kmeans_sklearn_s']} |",
            f"| 10,000 | Spark MLlib k-means, k = {r['k']}, 10 starts, local[2] | "
            f"{b['kmeans_mllib_s']} |",
            "",
            "The 10,000 rows are baseline vectors drawn with replacement (clones repeat their "
            "sources: throughput only). Not run at 10,000: feature evaluation from FHIR "
            "(per patient as in the 299 rows, linear) and the bootstrap k selection. At 299 the "
            "MLlib input comes from the Spark feature executor; at 10,000 the cloned vectors "
            "go to Spark as a DataFrame (k-means alone).",
            MARKERS[1],
        ]
    )


if __name__ == "__main__":
    main()
