"""CHA2DS2-VASc (Lip et al., Chest 2010;137:263-272): stroke risk in atrial fibrillation.

C congestive heart failure 1, H hypertension 1, A2 age >= 75 2, D diabetes 1,
S2 prior stroke/TIA/thromboembolism 2, V vascular disease (prior MI, PAD, aortic plaque;
significant CAD per the 2020 ESC guideline) 1, A age 65-74 1, Sc female sex 1.
:func:`points` is the published score on explicit findings; :func:`assess` reads them from
the record (conditions anywhere in the record count, as "history of").
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

from fhir_adapters.patient_context import PatientContext
from models.risk import evidence as ev
from models.risk.kb import code_set, rules

SCORE_ID = "cha2ds2-vasc"
Sex = Literal["male", "female"]


@dataclass(frozen=True)
class Findings:
    age: int
    sex: Sex
    heart_failure: bool = False
    hypertension: bool = False
    diabetes: bool = False
    stroke_tia_thromboembolism: bool = False
    vascular_disease: bool = False


def points(findings: Findings) -> list[tuple[str, int]]:
    """Each item that scores, with its points (the score is their sum)."""
    items = [
        ("Congestive heart failure", 1, findings.heart_failure),
        ("Hypertension", 1, findings.hypertension),
        ("Age >= 75", 2, findings.age >= 75),
        ("Diabetes", 1, findings.diabetes),
        ("Stroke, TIA or thromboembolism", 2, findings.stroke_tia_thromboembolism),
        ("Vascular disease", 1, findings.vascular_disease),
        ("Age 65-74", 1, 65 <= findings.age <= 74),
        ("Female sex", 1, findings.sex == "female"),
    ]
    return [(label, value) for label, value, present in items if present]


def score(findings: Findings) -> int:
    return sum(value for _, value in points(findings))


def annual_stroke_rate_percent(value: int) -> float:
    """Adjusted annual stroke rate for a score (Euro Heart Survey, ESC 2010 Table 8b)."""
    return float(rules()["cha2ds2_vasc"]["annual_stroke_rate_percent"][str(min(value, 9))])


@dataclass(frozen=True)
class Cha2ds2VascAssessment:
    applicable: bool
    reason: str | None = None
    score: int | None = None
    items: tuple[tuple[str, int], ...] = ()
    inputs: tuple[ev.Evidence, ...] = ()
    missing: tuple[ev.Missing, ...] = ()
    atrial_fibrillation: ev.Evidence | None = None
    sex: Sex | None = None

    @property
    def annual_stroke_rate(self) -> float | None:
        return annual_stroke_rate_percent(self.score) if self.score is not None else None


def assess(patient: PatientContext) -> Cha2ds2VascAssessment:
    if not ev.conditions_known(patient):
        return Cha2ds2VascAssessment(
            False,
            "conditions could not be read from the EHR",
            missing=(ev.Missing("Conditions", "could not be read from the EHR"),),
        )
    af = ev.condition(
        patient, "Atrial fibrillation", code_set("atrial_fibrillation"), active_only=True
    )
    if af is None:
        return Cha2ds2VascAssessment(False, "no active atrial fibrillation or flutter")
    missing = []
    if patient.age_years is None:
        missing.append(ev.Missing("Age", "birth date not recorded"))
    if patient.sex not in ("male", "female"):
        missing.append(ev.Missing("Sex", "not recorded as male or female"))
    if missing:
        return Cha2ds2VascAssessment(True, missing=tuple(missing), atrial_fibrillation=af)
    found = {
        name: ev.condition(patient, label, code_set(name), active_only=False)
        for name, label in (
            ("heart_failure", "Heart failure"),
            ("hypertension", "Hypertension"),
            ("diabetes", "Diabetes"),
            ("stroke_tia_thromboembolism", "Stroke, TIA or thromboembolism"),
            ("vascular_disease", "Vascular disease"),
        )
    }
    assert patient.age_years is not None
    findings = Findings(
        age=patient.age_years,
        sex=patient.sex,  # type: ignore[arg-type]
        **{name: item is not None for name, item in found.items()},
    )
    inputs = [af, ev.Evidence("Age", patient.age_years, "years"), ev.Evidence("Sex", patient.sex)]
    inputs += [item for item in found.values() if item is not None]
    return Cha2ds2VascAssessment(
        True,
        score=score(findings),
        items=tuple(points(findings)),
        inputs=tuple(inputs),
        atrial_fibrillation=af,
        sex=findings.sex,
    )
