"""Spark schemas for reading FHIR R4 JSON: only the elements the record rows use.

Spark's JSON reader parses only what the schema names (the rest of each line is
skipped, not built), so the per-type schemas here decide the cost of a read. A line that
does not fit (a string where a number belongs, broken JSON) lands in
:data:`CORRUPT_COLUMN` and is counted, never silently kept. Dates stay strings here and
are converted where the rows are built.
"""

from __future__ import annotations

from pyspark.sql.types import (
    ArrayType,
    BooleanType,
    DataType,
    DoubleType,
    StringType,
    StructField,
    StructType,
)

CORRUPT_COLUMN = "_corrupt_record"


def _struct(**fields: DataType) -> StructType:
    return StructType([StructField(name, kind, True) for name, kind in fields.items()])


def _array(kind: DataType) -> ArrayType:
    return ArrayType(kind, True)


TEXT = StringType()
CODING = _struct(system=TEXT, code=TEXT, display=TEXT)
CODEABLE_CONCEPT = _struct(coding=_array(CODING), text=TEXT)
REFERENCE = _struct(reference=TEXT)
QUANTITY = _struct(value=DoubleType(), unit=TEXT, code=TEXT, system=TEXT)
PERIOD = _struct(start=TEXT, end=TEXT)
META = _struct(tag=_array(CODING))


def _resource(**fields: DataType) -> StructType:
    """A resource schema: ``resourceType`` and ``id`` first, then ``fields``, then the
    corrupt-record column."""
    schema = _struct(resourceType=TEXT, id=TEXT, **fields)
    return schema.add(StructField(CORRUPT_COLUMN, TEXT, True))


#: Per FHIR resource type, the elements read.
READ_SCHEMAS: dict[str, StructType] = {
    "Patient": _resource(
        meta=META,
        birthDate=TEXT,
        gender=TEXT,
        deceasedBoolean=BooleanType(),
        deceasedDateTime=TEXT,
    ),
    "Condition": _resource(
        subject=REFERENCE,
        code=CODEABLE_CONCEPT,
        clinicalStatus=CODEABLE_CONCEPT,
        verificationStatus=CODEABLE_CONCEPT,
        category=_array(CODEABLE_CONCEPT),
        onsetDateTime=TEXT,
        abatementDateTime=TEXT,
        recordedDate=TEXT,
    ),
    "Observation": _resource(
        subject=REFERENCE,
        status=TEXT,
        category=_array(CODEABLE_CONCEPT),
        code=CODEABLE_CONCEPT,
        effectiveDateTime=TEXT,
        effectivePeriod=PERIOD,
        issued=TEXT,
        valueQuantity=QUANTITY,
        valueCodeableConcept=CODEABLE_CONCEPT,
        valueString=TEXT,
        component=_array(
            _struct(
                code=CODEABLE_CONCEPT,
                valueQuantity=QUANTITY,
                valueCodeableConcept=CODEABLE_CONCEPT,
                valueString=TEXT,
            )
        ),
    ),
    "MedicationRequest": _resource(
        subject=REFERENCE,
        status=TEXT,
        intent=TEXT,
        authoredOn=TEXT,
        medicationCodeableConcept=CODEABLE_CONCEPT,
        medicationReference=REFERENCE,
        contained=_array(_struct(resourceType=TEXT, id=TEXT, code=CODEABLE_CONCEPT)),
    ),
    "Encounter": _resource(
        subject=REFERENCE,
        status=TEXT,
        **{"class": CODING},
        type=_array(CODEABLE_CONCEPT),
        period=PERIOD,
    ),
}
