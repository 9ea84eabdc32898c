"""Validated scores: published worked examples, refusal on missing or stale inputs, the rules."""

from __future__ import annotations

import pytest

from cds.cards import validate_fhir_resource
from models.risk import evidence as ev
from models.risk.scores import anticoagulation, cha2ds2_vasc, has_bled, pce, statin
from models.risk.scores.pce import PceInputs, ten_year_risk
from tests.risk.builders import (
    ASIAN,
    BLACK,
    condition,
    encounter,
    medication,
    patient,
    smoking,
    value,
)

SIMVASTATIN = ("316672", "Simvistatin 10 MG")
WARFARIN = ("855332", "Warfarin Sodium 5 MG Oral Tablet")
ASPIRIN = ("243670", "Aspirin 81 MG Oral Tablet")
HCTZ = ("316049", "Hydrochlorothiazide 25 MG")


def _example(sex: str, african_american: bool, **changes: object) -> PceInputs:
    """The guideline's example profile (Goff 2013, Table A)."""
    base = dict(
        age=55,
        sex=sex,
        african_american=african_american,
        total_cholesterol=213,
        hdl=50,
        systolic_bp=120,
        treated_bp=False,
        smoker=False,
        diabetes=False,
    )
    return PceInputs(**(base | changes))  # type: ignore[arg-type]


# ----------------------------------------------------------------------------- PCE
@pytest.mark.parametrize(
    ("sex", "african_american", "published"),
    [("female", False, 2.1), ("female", True, 3.0), ("male", True, 6.1)],
)
def test_pce_reproduces_the_guideline_examples(sex, african_american, published):
    """Goff et al. 2013, Table A: 55 y, TC 213, HDL 50, untreated SBP 120, non-smoker."""
    risk = ten_year_risk(_example(sex, african_american))
    assert round(100 * risk, 1) == published


def test_pce_white_man_example_is_within_the_tables_rounding():
    """Table A prints 5.3 % from its rounded intermediates (ln 55 = 4.01); exact arithmetic
    with the same coefficients gives 5.38 % (what the ACC/AHA estimator prints, 5.4)."""
    risk = 100 * ten_year_risk(_example("male", False))
    assert risk == pytest.approx(5.38, abs=0.01)
    assert abs(risk - 5.3) <= 0.1


@pytest.mark.parametrize(
    ("changes", "expected"),
    [
        # Treated SBP 120 (female AA, female white, male AA, male white): the ACC/AHA
        # estimator's values as tested by the PooledCohort R package (bcjaeger/PooledCohort).
        ({"treated_bp": True, "sex": "female", "african_american": True}, 4.6),
        ({"treated_bp": True, "sex": "female", "african_american": False}, 2.8),
        ({"treated_bp": True, "sex": "male", "african_american": True}, 9.9),
        ({"treated_bp": True, "sex": "male", "african_american": False}, 6.3),
        ({"smoker": True, "sex": "female", "african_american": False}, 5.0),
        ({"smoker": True, "sex": "male", "african_american": True}, 10.3),
        ({"smoker": True, "sex": "male", "african_american": False}, 10.0),
        (
            {
                "age": 54,
                "sex": "male",
                "african_american": False,
                "smoker": True,
                "total_cholesterol": 170,
                "systolic_bp": 157,
                "diabetes": True,
            },
            20.8,
        ),
    ],
)
def test_pce_other_published_profiles(changes, expected):
    sex, african_american = changes.pop("sex"), changes.pop("african_american")
    risk = 100 * ten_year_risk(_example(sex, african_american, **changes))
    assert risk == pytest.approx(expected, abs=0.1)


@pytest.mark.parametrize(
    ("risk", "band"),
    [
        (0.049, "low"),
        (0.05, "borderline"),
        (0.0749, "borderline"),
        (0.075, "intermediate"),
        (0.199, "intermediate"),
        (0.2, "high"),
    ],
)
def test_pce_bands(risk, band):
    assert pce.band(risk)["name"] == band


def _complete(**changes):  # type: ignore[no-untyped-def]
    values = [
        value("2093-3", 213, "mg/dL", "2023-01-10"),
        value("2085-9", 50, "mg/dL", "2023-01-10"),
        value("18262-6", 130, "mg/dL", "2023-01-10"),
        value("8480-6", 120, "mm[Hg]", "2024-03-01"),
        smoking("never", "2024-03-01"),
    ]
    return patient(**({"age": 55, "sex": "male", "values": values} | changes))


