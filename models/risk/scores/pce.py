"""ACC/AHA Pooled Cohort Equations (Goff et al. 2013): 10-year risk of a first hard ASCVD event.

:func:`ten_year_risk` is the published equation on explicit inputs (coefficients in
``knowledge/pce_goff_2013.csv``, Table A of the guideline). :func:`assess` reads those
inputs from a PatientContext, each with its date, and refuses (lists what is missing or
stale) rather than guess. Race: the African-American equations for patients whose US Core
race includes "Black or African American" (OMB 2054-5); the white equations for everyone
else, as the guideline advises (they may overestimate risk in Asian and Hispanic Americans
and underestimate it in American Indians). The race-free AHA PREVENT equations (Khan et
al., Circulation 2024;149:430-449) are the newer alternative; see ``SCORES.md``.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Literal

from fhir_adapters.patient_context import PatientContext
from models.risk import evidence as ev
from models.risk.kb import code_set, pce_coefficients, rules

SCORE_ID = "ascvd-pce"
AFRICAN_AMERICAN = "2054-5"  # OMB race category, urn:oid:2.16.840.1.113883.6.238
WHITE = "2106-3"
TOTAL_CHOLESTEROL, HDL, SYSTOLIC, SMOKING = ("2093-3",), ("2085-9",), ("8480-6",), "72166-2"
LDL = ("18262-6", "13457-7")
#: ATC groups of blood-pressure-lowering drugs (WHO ATC: antihypertensives, diuretics,
#: beta blockers, calcium channel blockers, agents acting on the renin-angiotensin system).
BP_LOWERING_ATC = ("C02", "C03", "C07", "C08", "C09")

Sex = Literal["male", "female"]


@dataclass(frozen=True)
class PceInputs:
    age: float
    sex: Sex
    african_american: bool
    total_cholesterol: float  # mg/dL
    hdl: float  # mg/dL
    systolic_bp: float  # mm Hg
    treated_bp: bool
    smoker: bool
    diabetes: bool


def equation_group(sex: Sex, african_american: bool) -> str:
    return f"{'african_american' if african_american else 'white'}_{sex}"


def individual_sum(inputs: PceInputs) -> float:
    """Sum of coefficient x value (Table A's "Individual Sum")."""
    c = pce_coefficients()[equation_group(inputs.sex, inputs.african_american)]
    ln_age = math.log(inputs.age)
    ln_sbp = math.log(inputs.systolic_bp)
    terms = {
        "ln_age": ln_age,
        "ln_age_squared": ln_age**2,
        "ln_total_cholesterol": math.log(inputs.total_cholesterol),
        "ln_age_x_ln_total_cholesterol": ln_age * math.log(inputs.total_cholesterol),
        "ln_hdl": math.log(inputs.hdl),
        "ln_age_x_ln_hdl": ln_age * math.log(inputs.hdl),
        "ln_treated_sbp": ln_sbp if inputs.treated_bp else 0.0,
        "ln_age_x_ln_treated_sbp": ln_age * ln_sbp if inputs.treated_bp else 0.0,
        "ln_untreated_sbp": 0.0 if inputs.treated_bp else ln_sbp,
        "ln_age_x_ln_untreated_sbp": 0.0 if inputs.treated_bp else ln_age * ln_sbp,
        "smoker": 1.0 if inputs.smoker else 0.0,
        "ln_age_x_smoker": ln_age if inputs.smoker else 0.0,
        "diabetes": 1.0 if inputs.diabetes else 0.0,
    }
    return sum(c.get(term, 0.0) * value for term, value in terms.items())


def ten_year_risk(inputs: PceInputs) -> float:
    """Probability (0-1) of a first hard ASCVD event within 10 years."""
    c = pce_coefficients()[equation_group(inputs.sex, inputs.african_american)]
    return 1.0 - c["baseline_survival"] ** math.exp(individual_sum(inputs) - c["mean"])


def band(risk: float) -> dict[str, object]:
    """The 2019 primary-prevention risk category of a 10-year risk (0-1)."""
    percent = risk * 100
    chosen = rules()["pce"]["bands"][0]
    for candidate in rules()["pce"]["bands"]:
        if percent >= candidate["min_percent"]:
            chosen = candidate
    return chosen


@dataclass(frozen=True)
class PceAssessment:
    #: False: the equations do not apply (age, clinical ASCVD, sex); see ``reason``.
    applicable: bool
    reason: str | None = None
    risk: float | None = None
    band: str | None = None
    band_label: str | None = None
    inputs: tuple[ev.Evidence, ...] = ()
    missing: tuple[ev.Missing, ...] = ()
    #: Which equations and why (race handling stated).
    equations: str | None = None
    clinical_ascvd: ev.Evidence | None = None
    diabetes: bool | None = None
    notes: tuple[str, ...] = field(default_factory=tuple)

    @property
    def computed(self) -> bool:
        return self.risk is not None


def _race_group(patient: PatientContext) -> tuple[bool, str]:
    codes = {c.code for c in patient.race}
    if AFRICAN_AMERICAN in codes:
        return True, "African-American equations (US Core race: Black or African American)"
    if not codes:
        return False, "white equations (race not recorded; the guideline's default)"
    if codes <= {WHITE}:
        return False, "white equations (US Core race: White)"
    shown = ", ".join(sorted(c.display or c.code or "?" for c in patient.race))
    return False, (
        f"white equations for race '{shown}', as the guideline advises for groups other than "
        "African-American (may overestimate risk in Asian and Hispanic Americans, "
        "underestimate it in American Indians)"
    )


def _in_range(item: ev.Evidence | ev.Missing, key: str) -> ev.Evidence | ev.Missing:
    if isinstance(item, ev.Missing) or not isinstance(item.value, int | float):
        return item
    low, high = rules()["pce"]["input_ranges"][key]
    if low <= item.value <= high:
        return item
    return ev.Missing(
        item.name,
        f"{item.value} {item.unit} on {item.date.date().isoformat() if item.date else '?'} is "
        f"outside {low}-{high}, the range the equations were built on",
    )


def assess(patient: PatientContext) -> PceAssessment:
    """The PCE for this patient, or why it does not apply, or what it lacks."""
    cfg, stale = rules()["pce"], rules()["stale_after_days"]
    age = patient.age_years
    if patient.sex not in ("male", "female"):
        return PceAssessment(False, "sex is not recorded as male or female")
    if age is None:
        return PceAssessment(False, "age is not known")
    if not cfg["min_age"] <= age <= cfg["max_age"]:
        return PceAssessment(
            False, f"age {age} is outside {cfg['min_age']}-{cfg['max_age']} (PCE validity)"
        )
    if not ev.conditions_known(patient):
        return PceAssessment(
            True, missing=(ev.Missing("Conditions", "could not be read from the EHR"),)
        )
    ascvd = ev.condition(patient, "Clinical ASCVD", code_set("clinical_ascvd"), active_only=False)
    if ascvd is not None:
        return PceAssessment(
            False,
            "clinical ASCVD is recorded (secondary prevention: the PCE does not apply)",
            clinical_ascvd=ascvd,
        )
    african_american, equations = _race_group(patient)
    total = _in_range(
        ev.latest_value(patient, "Total cholesterol", TOTAL_CHOLESTEROL, "mg/dL", stale["lipids"]),
        "total_cholesterol_mg_dl",
    )
    hdl = _in_range(
        ev.latest_value(patient, "HDL cholesterol", HDL, "mg/dL", stale["lipids"]), "hdl_mg_dl"
    )
    sbp = _in_range(
        ev.latest_value(
            patient, "Systolic blood pressure", SYSTOLIC, "mm[Hg]", stale["blood_pressure"]
        ),
        "systolic_bp_mm_hg",
    )
    smoking, smoking_codes = ev.latest_coded(
        patient, "Smoking status", SMOKING, stale["smoking_status"]
    )
    diabetes = ev.condition(patient, "Diabetes", code_set("diabetes"), active_only=False)
    missing: list[ev.Missing] = [
        item for item in (total, hdl, sbp, smoking) if isinstance(item, ev.Missing)
    ]
    if not ev.medications_known(patient):
        missing.append(ev.Missing("Blood-pressure treatment", "medications could not be read"))
    smoker = bool(set(smoking_codes) & {c.code for c in code_set("current_smoker").codes})
    if isinstance(smoking, ev.Evidence) and not smoker:
        known = {c.code for c in code_set("non_smoker").codes}
        if not set(smoking_codes) & known:
            missing.append(
                ev.Missing("Smoking status", f"'{smoking.value}' is not a recognised status code")
            )
    treatment = ev.active_medications(patient, atc_prefixes=BP_LOWERING_ATC)
    age_evidence = ev.Evidence("Age", age, "years")
    sex_evidence = ev.Evidence("Sex", patient.sex)
    inputs = [age_evidence, sex_evidence]
    inputs += [item for item in (total, hdl, sbp, smoking) if isinstance(item, ev.Evidence)]
    inputs.append(diabetes or ev.Evidence("Diabetes", False))
    inputs += treatment or [ev.Evidence("Blood-pressure treatment", False)]
    if missing:
        return PceAssessment(
            True,
            inputs=tuple(inputs),
            missing=tuple(missing),
            equations=equations,
            diabetes=diabetes is not None,
        )
    assert isinstance(total, ev.Evidence) and isinstance(hdl, ev.Evidence)
    assert isinstance(sbp, ev.Evidence)
    risk = ten_year_risk(
        PceInputs(
            age=float(age),
            sex=patient.sex,  # type: ignore[arg-type]
            african_american=african_american,
            total_cholesterol=float(total.value),  # type: ignore[arg-type]
            hdl=float(hdl.value),  # type: ignore[arg-type]
            systolic_bp=float(sbp.value),  # type: ignore[arg-type]
            treated_bp=bool(treatment),
            smoker=smoker,
            diabetes=diabetes is not None,
        )
    )
    chosen = band(risk)
    return PceAssessment(
        True,
        risk=risk,
        band=str(chosen["name"]),
        band_label=str(chosen["label"]),
        inputs=tuple(inputs),
        equations=equations,
        diabetes=diabetes is not None,
    )
