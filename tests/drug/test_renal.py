"""Renal dosing: CKD-EPI 2021 arithmetic, which eGFR is used, the rules and their sources."""

from __future__ import annotations

import csv
from datetime import UTC, date, datetime

import pytest

from fhir_adapters.patient_context import (
    Measurement,
    PatientContext,
    Quantity,
    frozen_mapping,
)
from models.drug.normalise import CLASS_VOCABULARY
from models.drug.renal import (
    KNOWLEDGE,
    MAX_AGE_DAYS,
    check_renal,
    ckd_epi_2021,
    kidney_function,
    renal_rules,
)
from tests.drug.identities import drug

TODAY = date(2024, 6, 1)


def at(day: str) -> datetime:
    return datetime.fromisoformat(day).replace(hour=9, tzinfo=UTC)


def egfr(value: float | None, day: str, loinc: str = "33914-3", **kw: object) -> Measurement:
    unit = kw.pop("unit", "mL/min/{1.73_m2}")
    normalised = Quantity(value, "mL/min/{1.73_m2}") if value is not None else None
    if loinc != "33914-3":
        normalised = None  # the adapters only normalise 33914-3
    return Measurement(
        loinc=loinc,
        display="eGFR",
        value=value,
        unit=unit,  # type: ignore[arg-type]
        effective=at(day),
        normalised=normalised,
        observation_id=f"obs-{loinc}-{day}",
        **kw,  # type: ignore[arg-type]
    )


def creatinine(value: float, day: str, unit: str = "mg/dL", loinc: str = "2160-0") -> Measurement:
    normalised = Quantity(value, "mg/dL") if unit == "mg/dL" else None
    return Measurement(
        loinc=loinc,
        display="Creatinine",
        value=value,
        unit=unit,
        effective=at(day),
        normalised=normalised,
        observation_id=f"obs-cr-{day}",
    )


def patient(
    *measurements: Measurement, sex: str | None = "female", born: date | None = date(1957, 1, 15)
) -> PatientContext:
    age = None if born is None else TODAY.year - born.year
    return PatientContext(
        patient_id="p1",
        birth_date=born,
        age_years=age,
        sex=sex,
        deceased=False,
        latest=frozen_mapping({m.loinc: m for m in measurements}),
    )


METFORMIN = ("draft-1", drug("Metformin hydrochloride 500 MG Oral Tablet", "metformin"))


# --- CKD-EPI 2021 ---------------------------------------------------------------------


@pytest.mark.parametrize(
    ("scr", "age", "sex", "expected"),
    [
        # Worked by hand: eGFR = 142 * min(Scr/k,1)^a * max(Scr/k,1)^-1.200 * 0.9938^age
        # [* 1.012 female]. Female 50 y, Scr 1.0: Scr/k = 1/0.7 = 1.42857 (>1, so the
        # min term is 1); 1.42857^-1.2 = e^(-1.2 * 0.356675) = 0.651801; 0.9938^50 =
        # e^(50 * -0.0062193) = 0.732750; 142 * 0.651801 * 0.732750 * 1.012 = 68.63.
        (1.0, 50, "female", 68.63),
        # Male 60 y, Scr 1.2: 1.2/0.9 = 1.33333; ^-1.2 = 0.708093; 0.9938^60 = 0.688559;
        # 142 * 0.708093 * 0.688559 = 69.23.
        (1.2, 60, "male", 69.23),
        # Female 30 y, Scr 0.5 (below k, the a branch): 0.5/0.7 = 0.714286; ^-0.241 =
        # 1.084468; 0.9938^30 = 0.829795; 142 * 1.084468 * 0.829795 * 1.012 = 129.32.
        (0.5, 30, "female", 129.32),
        # Male 40 y, Scr 0.7: 0.7/0.9 = 0.777778; ^-0.302 = 1.078775; 0.9938^40 =
        # 0.779753; 142 * 1.078775 * 0.779753 = 119.45.
        (0.7, 40, "male", 119.45),
        # Female 67 y, Scr 2.1: 2.1/0.7 = 3; 3^-1.2 = 0.267581; 0.9938^67 = 0.659222;
        # 142 * 0.267581 * 0.659222 * 1.012 = 25.35.
        (2.1, 67, "female", 25.35),
    ],
)
def test_ckd_epi_2021_against_hand_calculations(scr, age, sex, expected):
    assert ckd_epi_2021(scr, age, sex) == pytest.approx(expected, abs=0.01)


