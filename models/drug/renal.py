"""Renal dosing: draft orders checked against the patient's kidney function (eGFR).

Kidney function comes from the most recent of

* a reported eGFR: LOINC 98979-8 (CKD-EPI 2021), 62238-1 (CKD-EPI), 33914-3 (MDRD), in
  mL/min/1.73 m²; or
* an eGFR computed here from the latest serum creatinine (LOINC 2160-0 or 38483-4, in
  mg/dL) with the race-free CKD-EPI 2021 equation (Inker et al., N Engl J Med
  2021;385:1737-49), which needs the patient's sex (male/female) and an age of 18 or more.

When both exist the more recent wins (a tie goes to the reported value). Values older
than :data:`MAX_AGE_DAYS` (365 days) before ``today`` are ignored: kidney function
changes, and a year-old value says little about today. With no usable value there is no
renal alert at all: nothing is guessed. A reported value given as a bound (``>60``) never
fires a rule, since the true value is not known.

Rules are ``knowledge/renal_rules.csv`` (``id,target,max_egfr,severity,action,detail,
source,source_url``); a rule fires when eGFR < ``max_egfr``. ``target`` is
``ingredient:<name>`` or ``class:<tag>``. Many sources state their thresholds as
creatinine clearance (Cockcroft-Gault); eGFR is used in its place, which the card says.
Per draft and target only the most severe firing rule (then the lowest threshold) is
reported.
"""

from __future__ import annotations

import csv
import math
import re
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import UTC, date, datetime
from functools import cache
from pathlib import Path
from typing import Literal

from fhir_adapters.patient_context import Measurement, PatientContext
from models.drug.findings import SEVERITY_RANK, Citation, Finding, Severity, SuggestedAction
from models.drug.normalise import DrugIdentity, ingredient_classes

KNOWLEDGE = Path(__file__).resolve().parent / "knowledge"
#: Reported eGFR codes, in order of preference when two share a timestamp.
EGFR_LOINCS = ("98979-8", "62238-1", "33914-3")
CREATININE_LOINCS = ("2160-0", "38483-4")
#: Values older than this many days before ``today`` are not used.
MAX_AGE_DAYS = 365
#: µmol/L per mg/dL of creatinine (molar mass 113.12 g/mol).
CREATININE_UMOL_PER_MG_DL = 88.42
CKD_EPI_2021_SOURCE = Citation(
    "Inker LA et al. New creatinine- and cystatin C-based equations to estimate GFR without "
    "race. N Engl J Med 2021;385:1737-49 (CKD-EPI 2021)",
    "https://doi.org/10.1056/NEJMoa2102953",
)
CRCL_NOTE = (
    "Several sources state this threshold as creatinine clearance (Cockcroft-Gault); "
    "eGFR is used in its place here: check CrCl where the patient's size or age makes "
    "them differ."
)

TIMES = "\u00d7"  # the multiplication sign, for the arithmetic shown on cards

EgfrSource = Literal["reported", "CKD-EPI 2021"]


@dataclass(frozen=True)
class KidneyFunction:
    """The eGFR the renal rules use, and where it came from."""

    egfr: float
    source: EgfrSource
    measured_on: date
    loinc: str
    observation_id: str | None = None
    #: Set when computed: the creatinine, and the age and sex put into CKD-EPI 2021.
    creatinine_mg_dl: float | None = None
    age: int | None = None
    sex: str | None = None
    #: The value was reported as a lower bound (e.g. ``>60``).
    lower_bound: bool = False

    def describe(self) -> str:
        """One line for the card: the value, how it was obtained and when."""
        bound = ">" if self.lower_bound else ""
        head = f"eGFR {bound}{self.egfr:.0f} mL/min/1.73 m²"
        when = self.measured_on.isoformat()
        if self.source == "reported":
            return f"{head} (reported, LOINC {self.loinc}, {when})"
        return (
            f"{head} (CKD-EPI 2021 from serum creatinine {self.creatinine_mg_dl:g} mg/dL on "
            f"{when}; {self.sex}, {self.age} y)"
        )

    def arithmetic(self) -> str | None:
        """The CKD-EPI 2021 computation written out, for a computed value."""
        if self.source != "CKD-EPI 2021" or self.creatinine_mg_dl is None:
            return None
        female = self.sex == "female"
        kappa, alpha = (0.7, -0.241) if female else (0.9, -0.302)
        scr = self.creatinine_mg_dl
        sex_factor = f" {TIMES} 1.012" if female else ""
        return (
            f"142 {TIMES} min({scr:g}/{kappa}, 1)^{alpha} {TIMES} max({scr:g}/{kappa}, 1)^-1.200 "
            f"{TIMES} 0.9938^{self.age}{sex_factor} = {self.egfr:.1f} mL/min/1.73 m²"
        )

    def facts(self) -> dict[str, object]:
        facts: dict[str, object] = {
            "egfr": round(self.egfr, 1),
            "egfr_source": self.source,
            "date": self.measured_on.isoformat(),
            "loinc": self.loinc,
        }
        if self.creatinine_mg_dl is not None:
            facts["creatinine_mg_dl"] = self.creatinine_mg_dl
        if self.lower_bound:
            facts["lower_bound"] = True
        return facts


