"""Build a :class:`PatientContext` from FHIR R4 JSON (prefetched or fetched, same code).

Input is keyed by the standard prefetch keys of :data:`PATIENT_CONTEXT_PREFETCH`; a key
that is missing means "not available" (recorded in ``unavailable``), ``None`` means
"the EHR has no such data". Every resource is parsed with ``fhir.resources.R4B``; one that
fails validation, or belongs to another patient, is skipped with a warning naming the key
and entry, so one bad Observation never loses the patient.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from datetime import UTC, date, datetime
from decimal import Decimal
from typing import Any

from fhir.resources.R4B.patient import Patient

from fhir_adapters.imaging import ImagingStudyRef, parse_imaging_study
from fhir_adapters.parsing import (
    ParseCache,
    ResourceInvalid,
    fhir_datetime,
    parse_resource,
    parse_searchset,
)
from fhir_adapters.patient_context import (
    LOINC,
    Allergy,
    Coding,
    Concept,
    Dosage,
    DraftOrder,
    Encounter,
    Measurement,
    Medication,
    PatientContext,
    Problem,
    Quantity,
    frozen_mapping,
)
from fhir_adapters.report_text import FetchBinary, TextLimits, collect_report_texts
from fhir_adapters.ucum import normalise

#: The standard prefetch keys a PatientContext is built from. A service declares the
#: subset it needs (``patient`` always); templates per CDS Hooks 2.0 §Prefetch Template.
PATIENT_CONTEXT_PREFETCH: dict[str, str] = {
    "patient": "Patient/{{context.patientId}}",
    "conditions": "Condition?patient={{context.patientId}}&clinical-status=active",
    "medications": "MedicationRequest?patient={{context.patientId}}&status=active",
    "allergies": "AllergyIntolerance?patient={{context.patientId}}",
    "observations": "Observation?patient={{context.patientId}}&category=vital-signs,laboratory",
    "imaging": "ImagingStudy?patient={{context.patientId}}",
    "reports": "DiagnosticReport?patient={{context.patientId}}",
    "documents": "DocumentReference?patient={{context.patientId}}&status=current",
    # The record over time (risk models): every condition, medication request and
    # encounter whatever its status, and the smoking status (LOINC 72166-2), which is
    # neither a vital sign nor a laboratory result.
    "condition_history": "Condition?patient={{context.patientId}}",
    "medication_history": "MedicationRequest?patient={{context.patientId}}",
    "encounters": "Encounter?patient={{context.patientId}}",
    "smoking_status": "Observation?patient={{context.patientId}}&code=http://loinc.org|72166-2",
}
RESOURCE_TYPES = {
    "conditions": "Condition",
    "medications": "MedicationRequest",
    "allergies": "AllergyIntolerance",
    "observations": "Observation",
    "imaging": "ImagingStudy",
    "reports": "DiagnosticReport",
    "documents": "DocumentReference",
    "condition_history": "Condition",
    "medication_history": "MedicationRequest",
    "encounters": "Encounter",
    "smoking_status": "Observation",
}
US_CORE_RACE = "http://hl7.org/fhir/us/core/StructureDefinition/us-core-race"
US_CORE_ETHNICITY = "http://hl7.org/fhir/us/core/StructureDefinition/us-core-ethnicity"
ADMINISTRATIVE_GENDER = frozenset({"male", "female", "other", "unknown"})
ACTIVE_PROBLEM = frozenset({"active", "recurrence", "relapse"})
NOT_TRUE = frozenset({"refuted", "entered-in-error"})
RESULT_STATUSES = frozenset({"final", "amended", "corrected"})
EPOCH = datetime.min.replace(tzinfo=UTC)


class PrefetchDataInvalid(ValueError):
    """A key's data is unusable as a whole: not the Patient of the context, not a Bundle."""

    def __init__(self, key: str, message: str) -> None:
        super().__init__(message)
        self.key = key


class NoPatientData(LookupError):
    """The EHR reports no Patient for ``context.patientId`` (prefetch ``patient`` is null)."""


