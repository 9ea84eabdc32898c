"""``cardiovascular-risk`` (patient-view): the validated cardiovascular scores, as cards only
when there is something to act on.

* ASCVD: the Pooled Cohort Equations and the 2018/2019 statin rules (``models.risk.scores``).
  A card when a statin is indicated (or to be discussed) and none is active, with a draft
  statin MedicationRequest when the rule names an intensity; when the 10-year risk cannot
  be estimated for a patient whose statin decision depends on it (40-75 years, no statin,
  no diabetes), a card that says which inputs are missing or stale, with a draft lipid
  panel when lipids are what is missing.
* Atrial fibrillation: CHA2DS2-VASc with HAS-BLED beside it. A card when anticoagulation is
  recommended or reasonable and none is active (with a draft apixaban order at the label's
  dose when weight and creatinine are recent), or when an anticoagulated patient's
  HAS-BLED is >= 3 (review modifiable bleeding risks).

Every card lists the inputs it used with their dates, links to the score's description
(``/models/<id>/``) and carries a ``risk-assessment`` result for the audit log.
"""

from __future__ import annotations

from cds.cards import Action, Card, Source, Suggestion
from cds.config import Settings
from cds.model_pages import card_links
from cds.results import CardResult, Code
from cds.services.registry import CdsService, HookCall, ServiceResult
from cds.services.risk_common import (
    basis,
    bullet_inputs,
    bullet_missing,
    prefetch,
    result_inputs,
    service_result,
    threshold,
    usage_requirements,
)
from fhir_adapters.patient_context import LOINC, PatientContext
from models import registry
from models.risk import evidence as ev
from models.risk.catalog import RISK_OUTCOME_SYSTEM
from models.risk.scores import anticoagulation, cha2ds2_vasc, has_bled, pce, statin

PCE_CODE = Code(
    system=LOINC,
    code="79423-0",
    display="Cardiovascular disease 10Y risk [Likelihood] ACC-AHA Pooled Cohort by Goff 2013",
)
STATIN_CODE = Code(
    system=RISK_OUTCOME_SYSTEM,
    code="statin-indication",
    display="Statin indication (2018 AHA/ACC cholesterol guideline)",
)
STROKE_CODE = Code(
    system=RISK_OUTCOME_SYSTEM,
    code="af-stroke-1y",
    display="Stroke or systemic embolism in atrial fibrillation, annual rate",
)
BLEEDING_CODE = Code(
    system=RISK_OUTCOME_SYSTEM,
    code="af-major-bleeding-1y",
    display="Major bleeding on anticoagulation, annual rate",
)
PCE_SOURCE = Source(
    label="ACC/AHA Pooled Cohort Equations; 2018 AHA/ACC cholesterol guideline",
    url="https://doi.org/10.1161/CIR.0000000000000625",
)
AF_SOURCE = Source(label=anticoagulation.GUIDELINE, url=anticoagulation.GUIDELINE_URL)
#: Default action threshold of the PCE card: borderline risk (2019 guideline) and above.
PCE_DEFAULT_THRESHOLD = 0.05
INDICATOR = {"borderline": "info", "intermediate": "warning", "high": "warning"}
#: What the scores read (the learned models' list without the encounters).
PREFETCH_KEYS = (
    "patient",
    "condition_history",
    "medication_history",
    "observations",
    "smoking_status",
)


def _percent(probability: float) -> str:
    return f"{100 * probability:.1f} %"


# ----------------------------------------------------------------------------- ASCVD
def _statin_suggestion(patient_id: str, rec: statin.StatinRecommendation) -> list[Suggestion]:
    if not rec.suggest_order or rec.intensity is None:
        return []
    order = statin.statin_order(patient_id, rec.intensity)
    label = (
        f"Order a {rec.intensity}-intensity statin ({order['medicationCodeableConcept']['text']})"  # type: ignore[index]
    )
    return [
        Suggestion(
            label=label[:140],
            isRecommended=True,
            actions=[Action(type="create", description=label, resource=order)],
        )
    ]


