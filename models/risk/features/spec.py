"""The declared feature spec: features as data, not code.

A :class:`FeatureSpec` names one number computed from a PatientContext: where it comes
from (``source``), which codes select the records (``codes``), how they are reduced
(``aggregation``), over which look-back ``window_days`` (ending on the context's as-of
day), and in which ``unit``. The same JSON (``feature_spec.json`` in each model artifact)
drives the one Python evaluator the hooks use (:mod:`models.risk.features.evaluate`) and
is written to be re-implemented by a population executor (issue #11) with identical
results. Semantics, exactly:

* windows are inclusive day ranges ``[as_of - window_days, as_of]`` on the record's own
  date (Observation effective, Condition onset, MedicationRequest authoredOn, Encounter
  start), compared as UTC calendar days; ``window_days`` null = the whole record up to
  as_of;
* codes match a coding by ``system`` and ``code``; ``match: prefix`` matches code
  prefixes (ICD-10-CM categories, WHO ATC groups); ICD-10 and ICD-10-CM URIs are one
  system and dots are ignored; medications match RxNorm codes directly and ATC codes
  through ``models/drug/knowledge`` (RxNorm product → ingredient → ATC);
* missing is NaN (never imputed): no matching record in the window, or an observation
  value whose unit is neither ``unit`` nor UCUM-convertible to it.

=============== ================ ===========================================================
source          aggregation      value
=============== ================ ===========================================================
demographic     age              completed years on as_of
demographic     male             1 male, 0 female, NaN otherwise
observation     latest           value of the most recent observation (ties: larger id)
observation     mean/min/max     over the window's values
observation     count            number of values in the window (0 when none)
observation     latest_in        1 if the most recent coded value is in ``value_codes``,
                                 0 if it is another code, NaN if none in the window
condition       present          1 if a matching condition's onset is in the window, else 0
condition       active           1 if a matching condition is active on as_of (clinical
                                 status active/recurrence/relapse, not abated), else 0
condition       count            matching conditions with onset in the window
medication      present          1 if a matching MedicationRequest was authored in the
                                 window (any status but entered-in-error), else 0
medication      count            matching requests authored in the window
encounter       count            encounters whose class code is in ``codes`` (system
                                 v3-ActCode) starting in the window
encounter       days_since       days from the latest such encounter to as_of (NaN: none)
=============== ================ ===========================================================
"""

from __future__ import annotations

import json
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, Literal

from fhir_adapters.patient_context import LOINC, SNOMED
from models.risk.kb import CodeMatch, code_set

Source = Literal["demographic", "observation", "condition", "medication", "encounter"]
Aggregation = Literal[
    "age",
    "male",
    "latest",
    "mean",
    "min",
    "max",
    "count",
    "latest_in",
    "present",
    "active",
    "days_since",
]
ALLOWED: dict[str, frozenset[str]] = {
    "demographic": frozenset({"age", "male"}),
    "observation": frozenset({"latest", "mean", "min", "max", "count", "latest_in"}),
    "condition": frozenset({"present", "active", "count"}),
    "medication": frozenset({"present", "count"}),
    "encounter": frozenset({"count", "days_since"}),
}
ATC = "http://www.whocc.no/atc"
ACT_CODE = "http://terminology.hl7.org/CodeSystem/v3-ActCode"
SPEC_VERSION = 1


class FeatureSpecInvalid(ValueError):
    """A feature spec breaks the rules above (so no executor could compute it)."""