# ---------------------------------------------------------------------------- small parts
def concept(value: Any) -> Concept:
    if value is None:
        return Concept()
    codings = tuple(
        Coding(
            system=str(c.system) if c.system else None,
            code=str(c.code) if c.code else None,
            display=str(c.display) if c.display else None,
        )
        for c in value.coding or []
    )
    return Concept(codings=codings, text=str(value.text) if value.text else None)


def _status(value: Any) -> str | None:
    """The code of a status CodeableConcept (clinicalStatus, verificationStatus)."""
    for coding in getattr(value, "coding", None) or []:
        if coding.code:
            return str(coding.code)
    return None


def _number(value: Decimal | float | int | None) -> float | None:
    return float(value) if value is not None else None


def _age(birth: date, today: date) -> int:
    return today.year - birth.year - ((today.month, today.day) < (birth.month, birth.day))


def _references_patient(reference: Any, patient_id: str) -> bool:
    text = str(getattr(reference, "reference", None) or "")
    return text == f"Patient/{patient_id}" or text.endswith(f"/Patient/{patient_id}")


# ---------------------------------------------------------------------------- the patient
def parse_patient(data: Any, patient_id: str) -> Patient:
    if data is None:
        raise NoPatientData("the EHR has no Patient for context.patientId")
    try:
        patient = parse_resource(data, "Patient")
    except ResourceInvalid as exc:
        raise PrefetchDataInvalid("patient", str(exc)) from None
    # fhir.resources checks structure, not required bindings: check the one used here.
    if patient.gender is not None and patient.gender not in ADMINISTRATIVE_GENDER:
        raise PrefetchDataInvalid("patient", "gender: not an AdministrativeGender code")
    if patient.id != patient_id:
        raise PrefetchDataInvalid("patient", "Patient.id does not match context.patientId")
    return patient  # type: ignore[return-value]


# ---------------------------------------------------------------------------- resources
class _Collector:
    """Parses each searchset, keeping the patient's resources and a warning per skip.

    A key in ``strict`` (what the EHR itself prefetched) that is not a Bundle raises
    :class:`PrefetchDataInvalid`; from the FHIR server the same becomes a warning.
    """

    def __init__(
        self,
        data: Mapping[str, Any],
        patient_id: str,
        strict: frozenset[str],
        cache: ParseCache | None = None,
    ) -> None:
        self.data = data
        self.patient_id = patient_id
        self.strict = strict
        self.cache = cache
        self.warnings: list[str] = []

    def resources(self, key: str, subject_field: str = "subject") -> list[Any]:
        bundle = self.data.get(key)
        if bundle is None:
            return []
        try:
            parsed = parse_searchset(bundle, RESOURCE_TYPES[key], self.cache)
        except ResourceInvalid as exc:
            if key in self.strict:
                raise PrefetchDataInvalid(key, str(exc)) from None
            self.warnings.append(f"{key}: {exc}")
            return []
        self.warnings.extend(f"{key}.{warning}" for warning in parsed.warnings)
        kept = []
        for resource in parsed.resources:
            if _references_patient(getattr(resource, subject_field, None), self.patient_id):
                kept.append(resource)
            else:
                self.warnings.append(f"{key}: {resource.id or 'a resource'} is not this patient's")
        return kept


def problem(condition: Any) -> Problem:
    return Problem(
        id=condition.id,
        concept=concept(condition.code),
        clinical_status=_status(condition.clinicalStatus),
        verification_status=_status(condition.verificationStatus),
        onset=fhir_datetime(condition.onsetDateTime or condition.recordedDate),
        categories=tuple(
            c
            for cat in condition.category or []
            for c in concept(cat).codes("http://terminology.hl7.org/CodeSystem/condition-category")
        ),
        abatement=fhir_datetime(
            condition.abatementDateTime
            or (condition.abatementPeriod.end if condition.abatementPeriod else None)
        ),
    )