def test_ckd_epi_2021_is_race_free_and_needs_a_sex():
    # The same inputs give one value: there is no race coefficient to pass.
    assert ckd_epi_2021(1.0, 50, "female") == ckd_epi_2021(1.0, 50, "female")
    with pytest.raises(ValueError):
        ckd_epi_2021(1.0, 50, "unknown")
    with pytest.raises(ValueError):
        ckd_epi_2021(0, 50, "male")


# --- which eGFR -----------------------------------------------------------------------


def test_reported_egfr_is_used_with_its_source_and_date():
    kidney = kidney_function(patient(egfr(25, "2024-05-20")), TODAY)
    assert kidney is not None
    assert (kidney.egfr, kidney.source, kidney.measured_on) == (25, "reported", date(2024, 5, 20))
    assert "reported, LOINC 33914-3, 2024-05-20" in kidney.describe()


def test_ckd_epi_2021_and_other_egfr_codes_are_accepted():
    for loinc in ("62238-1", "98979-8"):
        kidney = kidney_function(patient(egfr(41, "2024-05-20", loinc=loinc)), TODAY)
        assert kidney is not None and kidney.egfr == 41 and kidney.loinc == loinc


def test_reported_egfr_in_an_unknown_unit_is_not_used():
    odd = egfr(41, "2024-05-20", loinc="62238-1", unit="mL/s")
    assert kidney_function(patient(odd), TODAY) is None


def test_egfr_is_computed_from_creatinine_with_the_age_on_the_sample_date():
    kidney = kidney_function(patient(creatinine(2.1, "2024-05-20")), TODAY)
    assert kidney is not None
    assert kidney.source == "CKD-EPI 2021"
    assert kidney.age == 67  # born 1957-01-15, sampled 2024-05-20
    assert kidney.egfr == pytest.approx(25.35, abs=0.01)
    assert "CKD-EPI 2021 from serum creatinine 2.1 mg/dL on 2024-05-20" in kidney.describe()


def test_creatinine_in_micromol_per_litre_is_converted():
    kidney = kidney_function(patient(creatinine(185.7, "2024-05-20", unit="umol/L")), TODAY)
    assert kidney is not None
    assert kidney.creatinine_mg_dl == pytest.approx(2.1, abs=0.01)  # 185.7 / 88.42


def test_the_more_recent_value_wins():
    older_reported = egfr(70, "2024-01-10")
    newer_creatinine = creatinine(2.1, "2024-05-20", loinc="38483-4")
    kidney = kidney_function(patient(older_reported, newer_creatinine), TODAY)
    assert kidney is not None and kidney.source == "CKD-EPI 2021"
    newer_reported = egfr(70, "2024-05-25")
    kidney = kidney_function(patient(newer_reported, newer_creatinine), TODAY)
    assert kidney is not None and kidney.source == "reported" and kidney.egfr == 70


def test_values_older_than_a_year_are_ignored():
    stale = (TODAY.replace(year=TODAY.year - 1)).isoformat()
    assert MAX_AGE_DAYS == 365
    old = patient(egfr(20, "2023-05-01"), creatinine(3.0, stale))
    assert kidney_function(old, TODAY) is None
    assert check_renal([METFORMIN], old, TODAY) == []


def test_no_guess_without_sex_or_adult_age():
    assert kidney_function(patient(creatinine(2.1, "2024-05-20"), sex="unknown"), TODAY) is None
    child = patient(creatinine(2.1, "2024-05-20"), born=date(2012, 3, 1))
    assert kidney_function(child, TODAY) is None


# --- rules ----------------------------------------------------------------------------


def test_metformin_at_egfr_25_is_critical_with_the_value_in_the_card():
    (finding,) = check_renal([METFORMIN], patient(egfr(25, "2024-05-20")), TODAY)
    assert finding.kind == "renal" and finding.severity == "critical"
    assert "eGFR 25" in finding.summary and "Metformin" in finding.summary
    assert "eGFR 25 mL/min/1.73 m² (reported, LOINC 33914-3, 2024-05-20)" in finding.detail
    assert finding.facts["egfr"] == 25
    assert finding.facts["egfr_source"] == "reported"
    assert finding.facts["date"] == "2024-05-20"
    assert finding.facts["rule"] == "metformin_contraindicated"
    assert finding.suggestions[0].kind == "delete-draft"
    assert finding.suggestions[0].resource_id == "draft-1"
    assert any("FDA" in c.label for c in finding.citations)


