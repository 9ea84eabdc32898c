"""The declared phenotype feature set: conditions, medications, labs, vitals, utilisation.

Written into the artifact as ``feature_spec.json`` (the risk family's spec, semantics in
``models/risk/features/spec.py``) and evaluated by the same evaluator as the risk models,
so a population executor (``population.features.feature_frame``) computes the same
columns. :data:`GROUPS` says which kind each feature is; :data:`MODIFIABLE` are the kinds
a clinician can act on (labs, vitals, medications, utilisation, smoking), never age or sex.
"""

from __future__ import annotations

from models.risk.catalog import CKD, SMOKER, YEAR
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


def _condition(name: str, label: str, codes: tuple[CodeMatch, ...]) -> FeatureSpec:
    return FeatureSpec(name, label, "condition", "present", codes, None)


def _drug(name: str, label: str, prefixes: tuple[str, ...]) -> FeatureSpec:
    return FeatureSpec(name, label, "medication", "present", atc(*prefixes), 2 * YEAR)


def _lab(name: str, label: str, codes: tuple[str, ...], unit: str, years: int) -> FeatureSpec:
    return FeatureSpec(name, label, "observation", "latest", loinc(*codes), years * YEAR, unit)


def _visits(name: str, label: str, klass: str, years: int) -> FeatureSpec:
    return FeatureSpec(name, label, "encounter", "count", encounter_class(klass), years * YEAR)


CONDITIONS = (
    _condition("diabetes", "Diabetes", codes_of("diabetes")),
    _condition("prediabetes", "Prediabetes", snomed("15777000")),
    _condition("hypertension", "Hypertension", codes_of("hypertension")),
    _condition("hyperlipidaemia", "Hyperlipidaemia", snomed("55822004", "302870006")),
    _condition("obesity", "Obesity (BMI 30+)", snomed("162864005", "408512008")),
    _condition("ckd", "Chronic kidney disease", CKD),
    _condition(
        "cardiovascular", "Cardiovascular disease", codes_of("clinical_ascvd", "heart_failure")
    ),
    _condition("atrial_fibrillation", "Atrial fibrillation", codes_of("atrial_fibrillation")),
    _condition(
        "asthma_copd", "Asthma or COPD", snomed("195967001", "233678006", "185086009", "87433001")
    ),
    _condition("chronic_pain", "Chronic pain or migraine", snomed("82423001", "124171000119105")),
    _condition("anaemia", "Anaemia", snomed("271737000")),
)
MEDICATIONS = (
    _drug("statin", "Statin (2 y)", ("C10AA",)),
    _drug("bp_lowering", "Blood-pressure drug (2 y)", ("C02", "C03", "C07", "C08", "C09")),
    _drug("antidiabetic", "Glucose-lowering drug (2 y)", ("A10",)),
    _drug("antiplatelet_anticoagulant", "Antiplatelet or anticoagulant (2 y)", ("B01",)),
    _drug("opioid", "Opioid (2 y)", ("N02A",)),
    _drug("inhaler", "Inhaled asthma/COPD drug (2 y)", ("R03",)),
)
LABS = (
    _lab("hba1c", "HbA1c (latest, 3 y)", ("4548-4",), "%", 3),
    _lab("egfr", "eGFR (latest, 3 y)", ("33914-3", "62238-1", "98979-8"), "mL/min/{1.73_m2}", 3),
    _lab("ldl", "LDL cholesterol (latest, 5 y)", ("18262-6", "13457-7"), "mg/dL", 5),
    _lab("hdl", "HDL cholesterol (latest, 5 y)", ("2085-9",), "mg/dL", 5),
    _lab("triglycerides", "Triglycerides (latest, 5 y)", ("2571-8",), "mg/dL", 5),
)
VITALS = (
    _lab("sbp", "Systolic blood pressure (latest, 2 y)", ("8480-6",), "mm[Hg]", 2),
    _lab("dbp", "Diastolic blood pressure (latest, 2 y)", ("8462-4",), "mm[Hg]", 2),
    _lab("bmi", "Body mass index (latest, 3 y)", ("39156-5",), "kg/m2", 3),
)
UTILISATION = (
    _visits("emergency_3y", "Emergency visits (3 y)", "EMER", 3),
    _visits("inpatient_3y", "Hospital admissions (3 y)", "IMP", 3),
    _visits("ambulatory_1y", "Outpatient visits (1 y)", "AMB", 1),
)
AGE = FeatureSpec("age", "Age", "demographic", "age", unit="a")

PHENOTYPE_FEATURES: FeatureSet = feature_set(
    [AGE, *CONDITIONS, *MEDICATIONS, *LABS, *VITALS, SMOKER, *UTILISATION]
)

#: feature name → its kind (the report groups by it; the card compares only modifiable ones).
GROUPS: dict[str, str] = {
    AGE.name: "demographic",
    **{f.name: "condition" for f in CONDITIONS},
    **{f.name: "medication" for f in MEDICATIONS},
    **{f.name: "lab" for f in LABS},
    **{f.name: "vital" for f in VITALS},
    SMOKER.name: "smoking",
    **{f.name: "utilisation" for f in UTILISATION},
}
MODIFIABLE = frozenset({"medication", "lab", "vital", "smoking", "utilisation"})
#: Features that are 0/1 (shown as prevalences); the rest are numbers (shown as means).
BINARY = frozenset(
    f.name for f in PHENOTYPE_FEATURES.features if f.source in ("condition", "medication")
) | {SMOKER.name}
#: Counts (log1p before standardising: a few frequent visitors would dominate otherwise).
COUNTS = frozenset(f.name for f in UTILISATION)


def labels() -> dict[str, str]:
    return {f.name: f.label for f in PHENOTYPE_FEATURES.features}