def _dosage(instruction: Any) -> Dosage:
    dose = None
    for dose_and_rate in instruction.doseAndRate or []:
        quantity = dose_and_rate.doseQuantity
        if quantity is not None and quantity.value is not None:
            dose = Quantity(float(quantity.value), quantity.code or quantity.unit)
            break
    repeat = instruction.timing.repeat if instruction.timing else None
    return Dosage(
        text=instruction.text,
        dose=dose,
        route=concept(instruction.route) if instruction.route else None,
        frequency=repeat.frequency if repeat else None,
        period=_number(repeat.period) if repeat else None,
        period_unit=repeat.periodUnit if repeat else None,
        as_needed=bool(instruction.asNeededBoolean or instruction.asNeededCodeableConcept),
    )


def medication(request: Any, contained: Mapping[str, Any] | None = None) -> Medication:
    if request.medicationCodeableConcept is not None:
        drug = concept(request.medicationCodeableConcept)
    else:
        reference = str(getattr(request.medicationReference, "reference", "") or "")
        found = (contained or {}).get(reference.removeprefix("#"))
        drug = concept(found.code) if found is not None else Concept(text=None)
    return Medication(
        id=request.id,
        concept=drug,
        status=request.status,
        intent=request.intent,
        authored_on=fhir_datetime(request.authoredOn),
        dosages=tuple(_dosage(d) for d in request.dosageInstruction or []),
    )


def contained_medications(resource: Any) -> dict[str, Any]:
    return {
        str(c.id): c
        for c in getattr(resource, "contained", None) or []
        if c.__resource_type__ == "Medication" and c.id
    }


def allergy(resource: Any) -> Allergy:
    reactions = tuple(
        label
        for reaction in resource.reaction or []
        for manifestation in reaction.manifestation or []
        if (label := concept(manifestation).label)
    )
    return Allergy(
        id=resource.id,
        substance=concept(resource.code),
        criticality=resource.criticality,
        type=resource.type,
        categories=tuple(resource.category or ()),
        clinical_status=_status(resource.clinicalStatus),
        verification_status=_status(resource.verificationStatus),
        reactions=reactions,
    )


def _measurement(code: Any, holder: Any, effective: datetime | None, **extra: Any) -> Measurement:
    loinc = concept(code).codes(LOINC)[0]
    quantity = holder.valueQuantity
    value = _number(quantity.value) if quantity is not None else None
    unit = (quantity.code or quantity.unit) if quantity is not None else None
    normalised = normalise(loinc, value, unit) if value is not None else None
    text = None
    coded = None
    if holder.valueCodeableConcept is not None:
        coded = concept(holder.valueCodeableConcept)
        text = coded.label
    elif holder.valueString is not None:
        text = str(holder.valueString)
    return Measurement(
        loinc=loinc,
        display=concept(code).label,
        value=value,
        unit=unit,
        effective=effective,
        normalised=Quantity(*normalised) if normalised else None,
        value_text=text,
        value_concept=coded,
        **extra,
    )


def measurements(observation: Any) -> list[Measurement]:
    """An Observation's values by LOINC code: itself and each coded component."""
    if observation.status not in RESULT_STATUSES:
        return []
    effective = fhir_datetime(observation.effectiveDateTime or observation.issued)
    if effective is None and observation.effectivePeriod is not None:
        period = observation.effectivePeriod
        effective = fhir_datetime(period.end or period.start)
    category = next(
        (
            code
            for cat in observation.category or []
            for code in concept(cat).codes(
                "http://terminology.hl7.org/CodeSystem/observation-category"
            )
        ),
        None,
    )
    extra = {"category": category, "observation_id": observation.id}
    found = []
    if concept(observation.code).codes(LOINC) and (
        observation.valueQuantity is not None
        or observation.valueCodeableConcept is not None
        or observation.valueString is not None
    ):
        found.append(_measurement(observation.code, observation, effective, **extra))
    for component in observation.component or []:
        if concept(component.code).codes(LOINC):
            found.append(_measurement(component.code, component, effective, **extra))
    return found


def latest_by_loinc(items: Iterable[Measurement]) -> dict[str, Measurement]:
    latest: dict[str, Measurement] = {}
    for item in items:
        current = latest.get(item.loinc)
        # Ties (same time) go to the larger observation id, whatever order they came in.
        if current is None or (item.effective or EPOCH, item.observation_id or "") > (
            current.effective or EPOCH,
            current.observation_id or "",
        ):
            latest[item.loinc] = item
    return dict(sorted(latest.items()))