def test_pce_from_the_record_lists_each_input_with_its_date():
    assessment = pce.assess(_complete())
    assert assessment.computed and assessment.band == "borderline"
    assert round(100 * assessment.risk, 1) == pytest.approx(5.4, abs=0.05)
    named = {i.name: i for i in assessment.inputs}
    assert named["Total cholesterol"].value == 213
    assert named["Total cholesterol"].date.date().isoformat() == "2023-01-10"
    assert named["Total cholesterol"].reference == "Observation/obs-2093-3-2023-01-10"
    assert named["Systolic blood pressure"].unit == "mm[Hg]"
    assert named["Smoking status"].value == "Never smoker"
    assert named["Diabetes"].value is False
    assert "white equations (US Core race: White)" in assessment.equations


def test_pce_equations_follow_race_and_say_so():
    black = pce.assess(_complete(race=(BLACK,)))
    assert "African-American" in black.equations
    assert black.risk == pytest.approx(ten_year_risk(_example("male", True)), rel=1e-9)
    asian = pce.assess(_complete(race=(ASIAN,)))
    assert "white equations for race 'Asian'" in asian.equations
    assert "overestimate" in asian.equations
    unknown = pce.assess(_complete(race=()))
    assert "race not recorded" in unknown.equations
    assert unknown.risk == pytest.approx(ten_year_risk(_example("male", False)), rel=1e-9)


def test_pce_uses_treatment_smoking_and_diabetes_from_the_record():
    record = _complete(
        values=[
            value("2093-3", 213, "mg/dL", "2023-01-10"),
            value("2085-9", 50, "mg/dL", "2023-01-10"),
            value("8480-6", 120, "mm[Hg]", "2024-03-01"),
            smoking("current", "2024-03-01"),
        ],
        conditions=[condition("44054006", "2010-01-01")],
        medications=[medication(*HCTZ, "2024-01-01")],
    )
    expected = ten_year_risk(_example("male", False, smoker=True, diabetes=True, treated_bp=True))
    assert pce.assess(record).risk == pytest.approx(expected, rel=1e-9)


def test_cholesterol_in_mmol_per_litre_is_converted_not_refused():
    mmol = _complete(
        values=[
            value("2093-3", 213 / 38.67, "mmol/L", "2023-01-10"),
            value("2085-9", 50 / 38.67, "mmol/L", "2023-01-10"),
            value("8480-6", 120, "mm[Hg]", "2024-03-01"),
            smoking("never", "2024-03-01"),
        ]
    )
    assert pce.assess(mmol).risk == pytest.approx(ten_year_risk(_example("male", False)), rel=1e-3)


@pytest.mark.parametrize(
    ("replace", "name", "reason"),
    [
        (
            value("8480-6", 120, "mm[Hg]", "2021-06-01"),
            "Systolic blood pressure",
            "last recorded 2021-06-01, older than 2 years",
        ),
        (value("2093-3", 213, "mg/dL", "2018-01-01"), "Total cholesterol", "older than 5 years"),
        (
            value("2093-3", 2.1, "g/L", "2023-01-10"),
            "Total cholesterol",
            "recorded in 'g/L', which cannot be converted to mg/dL",
        ),
        (
            value("2093-3", 350, "mg/dL", "2023-01-10"),
            "Total cholesterol",
            "outside 130-320, the range the equations were built on",
        ),
        (value("2085-9", 15, "mg/dL", "2023-01-10"), "HDL cholesterol", "outside 20-100"),
        (smoking("never", "2021-01-01"), "Smoking status", "older than 2 years"),
    ],
)
def test_pce_refuses_stale_unconvertible_or_out_of_range_inputs(replace, name, reason):
    values = [v for v in _complete().history.values() for v in v if v.loinc != replace.loinc]
    assessment = pce.assess(_complete(values=[*values, replace]))
    assert not assessment.computed and assessment.applicable
    (missing,) = [m for m in assessment.missing if m.name == name]
    assert reason in missing.reason


def test_pce_refuses_without_a_smoking_status_or_the_conditions():
    values = [v for v in _complete().history.values() for v in v if v.loinc != "72166-2"]
    no_smoking = pce.assess(_complete(values=values))
    assert [m.name for m in no_smoking.missing] == ["Smoking status"]
    assert no_smoking.missing[0].reason == "not recorded"
    blind = pce.assess(_complete(unavailable={"condition_history": "deadline"}))
    assert not blind.computed and blind.missing[0].reason == "could not be read from the EHR"


