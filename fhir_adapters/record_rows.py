"""Per-patient record rows: the flat, typed facts of a patient's record, one row per fact.

Population jobs aggregate these (phase 2's feature evaluator runs over them); the Spark
job builds the same rows with Spark SQL (``population.spark_rows``) and a test holds the
two to equality on every shared Synthea patient. This module is the reference: each row
is built from the resource parsed by ``fhir.resources`` with the very functions that
build a :class:`~fhir_adapters.patient_context.PatientContext` (``problem``,
``measurements``, ``medication``), so a row says what the hook path would read.

Rows keep the whole history with its statuses (not only what is active or latest):
filtering is the consumer's choice. Dates are aware UTC datetimes (``fhir_datetime``).

Tables (row type: one row per …):

* ``patients`` (PatientRow): Patient;
* ``conditions`` (ConditionRow): Condition and coding of its ``code`` (one row if none);
* ``observations`` (ObservationRow): measurement, i.e. a final/amended/corrected
  Observation with a LOINC code and a value, and each LOINC-coded component;
* ``medications`` (MedicationRow): MedicationRequest and coding of its medication;
* ``encounters`` (EncounterRow): Encounter.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from dataclasses import dataclass
from datetime import date, datetime
from typing import Any

from fhir_adapters.bulk.references import patient_id_from_reference
from fhir_adapters.bulk.synthetic_clones import is_synthetic_clone
from fhir_adapters.context_builder import (
    concept,
    contained_medications,
    measurements,
    medication,
    problem,
)
from fhir_adapters.parsing import ResourceInvalid, fhir_datetime, parse_resource
from fhir_adapters.patient_context import Coding, Concept


@dataclass(frozen=True)
class PatientRow:
    patient_id: str
    birth_date: date | None
    #: FHIR AdministrativeGender as recorded.
    sex: str | None
    deceased: bool
    deceased_at: datetime | None
    #: A clone from the scale generator: for throughput only, never for model metrics.
    synthetic_clone: bool


@dataclass(frozen=True)
class ConditionRow:
    patient_id: str
    condition_id: str
    system: str | None
    code: str | None
    display: str | None
    text: str | None
    clinical_status: str | None
    verification_status: str | None
    categories: tuple[str, ...]
    #: ``onsetDateTime``, else ``recordedDate`` (as ``PatientContext`` problems).
    onset: datetime | None
    abatement: datetime | None
    recorded: datetime | None


@dataclass(frozen=True)
class ObservationRow:
    patient_id: str
    observation_id: str
    status: str
    loinc: str
    display: str | None
    category: str | None
    value: float | None
    unit: str | None
    value_text: str | None
    #: A coded value's codings as ``system|code`` (codings without both left out); None
    #: when the value is not a CodeableConcept (features such as ``latest_in`` match them).
    value_codes: tuple[str, ...] | None
    #: In the unit models use for this LOINC code (``fhir_adapters.ucum``), when known.
    normalised_value: float | None
    normalised_unit: str | None
    effective: datetime | None


@dataclass(frozen=True)
class MedicationRow:
    patient_id: str
    medication_request_id: str
    system: str | None
    code: str | None
    display: str | None
    text: str | None
    status: str | None
    intent: str | None
    authored_on: datetime | None


@dataclass(frozen=True)
class EncounterRow:
    patient_id: str
    encounter_id: str
    status: str | None
    #: ``Encounter.class`` code (v3 ActCode: AMB, EMER, IMP, …).
    class_code: str | None
    #: The first coding of the first ``type``.
    type_system: str | None
    type_code: str | None
    type_display: str | None
    start: datetime | None
    end: datetime | None


Row = PatientRow | ConditionRow | ObservationRow | MedicationRow | EncounterRow

#: table name → (row type, the FHIR resource type it is built from).
TABLES: dict[str, tuple[type, str]] = {
    "patients": (PatientRow, "Patient"),
    "conditions": (ConditionRow, "Condition"),
    "observations": (ObservationRow, "Observation"),
    "medications": (MedicationRow, "MedicationRequest"),
    "encounters": (EncounterRow, "Encounter"),
}
RESOURCE_TYPES = frozenset(resource_type for _, resource_type in TABLES.values())


def _codings(value: Concept) -> tuple[Coding | None, ...]:
    return value.codings or (None,)


def _subject(resource: Any) -> str | None:
    return patient_id_from_reference(getattr(resource.subject, "reference", None))


def patient_rows(resource: Any, raw: dict[str, Any]) -> list[PatientRow]:
    birth = resource.birthDate
    return [
        PatientRow(
            patient_id=resource.id,
            birth_date=birth if isinstance(birth, date) else None,
            sex=resource.gender,
            deceased=bool(resource.deceasedBoolean or resource.deceasedDateTime),
            deceased_at=fhir_datetime(resource.deceasedDateTime),
            synthetic_clone=is_synthetic_clone(raw),
        )
    ]


def condition_rows(resource: Any, raw: dict[str, Any]) -> list[ConditionRow]:
    patient_id = _subject(resource)
    if patient_id is None:
        return []
    found = problem(resource)
    return [
        ConditionRow(
            patient_id=patient_id,
            condition_id=resource.id,
            system=coding.system if coding else None,
            code=coding.code if coding else None,
            display=coding.display if coding else None,
            text=found.concept.text,
            clinical_status=found.clinical_status,
            verification_status=found.verification_status,
            categories=found.categories,
            onset=found.onset,
            abatement=fhir_datetime(resource.abatementDateTime),
            recorded=fhir_datetime(resource.recordedDate),
        )
        for coding in _codings(found.concept)
    ]


def observation_rows(resource: Any, raw: dict[str, Any]) -> list[ObservationRow]:
    patient_id = _subject(resource)
    if patient_id is None:
        return []
    return [
        ObservationRow(
            patient_id=patient_id,
            observation_id=resource.id,
            status=resource.status,
            loinc=m.loinc,
            display=m.display,
            category=m.category,
            value=m.value,
            unit=m.unit,
            value_text=m.value_text,
            value_codes=_value_codes(m.value_concept),
            normalised_value=m.normalised.value if m.normalised else None,
            normalised_unit=m.normalised.unit if m.normalised else None,
            effective=m.effective,
        )
        for m in measurements(resource)
    ]


def _value_codes(value: Concept | None) -> tuple[str, ...] | None:
    if value is None:
        return None
    return tuple(f"{c.system}|{c.code}" for c in value.codings if c.system and c.code)


def medication_rows(resource: Any, raw: dict[str, Any]) -> list[MedicationRow]:
    patient_id = _subject(resource)
    if patient_id is None:
        return []
    found = medication(resource, contained_medications(resource))
    return [
        MedicationRow(
            patient_id=patient_id,
            medication_request_id=resource.id,
            system=coding.system if coding else None,
            code=coding.code if coding else None,
            display=coding.display if coding else None,
            text=found.concept.text,
            status=found.status,
            intent=found.intent,
            authored_on=found.authored_on,
        )
        for coding in _codings(found.concept)
    ]


def encounter_rows(resource: Any, raw: dict[str, Any]) -> list[EncounterRow]:
    patient_id = _subject(resource)
    if patient_id is None:
        return []
    first_type = concept(resource.type[0]) if resource.type else Concept()
    coding = first_type.codings[0] if first_type.codings else None
    period = resource.period
    return [
        EncounterRow(
            patient_id=patient_id,
            encounter_id=resource.id,
            status=resource.status,
            class_code=_code_of(resource.class_fhir),
            type_system=coding.system if coding else None,
            type_code=coding.code if coding else None,
            type_display=coding.display if coding else None,
            start=fhir_datetime(period.start) if period else None,
            end=fhir_datetime(period.end) if period else None,
        )
    ]


def _code_of(value: Any) -> str | None:
    code = getattr(value, "code", None)
    return str(code) if code else None


BUILDERS: dict[str, tuple[str, Callable[[Any, dict[str, Any]], list[Any]]]] = {
    "Patient": ("patients", patient_rows),
    "Condition": ("conditions", condition_rows),
    "Observation": ("observations", observation_rows),
    "MedicationRequest": ("medications", medication_rows),
    "Encounter": ("encounters", encounter_rows),
}


def record_rows(raw: dict[str, Any]) -> tuple[str, list[Row]]:
    """(table, rows) of one resource as FHIR JSON; raises :class:`ResourceInvalid`.

    A resource without an id, or (but for a Patient) without a patient reference, gives
    no rows; a resource type without rows gives ``("", [])``.
    """
    kind = raw.get("resourceType") if isinstance(raw, dict) else None
    builder = BUILDERS.get(str(kind))
    if builder is None:
        return "", []
    table, build = builder
    resource = parse_resource(raw, kind)
    if not resource.id:
        return table, []
    return table, build(resource, raw)


def iter_record_rows(
    resources: Iterator[dict[str, Any]], on_invalid: Callable[[str], None] | None = None
) -> Iterator[tuple[str, Row]]:
    """(table, row) for every row of ``resources``; invalid ones are reported and skipped."""
    for raw in resources:
        try:
            table, rows = record_rows(raw)
        except ResourceInvalid as exc:
            if on_invalid is not None:
                on_invalid(str(exc))
            continue
        for row in rows:
            yield table, row
