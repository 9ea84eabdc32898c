"""The learned risk models, declared: outcome, who is scored, index dates, features.

Everything here is data. Training (:mod:`models.risk.training`) reads it to build the
data set and writes it into the artifact; serving (:mod:`models.risk.learned`) reads the
artifact's copy, so a deployed model always runs the definition it was trained with.

Why these two outcomes (the data decide; see ``MODEL_CARD.md`` for the counts): in the
300 shared Synthea patients, progression from prediabetes to type 2 diabetes after an
index date essentially never happens in the recorded years (0 events at 1 and 3 years),
and neither does new hypertension; first cardiovascular events (coronary heart disease,
myocardial infarction, stroke, heart failure, cardiac arrest) and emergency or inpatient
encounters are the outcomes with enough events to learn and to measure.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from models.risk.features.spec import (
    FeatureSet,
    FeatureSpec,
    atc,
    codes_of,
    encounter_class,
    feature_set,
    loinc,
    snomed,
)
from models.risk.kb import CodeMatch

RISK_OUTCOME_SYSTEM = "urn:wardround:risk:outcome"
YEAR = 365
#: The prefetch keys the learned models read: what the ``risk-models`` service declares and
#: what training builds each index date's PatientContext from (one list, so they agree).
PREFETCH_KEYS = (
    "patient",
    "condition_history",
    "medication_history",
    "encounters",
    "observations",
    "smoking_status",
)


@dataclass(frozen=True)
class Outcome:
    """The event predicted: first onset of a matching condition, or an encounter of a class."""

    code: str
    #: Clinical words ("a first cardiovascular event").
    label: str
    horizon_days: int
    condition_codes: tuple[CodeMatch, ...] = ()
    encounter_classes: tuple[str, ...] = ()
    #: Patients who already had the condition on the index date are not scored.
    exclude_prior: bool = False

    @property
    def horizon_years(self) -> float:
        return round(self.horizon_days / YEAR, 2)

    def to_json(self) -> dict[str, Any]:
        return {
            "code": self.code,
            "system": RISK_OUTCOME_SYSTEM,
            "label": self.label,
            "horizon_days": self.horizon_days,
            "condition_codes": [c.to_json() for c in self.condition_codes],
            "encounter_classes": list(self.encounter_classes),
            "exclude_prior": self.exclude_prior,
        }

    @classmethod
    def from_json(cls, data: dict[str, Any]) -> Outcome:
        return cls(
            code=data["code"],
            label=data["label"],
            horizon_days=int(data["horizon_days"]),
            condition_codes=tuple(CodeMatch.from_json(c) for c in data["condition_codes"]),
            encounter_classes=tuple(data["encounter_classes"]),
            exclude_prior=bool(data["exclude_prior"]),
        )


@dataclass(frozen=True)
class RiskModelSpec:
    id: str
    version: str
    title: str
    outcome: Outcome
    min_age: int
    max_age: int | None
    features: FeatureSet
    #: A condition that must already be recorded on the index date (e.g. prediabetes).
    requires: tuple[CodeMatch, ...] = ()
    #: Index dates: ambulatory encounters, at most one per ``landmark_gap_days``.
    landmark_classes: tuple[str, ...] = ("AMB",)
    landmark_gap_days: int = YEAR
    #: What a clinician can do about an elevated risk (shown on the card, with its source).
    advice: str = ""
    advice_source: str = ""
    xgb_params: dict[str, Any] = field(default_factory=dict)

    def eligibility_json(self) -> dict[str, Any]:
        return {
            "min_age": self.min_age,
            "max_age": self.max_age,
            "requires": [c.to_json() for c in self.requires],
        }


XGB_PARAMS: dict[str, Any] = {
    "objective": "binary:logistic",
    "eval_metric": "logloss",
    "max_depth": 3,
    "eta": 0.05,
    "subsample": 0.8,
    "colsample_bytree": 0.8,
    "min_child_weight": 2,
    "lambda": 2.0,
    "nthread": 1,
    "seed": 20261129,
    "tree_method": "exact",
}

CVD_CONDITIONS = codes_of("clinical_ascvd", "heart_failure", "cardiac_arrest")
EVER = None


def _obs(name: str, label: str, codes: tuple[str, ...], unit: str, window: int) -> FeatureSpec:
    return FeatureSpec(name, label, "observation", "latest", loinc(*codes), window, unit)


def _ever(name: str, label: str, codes: tuple[CodeMatch, ...]) -> FeatureSpec:
    return FeatureSpec(name, label, "condition", "present", codes, EVER)


def _drug(name: str, label: str, prefixes: tuple[str, ...], window: int) -> FeatureSpec:
    return FeatureSpec(name, label, "medication", "present", atc(*prefixes), window)


DEMOGRAPHICS = (
    FeatureSpec("age", "Age", "demographic", "age", unit="a"),
    FeatureSpec("male", "Male sex", "demographic", "male"),
)
VITALS_AND_LABS = (
    _obs("sbp", "Systolic blood pressure (latest, 2 y)", ("8480-6",), "mm[Hg]", 2 * YEAR),
    _obs("dbp", "Diastolic blood pressure (latest, 2 y)", ("8462-4",), "mm[Hg]", 2 * YEAR),
    _obs("bmi", "Body mass index (latest, 3 y)", ("39156-5",), "kg/m2", 3 * YEAR),
    _obs("hba1c", "HbA1c (latest, 3 y)", ("4548-4",), "%", 3 * YEAR),
    _obs("glucose", "Glucose (latest, 3 y)", ("2339-0", "2345-7"), "mg/dL", 3 * YEAR),
    _obs(
        "egfr",
        "eGFR (latest, 3 y)",
        ("33914-3", "62238-1", "98979-8"),
        "mL/min/{1.73_m2}",
        3 * YEAR,
    ),
)
LIPIDS = (
    _obs("total_cholesterol", "Total cholesterol (latest, 5 y)", ("2093-3",), "mg/dL", 5 * YEAR),
    _obs("hdl", "HDL cholesterol (latest, 5 y)", ("2085-9",), "mg/dL", 5 * YEAR),
    _obs("ldl", "LDL cholesterol (latest, 5 y)", ("18262-6", "13457-7"), "mg/dL", 5 * YEAR),
    _obs("triglycerides", "Triglycerides (latest, 5 y)", ("2571-8",), "mg/dL", 5 * YEAR),
)
SMOKER = FeatureSpec(
    "current_smoker",
    "Current smoker (latest status, 5 y)",
    "observation",
    "latest_in",
    loinc("72166-2"),
    5 * YEAR,
    value_codes=codes_of("current_smoker"),
)
CKD = codes_of(
    extra=(
        *snomed("431855005", "431856006", "433144002", "431857002", "46177005", "433146000"),
        CodeMatch("http://hl7.org/fhir/sid/icd-10-cm", "N18", prefix=True),
    )
)

CVD_EVENT_3Y = RiskModelSpec(
    id="cvd-event-3y",
    version="1.0.0",
    title="First cardiovascular event within 3 years",
    outcome=Outcome(
        code="cvd-event-3y",
        label=(
            "a first cardiovascular event (coronary heart disease, myocardial infarction, "
            "stroke or TIA, heart failure or cardiac arrest)"
        ),
        horizon_days=3 * YEAR,
        condition_codes=CVD_CONDITIONS,
        exclude_prior=True,
    ),
    min_age=30,
    max_age=79,
    features=feature_set(
        [
            *DEMOGRAPHICS,
            *VITALS_AND_LABS,
            *LIPIDS,
            SMOKER,
            _ever("diabetes", "Diabetes", codes_of("diabetes")),
            _ever("prediabetes", "Prediabetes", snomed("15777000")),
            _ever("hypertension", "Hypertension", codes_of("hypertension")),
            _ever("hyperlipidaemia", "Hyperlipidaemia", snomed("55822004", "302870006")),
            _ever("obesity", "Obesity (BMI 30+)", snomed("162864005", "408512008")),
            _ever("metabolic_syndrome", "Metabolic syndrome", snomed("237602007")),
            _ever("ckd", "Chronic kidney disease", CKD),
            _ever("atrial_fibrillation", "Atrial fibrillation", codes_of("atrial_fibrillation")),
            _drug("statin", "Statin prescribed (2 y)", ("C10AA",), 2 * YEAR),
            _drug(
                "bp_lowering",
                "Blood-pressure drug prescribed (2 y)",
                ("C02", "C03", "C07", "C08", "C09"),
                2 * YEAR,
            ),
            _drug("antiplatelet", "Antiplatelet prescribed (2 y)", ("B01AC",), 2 * YEAR),
        ]
    ),
    advice=(
        "Review modifiable risk factors: blood pressure control, lipids and statin "
        "eligibility (see the ASCVD card), smoking, weight and glycaemic control."
    ),
    advice_source=(
        "2019 ACC/AHA Guideline on the Primary Prevention of Cardiovascular Disease "
        "(Arnett et al., Circulation 2019;140:e596-e646)"
    ),
    xgb_params=XGB_PARAMS,
)

ACUTE_CARE_1Y = RiskModelSpec(
    id="acute-care-1y",
    version="1.0.0",
    title="Emergency visit or hospital admission within 1 year",
    outcome=Outcome(
        code="acute-care-1y",
        label="an emergency department visit or inpatient admission",
        horizon_days=YEAR,
        encounter_classes=("EMER", "IMP"),
    ),
    min_age=18,
    max_age=None,
    features=feature_set(
        [
            *DEMOGRAPHICS,
            FeatureSpec(
                "emergency_1y",
                "Emergency visits (1 y)",
                "encounter",
                "count",
                encounter_class("EMER"),
                YEAR,
            ),
            FeatureSpec(
                "emergency_3y",
                "Emergency visits (3 y)",
                "encounter",
                "count",
                encounter_class("EMER"),
                3 * YEAR,
            ),
            FeatureSpec(
                "inpatient_3y",
                "Hospital admissions (3 y)",
                "encounter",
                "count",
                encounter_class("IMP"),
                3 * YEAR,
            ),
            FeatureSpec(
                "ambulatory_1y",
                "Outpatient visits (1 y)",
                "encounter",
                "count",
                encounter_class("AMB"),
                YEAR,
            ),
            FeatureSpec(
                "days_since_emergency",
                "Days since last emergency visit",
                "encounter",
                "days_since",
                encounter_class("EMER"),
                None,
            ),
            _ever("overdose", "Drug overdose (ever)", snomed("55680006")),
            _ever("opioid_use_disorder", "Opioid abuse", snomed("5602001")),
            _ever(
                "seizure",
                "Seizure disorder or epilepsy",
                snomed("128613002", "84757009", "703151001"),
            ),
            _ever(
                "asthma_copd",
                "Asthma or COPD",
                snomed("195967001", "233678006", "185086009", "87433001"),
            ),
            FeatureSpec(
                "pregnancy_1y", "Pregnancy (1 y)", "condition", "present", snomed("72892002"), YEAR
            ),
            _ever("heart_failure", "Heart failure", codes_of("heart_failure")),
            _ever("coronary_disease", "Coronary heart disease", snomed("53741008")),
            _ever("diabetes", "Diabetes", codes_of("diabetes")),
            _ever("hypertension", "Hypertension", codes_of("hypertension")),
            _ever(
                "chronic_pain", "Chronic pain or migraine", snomed("82423001", "124171000119105")
            ),
            _ever(
                "cancer",
                "Cancer (colon, lung, prostate)",
                snomed(
                    "109838007",
                    "363406005",
                    "93761005",
                    "94260004",
                    "254637007",
                    "424132000",
                    "126906006",
                    "92691004",
                    "314994000",
                ),
            ),
            _ever("dementia", "Dementia", snomed("26929004", "230265002")),
            _ever("anaemia", "Anaemia", snomed("271737000")),
            _drug("opioid", "Opioid prescribed (1 y)", ("N02A",), YEAR),
            _drug("benzodiazepine", "Benzodiazepine prescribed (1 y)", ("N05BA", "N03AE"), YEAR),
            _drug("anticoagulant", "Anticoagulant prescribed (1 y)", ("B01AA", "B01AF"), YEAR),
            _drug("chemotherapy", "Chemotherapy (1 y)", ("L01",), YEAR),
            _obs("bmi", "Body mass index (latest, 3 y)", ("39156-5",), "kg/m2", 3 * YEAR),
            _obs("sbp", "Systolic blood pressure (latest, 2 y)", ("8480-6",), "mm[Hg]", 2 * YEAR),
        ]
    ),
    advice=(
        "Consider a care-management or transitional-care review: a medication review, "
        "an action plan for the conditions driving acute visits, and access to "
        "same-day primary care."
    ),
    advice_source=(
        "AHRQ Care Coordination Measures Atlas (2014); CMS Chronic Care Management services"
    ),
    xgb_params=XGB_PARAMS,
)

LEARNED_MODELS: dict[str, RiskModelSpec] = {m.id: m for m in (CVD_EVENT_3Y, ACUTE_CARE_1Y)}


def _survey(
    model_id: str,
    label: str,
    horizon_days: int,
    codes: tuple[CodeMatch, ...],
    min_age: int,
    requires: tuple[CodeMatch, ...] = (),
) -> RiskModelSpec:
    return RiskModelSpec(
        id=model_id,
        version="survey",
        title=label,
        outcome=Outcome(model_id, label, horizon_days, condition_codes=codes, exclude_prior=True),
        min_age=min_age,
        max_age=None,
        features=feature_set([]),
        requires=requires,
    )


#: Outcomes considered and not trained: counted with the same index dates and labels at
#: every training run, and reported in the model card (the reason they were not chosen).
SURVEYED_OUTCOMES: tuple[RiskModelSpec, ...] = (
    _survey(
        "t2d-onset-3y",
        "Type 2 diabetes within 3 years, among adults with prediabetes",
        3 * YEAR,
        codes_of("diabetes"),
        18,
        requires=snomed("15777000"),
    ),
    _survey(
        "hypertension-onset-3y",
        "Hypertension within 3 years",
        3 * YEAR,
        codes_of("hypertension"),
        18,
    ),
    _survey("cvd-event-1y", "First cardiovascular event within 1 year", YEAR, CVD_CONDITIONS, 30),
)