def ckd_epi_2021(creatinine_mg_dl: float, age: float, sex: str) -> float:
    """eGFR (mL/min/1.73 m²) by the race-free CKD-EPI 2021 creatinine equation.

    eGFR = 142 * min(Scr/k, 1)^a * max(Scr/k, 1)^-1.200 * 0.9938^age * 1.012 [if female],
    k (kappa) = 0.7 (female) or 0.9 (male), a (alpha) = -0.241 (female) or -0.302 (male).
    """
    if sex not in ("female", "male"):
        raise ValueError(f"CKD-EPI 2021 needs sex female or male, not {sex!r}")
    if creatinine_mg_dl <= 0:
        raise ValueError("serum creatinine must be positive")
    female = sex == "female"
    kappa, alpha = (0.7, -0.241) if female else (0.9, -0.302)
    ratio = creatinine_mg_dl / kappa
    egfr = 142 * min(ratio, 1) ** alpha * max(ratio, 1) ** -1.200 * 0.9938**age
    return egfr * 1.012 if female else egfr


# --- kidney function from the record ---------------------------------------------------

_BOUND = re.compile(r"^\s*(>=?|≥)\s*(\d+(?:\.\d+)?)\s*$")
_EGFR_UNITS = frozenset({"ml/min/1.73m2", "ml/min"})


def _unit_key(unit: str | None) -> str:
    return re.sub(r"[\s{}_]", "", (unit or "")).lower().replace("m^2", "m2")


def _when(measurement: Measurement) -> datetime | None:
    effective = measurement.effective
    if effective is None:
        return None
    return effective if effective.tzinfo else effective.replace(tzinfo=UTC)


def _reported(measurement: Measurement, on: date) -> KidneyFunction | None:
    value, lower_bound = measurement.value, False
    if value is None and measurement.value_text:
        bound = _BOUND.match(measurement.value_text)
        if bound is None:
            return None
        value, lower_bound = float(bound.group(2)), True
    if value is None:
        return None
    if measurement.normalised is not None:
        value = measurement.normalised.value
    elif _unit_key(measurement.unit) not in _EGFR_UNITS:
        return None  # an unknown unit: no guessing
    if not 0 < value < 250:
        return None
    return KidneyFunction(
        egfr=value,
        source="reported",
        measured_on=on,
        loinc=measurement.loinc,
        observation_id=measurement.observation_id,
        lower_bound=lower_bound,
    )


def _creatinine_mg_dl(measurement: Measurement) -> float | None:
    if measurement.value is None:
        return None
    if measurement.normalised is not None and measurement.normalised.unit == "mg/dL":
        value = measurement.normalised.value
    else:
        unit = _unit_key(measurement.unit)
        if unit == "mg/dl":
            value = measurement.value
        elif unit in ("umol/l", "µmol/l", "μmol/l"):
            value = measurement.value / CREATININE_UMOL_PER_MG_DL
        else:
            return None
    return value if 0.1 <= value <= 30 else None  # outside is not a plausible result


def _age_on(patient: PatientContext, on: date) -> int | None:
    born = patient.birth_date
    if born is None:
        return patient.age_years
    return on.year - born.year - ((on.month, on.day) < (born.month, born.day))


def _computed(measurement: Measurement, on: date, patient: PatientContext) -> KidneyFunction | None:
    creatinine = _creatinine_mg_dl(measurement)
    age = _age_on(patient, on)
    if creatinine is None or age is None or age < 18 or patient.sex not in ("female", "male"):
        return None  # CKD-EPI is for adults of known sex: no guessing otherwise
    return KidneyFunction(
        egfr=ckd_epi_2021(creatinine, age, patient.sex),
        source="CKD-EPI 2021",
        measured_on=on,
        loinc=measurement.loinc,
        observation_id=measurement.observation_id,
        creatinine_mg_dl=round(creatinine, 2),
        age=age,
        sex=patient.sex,
    )


def kidney_function(patient: PatientContext, today: date) -> KidneyFunction | None:
    """The most recent usable eGFR (reported or CKD-EPI 2021), at most a year old."""
    candidates: list[tuple[datetime, int, KidneyFunction]] = []
    for preference, loinc in enumerate(EGFR_LOINCS + CREATININE_LOINCS):
        measurement = patient.measurement(loinc)
        when = _when(measurement) if measurement else None
        if measurement is None or when is None:
            continue
        on = when.date()
        if (today - on).days > MAX_AGE_DAYS:
            continue
        if loinc in EGFR_LOINCS:
            found = _reported(measurement, on)
        else:
            found = _computed(measurement, on, patient)
        if found is not None:
            candidates.append((when, -preference, found))
    if not candidates:
        return None
    return max(candidates, key=lambda c: (c[0], c[1]))[2]


# --- rules -----------------------------------------------------------------------------


