"""A comparator score on Spark, computed by the hook path's own code.

The trainers measure each learned model beside a comparator on the same held-out rows
(``models.risk.training.train.COMPARATORS``). A feature column is one Spark already has; a
validated score, such as the Pooled Cohort Equations beside ``cvd-event-3y``, reads a
:class:`~fhir_adapters.patient_context.PatientContext` with its own input rules (stale-after
windows, plausible ranges, race handling) that live once, in ``models.risk.scores``. So
rather than a second implementation in Spark SQL, the held-out patients are read whole
from the bulk files on the executors (their lines grouped by patient) and each
(patient, index date) is scored by ``context_as_of`` + the comparator, as
``cds models train`` scores it.

Executor-side: the lines of one patient at a time (``applyInPandas``), parsed with
``fhir.resources`` through the hook path. The driver sends the (patient, index date) pairs
(a broadcast join) and collects one number per pair.
"""

from __future__ import annotations

import json
from collections import defaultdict
from collections.abc import Callable, Iterable
from typing import Any

import pandas as pd
from pyspark.sql import Column, DataFrame, SparkSession
from pyspark.sql import functions as F

from fhir_adapters.bulk.ndjson import BulkFolder
from fhir_adapters.bulk.references import PATIENT_FIELDS
from fhir_adapters.parsing import ParseCache
from fhir_adapters.patient_context import PatientContext
from models.risk.training.dataset import context_as_of
from population.spark_rows import patient_id
from population.training_set import from_micros

Score = Callable[[PatientContext], "float | None"]
#: (patient id, index date as Spark's ``unix_micros``).
Key = tuple[str, int]
RESULT_SCHEMA = "patient_id string, index_us bigint, score double"


def owner(line: Column) -> Column:
    """The patient a bulk line belongs to (``fhir_adapters.bulk.references.patient_of``)."""
    references = [
        patient_id(F.get_json_object(line, f"$.{name}.reference")) for name in PATIENT_FIELDS
    ]
    is_patient = F.get_json_object(line, "$.resourceType") == F.lit("Patient")
    return F.when(is_patient, F.get_json_object(line, "$.id")).otherwise(F.coalesce(*references))


def _score_patient(rows: pd.DataFrame, score: Score) -> pd.DataFrame:
    record: dict[str, list[dict[str, Any]]] = defaultdict(list)
    for line in rows["value"]:
        resource = json.loads(line)
        record[str(resource["resourceType"])].append(resource)
    patient = str(rows["patient_id"].iloc[0])
    cache = ParseCache()
    found = []
    for us in sorted({int(u) for u in rows["index_us"].iloc[0]}):
        at = from_micros(us)
        context = context_as_of(dict(record), patient, at, cache) if record["Patient"] else None
        found.append((patient, us, None if context is None else score(context)))
    return pd.DataFrame(found, columns=["patient_id", "index_us", "score"])


def comparator_scores(
    spark: SparkSession, folder: BulkFolder, keys: Iterable[Key], score: Score
) -> dict[Key, float | None]:
    """``score`` of the record of each (patient, index date) in ``keys`` as it stood then."""
    by_patient: dict[str, list[int]] = defaultdict(list)
    for patient, us in keys:
        by_patient[patient].append(int(us))
    if not by_patient:
        return {}
    wanted = spark.createDataFrame(
        sorted(by_patient.items()), "patient_id string, index_us array<bigint>"
    )
    lines: DataFrame = spark.read.text([str(f.path) for f in folder.files])
    owned = lines.withColumn("patient_id", owner(F.col("value")))
    joined = owned.join(F.broadcast(wanted), "patient_id")

    def score_patient(rows: pd.DataFrame) -> pd.DataFrame:
        return _score_patient(rows, score)

    scored = joined.groupBy("patient_id").applyInPandas(score_patient, RESULT_SCHEMA)
    found: dict[Key, float | None] = {
        (str(r["patient_id"]), int(r["index_us"])): r["score"] for r in scored.collect()
    }
    for patient, dates in by_patient.items():  # a patient without lines scores nothing
        for us in dates:
            found.setdefault((patient, us), None)
    return found