def history_by_loinc(items: Iterable[Measurement]) -> dict[str, tuple[Measurement, ...]]:
    """Every value per LOINC code, oldest first (ties by observation id); one value per
    observation and code, so an Observation that two prefetch keys both return counts once."""
    unique = {(m.loinc, m.observation_id, m.effective, m.value, m.value_text): m for m in items}
    grouped: dict[str, list[Measurement]] = {}
    for item in unique.values():
        grouped.setdefault(item.loinc, []).append(item)
    return {
        loinc: tuple(sorted(found, key=lambda m: (m.effective or EPOCH, m.observation_id or "")))
        for loinc, found in sorted(grouped.items())
    }


def encounter(resource: Any) -> Encounter:
    klass = resource.class_fhir
    period = resource.period
    return Encounter(
        id=resource.id,
        status=resource.status,
        class_code=str(klass.code) if klass is not None and klass.code else None,
        type=next((concept(t) for t in resource.type or []), Concept()),
        start=fhir_datetime(period.start) if period else None,
        end=fhir_datetime(period.end) if period else None,
        reasons=tuple(concept(r) for r in resource.reasonCode or []),
    )


def _us_core_codings(patient: Patient, url: str) -> tuple[Coding, ...]:
    """The ombCategory codings of a US Core race/ethnicity extension, then the detailed ones."""
    found: dict[str, list[Coding]] = {"ombCategory": [], "detailed": []}
    for extension in patient.extension or []:
        if extension.url != url:
            continue
        for part in extension.extension or []:
            value = part.valueCoding
            if part.url in found and value is not None and value.code:
                found[part.url].append(
                    Coding(
                        system=str(value.system) if value.system else None,
                        code=str(value.code),
                        display=str(value.display) if value.display else None,
                    )
                )
    return (*found["ombCategory"], *found["detailed"])


def draft_orders(bundle: Mapping[str, Any] | None, selections: Sequence[str]) -> list[DraftOrder]:
    """The orders of a ``draftOrders`` Bundle (already validated as a Bundle by the caller)."""
    orders = []
    for entry in (bundle or {}).get("entry") or []:
        data = entry.get("resource") if isinstance(entry, dict) else None
        try:
            resource = parse_resource(data)
        except ResourceInvalid:
            continue  # the caller validates draftOrders entries and reports them
        kind = resource.__resource_type__
        selected = f"{kind}/{resource.id}" in selections
        if kind == "MedicationRequest":
            med = medication(resource, contained_medications(resource))
            orders.append(
                DraftOrder(kind, resource.id, resource.status, med.concept, selected, med)
            )
        else:
            code = getattr(resource, "code", None) or getattr(resource, "type", None)
            status = getattr(resource, "status", None)
            orders.append(DraftOrder(kind, resource.id, status, concept(code), selected))
    return orders


def invalid_draft_orders(bundle: Mapping[str, Any]) -> list[tuple[int, str]]:
    """(entry index, reason) for each draft order that is not a valid FHIR R4 resource."""
    problems = []
    for i, entry in enumerate(bundle.get("entry") or []):
        data = entry.get("resource") if isinstance(entry, dict) else None
        try:
            parse_resource(data)
        except ResourceInvalid as exc:
            problems.append((i, str(exc)))
    return problems