def _pce_card(
    settings: Settings | None,
    patient: PatientContext,
    assessment: pce.PceAssessment,
    rec: statin.StatinRecommendation,
) -> tuple[Card, CardResult] | None:
    """The statin card: secondary prevention, LDL >= 190, diabetes, or a PCE band."""
    if not rec.actionable:
        return None
    risk = assessment.risk
    if rec.category == "primary-prevention":
        if risk is None or risk < threshold(settings, pce.SCORE_ID, PCE_DEFAULT_THRESHOLD):
            return None
        summary = f"10-year ASCVD risk {_percent(risk)} ({assessment.band}): no statin active"
        indicator = INDICATOR.get(assessment.band or "", "info")
    elif rec.category == "secondary-prevention":
        summary = "Clinical ASCVD without an active statin: " + (
            "high-intensity statin indicated"
            if rec.strength == "I"
            else "statin reasonable (age > 75)"
        )
        indicator = "warning"
    elif rec.category == "severe-hypercholesterolaemia":
        summary = "LDL-C >= 190 mg/dL without an active statin: high-intensity statin indicated"
        indicator = "warning"
    else:
        summary = "Diabetes, age 40-75, no statin active: statin therapy indicated"
        indicator = "warning"
    inputs = list(assessment.inputs) or [ev.Evidence("Age", patient.age_years, "years")]
    inputs += rec.basis
    detail = [f"**Recommendation**: {rec.text}"]
    if risk is not None:
        detail.append(
            f"**10-year risk of a first hard ASCVD event** (Pooled Cohort Equations): "
            f"**{_percent(risk)}**, {assessment.band_label}. Computed with the "
            f"{assessment.equations}."
        )
    elif assessment.missing:
        detail.append("10-year risk not estimated; missing:\n" + bullet_missing(assessment.missing))
    detail.append("**Inputs used**:\n" + bullet_inputs(inputs))
    if not any(i.name == "LDL cholesterol" for i in rec.basis):
        detail.append(
            "LDL-C: no usable value in the last 5 years (the >= 190 and < 70 mg/dL rules "
            "could not be checked)."
        )
    detail.append(
        "Risk-enhancing factors (family history, CKD, metabolic syndrome, inflammatory "
        "disease, ...) and the patient's preferences belong in the decision."
    )
    suggestions = _statin_suggestion(patient.patient_id, rec)
    card = Card(
        summary=summary[:139],
        detail="\n\n".join(detail),
        indicator=indicator,  # type: ignore[arg-type]
        source=PCE_SOURCE,
        suggestions=suggestions,
        selectionBehavior="at-most-one" if suggestions else None,
        links=card_links(settings, pce.SCORE_ID, "How the ASCVD risk and statin rules work"),
    )
    result = CardResult(
        kind="risk-assessment",
        code=PCE_CODE if risk is not None else STATIN_CODE,
        model=pce.SCORE_ID,
        probability=risk,
        qualitative=assessment.band or rec.category,
        horizon_years=10 if risk is not None else None,
        inputs=result_inputs(inputs),
        basis=basis(inputs),
        text=rec.text,
        facts={
            "statin_category": rec.category,
            "intensity": rec.intensity,
            "equations": assessment.equations,
        },
    )
    return card, result


