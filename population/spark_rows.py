"""Record rows with Spark SQL: the population twin of :mod:`fhir_adapters.record_rows`.

Each builder reads one resource type's DataFrame (schema from
:mod:`population.fhir_json_schemas`) and returns the rows of the matching dataclass, with
the columns, order and types of that dataclass (:func:`row_schema`). The rules are those of
the Python builders, written as Spark expressions that run inside the JVM; the one
Python step, UCUM normalisation, calls :func:`fhir_adapters.ucum.normalise` itself in a
UDF, only for the LOINC codes it knows. A test holds both paths to equal rows.

Resources that are not what the file is (another type, broken JSON, no id) and
resources that name no patient give no rows; :func:`input_checks` counts them.
"""

from __future__ import annotations

import dataclasses
import types
import typing
from collections.abc import Callable
from datetime import date, datetime

from pyspark.sql import Column, DataFrame
from pyspark.sql import functions as F
from pyspark.sql.types import (
    ArrayType,
    BooleanType,
    DataType,
    DateType,
    DoubleType,
    StringType,
    StructField,
    StructType,
    TimestampType,
)

from fhir_adapters.bulk.references import PATIENT_REFERENCE
from fhir_adapters.bulk.synthetic_clones import SYNTHETIC_SYSTEM
from fhir_adapters.context_builder import RESULT_STATUSES
from fhir_adapters.patient_context import LOINC
from fhir_adapters.record_rows import TABLES
from fhir_adapters.ucum import CANONICAL, normalise
from population.fhir_json_schemas import CORRUPT_COLUMN

CONDITION_CATEGORY = "http://terminology.hl7.org/CodeSystem/condition-category"
OBSERVATION_CATEGORY = "http://terminology.hl7.org/CodeSystem/observation-category"

_SPARK_TYPES: dict[object, DataType] = {
    str: StringType(),
    float: DoubleType(),
    bool: BooleanType(),
    datetime: TimestampType(),
    date: DateType(),
    tuple[str, ...]: ArrayType(StringType(), True),
}


def _spark_type(hint: object) -> tuple[DataType, bool]:
    args = typing.get_args(hint)
    if isinstance(hint, types.UnionType) and type(None) in args:
        (inner,) = (a for a in args if a is not type(None))
        return _SPARK_TYPES[inner], True
    return _SPARK_TYPES[hint], False


def row_schema(row_type: type) -> StructType:
    """The Spark schema of a record-row dataclass (same names, order and types)."""
    hints = typing.get_type_hints(row_type)
    fields = []
    for field in dataclasses.fields(row_type):
        kind, nullable = _spark_type(hints[field.name])
        fields.append(StructField(field.name, kind, nullable))
    return StructType(fields)


# --------------------------------------------------------------------------- expressions
def _text(value: Column) -> Column:
    """A FHIR string, with "" as absent (``concept`` keeps only truthy strings)."""
    return F.when(value != "", value)


def _instant(value: Column) -> Column:
    """A FHIR date/dateTime/instant as a UTC timestamp; partial dates start their period."""
    return value.try_cast("timestamp")


def _first(items: Column, keep: Callable[[Column], Column]) -> Column:
    return F.get(F.filter(items, keep), 0)


def _concept_label(concept: Column) -> Column:
    """``Concept.label``: text, else the first coding's display, else its first code."""
    codings = concept["coding"]
    return F.coalesce(
        _text(concept["text"]),
        _first(codings, lambda c: _text(c["display"]).isNotNull())["display"],
        _first(codings, lambda c: _text(c["code"]).isNotNull())["code"],
    )


def _status(concept: Column) -> Column:
    """The code of a status CodeableConcept (its first coding with a code)."""
    return _first(concept["coding"], lambda c: _text(c["code"]).isNotNull())["code"]


def _codes(concept: Column, system: str) -> Column:
    return F.transform(
        F.filter(
            concept["coding"], lambda c: (c["system"] == system) & _text(c["code"]).isNotNull()
        ),
        lambda c: c["code"],
    )


def _category_codes(categories: Column, system: str) -> Column:
    return F.coalesce(
        F.flatten(F.transform(categories, lambda c: F.coalesce(_codes(c, system), F.array()))),
        F.array(),
    ).cast(ArrayType(StringType(), True))


def patient_id(reference: Column) -> Column:
    """The patient id of a ``Patient/<id>`` reference (``patient_id_from_reference``), or null."""
    return _text(F.regexp_extract(reference, PATIENT_REFERENCE, 1))


def _shape(frame: DataFrame, row_type: type) -> DataFrame:
    schema = row_schema(row_type)
    return frame.select(*(F.col(f.name).cast(f.dataType).alias(f.name) for f in schema.fields))


