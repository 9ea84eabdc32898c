"""PatientContext: the typed, immutable picture of one patient that every model consumes.

Everything here is plain frozen dataclasses of tuples and mappings that cannot be changed
(``MappingProxyType``); nothing refers back to FHIR models, HTTP or the database, so a
model package can take a ``PatientContext`` and nothing else.
:mod:`fhir_adapters.context_builder` makes one from FHIR R4 JSON.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from datetime import date, datetime
from types import MappingProxyType
from typing import Any

from fhir_adapters.imaging import DicomImage, ImageSkip, ImagingStudyRef
from fhir_adapters.report_text import ReportText

SNOMED = "http://snomed.info/sct"
ICD10 = "http://hl7.org/fhir/sid/icd-10"
ICD10_CM = "http://hl7.org/fhir/sid/icd-10-cm"
LOINC = "http://loinc.org"
RXNORM = "http://www.nlm.nih.gov/research/umls/rxnorm"
UCUM = "http://unitsofmeasure.org"


def frozen_mapping(items: Mapping[str, Any] | None = None) -> Mapping[str, Any]:
    return MappingProxyType(dict(items or {}))


@dataclass(frozen=True)
class Coding:
    system: str | None
    code: str | None
    display: str | None = None


@dataclass(frozen=True)
class Concept:
    """A CodeableConcept: its codings and the best human-readable text."""

    codings: tuple[Coding, ...] = ()
    text: str | None = None

    def codes(self, system: str) -> tuple[str, ...]:
        return tuple(c.code for c in self.codings if c.system == system and c.code)

    def has_code(self, system: str, code: str) -> bool:
        return code in self.codes(system)

    @property
    def label(self) -> str | None:
        """``text``, else the first coding's display, else its code."""
        if self.text:
            return self.text
        for coding in self.codings:
            if coding.display:
                return coding.display
        return next((c.code for c in self.codings if c.code), None)


@dataclass(frozen=True)
class Quantity:
    value: float
    unit: str | None


@dataclass(frozen=True)
class Problem:
    id: str | None
    concept: Concept
    clinical_status: str | None
    verification_status: str | None
    onset: datetime | None
    categories: tuple[str, ...] = ()
    #: When it resolved (``abatementDateTime`` or the end of ``abatementPeriod``), if known.
    abatement: datetime | None = None

    @property
    def snomed_codes(self) -> tuple[str, ...]:
        return self.concept.codes(SNOMED)

    @property
    def icd10_codes(self) -> tuple[str, ...]:
        return self.concept.codes(ICD10) + self.concept.codes(ICD10_CM)


@dataclass(frozen=True)
class Dosage:
    text: str | None = None
    dose: Quantity | None = None
    route: Concept | None = None
    #: ``frequency`` times per ``period`` ``period_unit`` (UCUM: s, min, h, d, wk, mo, a).
    frequency: int | None = None
    period: float | None = None
    period_unit: str | None = None
    as_needed: bool = False

    @property
    def doses_per_day(self) -> float | None:
        days = {"s": 1 / 86400, "min": 1 / 1440, "h": 1 / 24, "d": 1, "wk": 7, "mo": 30, "a": 365}
        if self.frequency is None or not self.period or self.period_unit not in days:
            return None
        return self.frequency / (self.period * days[self.period_unit])


@dataclass(frozen=True)
class Medication:
    """A MedicationRequest: active ones in the record, or a draft order."""

    id: str | None
    concept: Concept
    status: str | None
    intent: str | None
    authored_on: datetime | None
    dosages: tuple[Dosage, ...] = ()

    @property
    def rxnorm_codes(self) -> tuple[str, ...]:
        return self.concept.codes(RXNORM)


@dataclass(frozen=True)
class Allergy:
    id: str | None
    substance: Concept
    criticality: str | None
    type: str | None
    categories: tuple[str, ...]
    clinical_status: str | None
    verification_status: str | None
    reactions: tuple[str, ...] = ()


