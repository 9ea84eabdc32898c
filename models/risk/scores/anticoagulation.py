"""Anticoagulation in atrial fibrillation, per the 2023 ACC/AHA/ACCP/HRS AF guideline
(Joglar et al., Circulation 2024;149:e1-e156, section 6.1): oral anticoagulation is
recommended at an annual stroke risk >= 2 % (CHA2DS2-VASc >= 2 in men, >= 3 in women;
class 1) and reasonable at 1-2 % (1 in men, 2 in women; class 2a); a DOAC is recommended
over warfarin except with moderate-to-severe mitral stenosis or a mechanical valve.

The suggested order is apixaban with the label's dose (5 mg twice daily; 2.5 mg with two
of age >= 80, weight <= 60 kg, creatinine >= 1.5 mg/dL), only when weight and creatinine
are recent and the eGFR is not below 15 (otherwise the card recommends, without an order).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

from fhir_adapters.patient_context import SNOMED, PatientContext
from models.draft_orders import ORAL_ROUTE, dosage_instruction, dose_quantity, medication_request
from models.risk import evidence as ev
from models.risk.kb import rules
from models.risk.scores.cha2ds2_vasc import Cha2ds2VascAssessment

GUIDELINE = (
    "2023 ACC/AHA/ACCP/HRS Guideline for the Diagnosis and Management of Atrial Fibrillation"
)
GUIDELINE_URL = "https://doi.org/10.1161/CIR.0000000000001193"
Strength = Literal["recommended", "reasonable", "not-recommended"]
WEIGHT, CREATININE, EGFR = ("29463-7",), ("2160-0", "38483-4"), ("33914-3", "62238-1", "98979-8")


@dataclass(frozen=True)
class AnticoagulationAdvice:
    strength: Strength
    text: str
    #: Active oral anticoagulants (warfarin, DOACs).
    current: tuple[ev.Evidence, ...]
    #: The apixaban dose (mg twice daily) to suggest, or None (and why in ``no_order_reason``).
    apixaban_mg: float | None
    dose_reasons: tuple[str, ...] = ()
    dose_inputs: tuple[ev.Evidence, ...] = ()
    no_order_reason: str | None = None

    @property
    def anticoagulated(self) -> bool:
        return bool(self.current)


def advise(patient: PatientContext, stroke: Cha2ds2VascAssessment) -> AnticoagulationAdvice | None:
    if stroke.score is None or stroke.sex is None or not ev.medications_known(patient):
        return None
    cfg = rules()["cha2ds2_vasc"]
    current = tuple(
        ev.active_medications(
            patient, classes=frozenset({"anticoagulant_vka", "anticoagulant_doac"})
        )
    )
    rate = stroke.annual_stroke_rate
    if stroke.score >= cfg["recommended_min"][stroke.sex]:
        strength: Strength = "recommended"
        text = (
            f"CHA2DS2-VASc {stroke.score} (annual stroke risk about {rate:g} %): oral "
            "anticoagulation is recommended (class 1); a DOAC in preference to warfarin "
            "unless moderate-to-severe mitral stenosis or a mechanical heart valve."
        )
    elif stroke.score >= cfg["reasonable_min"][stroke.sex]:
        strength = "reasonable"
        text = (
            f"CHA2DS2-VASc {stroke.score} (annual stroke risk about {rate:g} %): oral "
            "anticoagulation is reasonable (class 2a) after a shared decision."
        )
    else:
        strength = "not-recommended"
        text = (
            f"CHA2DS2-VASc {stroke.score}: low stroke risk; anticoagulation is not "
            "indicated for stroke prevention."
        )
    dose, reasons, inputs, why_not = _apixaban_dose(patient)
    return AnticoagulationAdvice(strength, text, current, dose, reasons, inputs, why_not)


def _apixaban_dose(
    patient: PatientContext,
) -> tuple[float | None, tuple[str, ...], tuple[ev.Evidence, ...], str | None]:
    cfg, stale = rules()["apixaban"], rules()["stale_after_days"]
    weight = ev.latest_value(patient, "Body weight", WEIGHT, "kg", stale["weight"])
    creatinine = ev.latest_value(patient, "Creatinine", CREATININE, "mg/dL", stale["creatinine"])
    egfr = ev.latest_value(patient, "eGFR", EGFR, "mL/min/{1.73_m2}", stale["creatinine"])
    lacking = [m for m in (weight, creatinine) if isinstance(m, ev.Missing)]
    if lacking or patient.age_years is None:
        reason = "; ".join(m.describe() for m in lacking) or "age unknown"
        return None, (), (), f"no dose suggested: {reason}"
    assert isinstance(weight, ev.Evidence) and isinstance(creatinine, ev.Evidence)
    if isinstance(egfr, ev.Evidence) and float(egfr.value) < cfg["min_egfr"]:  # type: ignore[arg-type]
        return None, (), (egfr,), f"no dose suggested: eGFR {egfr.value} is below {cfg['min_egfr']}"
    criteria = [
        (f"age {patient.age_years} >= {cfg['reduce_age']}", patient.age_years >= cfg["reduce_age"]),
        (
            f"weight {weight.value} kg <= {cfg['reduce_weight_kg']}",
            float(weight.value) <= cfg["reduce_weight_kg"],
        ),  # type: ignore[arg-type]
        (
            f"creatinine {creatinine.value} mg/dL >= {cfg['reduce_creatinine_mg_dl']}",
            float(creatinine.value) >= cfg["reduce_creatinine_mg_dl"],
        ),  # type: ignore[arg-type]
    ]
    met = tuple(label for label, present in criteria if present)
    dose = cfg["reduced"]["dose_mg"] if len(met) >= 2 else cfg["standard"]["dose_mg"]
    return float(dose), met, (weight, creatinine), None


def apixaban_order(patient_id: str, dose_mg: float) -> dict[str, object]:
    """A draft FHIR R4 MedicationRequest: apixaban ``dose_mg`` by mouth twice daily for AF."""
    cfg = rules()["apixaban"]
    drug = cfg["reduced"] if dose_mg == cfg["reduced"]["dose_mg"] else cfg["standard"]
    return medication_request(
        patient_id,
        (drug["rxnorm"], drug["display"]),
        reasons=[{"system": SNOMED, "code": "49436004", "display": "Atrial fibrillation"}],
        instruction=dosage_instruction(
            text=f"{drug['dose_mg']:g} mg by mouth twice daily",
            per_day=(2, 1, "d"),
            route=ORAL_ROUTE,
            dose=dose_quantity(1, "TAB", "tablet"),
        ),
    )