def _pce_refusal_card(
    settings: Settings | None,
    patient: PatientContext,
    assessment: pce.PceAssessment,
    rec: statin.StatinRecommendation | None,
) -> tuple[Card, CardResult] | None:
    """The PCE could not be computed for a patient whose statin decision depends on it."""
    age = patient.age_years
    if (
        not assessment.applicable
        or assessment.computed
        or rec is not None
        or age is None
        or not 40 <= age <= 75
        or ev.active_medications(patient, classes=frozenset({"statin"}))
    ):
        return None
    lipids_missing = any(
        m.name in ("Total cholesterol", "HDL cholesterol") for m in assessment.missing
    )
    suggestions = []
    if lipids_missing:
        order = statin.lipid_panel_order(patient.patient_id)
        suggestions.append(
            Suggestion(
                label="Order a lipid panel",
                actions=[Action(type="create", description="Order a lipid panel", resource=order)],
            )
        )
    names = ", ".join(m.name.lower() for m in assessment.missing)
    card = Card(
        summary=f"10-year ASCVD risk not estimated: {names} missing or out of date"[:139],
        detail=(
            "The Pooled Cohort Equations need recent values; the service does not guess.\n\n"
            f"**Missing or stale**:\n{bullet_missing(assessment.missing)}\n\n"
            f"**Available**:\n{bullet_inputs(assessment.inputs)}"
        ),
        indicator="info",
        source=PCE_SOURCE,
        suggestions=suggestions,
        selectionBehavior="at-most-one" if suggestions else None,
        links=card_links(settings, pce.SCORE_ID, "Which inputs the ASCVD risk needs"),
    )
    result = CardResult(
        kind="risk-assessment",
        code=PCE_CODE,
        model=pce.SCORE_ID,
        qualitative="not estimated",
        horizon_years=10,
        inputs=result_inputs(assessment.inputs),
        basis=basis(assessment.inputs),
        text="PCE not computed: " + "; ".join(m.describe() for m in assessment.missing),
        facts={"missing": [m.describe() for m in assessment.missing]},
    )
    return card, result


# ----------------------------------------------------------------------------- AF
def _has_bled_text(bleeding: has_bled.HasBledAssessment) -> str:
    if not bleeding.computed:
        return "**HAS-BLED** not shown; missing:\n" + bullet_missing(bleeding.missing)
    assert bleeding.score is not None
    rate = has_bled.bleeds_per_100_patient_years(bleeding.score)
    minimum = ">= " if bleeding.lower_bound else ""
    items = ", ".join(label for label, _ in bleeding.items) or "no item"
    text = (
        f"**HAS-BLED {minimum}{bleeding.score}** ({items})"
        + (f"; about {rate:g} major bleeds per 100 patient-years" if rate is not None else "")
        + (
            ". High bleeding risk: correct modifiable factors and review regularly; "
            "it is not by itself a reason to withhold anticoagulation."
            if bleeding.high_risk
            else "."
        )
    )
    if bleeding.notes:
        text += "\n\n" + "\n".join(f"- {note}" for note in bleeding.notes)
    return text


