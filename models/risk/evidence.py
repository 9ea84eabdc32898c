"""Reading a score's inputs from a PatientContext, each with its date and source resource.

Every reader returns either the value with its :class:`Evidence` or a :class:`Missing`
that says, in clinical words, why the input cannot be used (never recorded, stale, in a
unit that cannot be converted, or the EHR's data could not be read). Scores list both on
the card, so a clinician sees what a number rests on and what it lacks.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from datetime import UTC, date, datetime, time, timedelta

from fhir_adapters.patient_context import Medication, PatientContext, Problem
from models.drug.normalise import identify
from models.risk.kb import CodeSet

ACTIVE = frozenset({"active", "recurrence", "relapse"})


@dataclass(frozen=True)
class Evidence:
    """One input a score used, as a clinician would read it."""

    name: str
    value: float | int | str | bool | None
    unit: str | None = None
    date: datetime | None = None
    #: The FHIR resource it came from (``Observation/…``, ``Condition/…``).
    reference: str | None = None

    def describe(self) -> str:
        value = _format(self.value)
        unit = f" {self.unit}" if self.unit and value else ""
        when = f" ({self.date.date().isoformat()})" if self.date else ""
        return f"{self.name}: {value}{unit}{when}"


@dataclass(frozen=True)
class Missing:
    """An input that could not be used, and why (shown on the card, stored with the result)."""

    name: str
    reason: str

    def describe(self) -> str:
        return f"{self.name}: {self.reason}"


def _format(value: object) -> str:
    if isinstance(value, bool):
        return "yes" if value else "no"
    if isinstance(value, float):
        return f"{value:.1f}".rstrip("0").rstrip(".")
    return "" if value is None else str(value)


def as_of_datetime(day: date) -> datetime:
    """The end of ``day`` (UTC): everything recorded on the as-of day counts."""
    return datetime.combine(day, time.max, tzinfo=UTC)


def today_of(patient: PatientContext) -> date:
    return patient.as_of or datetime.now(UTC).date()


# ----------------------------------------------------------------------------- measurements
def latest_value(
    patient: PatientContext,
    name: str,
    loincs: Sequence[str],
    unit: str,
    stale_after_days: int,
) -> Evidence | Missing:
    """The latest value of ``loincs`` in ``unit`` (UCUM-normalised), if recent enough."""
    today = today_of(patient)
    values = sorted(
        (m for loinc in loincs for m in patient.history.get(loinc, ())),
        key=lambda m: m.effective or datetime.min.replace(tzinfo=UTC),
        reverse=True,
    )
    if not values:
        if "observations" in patient.unavailable:
            return Missing(name, "observations could not be read from the EHR")
        return Missing(name, "not recorded")
    unconvertible = None
    for m in values:
        if m.normalised is not None and m.normalised.unit == unit:
            value = m.normalised.value
        elif m.value is not None and m.unit == unit:
            value = m.value
        else:
            unconvertible = unconvertible or m
            continue
        if m.effective is None:
            return Missing(name, "latest value has no date")
        if m.effective.date() < today - timedelta(days=stale_after_days):
            return Missing(
                name,
                f"last recorded {m.effective.date().isoformat()}, older than "
                f"{_span(stale_after_days)}",
            )
        reference = f"Observation/{m.observation_id}" if m.observation_id else None
        return Evidence(name, round(value, 2), unit, m.effective, reference)
    assert unconvertible is not None
    return Missing(name, f"recorded in '{unconvertible.unit}', which cannot be converted to {unit}")


def _span(days: int) -> str:
    return f"{round(days / 365.25)} years" if days >= 365 else f"{days} days"


def latest_coded(
    patient: PatientContext, name: str, loinc: str, stale_after_days: int
) -> tuple[Evidence | Missing, tuple[str, ...]]:
    """The latest coded value of ``loinc`` and its SNOMED/other codes, if recent enough."""
    today = today_of(patient)
    values = [m for m in patient.history.get(loinc, ()) if m.value_concept is not None]
    if not values:
        unavailable = "smoking_status" in patient.unavailable
        return Missing(
            name, "could not be read from the EHR" if unavailable else "not recorded"
        ), ()
    m = values[-1]
    if m.effective is None or m.effective.date() < today - timedelta(days=stale_after_days):
        when = m.effective.date().isoformat() if m.effective else "undated"
        return Missing(name, f"last recorded {when}, older than {_span(stale_after_days)}"), ()
    assert m.value_concept is not None
    codes = tuple(c.code for c in m.value_concept.codings if c.code)
    reference = f"Observation/{m.observation_id}" if m.observation_id else None
    return Evidence(name, m.value_concept.label, None, m.effective, reference), codes


# ----------------------------------------------------------------------------- conditions
def conditions_known(patient: PatientContext) -> bool:
    """False when a condition search the service asked for could not be had."""
    return not {"condition_history", "conditions"} & set(patient.unavailable)


def _conditions(patient: PatientContext, active_only: bool) -> tuple[Problem, ...]:
    if active_only:
        return patient.problems
    return patient.conditions or patient.problems


def condition(
    patient: PatientContext, name: str, codes: CodeSet, *, active_only: bool
) -> Evidence | None:
    """The earliest matching condition (active ones only, or any in the record), or None."""
    today = as_of_datetime(today_of(patient))
    found = [
        p
        for p in _conditions(patient, active_only)
        if codes.matches(p.concept) and (p.onset is None or p.onset <= today)
    ]
    if active_only:
        found = [
            p
            for p in found
            if p.clinical_status in ACTIVE and (p.abatement is None or p.abatement > today)
        ]
    if not found:
        return None
    first = found[0]
    return Evidence(
        name,
        first.concept.label or name,
        None,
        first.onset,
        f"Condition/{first.id}" if first.id else None,
    )


# ----------------------------------------------------------------------------- medications
def medications_known(patient: PatientContext) -> bool:
    """False when a medication search the service asked for could not be had."""
    return not {"medication_history", "medications"} & set(patient.unavailable)


def active_medications(
    patient: PatientContext,
    classes: frozenset[str] = frozenset(),
    atc_prefixes: tuple[str, ...] = (),
) -> list[Evidence]:
    """Active MedicationRequests whose drug has one of the ``models.drug`` class tags or an
    ATC code under one of ``atc_prefixes`` (drug identified by ``models.drug.normalise``)."""
    found = []
    for medication in patient.medications:
        identity = identify(medication.concept)
        by_atc = (
            any(code.startswith(atc_prefixes) for code in identity.atc) if atc_prefixes else False
        )
        if identity.classes & classes or by_atc:
            found.append(_medication_evidence(medication, identity.label))
    return found


def _medication_evidence(medication: Medication, label: str) -> Evidence:
    return Evidence(
        "Active medication",
        medication.concept.label or label,
        None,
        medication.authored_on,
        f"MedicationRequest/{medication.id}" if medication.id else None,
    )