# ---------------------------------------------------------------------------- the whole
def build_patient_context(
    data: Mapping[str, Any],
    patient_id: str,
    *,
    encounter_id: str | None = None,
    draft_orders_bundle: Mapping[str, Any] | None = None,
    selections: Sequence[str] = (),
    unavailable: Mapping[str, str] | None = None,
    supplied_keys: frozenset[str] = frozenset(),
    fetch_binary: FetchBinary | None = None,
    text_limits: TextLimits | None = None,
    today: date | None = None,
    parse_cache: ParseCache | None = None,
) -> PatientContext:
    """A PatientContext from prefetch-shaped data.

    ``parse_cache``: reuse parsed resources across calls on the same, unmodified JSON
    objects (training builds one record's context for many dates); the result is the same.
    Raises :class:`NoPatientData` or :class:`PrefetchDataInvalid`.
    """
    patient = parse_patient(data.get("patient"), patient_id)
    today = today or date.today()
    collect = _Collector(data, patient_id, supplied_keys, parse_cache)

    # Sorted (oldest first, then by id), so the same record gives the same context
    # whatever order the EHR or its FHIR server listed it in.
    all_conditions = sorted(
        (
            problem(c)
            for c in collect.resources("condition_history")
            if _status(c.verificationStatus) not in NOT_TRUE
        ),
        key=lambda p: (p.onset or EPOCH, p.id or ""),
    )
    # Active problems from the ``conditions`` key; without it, from the whole history.
    problems = sorted(
        (
            problem(c)
            for c in collect.resources("conditions")
            if _status(c.clinicalStatus) in ACTIVE_PROBLEM
            and _status(c.verificationStatus) not in NOT_TRUE
        ),
        key=lambda p: (p.onset or EPOCH, p.id or ""),
    )
    if "conditions" not in data:
        problems = [p for p in all_conditions if p.clinical_status in ACTIVE_PROBLEM]
    medication_history = sorted(
        (
            medication(m, contained_medications(m))
            for m in collect.resources("medication_history")
            if m.status != "entered-in-error"
        ),
        key=lambda m: (m.authored_on or EPOCH, m.id or ""),
    )
    medications = sorted(
        (
            medication(m, contained_medications(m))
            for m in collect.resources("medications")
            if m.status == "active"
        ),
        key=lambda m: (m.authored_on or EPOCH, m.id or ""),
    )
    if "medications" not in data:
        medications = [m for m in medication_history if m.status == "active"]
    encounters = sorted(
        (encounter(e) for e in collect.resources("encounters")),
        key=lambda e: (e.start or EPOCH, e.id or ""),
    )
    allergies = sorted(
        (
            allergy(a)
            for a in collect.resources("allergies", subject_field="patient")
            if _status(a.clinicalStatus) in (None, "active")
            and _status(a.verificationStatus) not in NOT_TRUE
        ),
        key=lambda a: a.id or "",
    )
    values = [
        m
        for key in ("observations", "smoking_status")
        for observation in collect.resources(key)
        for m in measurements(observation)
    ]
    latest = latest_by_loinc(values)
    studies: list[ImagingStudyRef] = sorted(
        (
            parse_imaging_study(study)
            for study in collect.resources("imaging")
            if study.status in ("available", "registered", "unknown", None)
        ),
        key=lambda s: (fhir_datetime(s.started) or EPOCH, s.resource_id or ""),
    )
    texts = collect_report_texts(
        collect.resources("reports"),
        collect.resources("documents"),
        fetch_binary,
        text_limits or TextLimits(),
    )
    deceased = bool(patient.deceasedBoolean or patient.deceasedDateTime)
    deceased_at = fhir_datetime(patient.deceasedDateTime)
    return PatientContext(
        patient_id=patient_id,
        birth_date=patient.birthDate if isinstance(patient.birthDate, date) else None,
        age_years=(_age(patient.birthDate, today) if isinstance(patient.birthDate, date) else None),
        sex=patient.gender,
        deceased=deceased,
        problems=tuple(problems),
        medications=tuple(medications),
        allergies=tuple(allergies),
        latest=frozen_mapping(latest),
        imaging_studies=tuple(studies),
        reports=texts.texts,
        draft_orders=tuple(draft_orders(draft_orders_bundle, selections)),
        encounter_id=encounter_id,
        unavailable=frozen_mapping(unavailable),
        warnings=(*collect.warnings, *texts.warnings),
        as_of=today,
        race=_us_core_codings(patient, US_CORE_RACE),
        ethnicity=_us_core_codings(patient, US_CORE_ETHNICITY),
        deceased_at=deceased_at,
        conditions=tuple(all_conditions),
        medication_history=tuple(medication_history),
        encounters=tuple(encounters),
        history=frozen_mapping(history_by_loinc(values)),
    )