def _af_card(
    settings: Settings | None,
    patient: PatientContext,
    stroke: cha2ds2_vasc.Cha2ds2VascAssessment,
    bleeding: has_bled.HasBledAssessment,
    advice: anticoagulation.AnticoagulationAdvice,
) -> tuple[Card, CardResult] | None:
    assert stroke.score is not None and stroke.annual_stroke_rate is not None
    items = ", ".join(f"{label} +{points}" for label, points in stroke.items) or "no item"
    inputs = [*stroke.inputs, *bleeding.inputs, *advice.current, *advice.dose_inputs]
    unique_inputs = list({(i.name, i.reference, str(i.value)): i for i in inputs}.values())
    suggestions: list[Suggestion] = []
    if not advice.anticoagulated and advice.strength in ("recommended", "reasonable"):
        summary = f"AF, CHA2DS2-VASc {stroke.score}: anticoagulation {advice.strength}, none active"
        indicator = "warning"
        if advice.apixaban_mg is not None:
            order = anticoagulation.apixaban_order(patient.patient_id, advice.apixaban_mg)
            label = f"Order apixaban {advice.apixaban_mg:g} mg twice daily"
            suggestions.append(
                Suggestion(
                    label=label,
                    isRecommended=advice.strength == "recommended",
                    actions=[Action(type="create", description=label, resource=order)],
                )
            )
        dose = (
            f"Apixaban dose per label: **{advice.apixaban_mg:g} mg twice daily**"
            + (
                f" (dose-reduction criteria met: {', '.join(advice.dose_reasons)})."
                if advice.dose_reasons and advice.apixaban_mg < 5
                else "."
            )
            if advice.apixaban_mg is not None
            else f"No order suggested ({advice.no_order_reason})."
        )
    elif advice.anticoagulated and bleeding.high_risk:
        summary = (
            f"Anticoagulated AF with HAS-BLED {bleeding.score}: review modifiable bleeding risks"
        )
        indicator = "warning"
        dose = "Anticoagulation active: " + ", ".join(str(m.value) for m in advice.current) + "."
    else:
        return None
    detail = "\n\n".join(
        [
            f"**{advice.text}**",
            f"**CHA2DS2-VASc {stroke.score}** ({items}); adjusted stroke rate about "
            f"{stroke.annual_stroke_rate:g} % per year (Lip et al. 2010).",
            _has_bled_text(bleeding),
            dose,
            "**Inputs used**:\n" + bullet_inputs(unique_inputs),
        ]
    )
    card = Card(
        summary=summary[:139],
        detail=detail,
        indicator=indicator,  # type: ignore[arg-type]
        source=AF_SOURCE,
        suggestions=suggestions,
        selectionBehavior="at-most-one" if suggestions else None,
        links=card_links(
            settings, cha2ds2_vasc.SCORE_ID, "How CHA2DS2-VASc and HAS-BLED are scored"
        ),
    )
    result = CardResult(
        kind="risk-assessment",
        code=STROKE_CODE,
        model=cha2ds2_vasc.SCORE_ID,
        probability=stroke.annual_stroke_rate / 100,
        qualitative=f"anticoagulation {advice.strength}",
        horizon_years=1,
        inputs=result_inputs(unique_inputs),
        basis=basis(unique_inputs),
        text=advice.text,
        facts={
            "cha2ds2_vasc": stroke.score,
            "cha2ds2_vasc_items": [label for label, _ in stroke.items],
            "has_bled": bleeding.score,
            "has_bled_lower_bound": bleeding.lower_bound,
            "has_bled_items": [label for label, _ in bleeding.items],
            "anticoagulated": advice.anticoagulated,
            "apixaban_mg": advice.apixaban_mg,
        },
    )
    return card, result


# ----------------------------------------------------------------------------- the service
def assess(call: HookCall) -> ServiceResult:
    patient = call.patient
    if patient.deceased:
        return ServiceResult()
    pairs: list[tuple[Card, CardResult]] = []
    models = [registry.identity(pce.SCORE_ID)]
    assessment = pce.assess(patient)
    rec = statin.recommend(patient, assessment)
    settings = call.settings
    found = (_pce_card(settings, patient, assessment, rec) if rec else None) or (
        _pce_refusal_card(settings, patient, assessment, rec)
    )
    if found:
        pairs.append(found)
    stroke = cha2ds2_vasc.assess(patient)
    if stroke.score is not None:
        models += [registry.identity(cha2ds2_vasc.SCORE_ID), registry.identity(has_bled.SCORE_ID)]
        bleeding = has_bled.assess(patient)
        advice = anticoagulation.advise(patient, stroke)
        af = _af_card(settings, patient, stroke, bleeding, advice) if advice else None
        if af:
            pairs.append(af)
    return service_result(pairs, models)


SERVICE = CdsService(
    id="cardiovascular-risk",
    hook="patient-view",
    title="Cardiovascular risk (ASCVD, atrial fibrillation)",
    description=(
        "10-year ASCVD risk (ACC/AHA Pooled Cohort Equations) with the 2018/2019 statin "
        "recommendation, and CHA2DS2-VASc with HAS-BLED in atrial fibrillation: cards only "
        "when there is something to act on."
    ),
    handler=assess,
    prefetch=prefetch(PREFETCH_KEYS),
    usage_requirements=usage_requirements(
        PREFETCH_KEYS, "A score whose inputs could not be read says so instead of guessing."
    ),
)