# --------------------------------------------------------------------------- inputs
def valid_resources(frame: DataFrame, resource_type: str) -> DataFrame:
    """Lines that parsed, are ``resource_type`` and have an id."""
    return frame.filter(
        F.col(CORRUPT_COLUMN).isNull()
        & (F.col("resourceType") == resource_type)
        & _text(F.col("id")).isNotNull()
    )


def input_checks(resource_type: str) -> list[Column]:
    """Aggregates describing a read (for ``DataFrame.observe``): lines, problems by kind."""
    corrupt = F.col(CORRUPT_COLUMN).isNotNull()
    other = ~corrupt & (F.coalesce(F.col("resourceType"), F.lit("")) != resource_type)
    no_id = ~corrupt & ~other & _text(F.col("id")).isNull()
    checks = [
        F.count(F.lit(1)).alias("lines"),
        F.count_if(corrupt).alias("invalid"),
        F.count_if(other).alias("wrong_type"),
        F.count_if(no_id).alias("no_id"),
    ]
    if resource_type != "Patient":
        ok = ~corrupt & ~other & ~no_id
        checks.append(
            F.count_if(ok & patient_id(F.col("subject.reference")).isNull()).alias("no_patient")
        )
    return checks


# --------------------------------------------------------------------------- the rows
def patient_rows(frame: DataFrame) -> DataFrame:
    tags = F.coalesce(F.col("meta.tag"), F.array())
    clone = F.exists(
        tags, lambda t: (t["system"] == SYNTHETIC_SYSTEM) & (t["code"] == "synthetic-clone")
    )
    rows = valid_resources(frame, "Patient").select(
        F.col("id").alias("patient_id"),
        F.when(
            F.col("birthDate").rlike(r"^\d{4}-\d{2}-\d{2}$"), F.col("birthDate").try_cast("date")
        ).alias("birth_date"),
        F.col("gender").alias("sex"),
        (
            F.coalesce(F.col("deceasedBoolean"), F.lit(False))
            | F.col("deceasedDateTime").isNotNull()
        ).alias("deceased"),
        _instant(F.col("deceasedDateTime")).alias("deceased_at"),
        F.coalesce(clone, F.lit(False)).alias("synthetic_clone"),
    )
    return _shape(rows, TABLES["patients"][0])


def _with_patient(frame: DataFrame, resource_type: str) -> DataFrame:
    resources = valid_resources(frame, resource_type)
    resources = resources.withColumn("patient_id", patient_id(F.col("subject.reference")))
    return resources.filter(F.col("patient_id").isNotNull())


def condition_rows(frame: DataFrame) -> DataFrame:
    rows = _with_patient(frame, "Condition").select(
        "*", F.explode_outer("code.coding").alias("coding")
    )
    rows = rows.select(
        "patient_id",
        F.col("id").alias("condition_id"),
        _text(F.col("coding.system")).alias("system"),
        _text(F.col("coding.code")).alias("code"),
        _text(F.col("coding.display")).alias("display"),
        _text(F.col("code.text")).alias("text"),
        _status(F.col("clinicalStatus")).alias("clinical_status"),
        _status(F.col("verificationStatus")).alias("verification_status"),
        _category_codes(F.col("category"), CONDITION_CATEGORY).alias("categories"),
        _instant(F.coalesce(F.col("onsetDateTime"), F.col("recordedDate"))).alias("onset"),
        _instant(F.col("abatementDateTime")).alias("abatement"),
        _instant(F.col("recordedDate")).alias("recorded"),
    )
    return _shape(rows, TABLES["conditions"][0])


def _measurement(code: Column, holder: Column | None, keep: Column) -> Column:
    """One measurement as a struct (``fhir_adapters.context_builder._measurement``)."""

    def part(name: str) -> Column:
        return holder[name] if holder is not None else F.col(name)

    quantity, coded, text = part("valueQuantity"), part("valueCodeableConcept"), part("valueString")
    loinc = _first(code["coding"], lambda c: (c["system"] == LOINC) & _text(c["code"]).isNotNull())
    return F.struct(
        loinc["code"].alias("loinc"),
        _concept_label(code).alias("display"),
        quantity["value"].alias("value"),
        F.coalesce(_text(quantity["code"]), _text(quantity["unit"])).alias("unit"),
        F.when(coded.isNotNull(), _concept_label(coded))
        .otherwise(F.when(text.isNotNull(), text))
        .alias("value_text"),
        F.when(
            coded.isNotNull(),
            F.transform(
                F.filter(
                    F.coalesce(coded["coding"], F.array()),
                    lambda c: _text(c["system"]).isNotNull() & _text(c["code"]).isNotNull(),
                ),
                lambda c: F.concat_ws("|", c["system"], c["code"]),
            ),
        ).alias("value_codes"),
        (loinc.isNotNull() & keep).alias("keep"),
    )


