"""HAS-BLED (Pisters et al., Chest 2010;138:1093-1100): one-year major bleeding risk in AF.

H uncontrolled hypertension (SBP > 160) 1; A abnormal renal function 1 and abnormal liver
function 1; S stroke 1; B bleeding history or predisposition (anaemia) 1; L labile INR 1;
E elderly (> 65) 1; D drugs (antiplatelets, NSAIDs) 1 and alcohol excess 1.

Shown "when data allow": the score refuses without a recent systolic pressure, or without
either a recent creatinine or a recorded dialysis/transplant/ESRD. Items that rest on the
problem list when the labs that could also show them are absent (liver tests, haemoglobin)
are counted from the problem list and said so; a labile-INR item that cannot be judged
(fewer than three INRs in 180 days on a vitamin K antagonist) makes the score a lower bound.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Literal

from fhir_adapters.patient_context import PatientContext
from models.risk import evidence as ev
from models.risk.evidence import today_of
from models.risk.kb import code_set, rules

SCORE_ID = "has-bled"
SYSTOLIC, CREATININE, HAEMOGLOBIN = ("8480-6",), ("2160-0", "38483-4"), ("718-7",)
BILIRUBIN, AST, ALT, ALP = ("1975-2",), ("1920-8",), ("1742-6",), ("6768-6",)
INR = ("6301-6", "34714-6")
Sex = Literal["male", "female"]


@dataclass(frozen=True)
class Findings:
    age: int
    uncontrolled_hypertension: bool = False
    abnormal_renal: bool = False
    abnormal_liver: bool = False
    stroke: bool = False
    bleeding_or_predisposition: bool = False
    labile_inr: bool = False
    drugs: bool = False
    alcohol: bool = False


def points(findings: Findings) -> list[tuple[str, int]]:
    cfg = rules()["has_bled"]
    items = [
        ("Uncontrolled hypertension (SBP > 160)", findings.uncontrolled_hypertension),
        ("Abnormal renal function", findings.abnormal_renal),
        ("Abnormal liver function", findings.abnormal_liver),
        ("Stroke", findings.stroke),
        ("Bleeding history or predisposition", findings.bleeding_or_predisposition),
        ("Labile INR", findings.labile_inr),
        (f"Elderly (> {cfg['elderly_over_age']})", findings.age > cfg["elderly_over_age"]),
        ("Antiplatelet or NSAID", findings.drugs),
        ("Alcohol excess", findings.alcohol),
    ]
    return [(label, 1) for label, present in items if present]


def score(findings: Findings) -> int:
    return len(points(findings))


def bleeds_per_100_patient_years(value: int) -> float | None:
    table = rules()["has_bled"]["bleeds_per_100_patient_years"]
    return float(table[str(value)]) if str(value) in table else None


@dataclass(frozen=True)
class HasBledAssessment:
    computed: bool
    score: int | None = None
    items: tuple[tuple[str, int], ...] = ()
    inputs: tuple[ev.Evidence, ...] = ()
    missing: tuple[ev.Missing, ...] = ()
    #: How items were judged from incomplete data (stated on the card).
    notes: tuple[str, ...] = field(default_factory=tuple)
    #: True when an item could not be judged: the true score may be higher.
    lower_bound: bool = False

    @property
    def high_risk(self) -> bool:
        return self.score is not None and self.score >= rules()["has_bled"]["high_risk_min"]


def _value(item: ev.Evidence | ev.Missing) -> float | None:
    return float(item.value) if isinstance(item, ev.Evidence) else None  # type: ignore[arg-type]


def _labile_inr(patient: PatientContext) -> tuple[bool | None, list[ev.Evidence]]:
    """True/False from the INRs of the last 180 days, None when too few to judge."""
    cfg, window = rules()["has_bled"], rules()["stale_after_days"]["inr"]
    today = today_of(patient)
    values = [
        m
        for loinc in INR
        for m in patient.history.get(loinc, ())
        if m.value is not None and m.effective and (today - m.effective.date()).days <= window
    ]
    if len(values) < cfg["min_inr_values"]:
        return None, []
    low, high = cfg["inr_range"]
    in_range = sum(low <= float(m.value) <= high for m in values)  # type: ignore[arg-type]
    evidence = [
        ev.Evidence(
            "INR values in range (180 days)",
            f"{in_range} of {len(values)}",
            None,
            values[-1].effective,
        )
    ]
    return in_range / len(values) < cfg["labile_ttr_below"], evidence


def assess(patient: PatientContext) -> HasBledAssessment:
    cfg, stale = rules()["has_bled"], rules()["stale_after_days"]
    if patient.age_years is None:
        return HasBledAssessment(False, missing=(ev.Missing("Age", "birth date not recorded"),))
    if not ev.conditions_known(patient) or not ev.medications_known(patient):
        return HasBledAssessment(
            False, missing=(ev.Missing("Record", "conditions or medications could not be read"),)
        )
    inputs: list[ev.Evidence] = [ev.Evidence("Age", patient.age_years, "years")]
    missing: list[ev.Missing] = []
    notes: list[str] = []
    lower_bound = False

    sbp = ev.latest_value(
        patient, "Systolic blood pressure", SYSTOLIC, "mm[Hg]", stale["blood_pressure"]
    )
    if isinstance(sbp, ev.Missing):
        missing.append(sbp)
    else:
        inputs.append(sbp)

    renal_condition = ev.condition(
        patient,
        "Dialysis, kidney transplant or ESRD",
        code_set("severe_renal_disease"),
        active_only=False,
    )
    creatinine = ev.latest_value(patient, "Creatinine", CREATININE, "mg/dL", stale["creatinine"])
    if renal_condition is not None:
        inputs.append(renal_condition)
    if isinstance(creatinine, ev.Evidence):
        inputs.append(creatinine)
    elif renal_condition is None:
        missing.append(creatinine)
    if missing:
        return HasBledAssessment(False, inputs=tuple(inputs), missing=tuple(missing))

    liver_condition = ev.condition(
        patient, "Chronic liver disease", code_set("liver_disease"), active_only=True
    )
    liver_labs = {
        name: ev.latest_value(patient, name, codes, unit, stale["liver_tests"])
        for name, codes, unit in (
            ("Bilirubin", BILIRUBIN, "mg/dL"),
            ("AST", AST, "U/L"),
            ("ALT", ALT, "U/L"),
            ("Alkaline phosphatase", ALP, "U/L"),
        )
    }
    uln = cfg["uln"]
    bilirubin = _value(liver_labs["Bilirubin"])
    enzymes = [
        (v := _value(liver_labs[name])) is not None and v > 3 * limit
        for name, limit in (
            ("AST", uln["ast_u_l"]),
            ("ALT", uln["alt_u_l"]),
            ("Alkaline phosphatase", uln["alp_u_l"]),
        )
    ]
    liver_by_labs = (
        bilirubin is not None and bilirubin > 2 * uln["bilirubin_mg_dl"] and any(enzymes)
    )
    if liver_condition is not None:
        inputs.append(liver_condition)
    inputs += [item for item in liver_labs.values() if isinstance(item, ev.Evidence)]
    if liver_condition is None and bilirubin is None:
        notes.append("No liver tests in 2 years: liver function judged from the problem list.")

    bleeding = ev.condition(
        patient, "Bleeding or anaemia", code_set("bleeding_predisposition"), active_only=False
    )
    haemoglobin = ev.latest_value(patient, "Haemoglobin", HAEMOGLOBIN, "g/dL", stale["haemoglobin"])
    hb = _value(haemoglobin)
    anaemic = hb is not None and hb < cfg["anaemia_hb_g_dl"].get(patient.sex or "", 13.0)
    if bleeding is not None:
        inputs.append(bleeding)
    if isinstance(haemoglobin, ev.Evidence):
        inputs.append(haemoglobin)
    elif bleeding is None:
        notes.append("No haemoglobin in 2 years: anaemia judged from the problem list.")

    vka = ev.active_medications(patient, classes=frozenset({"anticoagulant_vka"}))
    labile: bool | None = False
    if vka:
        labile, inr_evidence = _labile_inr(patient)
        inputs += inr_evidence
        if labile is None:
            lower_bound = True
            notes.append(
                "On a vitamin K antagonist with fewer than 3 INRs in 180 days: labile INR "
                "could not be judged (score is a minimum)."
            )
    drugs = ev.active_medications(patient, classes=frozenset({"antiplatelet", "nsaid"}))
    inputs += drugs
    stroke = ev.condition(patient, "Stroke", code_set("stroke"), active_only=False)
    alcohol = ev.condition(patient, "Alcohol excess", code_set("alcohol_excess"), active_only=True)
    inputs += [item for item in (stroke, alcohol) if item is not None]

    renal_by_lab = (_value(creatinine) or 0.0) >= cfg["renal_creatinine_mg_dl"]
    findings = Findings(
        age=patient.age_years,
        uncontrolled_hypertension=(_value(sbp) or 0.0) > cfg["uncontrolled_sbp_mm_hg"],
        abnormal_renal=renal_condition is not None or renal_by_lab,
        abnormal_liver=liver_condition is not None or liver_by_labs,
        stroke=stroke is not None,
        bleeding_or_predisposition=bleeding is not None or anaemic,
        labile_inr=bool(labile),
        drugs=bool(drugs),
        alcohol=alcohol is not None,
    )
    return HasBledAssessment(
        True,
        score=score(findings),
        items=tuple(points(findings)),
        inputs=tuple(inputs),
        notes=tuple(notes),
        lower_bound=lower_bound,
    )