def test_pce_does_not_apply_outside_40_79_or_with_clinical_ascvd():
    assert "outside 40-79" in pce.assess(_complete(age=35)).reason
    secondary = pce.assess(_complete(conditions=[condition("22298006", "2015-05-01")]))
    assert not secondary.applicable and "clinical ASCVD" in secondary.reason
    assert secondary.clinical_ascvd.reference == "Condition/cond-22298006-2015-05-01"
    icd = pce.assess(
        _complete(
            conditions=[
                condition("I25.10", "2015-05-01", system="http://hl7.org/fhir/sid/icd-10-cm")
            ]
        )
    )
    assert not icd.applicable


# ----------------------------------------------------------------------------- statins
def _with_lipids(tc: float, hdl: float, ldl: float, sbp: float = 120, **changes):  # type: ignore[no-untyped-def]
    values = [
        value("2093-3", tc, "mg/dL", "2023-01-10"),
        value("2085-9", hdl, "mg/dL", "2023-01-10"),
        value("18262-6", ldl, "mg/dL", "2023-01-10"),
        value("8480-6", sbp, "mm[Hg]", "2024-03-01"),
        smoking(changes.pop("smoker", "never"), "2024-03-01"),
    ]
    return patient(**({"values": values} | changes))


def _recommend(record):  # type: ignore[no-untyped-def]
    return statin.recommend(record, pce.assess(record))


def test_statin_rules_in_the_guidelines_order():
    secondary = _recommend(
        _with_lipids(200, 45, 120, conditions=[condition("53741008", "2019-01-01")])
    )
    assert (secondary.category, secondary.intensity, secondary.actionable) == (
        "secondary-prevention",
        "high",
        True,
    )
    severe = _recommend(_with_lipids(300, 45, 195))
    assert (severe.category, severe.intensity) == ("severe-hypercholesterolaemia", "high")
    diabetes = _recommend(
        _with_lipids(
            180, 60, 100, age=50, sex="female", conditions=[condition("44054006", "2015-01-01")]
        )
    )
    assert (diabetes.category, diabetes.intensity) == ("diabetes", "moderate")
    intermediate = _recommend(_with_lipids(213, 50, 130, age=60))
    assert (intermediate.category, intermediate.intensity) == ("primary-prevention", "moderate")
    assert "class I" in intermediate.text
    high = _recommend(_with_lipids(260, 35, 170, sbp=160, age=70, smoker="current"))
    assert high.intensity == "high" and "50 %" in high.text
    borderline = _recommend(_with_lipids(213, 50, 130, age=55))
    assert pce.assess(_with_lipids(213, 50, 130, age=55)).band == "borderline"
    assert borderline.intensity is None and borderline.actionable and not borderline.suggest_order


def test_ascvd_and_ldl_190_rules_apply_from_age_20_where_the_pce_says_nothing():
    young = _with_lipids(290, 40, 205, age=32)
    assert not pce.assess(young).applicable
    severe = _recommend(young)
    assert (severe.category, severe.intensity) == ("severe-hypercholesterolaemia", "high")
    assert [b.name for b in severe.basis] == ["LDL cholesterol"]
    after_mi = _recommend(
        _with_lipids(200, 45, 120, age=35, conditions=[condition("22298006", "2023-01-01")])
    )
    assert (
        after_mi.category == "secondary-prevention" and after_mi.basis[0].name == "Clinical ASCVD"
    )
    assert _recommend(_with_lipids(290, 40, 205, age=18)) is None


def test_no_statin_rule_for_low_risk_low_ldl_or_an_active_statin():
    assert _recommend(_with_lipids(180, 70, 100, age=42, sex="female")) is None  # low risk
    assert _recommend(_with_lipids(213, 50, 65, age=60)) is None  # LDL-C < 70
    treated = _recommend(
        _with_lipids(213, 50, 130, age=60, medications=[medication(*SIMVASTATIN, "2024-01-01")])
    )
    assert treated.intensity == "moderate" and not treated.actionable
    assert treated.current[0].value == "Simvistatin 10 MG"
    older = _recommend(_with_lipids(213, 50, 130, age=77))
    assert older.category == "primary-prevention" and not older.actionable


def test_suggested_orders_are_valid_fhir_r4():
    for intensity in ("moderate", "high"):
        order = statin.statin_order("p1", intensity)
        validate_fhir_resource(order)
        assert order["status"] == "draft" and order["subject"] == {"reference": "Patient/p1"}
    assert (
        statin.statin_order("p1", "high")["medicationCodeableConcept"]["coding"][0]["code"]
        == "259255"
    )
    validate_fhir_resource(statin.lipid_panel_order("p1"))
    validate_fhir_resource(anticoagulation.apixaban_order("p1", 2.5))