@dataclass(frozen=True)
class RenalRule:
    id: str
    target: str
    max_egfr: float
    severity: Severity
    action: str
    detail: str
    source: str
    source_url: str | None

    @property
    def citation(self) -> Citation:
        return Citation(self.source, self.source_url)


@cache
def renal_rules() -> tuple[RenalRule, ...]:
    """The rows of ``knowledge/renal_rules.csv``, read once."""
    with (KNOWLEDGE / "renal_rules.csv").open(newline="", encoding="utf-8") as handle:
        rows = list(csv.DictReader(handle))
    rules = []
    for row in rows:
        severity = row["severity"].strip()
        if severity not in SEVERITY_RANK:
            raise ValueError(f"renal rule {row['id']}: unknown severity {severity!r}")
        rules.append(
            RenalRule(
                id=row["id"].strip(),
                target=row["target"].strip(),
                max_egfr=float(row["max_egfr"]),
                severity=severity,  # type: ignore[arg-type]
                action=row["action"].strip(),
                detail=row["detail"].strip(),
                source=row["source"].strip(),
                source_url=row["source_url"].strip() or None,
            )
        )
    return tuple(rules)


def _matched_ingredient(identity: DrugIdentity, target: str) -> str | None:
    """The ingredient of ``identity`` the rule target names, if any."""
    kind, _, name = target.partition(":")
    if kind == "ingredient":
        return name if name in identity.ingredients else None
    if kind == "class":
        for ingredient in identity.ingredients:
            classes = ingredient_classes(ingredient)
            # Low-dose aspirin (an antiplatelet) is kept in CKD for cardiovascular
            # prevention; the NSAID kidney rule is about analgesic NSAIDs.
            if name == "nsaid" and "antiplatelet" in classes:
                continue
            if name in classes:
                return ingredient
        return None
    raise ValueError(f"renal rule target must be ingredient:<name> or class:<tag>: {target!r}")


def _finding(
    draft_id: str | None, ingredient: str, rule: RenalRule, kidney: KidneyFunction
) -> Finding:
    drug = ingredient[:1].upper() + ingredient[1:]
    summary = (
        f"{drug} with eGFR {kidney.egfr:.0f} ({kidney.measured_on.isoformat()}): {rule.action}"
    )
    lines = [
        f"**{drug}** is ordered and the patient's {kidney.describe()} is below {rule.max_egfr:g}.",
        "",
        rule.detail,
    ]
    arithmetic = kidney.arithmetic()
    if arithmetic:
        lines += ["", f"CKD-EPI 2021 (race-free): {arithmetic}."]
    if "CrCl" in rule.action or "CrCl" in rule.detail or "creatinine clearance" in rule.detail:
        lines += ["", CRCL_NOTE]
    lines += ["", f"Source: {rule.source}."]
    citations = [rule.citation]
    if kidney.source == "CKD-EPI 2021":
        citations.append(CKD_EPI_2021_SOURCE)
    suggestions: tuple[SuggestedAction, ...] = ()
    if rule.severity == "critical" and draft_id:
        suggestions = (SuggestedAction(f"Remove the {ingredient} order", "delete-draft", draft_id),)
    return Finding(
        kind="renal",
        severity=rule.severity,
        summary=summary[:139],
        detail="\n".join(lines),
        citations=tuple(citations),
        draft_order_id=draft_id,
        dedupe_key=f"renal:{rule.target}:{draft_id or ingredient}",
        suggestions=suggestions,
        facts={**kidney.facts(), "rule": rule.id, "threshold": rule.max_egfr},
    )


def check_renal(
    drafts: Sequence[tuple[str | None, DrugIdentity]], patient: PatientContext, today: date
) -> list[Finding]:
    """Renal-dosing findings for the draft orders, given the patient's latest eGFR.

    ``drafts`` are ``(draft order id, identity)`` pairs. No usable eGFR (none, older than a
    year, or a bound such as ``>60``) means no findings.
    """
    kidney = kidney_function(patient, today)
    if kidney is None or kidney.lower_bound or math.isnan(kidney.egfr):
        return []
    findings = []
    for draft_id, identity in drafts:
        if not identity.identified:
            continue
        best: dict[str, tuple[RenalRule, str]] = {}
        for rule in renal_rules():
            if not kidney.egfr < rule.max_egfr:
                continue
            ingredient = _matched_ingredient(identity, rule.target)
            if ingredient is None:
                continue
            current = best.get(rule.target)
            rank = (SEVERITY_RANK[rule.severity], rule.max_egfr)
            if current is None or rank < (SEVERITY_RANK[current[0].severity], current[0].max_egfr):
                best[rule.target] = (rule, ingredient)
        findings += [_finding(draft_id, ing, rule, kidney) for rule, ing in best.values()]
    return findings


__all__ = [
    "CREATININE_LOINCS",
    "EGFR_LOINCS",
    "MAX_AGE_DAYS",
    "KidneyFunction",
    "RenalRule",
    "check_renal",
    "ckd_epi_2021",
    "kidney_function",
    "renal_rules",
]