@dataclass(frozen=True)
class Measurement:
    """One observed value (a whole Observation, or one component of a panel)."""

    loinc: str
    display: str | None
    value: float | None
    #: The unit as recorded (UCUM code where the sender gave one).
    unit: str | None
    effective: datetime | None
    #: Value and unit in the unit models use for this LOINC code (see ``ucum``), if known.
    normalised: Quantity | None = None
    value_text: str | None = None
    category: str | None = None
    observation_id: str | None = None
    #: A coded value (``valueCodeableConcept``), e.g. a smoking status, with its codes.
    value_concept: Concept | None = None


@dataclass(frozen=True)
class Encounter:
    """One Encounter of the record: when, what kind (v3 ActCode class) and why."""

    id: str | None
    status: str | None
    #: ``Encounter.class`` code (v3 ActCode): AMB, EMER, IMP, ACUTE, HH, VR, …
    class_code: str | None
    type: Concept
    start: datetime | None
    end: datetime | None
    reasons: tuple[Concept, ...] = ()


@dataclass(frozen=True)
class DraftOrder:
    """An order from an ``order-select`` / ``order-sign`` request's ``draftOrders``."""

    resource_type: str
    id: str | None
    status: str | None
    concept: Concept
    selected: bool
    #: Set for MedicationRequest orders.
    medication: Medication | None = None


@dataclass(frozen=True)
class PatientContext:
    patient_id: str
    birth_date: date | None
    age_years: int | None
    #: FHIR AdministrativeGender: male | female | other | unknown.
    sex: str | None
    deceased: bool
    problems: tuple[Problem, ...] = ()
    medications: tuple[Medication, ...] = ()
    allergies: tuple[Allergy, ...] = ()
    #: Latest value per LOINC code (vital signs and laboratory results).
    latest: Mapping[str, Measurement] = field(default_factory=frozen_mapping)
    imaging_studies: tuple[ImagingStudyRef, ...] = ()
    images: tuple[DicomImage, ...] = ()
    #: X-ray instances (or whole studies, ``instance_uid`` None) not retrieved, and why.
    image_skips: tuple[ImageSkip, ...] = ()
    #: Study Instance UID → the DICOMweb root its images were retrieved from.
    image_sources: Mapping[str, str] = field(default_factory=frozen_mapping)
    #: Only studies started at or after this were retrieved (None: every study).
    images_since: datetime | None = None
    reports: tuple[ReportText, ...] = ()
    draft_orders: tuple[DraftOrder, ...] = ()
    encounter_id: str | None = None
    #: Which data could not be had at all (prefetch key → reason), e.g. a fetch timed out.
    unavailable: Mapping[str, str] = field(default_factory=frozen_mapping)
    #: One line per skipped or doubtful resource: where and why, never its content.
    warnings: tuple[str, ...] = ()
    #: The day this context describes: ``age_years`` is the age on it (today, unless the
    #: record was rebuilt as it stood on an earlier date, see ``fhir_adapters.as_of``).
    as_of: date | None = None
    #: US Core race (OMB categories first, then detailed codes) and ethnicity.
    race: tuple[Coding, ...] = ()
    ethnicity: tuple[Coding, ...] = ()
    deceased_at: datetime | None = None
    #: Every condition of the record, resolved ones included (refuted and entered-in-error
    #: left out), oldest first: from the ``condition_history`` prefetch key.
    conditions: tuple[Problem, ...] = ()
    #: Every MedicationRequest of the record whatever its status (entered-in-error left
    #: out), oldest first: from the ``medication_history`` prefetch key.
    medication_history: tuple[Medication, ...] = ()
    #: Every Encounter, oldest first: from the ``encounters`` prefetch key.
    encounters: tuple[Encounter, ...] = ()
    #: Every value per LOINC code, oldest first (``latest`` holds the last of each).
    history: Mapping[str, tuple[Measurement, ...]] = field(default_factory=frozen_mapping)

    def measurement(self, loinc: str) -> Measurement | None:
        return self.latest.get(loinc)

    def has_problem(self, system: str, code: str) -> bool:
        return any(p.concept.has_code(system, code) for p in self.problems)