# ----------------------------------------------------------------------------- CHA2DS2-VASc
@pytest.mark.parametrize(
    ("findings", "expected"),
    [
        (cha2ds2_vasc.Findings(age=76, sex="female", hypertension=True), 4),
        (cha2ds2_vasc.Findings(age=60, sex="male"), 0),
        (
            cha2ds2_vasc.Findings(
                age=70,
                sex="male",
                heart_failure=True,
                diabetes=True,
                stroke_tia_thromboembolism=True,
            ),
            5,
        ),
        (
            cha2ds2_vasc.Findings(
                age=80,
                sex="female",
                heart_failure=True,
                hypertension=True,
                diabetes=True,
                stroke_tia_thromboembolism=True,
                vascular_disease=True,
            ),
            9,
        ),
        (cha2ds2_vasc.Findings(age=65, sex="female"), 2),
        (cha2ds2_vasc.Findings(age=74, sex="male", vascular_disease=True), 2),
    ],
)
def test_cha2ds2_vasc_worked_examples(findings, expected):
    assert cha2ds2_vasc.score(findings) == expected


def test_cha2ds2_vasc_stroke_rates_are_lip_2010():
    rates = [cha2ds2_vasc.annual_stroke_rate_percent(s) for s in range(10)]
    assert rates == [0.0, 1.3, 2.2, 3.2, 4.0, 6.7, 9.8, 9.6, 6.7, 15.2]


def _af(**changes):  # type: ignore[no-untyped-def]
    base = {
        "age": 76,
        "sex": "female",
        "conditions": [condition("49436004", "2020-01-01"), condition("38341003", "2010-01-01")],
    }
    return patient(**(base | changes))


def test_cha2ds2_vasc_from_the_record():
    assessment = cha2ds2_vasc.assess(_af())
    assert assessment.score == 4 and assessment.annual_stroke_rate == 4.0
    assert dict(assessment.items) == {"Hypertension": 1, "Age >= 75": 2, "Female sex": 1}
    assert assessment.atrial_fibrillation.reference == "Condition/cond-49436004-2020-01-01"
    resolved = _af(conditions=[condition("49436004", "2020-01-01", "resolved", "2021-01-01")])
    assert not cha2ds2_vasc.assess(resolved).applicable
    assert cha2ds2_vasc.assess(patient()).reason == "no active atrial fibrillation or flutter"


# ----------------------------------------------------------------------------- HAS-BLED
def test_has_bled_worked_example():
    """70 years, SBP 170, a prior stroke, on aspirin: H + S + E + D = 4 (Pisters 2010)."""
    record = _af(
        age=70,
        sex="male",
        conditions=[condition("49436004", "2020-01-01"), condition("230690007", "2018-01-01")],
        medications=[medication(*ASPIRIN, "2024-01-01")],
        values=[
            value("8480-6", 170, "mm[Hg]", "2024-05-01"),
            value("38483-4", 1.0, "mg/dL", "2024-05-01"),
            value("718-7", 14.0, "g/dL", "2024-05-01"),
            value("1975-2", 0.8, "mg/dL", "2024-05-01"),
        ],
    )
    assessment = has_bled.assess(record)
    assert assessment.score == 4 and assessment.high_risk
    assert {label for label, _ in assessment.items} == {
        "Uncontrolled hypertension (SBP > 160)",
        "Stroke",
        "Elderly (> 65)",
        "Antiplatelet or NSAID",
    }
    assert has_bled.bleeds_per_100_patient_years(4) == 8.70
    assert assessment.notes == ()


def test_has_bled_is_not_shown_without_pressure_or_kidney_data():
    missing = has_bled.assess(_af(values=[value("8480-6", 130, "mm[Hg]", "2024-05-01")]))
    assert not missing.computed and [m.name for m in missing.missing] == ["Creatinine"]
    dialysis = has_bled.assess(
        _af(
            conditions=[condition("49436004", "2020-01-01"), condition("105502003", "2019-01-01")],
            values=[value("8480-6", 130, "mm[Hg]", "2024-05-01")],
        )
    )
    assert dialysis.computed and ("Abnormal renal function", 1) in dialysis.items


def test_has_bled_items_from_labs_and_what_it_says_when_they_are_absent():
    labs = has_bled.assess(
        _af(
            values=[
                value("8480-6", 130, "mm[Hg]", "2024-05-01"),
                value("38483-4", 2.5, "mg/dL", "2024-05-01"),
                value("1975-2", 3.0, "mg/dL", "2024-05-01"),
                value("1920-8", 150, "U/L", "2024-05-01"),
                value("718-7", 11.0, "g/dL", "2024-05-01"),
            ]
        )
    )
    labels = {label for label, _ in labs.items}
    assert {
        "Abnormal renal function",
        "Abnormal liver function",
        "Bleeding history or predisposition",
    } <= labels
    sparse = has_bled.assess(
        _af(
            values=[
                value("8480-6", 130, "mm[Hg]", "2024-05-01"),
                value("38483-4", 1.0, "mg/dL", "2024-05-01"),
            ]
        )
    )
    assert any("liver function judged from the problem list" in n for n in sparse.notes)
    assert any("anaemia judged from the problem list" in n for n in sparse.notes)


