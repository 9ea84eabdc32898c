"""Statin recommendation per the 2018 AHA/ACC cholesterol guideline and the 2019 ACC/AHA
primary-prevention guideline (Grundy et al., Circulation 2019;139:e1082-e1143; Arnett et al.,
Circulation 2019;140:e596-e646).

Order of the rules, as in the guideline's Figure 2: clinical ASCVD (secondary prevention),
LDL-C >= 190 mg/dL, diabetes at 40-75 years, then the PCE risk categories at 40-75 years
with LDL-C 70-189 mg/dL. The suggested order (a statin MedicationRequest) is only made
when a statin is indicated and none is active.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Literal

from fhir_adapters.patient_context import PatientContext
from models.draft_orders import ORAL_ROUTE, dosage_instruction, dose_quantity, medication_request
from models.risk import evidence as ev
from models.risk.kb import code_set, rules
from models.risk.scores.pce import LDL, PceAssessment

Intensity = Literal["moderate", "high"]
GUIDELINE = "2018 AHA/ACC cholesterol guideline; 2019 ACC/AHA primary prevention guideline"
GUIDELINE_URL = "https://doi.org/10.1161/CIR.0000000000000625"


@dataclass(frozen=True)
class StatinRecommendation:
    #: secondary-prevention | severe-hypercholesterolaemia | diabetes | primary-prevention
    category: str
    #: What the guideline says, in one sentence, with its class of recommendation.
    text: str
    #: The statin intensity the rule calls for (None: discuss, no statin by default).
    intensity: Intensity | None
    #: Active statins (empty: none active).
    current: tuple[ev.Evidence, ...]
    #: Worth a card: a statin is indicated (or to be discussed) and none is active.
    actionable: bool
    #: What the rule rests on besides the PCE's inputs (clinical ASCVD, LDL-C).
    basis: tuple[ev.Evidence, ...] = ()

    @property
    def strength(self) -> str:
        """The ACC/AHA class of recommendation named in ``text`` (I, IIa or IIb)."""
        found = re.findall(r"class (IIa|IIb|I)\b", self.text)
        return found[0] if found else ""

    @property
    def suggest_order(self) -> bool:
        return self.actionable and self.intensity is not None


def _current_statins(patient: PatientContext) -> tuple[ev.Evidence, ...]:
    return tuple(ev.active_medications(patient, classes=frozenset({"statin"})))


def recommend(patient: PatientContext, pce: PceAssessment) -> StatinRecommendation | None:
    """The statin rule that applies to this patient, or None (no rule applies / not assessable).

    Clinical ASCVD and LDL-C >= 190 mg/dL are read here too: those rules apply from age 20,
    where the PCE (40-79) says nothing."""
    cfg = rules()["statin"]
    age = patient.age_years
    if age is None or age < cfg["adult_min_age"] or not ev.medications_known(patient):
        return None
    current = _current_statins(patient)
    untreated = not current
    ascvd = pce.clinical_ascvd
    if ascvd is None and ev.conditions_known(patient):
        ascvd = ev.condition(
            patient, "Clinical ASCVD", code_set("clinical_ascvd"), active_only=False
        )
    ldl_item = ev.latest_value(
        patient, "LDL cholesterol", LDL, "mg/dL", rules()["stale_after_days"]["lipids"]
    )
    ldl = ldl_item.value if isinstance(ldl_item, ev.Evidence) else None
    basis = tuple(item for item in (ascvd, ldl_item) if isinstance(item, ev.Evidence))
    if ascvd is not None:
        if age <= cfg["secondary_prevention_high_intensity_max_age"]:
            text = (
                "Clinical ASCVD, age <= 75: high-intensity statin therapy is recommended to "
                "lower LDL-C by >= 50 % (class I)."
            )
        else:
            text = (
                "Clinical ASCVD, age > 75: it is reasonable to initiate moderate- or "
                "high-intensity statin therapy after weighing benefit, adverse effects, "
                "interactions and patient preferences (class IIa)."
            )
        return StatinRecommendation("secondary-prevention", text, "high", current, untreated, basis)
    if (
        isinstance(ldl, int | float)
        and ldl >= cfg["severe_ldl_mg_dl"]
        and age <= cfg["primary_prevention_max_age"]
    ):
        text = (
            f"LDL-C {ldl:g} mg/dL (>= 190), age 20-75: high-intensity statin therapy is "
            "recommended without a risk calculation (class I)."
        )
        return StatinRecommendation(
            "severe-hypercholesterolaemia", text, "high", current, untreated, basis
        )
    if age < cfg["primary_prevention_min_age"] or age > cfg["primary_prevention_max_age"]:
        if pce.computed and age > cfg["primary_prevention_max_age"]:
            text = (
                "Age > 75 without clinical ASCVD: clinical assessment and a risk discussion "
                "before starting a statin (class IIb)."
            )
            return StatinRecommendation("primary-prevention", text, None, current, False, basis)
        return None
    if pce.diabetes:
        high = pce.risk is not None and pce.risk >= 0.20
        text = (
            "Diabetes, age 40-75: moderate-intensity statin therapy is recommended regardless "
            "of estimated risk (class I)"
            + (
                "; with a 10-year risk >= 20 % it is reasonable to use high intensity (class IIa)."
                if high
                else "."
            )
        )
        return StatinRecommendation(
            "diabetes", text, "high" if high else "moderate", current, untreated, basis
        )
    if not pce.computed or pce.band is None:
        return None
    if isinstance(ldl, int | float) and ldl < cfg["min_ldl_mg_dl"]:
        return None  # the primary-prevention rules are for LDL-C 70-189 mg/dL
    if pce.band == "low":
        return None  # < 5 %: lifestyle; no statin rule to act on
    if pce.band == "borderline":
        text = (
            "Borderline risk (5 to < 7.5 %): if risk-enhancing factors are present, discuss "
            "moderate-intensity statin therapy (class IIb)."
        )
        return StatinRecommendation("primary-prevention", text, None, current, untreated, basis)
    if pce.band == "intermediate":
        text = (
            "Intermediate risk (7.5 to < 20 %): moderate-intensity statin therapy is "
            "recommended after a clinician-patient risk discussion (class I)."
        )
        return StatinRecommendation(
            "primary-prevention", text, "moderate", current, untreated, basis
        )
    text = (
        "High risk (>= 20 %): initiate statin therapy to lower LDL-C by >= 50 % "
        "(high intensity) (class I)."
    )
    return StatinRecommendation("primary-prevention", text, "high", current, untreated, basis)


def statin_order(patient_id: str, intensity: Intensity) -> dict[str, object]:
    """A draft FHIR R4 MedicationRequest for a once-daily statin of ``intensity``."""
    drug = rules()["statin"][f"{intensity}_intensity"]
    return medication_request(
        patient_id,
        (drug["rxnorm"], drug["display"]),
        instruction=dosage_instruction(
            text=f"{drug['dose_mg']} mg by mouth once daily",
            per_day=(1, 1, "d"),
            route=ORAL_ROUTE,
            dose=dose_quantity(1, "TAB", "tablet"),
        ),
    )


def lipid_panel_order(patient_id: str) -> dict[str, object]:
    """A draft FHIR R4 ServiceRequest for a lipid panel (when the PCE lacks lipids)."""
    code = rules()["lipid_panel"]
    return {
        "resourceType": "ServiceRequest",
        "status": "draft",
        "intent": "order",
        "subject": {"reference": f"Patient/{patient_id}"},
        "code": {
            "coding": [
                {"system": code["system"], "code": code["code"], "display": code["display"]}
            ],
            "text": "Lipid panel",
        },
    }