_NORMALISED = StructType(
    [StructField("value", DoubleType(), True), StructField("unit", StringType(), True)]
)


def _normalised(loinc: str, value: float, unit: str) -> tuple[float, str] | None:
    return normalise(loinc, value, unit)


def observation_rows(frame: DataFrame) -> DataFrame:
    resources = _with_patient(frame, "Observation").filter(
        F.col("status").isin(*sorted(RESULT_STATUSES))
    )
    has_value = (
        F.col("valueQuantity").isNotNull()
        | F.col("valueCodeableConcept").isNotNull()
        | F.col("valueString").isNotNull()
    )
    own = F.array(_measurement(F.col("code"), None, has_value))
    parts = F.transform(
        F.coalesce(F.col("component"), F.array()), lambda c: _measurement(c["code"], c, F.lit(True))
    )
    effective = F.coalesce(
        _instant(F.coalesce(F.col("effectiveDateTime"), F.col("issued"))),
        _instant(F.coalesce(F.col("effectivePeriod.end"), F.col("effectivePeriod.start"))),
    )
    category = F.get(_category_codes(F.col("category"), OBSERVATION_CATEGORY), 0)
    rows = resources.select(
        "patient_id",
        F.col("id").alias("observation_id"),
        "status",
        effective.alias("effective"),
        category.alias("category"),
        F.explode(F.concat(own, parts)).alias("m"),
    ).filter(F.col("m.keep"))
    normalise_udf = F.udf(_normalised, _NORMALISED, useArrow=False)
    convertible = (
        F.col("m.loinc").isin(*sorted(CANONICAL))
        & F.col("m.value").isNotNull()
        & F.col("m.unit").isNotNull()
    )
    normalised = F.when(convertible, normalise_udf("m.loinc", "m.value", "m.unit"))
    rows = rows.select(
        "patient_id",
        "observation_id",
        "status",
        F.col("m.loinc").alias("loinc"),
        F.col("m.display").alias("display"),
        "category",
        F.col("m.value").alias("value"),
        F.col("m.unit").alias("unit"),
        F.col("m.value_text").alias("value_text"),
        F.col("m.value_codes").alias("value_codes"),
        normalised.alias("normalised"),
        "effective",
    ).select(
        "*",
        F.col("normalised.value").alias("normalised_value"),
        F.col("normalised.unit").alias("normalised_unit"),
    )
    return _shape(rows, TABLES["observations"][0])


def medication_rows(frame: DataFrame) -> DataFrame:
    reference = F.regexp_replace(
        F.coalesce(F.col("medicationReference.reference"), F.lit("")), "^#", ""
    )
    contained = _first(
        F.col("contained"),
        lambda c: (
            (c["resourceType"] == "Medication")
            & _text(c["id"]).isNotNull()
            & (c["id"] == reference)
        ),
    )
    drug = F.when(
        F.col("medicationCodeableConcept").isNotNull(), F.col("medicationCodeableConcept")
    ).otherwise(contained["code"])
    rows = (
        _with_patient(frame, "MedicationRequest")
        .select("*", drug.alias("drug"))
        .select("*", F.explode_outer("drug.coding").alias("coding"))
    )
    rows = rows.select(
        "patient_id",
        F.col("id").alias("medication_request_id"),
        _text(F.col("coding.system")).alias("system"),
        _text(F.col("coding.code")).alias("code"),
        _text(F.col("coding.display")).alias("display"),
        _text(F.col("drug.text")).alias("text"),
        "status",
        "intent",
        _instant(F.col("authoredOn")).alias("authored_on"),
    )
    return _shape(rows, TABLES["medications"][0])


def encounter_rows(frame: DataFrame) -> DataFrame:
    first_coding = F.get(F.get(F.col("type"), 0)["coding"], 0)
    rows = _with_patient(frame, "Encounter").select(
        "patient_id",
        F.col("id").alias("encounter_id"),
        "status",
        _text(F.col("class.code")).alias("class_code"),
        _text(first_coding["system"]).alias("type_system"),
        _text(first_coding["code"]).alias("type_code"),
        _text(first_coding["display"]).alias("type_display"),
        _instant(F.col("period.start")).alias("start"),
        _instant(F.col("period.end")).alias("end"),
    )
    return _shape(rows, TABLES["encounters"][0])


#: FHIR resource type → (table, builder).
SPARK_BUILDERS: dict[str, tuple[str, Callable[[DataFrame], DataFrame]]] = {
    "Patient": ("patients", patient_rows),
    "Condition": ("conditions", condition_rows),
    "Observation": ("observations", observation_rows),
    "MedicationRequest": ("medications", medication_rows),
    "Encounter": ("encounters", encounter_rows),
}