@dataclass(frozen=True)
class FeatureSpec:
    name: str
    #: How a clinician reads it ("Systolic blood pressure, latest in 2 years").
    label: str
    source: Source
    aggregation: Aggregation
    codes: tuple[CodeMatch, ...] = ()
    window_days: int | None = None
    unit: str | None = None
    #: For ``latest_in``: the coded answers that count as 1.
    value_codes: tuple[CodeMatch, ...] = ()

    def __post_init__(self) -> None:
        allowed = ALLOWED.get(self.source)
        if allowed is None or self.aggregation not in allowed:
            raise FeatureSpecInvalid(
                f"{self.name}: {self.source}/{self.aggregation} is not allowed"
            )
        if self.source != "demographic" and not self.codes:
            raise FeatureSpecInvalid(f"{self.name}: {self.source} features need codes")
        if self.aggregation == "latest_in" and not self.value_codes:
            raise FeatureSpecInvalid(f"{self.name}: latest_in needs value_codes")
        numeric = self.source == "observation" and self.aggregation in (
            "latest",
            "mean",
            "min",
            "max",
        )
        if numeric and not self.unit:
            raise FeatureSpecInvalid(f"{self.name}: numeric observation features need a unit")
        if self.window_days is not None and self.window_days <= 0:
            raise FeatureSpecInvalid(f"{self.name}: window_days must be positive")

    def to_json(self) -> dict[str, Any]:
        out: dict[str, Any] = {
            "name": self.name,
            "label": self.label,
            "source": self.source,
            "aggregation": self.aggregation,
            "window_days": self.window_days,
            "unit": self.unit,
            "codes": [c.to_json() for c in self.codes],
        }
        if self.value_codes:
            out["value_codes"] = [c.to_json() for c in self.value_codes]
        return out

    @classmethod
    def from_json(cls, data: Mapping[str, Any]) -> FeatureSpec:
        try:
            return cls(
                name=str(data["name"]),
                label=str(data["label"]),
                source=data["source"],
                aggregation=data["aggregation"],
                codes=tuple(CodeMatch.from_json(c) for c in data.get("codes") or ()),
                window_days=data.get("window_days"),
                unit=data.get("unit"),
                value_codes=tuple(CodeMatch.from_json(c) for c in data.get("value_codes") or ()),
            )
        except (KeyError, TypeError) as exc:
            raise FeatureSpecInvalid(f"feature spec entry unreadable: {exc!r}") from None


@dataclass(frozen=True)
class FeatureSet:
    """An ordered list of features: the columns a model was trained on."""

    features: tuple[FeatureSpec, ...]
    version: int = SPEC_VERSION
    notes: tuple[str, ...] = field(default_factory=tuple)

    def __post_init__(self) -> None:
        names = [f.name for f in self.features]
        if len(set(names)) != len(names):
            raise FeatureSpecInvalid("feature names must be unique")

    @property
    def names(self) -> list[str]:
        return [f.name for f in self.features]

    def to_json(self) -> dict[str, Any]:
        return {
            "version": self.version,
            "semantics": "models/risk/features/spec.py (module docstring)",
            "features": [f.to_json() for f in self.features],
        }

    def dumps(self) -> str:
        return json.dumps(self.to_json(), indent=2, sort_keys=True) + "\n"

    @classmethod
    def from_json(cls, data: Mapping[str, Any]) -> FeatureSet:
        if data.get("version") != SPEC_VERSION:
            raise FeatureSpecInvalid(f"feature spec version {data.get('version')} is not supported")
        return cls(tuple(FeatureSpec.from_json(f) for f in data.get("features") or ()))


# ----------------------------------------------------------------------------- declaring
def loinc(*codes: str) -> tuple[CodeMatch, ...]:
    return tuple(CodeMatch(LOINC, c) for c in codes)


def snomed(*codes: str) -> tuple[CodeMatch, ...]:
    return tuple(CodeMatch(SNOMED, c) for c in codes)


def atc(*prefixes: str) -> tuple[CodeMatch, ...]:
    return tuple(CodeMatch(ATC, p, prefix=True) for p in prefixes)


def encounter_class(*codes: str) -> tuple[CodeMatch, ...]:
    return tuple(CodeMatch(ACT_CODE, c) for c in codes)


def codes_of(*sets: str, extra: Iterable[CodeMatch] = ()) -> tuple[CodeMatch, ...]:
    """The codes of named sets in ``knowledge/code_sets.csv`` (expanded into the spec)."""
    found = [code for name in sets for code in code_set(name).codes]
    return tuple(dict.fromkeys([*found, *extra]))


def feature_set(features: Sequence[FeatureSpec]) -> FeatureSet:
    return FeatureSet(tuple(features))
