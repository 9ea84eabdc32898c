"""The one evaluator of a :class:`FeatureSet` over a PatientContext (semantics: ``spec.py``).

Used by serving (the hook's PatientContext, as of today) and by training (the context of the
record as it stood on each index date, see ``fhir_adapters.as_of``): one code path, so a
patient gets the same vector either way. Each value comes with the record it rests on
(an :class:`~models.risk.evidence.Evidence`), which the card shows beside its contribution.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from datetime import UTC, date, datetime
from functools import lru_cache

from fhir_adapters.patient_context import (
    Concept,
    Encounter,
    Measurement,
    Medication,
    PatientContext,
    Problem,
)
from models.drug.normalise import identify
from models.risk.evidence import ACTIVE, Evidence, today_of
from models.risk.features.spec import ACT_CODE, ATC, LOINC, FeatureSet, FeatureSpec
from models.risk.kb import CodeMatch

NAN = float("nan")
SMOKING_STATUS = "72166-2"


class FeaturesUnavailable(RuntimeError):
    """The data a feature needs could not be had from the EHR (a prefetch key failed)."""


@dataclass(frozen=True)
class FeatureVector:
    names: tuple[str, ...]
    values: tuple[float, ...]
    #: Per feature, the record(s) the value rests on (None when nothing was found).
    evidence: tuple[Evidence | None, ...]
    as_of: date

    def as_dict(self) -> dict[str, float]:
        return dict(zip(self.names, self.values, strict=True))


def required_keys(features: FeatureSet) -> frozenset[str]:
    """The PatientContext prefetch keys a feature set reads."""
    keys = set()
    for f in features.features:
        if f.source == "observation":
            loincs = {c.code for c in f.codes}
            keys.add("smoking_status" if loincs == {SMOKING_STATUS} else "observations")
        elif f.source != "demographic":
            keys.add(
                {
                    "condition": "condition_history",
                    "medication": "medication_history",
                    "encounter": "encounters",
                }[f.source]
            )
    return frozenset(keys)


def _day(when: datetime | None) -> date | None:
    return when.astimezone(UTC).date() if when is not None else None


def _in_window(when: datetime | None, as_of: date, window_days: int | None) -> bool:
    day = _day(when)
    if day is None:
        return window_days is None
    if day > as_of:
        return False
    return window_days is None or (as_of - day).days <= window_days


def _matches(codes: Iterable[CodeMatch], concept: Concept) -> bool:
    return any(code.matches(c) for code in codes for c in concept.codings)


@lru_cache(maxsize=4096)
def _atc_codes(concept: Concept) -> tuple[str, ...]:
    return identify(concept).atc


def _medication_matches(codes: tuple[CodeMatch, ...], medication: Medication) -> bool:
    direct = [c for c in codes if c.system != ATC]
    if direct and _matches(direct, medication.concept):
        return True
    prefixes = [c for c in codes if c.system == ATC]
    if not prefixes:
        return False
    atc = _atc_codes(medication.concept)
    return any(
        code.startswith(p.code) if p.prefix else code == p.code for p in prefixes for code in atc
    )


def _observation_value(m: Measurement, unit: str | None) -> float | None:
    if m.normalised is not None and m.normalised.unit == unit:
        return m.normalised.value
    if m.value is not None and m.unit == unit:
        return m.value
    return None


def _observation(
    spec: FeatureSpec, patient: PatientContext, as_of: date
) -> tuple[float, Evidence | None]:
    loincs = [c.code for c in spec.codes if c.system == LOINC]
    found = sorted(
        (
            m
            for code in loincs
            for m in patient.history.get(code, ())
            if _in_window(m.effective, as_of, spec.window_days)
        ),
        key=lambda m: (m.effective or datetime.min.replace(tzinfo=UTC), m.observation_id or ""),
    )
    if spec.aggregation == "latest_in":
        coded = [m for m in found if m.value_concept is not None]
        if not coded:
            return NAN, None
        last = coded[-1]
        assert last.value_concept is not None
        hit = 1.0 if _matches(spec.value_codes, last.value_concept) else 0.0
        return hit, _evidence(spec, last.value_concept.label, None, last)
    values = [(m, v) for m in found if (v := _observation_value(m, spec.unit)) is not None]
    if spec.aggregation == "count":
        last = values[-1][0] if values else None
        return float(len(values)), _evidence(spec, len(values), None, last)
    if not values:
        return NAN, None
    numbers = [v for _, v in values]
    reduce: dict[str, Callable[[list[float]], float]] = {
        "latest": lambda xs: xs[-1],
        "mean": lambda xs: sum(xs) / len(xs),
        "min": min,
        "max": max,
    }
    value = reduce[spec.aggregation](numbers)
    source = (
        values[-1][0]
        if spec.aggregation in ("latest", "mean")
        else next(m for m, v in reversed(values) if v == value)
    )
    return value, _evidence(spec, round(value, 2), spec.unit, source)


def _evidence(
    spec: FeatureSpec, value: object, unit: str | None, m: Measurement | None
) -> Evidence:
    reference = f"Observation/{m.observation_id}" if m is not None and m.observation_id else None
    return Evidence(spec.label, value, unit, m.effective if m else None, reference)  # type: ignore[arg-type]


def _condition(
    spec: FeatureSpec, patient: PatientContext, as_of: date
) -> tuple[float, Evidence | None]:
    matching: list[Problem] = [p for p in patient.conditions if _matches(spec.codes, p.concept)]
    if spec.aggregation == "active":
        found = [
            p
            for p in matching
            if p.clinical_status in ACTIVE
            and (p.onset is None or (_day(p.onset) or as_of) <= as_of)
            and (p.abatement is None or (_day(p.abatement) or as_of) > as_of)
        ]
    else:
        found = [p for p in matching if _in_window(p.onset, as_of, spec.window_days)]
    value = float(len(found)) if spec.aggregation == "count" else float(bool(found))
    if not found:
        return value, None
    last = found[-1]
    reference = f"Condition/{last.id}" if last.id else None
    shown: object = last.concept.label if spec.aggregation != "count" else len(found)
    return value, Evidence(spec.label, shown, None, last.onset, reference)  # type: ignore[arg-type]


def _medication(
    spec: FeatureSpec, patient: PatientContext, as_of: date
) -> tuple[float, Evidence | None]:
    found = [
        m
        for m in patient.medication_history
        if _in_window(m.authored_on, as_of, spec.window_days) and _medication_matches(spec.codes, m)
    ]
    value = float(len(found)) if spec.aggregation == "count" else (1.0 if found else 0.0)
    if not found:
        return value, None
    last = found[-1]
    reference = f"MedicationRequest/{last.id}" if last.id else None
    shown: object = last.concept.label if spec.aggregation == "present" else len(found)
    return value, Evidence(spec.label, shown, None, last.authored_on, reference)  # type: ignore[arg-type]


def _encounter(
    spec: FeatureSpec, patient: PatientContext, as_of: date
) -> tuple[float, Evidence | None]:
    classes = {c.code for c in spec.codes if c.system == ACT_CODE}
    found: list[Encounter] = [
        e
        for e in patient.encounters
        if e.class_code in classes and _in_window(e.start, as_of, spec.window_days)
    ]
    last = found[-1] if found else None
    when = last.start if last else None
    reference = f"Encounter/{last.id}" if last is not None and last.id else None
    if spec.aggregation == "count":
        return float(len(found)), Evidence(
            spec.label, len(found), None, when, reference
        ) if found else None
    if last is None or when is None:
        return NAN, None
    days = float((as_of - (_day(when) or as_of)).days)
    return days, Evidence(spec.label, int(days), "d", when, reference)


def _demographic(spec: FeatureSpec, patient: PatientContext) -> tuple[float, Evidence | None]:
    if spec.aggregation == "age":
        if patient.age_years is None:
            return NAN, None
        return float(patient.age_years), Evidence(spec.label, patient.age_years, "years")
    value = {"male": 1.0, "female": 0.0}.get(patient.sex or "", NAN)
    return value, (Evidence(spec.label, patient.sex) if not math.isnan(value) else None)


def evaluate(features: FeatureSet, patient: PatientContext) -> FeatureVector:
    """The feature vector of ``patient`` on its as-of day (raises FeaturesUnavailable)."""
    failed = sorted(required_keys(features) & set(patient.unavailable))
    if failed:
        raise FeaturesUnavailable(f"could not read {', '.join(failed)} from the EHR")
    as_of = today_of(patient)
    values: list[float] = []
    evidence: list[Evidence | None] = []
    for spec in features.features:
        if spec.source == "demographic":
            value, item = _demographic(spec, patient)
        else:
            reader = {
                "observation": _observation,
                "condition": _condition,
                "medication": _medication,
                "encounter": _encounter,
            }[spec.source]
            value, item = reader(spec, patient, as_of)
        values.append(value)
        evidence.append(item)
    return FeatureVector(tuple(features.names), tuple(values), tuple(evidence), as_of)