def test_metformin_from_creatinine_shows_the_arithmetic():
    (finding,) = check_renal([METFORMIN], patient(creatinine(2.1, "2024-05-20")), TODAY)
    assert finding.severity == "critical"
    assert "CKD-EPI 2021 from serum creatinine 2.1 mg/dL on 2024-05-20" in finding.detail
    assert "142 \u00d7 min(2.1/0.7, 1)^-0.241" in finding.detail
    assert finding.facts["egfr_source"] == "CKD-EPI 2021"
    assert any("Inker" in c.label for c in finding.citations)


def test_metformin_at_egfr_40_is_a_warning_not_to_start():
    (finding,) = check_renal([METFORMIN], patient(egfr(40, "2024-05-20")), TODAY)
    assert finding.severity == "warning"
    assert finding.facts["rule"] == "metformin_do_not_start"


def test_metformin_at_egfr_60_is_silent():
    assert check_renal([METFORMIN], patient(egfr(60, "2024-05-20")), TODAY) == []


def test_no_egfr_no_alert():
    assert check_renal([METFORMIN], patient(), TODAY) == []


def test_a_lower_bound_never_fires():
    bound = egfr(None, "2024-05-20", value_text=">60")
    kidney = kidney_function(patient(bound), TODAY)
    assert kidney is not None and kidney.lower_bound
    assert check_renal([METFORMIN], patient(bound), TODAY) == []


def test_nsaid_class_rule_spares_low_dose_aspirin():
    ckd4 = patient(egfr(20, "2024-05-20"))
    (finding,) = check_renal(
        [("d2", drug("Ibuprofen 400 MG Oral Tablet", "ibuprofen"))], ckd4, TODAY
    )
    assert finding.severity == "warning" and finding.facts["rule"] == "nsaid_avoid"
    assert check_renal([("d3", drug("Aspirin 81 MG Oral Tablet", "aspirin"))], ckd4, TODAY) == []


def test_gabapentin_card_notes_that_the_source_uses_creatinine_clearance():
    (finding,) = check_renal(
        [("d4", drug("Gabapentin 300 MG Oral Capsule", "gabapentin"))],
        patient(egfr(50, "2024-05-20")),
        TODAY,
    )
    assert finding.severity == "warning"
    assert "Cockcroft-Gault" in finding.detail


def test_unrelated_or_unidentified_drugs_are_silent():
    ckd4 = patient(egfr(20, "2024-05-20"))
    drafts = [
        ("d5", drug("Lisinopril 10 MG Oral Tablet", "lisinopril")),
        ("d6", drug("Mystery tincture", identified=False)),
    ]
    assert check_renal(drafts, ckd4, TODAY) == []


def test_only_the_most_severe_rule_per_drug():
    findings = check_renal([METFORMIN], patient(egfr(10, "2024-05-20")), TODAY)
    assert [f.facts["rule"] for f in findings] == ["metformin_contraindicated"]


# --- knowledge file -------------------------------------------------------------------


def test_every_renal_rule_row_is_sourced_and_well_formed():
    with (KNOWLEDGE / "renal_rules.csv").open(newline="", encoding="utf-8") as handle:
        rows = list(csv.DictReader(handle))
    assert rows
    assert list(rows[0]) == [
        "id",
        "target",
        "max_egfr",
        "severity",
        "action",
        "detail",
        "source",
        "source_url",
    ]
    assert len({r["id"] for r in rows}) == len(rows)
    for row in rows:
        assert row["source"].strip(), row["id"]
        assert row["source_url"].startswith("https://"), row["id"]
        assert row["severity"] in ("info", "warning", "critical")
        assert 0 < float(row["max_egfr"]) <= 90
        kind, _, name = row["target"].partition(":")
        if kind == "class":
            assert name in CLASS_VOCABULARY, row["id"]
        else:
            assert kind == "ingredient", row["id"]
    assert len(renal_rules()) == len(rows)


def test_every_ingredient_target_is_known_to_the_normaliser():
    with (KNOWLEDGE / "ingredients.csv").open(newline="", encoding="utf-8") as handle:
        known = {r["ingredient"] for r in csv.DictReader(handle)}
    for rule in renal_rules():
        kind, _, name = rule.target.partition(":")
        if kind == "ingredient":
            assert name in known, rule.id
