"""Bulk NDJSON into Spark DataFrames, one per resource type, read by the executors.

The driver only lists the files (and their types, from each file's first line); Spark's
JSON reader does the reading, in parallel and streamed, with the per-type schema of
:mod:`population.fhir_json_schemas`. Plain files are split into partitions; a gzip file is
one partition (split an export into several files to use several cores).
"""

from __future__ import annotations

from pyspark.sql import DataFrame, SparkSession

from fhir_adapters.bulk.ndjson import BulkFolder
from population.fhir_json_schemas import CORRUPT_COLUMN, READ_SCHEMAS


class UnsupportedResourceType(KeyError):
    """No Spark read schema is declared for this resource type."""


def read_type(spark: SparkSession, folder: BulkFolder, resource_type: str) -> DataFrame | None:
    """The lines of every ``resource_type`` file in ``folder`` (None: there is none)."""
    schema = READ_SCHEMAS.get(resource_type)
    if schema is None:
        raise UnsupportedResourceType(resource_type)
    paths = [str(f.path) for f in folder.files_of(resource_type)]
    if not paths:
        return None
    return (
        spark.read.schema(schema)
        .option("mode", "PERMISSIVE")
        .option("columnNameOfCorruptRecord", CORRUPT_COLUMN)
        .option("encoding", "UTF-8")
        .json(paths)
    )
