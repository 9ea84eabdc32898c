"""The record-rows job: a bulk folder in, one Parquet table per record-row type out.

The first population job, and the base of the later ones (features, scores): Spark reads
each resource type's files, builds the rows (:mod:`population.spark_rows`) and writes
them; the driver sees only counts. Counting happens in the same pass as the writing
(``DataFrame.observe``), so each input file is read once.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from pyspark.sql import Observation, SparkSession
from pyspark.sql import functions as F

from fhir_adapters.bulk.ndjson import BulkFile, BulkFolder, FileDigest
from population.bulk_frames import read_type
from population.run_record import Dataset
from population.spark_rows import SPARK_BUILDERS, input_checks

#: The resource types the job reads (the rest of a folder is left alone).
RECORD_TYPES = tuple(SPARK_BUILDERS)


@dataclass(frozen=True)
class TableWritten:
    table: str
    rows: int
    path: Path


def input_files(folder: BulkFolder) -> list[BulkFile]:
    return [f for f in folder.files if f.resource_type in SPARK_BUILDERS]


def planned_inputs(digests: tuple[FileDigest, ...]) -> list[Dataset]:
    """The inputs before the run: files per resource type, nothing counted yet."""
    return [
        Dataset(
            kind, "bulk-ndjson", 0, tuple(d.to_json() for d in digests if d.resource_type == kind)
        )
        for kind in RECORD_TYPES
        if any(d.resource_type == kind for d in digests)
    ]


def write_record_tables(
    spark: SparkSession,
    folder: BulkFolder,
    out: Path,
    inputs: list[Dataset],
    on_table: Callable[[TableWritten], None] | None = None,
) -> tuple[list[Dataset], list[Dataset]]:
    """Write ``out/<table>/`` (Parquet) for each of ``inputs``; (inputs counted, outputs).

    Nothing is overwritten: a table folder that exists is an error.
    """
    counted: list[Dataset] = []
    outputs: list[Dataset] = []
    for planned in inputs:
        table, build = SPARK_BUILDERS[planned.key]
        frame = read_type(spark, folder, planned.key)
        if frame is None:
            continue
        read = Observation(f"read-{planned.key}")
        written = Observation(f"write-{table}")
        rows = build(frame.observe(read, *input_checks(planned.key)))
        rows = rows.observe(written, F.count(F.lit(1)).alias("rows"))
        rows.write.mode("errorifexists").parquet(str(out / table))
        lines = int(read.get["lines"])
        problems = {k: int(v) for k, v in read.get.items() if k != "lines"}
        counted.append(
            Dataset(planned.key, planned.source, lines - sum(problems.values()),
                    planned.files, problems)
        )  # fmt: skip
        done = TableWritten(table, int(written.get["rows"]), out / table)
        outputs.append(Dataset(table, "parquet", done.rows, location=table))
        if on_table is not None:
            on_table(done)
    return counted, outputs
