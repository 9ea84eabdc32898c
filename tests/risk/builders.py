"""Build PatientContexts by hand for score and feature tests (the real dataclasses)."""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from datetime import UTC, date, datetime

from fhir_adapters.context_builder import history_by_loinc, latest_by_loinc
from fhir_adapters.patient_context import (
    RXNORM,
    SNOMED,
    Coding,
    Concept,
    Encounter,
    Measurement,
    Medication,
    PatientContext,
    Problem,
    Quantity,
    frozen_mapping,
)
from fhir_adapters.ucum import normalise

TODAY = date(2024, 6, 1)
OMB = "urn:oid:2.16.840.1.113883.6.238"
WHITE = Coding(OMB, "2106-3", "White")
BLACK = Coding(OMB, "2054-5", "Black or African American")
ASIAN = Coding(OMB, "2028-9", "Asian")


def at(day: str) -> datetime:
    return datetime.fromisoformat(day).replace(tzinfo=UTC)


def value(loinc: str, amount: float, unit: str, day: str, oid: str | None = None) -> Measurement:
    normalised = normalise(loinc, amount, unit)
    return Measurement(
        loinc=loinc,
        display=loinc,
        value=amount,
        unit=unit,
        effective=at(day),
        normalised=Quantity(*normalised) if normalised else None,
        observation_id=oid or f"obs-{loinc}-{day}",
    )


def coded(loinc: str, code: str, display: str, day: str) -> Measurement:
    concept = Concept((Coding(SNOMED, code, display),), display)
    return Measurement(
        loinc=loinc,
        display=loinc,
        value=None,
        unit=None,
        effective=at(day),
        value_text=display,
        value_concept=concept,
        observation_id=f"obs-{loinc}-{day}",
    )


def smoking(status: str, day: str) -> Measurement:
    codes = {
        "never": ("266919005", "Never smoker"),
        "former": ("8517006", "Ex-smoker"),
        "current": ("449868002", "Current every day smoker"),
    }
    return coded("72166-2", *codes[status], day)


def condition(
    code: str,
    onset: str,
    status: str = "active",
    abated: str | None = None,
    system: str = SNOMED,
    cid: str | None = None,
) -> Problem:
    return Problem(
        id=cid or f"cond-{code}-{onset}",
        concept=Concept((Coding(system, code, code),), code),
        clinical_status=status,
        verification_status="confirmed",
        onset=at(onset),
        abatement=at(abated) if abated else None,
    )


def medication(rxcui: str, display: str, authored: str, status: str = "active") -> Medication:
    return Medication(
        id=f"med-{rxcui}-{authored}",
        concept=Concept((Coding(RXNORM, rxcui, display),), display),
        status=status,
        intent="order",
        authored_on=at(authored),
    )


def encounter(class_code: str, start: str, eid: str | None = None) -> Encounter:
    return Encounter(
        eid or f"enc-{class_code}-{start}", "finished", class_code, Concept(), at(start), at(start)
    )


def patient(
    *,
    age: int | None = 55,
    sex: str | None = "male",
    race: Sequence[Coding] = (WHITE,),
    values: Iterable[Measurement] = (),
    conditions: Sequence[Problem] = (),
    medications: Sequence[Medication] = (),
    encounters: Sequence[Encounter] = (),
    today: date = TODAY,
    unavailable: dict[str, str] | None = None,
    deceased: bool = False,
) -> PatientContext:
    found = list(values)
    birth = date(today.year - age, 1, 1) if age is not None else None
    return PatientContext(
        patient_id="p1",
        birth_date=birth,
        age_years=age,
        sex=sex,
        deceased=deceased,
        problems=tuple(p for p in conditions if p.clinical_status == "active"),
        medications=tuple(m for m in medications if m.status == "active"),
        latest=frozen_mapping(latest_by_loinc(found)),
        history=frozen_mapping(history_by_loinc(found)),
        conditions=tuple(sorted(conditions, key=lambda p: p.onset)),  # type: ignore[arg-type,return-value]
        medication_history=tuple(medications),
        encounters=tuple(sorted(encounters, key=lambda e: e.start)),  # type: ignore[arg-type,return-value]
        race=tuple(race),
        as_of=today,
        unavailable=frozen_mapping(unavailable),
    )