def test_labile_inr_only_on_a_vitamin_k_antagonist():
    base = [
        value("8480-6", 130, "mm[Hg]", "2024-05-01"),
        value("38483-4", 1.0, "mg/dL", "2024-05-01"),
    ]
    few = has_bled.assess(
        _af(
            values=[*base, value("6301-6", 2.5, "{INR}", "2024-05-01")],
            medications=[medication(*WARFARIN, "2024-01-01")],
        )
    )
    assert few.lower_bound and any("score is a minimum" in n for n in few.notes)
    inrs = [
        value("6301-6", v, "{INR}", d)
        for v, d in (
            (1.4, "2024-02-01"),
            (3.8, "2024-03-01"),
            (2.5, "2024-04-01"),
            (1.6, "2024-05-01"),
        )
    ]
    labile = has_bled.assess(
        _af(values=[*base, *inrs], medications=[medication(*WARFARIN, "2024-01-01")])
    )
    assert ("Labile INR", 1) in labile.items and not labile.lower_bound
    off_vka = has_bled.assess(_af(values=[*base, *inrs]))
    assert ("Labile INR", 1) not in off_vka.items


# ----------------------------------------------------------------------------- anticoagulation
def _advice(record):  # type: ignore[no-untyped-def]
    return anticoagulation.advise(record, cha2ds2_vasc.assess(record))


def test_anticoagulation_per_the_2023_guideline_with_the_labels_dose():
    recent = [
        value("29463-7", 70, "kg", "2024-05-01"),
        value("38483-4", 1.0, "mg/dL", "2024-05-01"),
    ]
    advice = _advice(_af(values=recent))
    assert advice.strength == "recommended" and not advice.anticoagulated
    assert advice.apixaban_mg == 5.0 and "class 1" in advice.text
    frail = [value("29463-7", 55, "kg", "2024-05-01"), value("38483-4", 1.0, "mg/dL", "2024-05-01")]
    reduced = _advice(_af(age=82, values=frail))
    assert reduced.apixaban_mg == 2.5 and len(reduced.dose_reasons) == 2
    one_point = _advice(
        _af(
            age=60,
            sex="male",
            conditions=[condition("49436004", "2020-01-01"), condition("38341003", "2010-01-01")],
        )
    )
    assert one_point.strength == "reasonable"
    zero = _advice(_af(age=60, sex="male", conditions=[condition("49436004", "2020-01-01")]))
    assert zero.strength == "not-recommended"


def test_no_apixaban_dose_without_recent_weight_and_creatinine_or_at_low_egfr():
    stale = _advice(
        _af(
            values=[
                value("29463-7", 70, "kg", "2020-05-01"),
                value("38483-4", 1.0, "mg/dL", "2024-05-01"),
            ]
        )
    )
    assert (
        stale.apixaban_mg is None
        and "Body weight: last recorded 2020-05-01" in stale.no_order_reason
    )
    kidney = _advice(
        _af(
            values=[
                value("29463-7", 70, "kg", "2024-05-01"),
                value("38483-4", 4.0, "mg/dL", "2024-05-01"),
                value("33914-3", 12, "mL/min/{1.73_m2}", "2024-05-01"),
            ]
        )
    )
    assert kidney.apixaban_mg is None and "eGFR 12" in kidney.no_order_reason
    on_warfarin = _advice(_af(medications=[medication(*WARFARIN, "2024-01-01")]))
    assert on_warfarin.anticoagulated


def test_evidence_reads_the_latest_value_across_codes():
    record = patient(
        values=[
            value("2160-0", 1.1, "mg/dL", "2024-01-01"),
            value("38483-4", 1.3, "mg/dL", "2024-02-01"),
        ],
        encounters=[encounter("AMB", "2024-02-01")],
    )
    found = ev.latest_value(record, "Creatinine", ("2160-0", "38483-4"), "mg/dL", 730)
    assert found.value == 1.3 and found.date.date().isoformat() == "2024-02-01"
    assert ev.latest_value(record, "x", ("1234-5",), "mg/dL", 730) == ev.Missing(
        "x", "not recorded"
    )
