"""Opioid checks (CDC 2022): daily MME arithmetic, thresholds, benzodiazepines, naloxone."""

from __future__ import annotations

import csv
from collections.abc import Mapping

import pytest

from fhir_adapters.patient_context import RXNORM, Concept, Dosage, Medication, Quantity
from models.drug.normalise import DrugIdentity
from models.drug.opioids import (
    FACTORS_CSV,
    NALOXONE_LABEL,
    check_opioids,
    daily_mme,
    mme_factors,
    naloxone_request,
)

TIMES = "\u00d7"


def identity(
    label: str,
    ingredients: tuple[str, ...],
    classes: set[str],
    strengths: Mapping[str, float] | None = None,
    dose_form: str | None = "tablet",
    rxcui: str | None = None,
) -> DrugIdentity:
    return DrugIdentity(
        label=label,
        ingredients=ingredients,
        classes=frozenset(classes),
        atc=(),
        rxcui=rxcui,
        strengths_mg=dict(strengths or {}),
        dose_form=dose_form,
        identified=True,
    )


def every(
    hours: float, dose: float = 1, unit: str | None = None, prn: bool = False, n: int = 1
) -> Dosage:
    return Dosage(
        dose=Quantity(dose, unit), frequency=n, period=hours, period_unit="h", as_needed=prn
    )


def med(mid: str, label: str, *dosages: Dosage, status: str = "active") -> Medication:
    return Medication(
        id=mid,
        concept=Concept(text=label),
        status=status,
        intent="order",
        authored_on=None,
        dosages=dosages,
    )


PERCOCET = identity(
    "Acetaminophen 325 MG / oxyCODONE Hydrochloride 5 MG Oral Tablet",
    ("acetaminophen", "oxycodone"),
    {"opioid"},
    {"acetaminophen": 325.0, "oxycodone": 5.0},
    rxcui="1049221",
)
OXYCODONE = identity(
    "oxycodone hydrochloride 5 MG Oral Tablet", ("oxycodone",), {"opioid"}, {"oxycodone": 5.0}
)
NORCO = identity(
    "Acetaminophen 325 MG / HYDROcodone Bitartrate 7.5 MG Oral Tablet",
    ("acetaminophen", "hydrocodone"),
    {"opioid"},
    {"acetaminophen": 325.0, "hydrocodone": 7.5},
)
TRAMADOL = identity("tramadol 50 MG Oral Tablet", ("tramadol",), {"opioid", "serotonergic"})
FENTANYL = identity(
    "72 HR fentanyl 0.025 MG/HR Transdermal System",
    ("fentanyl",),
    {"opioid", "serotonergic"},
    {"fentanyl": 25.0},
    dose_form="patch",
)
METHADONE = identity(
    "methadone hydrochloride 10 MG Oral Tablet",
    ("methadone",),
    {"opioid", "serotonergic", "qt_prolonging"},
    {"methadone": 10.0},
)
MORPHINE_IV = identity(
    "morphine sulfate 4 MG/ML Injectable Solution",
    ("morphine",),
    {"opioid"},
    {"morphine": 4.0},
    dose_form="injection",
)
BUPRENORPHINE_NALOXONE = identity(
    "buprenorphine 8 MG / naloxone 2 MG Sublingual Tablet",
    ("buprenorphine", "naloxone"),
    {"opioid", "naloxone", "opioid_antagonist"},
    {"buprenorphine": 8.0, "naloxone": 2.0},
)
DIAZEPAM = identity("Diazepam 5 MG Oral Tablet", ("diazepam",), {"benzodiazepine"}, {"diazepam": 5})
NALOXONE = identity(
    "naloxone hydrochloride 4 MG/ACTUAT Nasal Spray",
    ("naloxone",),
    {"naloxone", "opioid_antagonist"},
    dose_form="spray",
)
LISINOPRIL = identity("lisinopril 10 MG Oral Tablet", ("lisinopril",), {"ace_inhibitor"})


def draft(mid: str, ident: DrugIdentity, *dosages: Dosage):  # type: ignore[no-untyped-def]
    return (mid, ident, med(mid, ident.label, *dosages, status="draft"))


# --- the factor table ----------------------------------------------------------------------


def test_factor_table_is_the_cdc_2022_table_and_every_row_has_a_source() -> None:
    factors = {ingredient: f.factor for (ingredient, _), f in mme_factors().items()}
    assert factors == {
        "codeine": 0.15,
        "fentanyl": 2.4,
        "hydrocodone": 1.0,
        "hydromorphone": 5.0,
        "methadone": 4.7,
        "morphine": 1.0,
        "oxycodone": 1.5,
        "oxymorphone": 3.0,
        "tapentadol": 0.4,
        "tramadol": 0.2,
        "meperidine": 0.1,
        "dihydrocodeine": 0.25,
    }
    assert "buprenorphine" not in factors
    assert mme_factors()[("fentanyl", "transdermal")].unit == "mcg/h"
    with FACTORS_CSV.open(encoding="utf-8") as handle:
        rows = list(csv.DictReader(handle))
    assert all(row["source"].strip() and row["source_url"].startswith("https://") for row in rows)


# --- daily_mme -----------------------------------------------------------------------------


def test_oxycodone_acetaminophen_two_tablets_q6h_is_60_mme() -> None:
    result = daily_mme(PERCOCET, [every(6, 2)])
    assert result is not None
    assert result.total == 60
    assert result.complete
    assert result.drug == "Oxycodone/acetaminophen"
    assert result.lines == (
        f"oxycodone 5 mg {TIMES} 2 tablets {TIMES} 4/day {TIMES} 1.5 = 60 MME/day",
    )


def test_count_units_and_mass_units() -> None:
    for unit in (None, "1", "{tbl}", "TAB", "tablet", "{tablets}"):
        assert daily_mme(PERCOCET, [every(6, 2, unit)]).total == 60  # type: ignore[union-attr]
    assert daily_mme(OXYCODONE, [every(6, 10, "mg")]).total == 60  # type: ignore[union-attr]
    assert daily_mme(OXYCODONE, [every(6, 10000, "ug")]).total == 60  # type: ignore[union-attr]
    assert daily_mme(OXYCODONE, [every(6, 2, "{tbl}")]).total == 60  # type: ignore[union-attr]


def test_hydrocodone() -> None:
    result = daily_mme(NORCO, [every(6)])
    assert result is not None and result.complete
    assert result.total == 30
    assert result.lines == (
        f"hydrocodone 7.5 mg {TIMES} 1 tablet {TIMES} 4/day {TIMES} 1 = 30 MME/day",
    )


def test_tramadol_50_mg_qid_is_40_mme() -> None:
    result = daily_mme(
        TRAMADOL, [Dosage(dose=Quantity(50, "mg"), frequency=4, period=1, period_unit="d")]
    )
    assert result is not None and result.total == 40 and result.complete


def test_fentanyl_25_mcg_h_patch_is_60_mme_whatever_the_change_interval() -> None:
    result = daily_mme(FENTANYL, [every(72, 1, "{patch}")])
    assert result is not None and result.complete
    assert result.total == 60
    assert result.lines == (f"fentanyl 25 mcg/h {TIMES} 1 patch {TIMES} 2.4 = 60 MME/day",)
    rate = daily_mme(FENTANYL, [Dosage(dose=Quantity(50, "ug/h"))])
    assert rate is not None and rate.total == 120


def test_methadone_10_mg_tid_is_141_mme() -> None:
    result = daily_mme(METHADONE, [every(8)])
    assert result is not None and result.total == 141
    assert result.lines == (
        f"methadone 10 mg {TIMES} 1 tablet {TIMES} 3/day {TIMES} 4.7 = 141 MME/day",
    )


def test_as_needed_doses_count_at_their_maximum_frequency() -> None:
    result = daily_mme(PERCOCET, [every(4, 1, prn=True)])
    assert result is not None and result.complete and result.as_needed
    assert result.total == 45
    assert "as needed: counted at the maximum frequency" in result.lines[0]


@pytest.mark.parametrize(
    ("ident", "dosages", "why"),
    [
        (PERCOCET, [], "no dosage instructions"),
        (PERCOCET, [Dosage(text="1 tab every 6 hours")], "no structured dose"),
        (PERCOCET, [Dosage(dose=Quantity(1, None))], "no frequency"),
        (PERCOCET, [Dosage(dose=Quantity(1, None), as_needed=True)], "without a maximum frequency"),
        (PERCOCET, [every(6, 5, "mL")], "strength per mL"),
        (PERCOCET, [every(6, 1, "puff")], "cannot be converted to mg"),
        (PERCOCET, [every(6, 650, "mg")], "combination product is ambiguous"),
        (identity("oxycodone", ("oxycodone",), {"opioid"}, dose_form=None), [every(6)], "strength"),
        (MORPHINE_IV, [every(4, 1, "mL")], "injection route"),
    ],
)
def test_a_dose_that_cannot_be_computed_is_incomplete_never_guessed(
    ident: DrugIdentity, dosages: list[Dosage], why: str
) -> None:
    result = daily_mme(ident, dosages)
    assert result is not None
    assert not result.complete
    assert result.total == 0
    assert result.reason is not None and why in result.reason


def test_buprenorphine_is_not_converted_and_no_opioid_gives_none() -> None:
    result = daily_mme(BUPRENORPHINE_NALOXONE, [every(24)])
    assert result is not None and result.complete and result.total == 0
    assert "not in the CDC 2022 MME table" in result.lines[0]
    assert daily_mme(LISINOPRIL, [every(24)]) is None
    assert daily_mme(DIAZEPAM, [every(8)]) is None


# --- check_opioids -------------------------------------------------------------------------


def test_60_mme_draft_is_a_warning_with_the_arithmetic_and_a_naloxone_suggestion() -> None:
    findings = check_opioids([draft("d1", PERCOCET, every(6, 2))], [], False, patient_id="p1")
    assert len(findings) == 1
    finding = findings[0]
    assert finding.kind == "opioid"
    assert finding.severity == "warning"
    assert finding.summary == (
        "Oxycodone/acetaminophen: 60 MME/day total (\u2265 50): reassess benefits and risks"
    )
    assert finding.facts == {"mme": 60, "complete": True}
    assert finding.draft_order_id == "d1"
    assert (
        f"oxycodone 5 mg {TIMES} 2 tablets {TIMES} 4/day {TIMES} 1.5 = 60 MME/day" in finding.detail
    )
    assert "Recommendation 4" in finding.detail and "moved away" in finding.detail
    assert finding.citations[0].url == "https://www.cdc.gov/mmwr/volumes/71/rr/pdfs/rr7103a1-H.pdf"
    (suggestion,) = finding.suggestions
    assert suggestion.kind == "create" and suggestion.label == NALOXONE_LABEL
    assert suggestion.resource == naloxone_request("p1")
    resource = suggestion.resource
    assert resource is not None
    assert resource["resourceType"] == "MedicationRequest"
    assert resource["status"] == "draft" and resource["intent"] == "order"
    assert resource["subject"] == {"reference": "Patient/p1"}
    (coding,) = resource["medicationCodeableConcept"]["coding"]
    assert coding == {
        "system": RXNORM,
        "code": "1725059",
        "display": "naloxone hydrochloride 4 MG/ACTUAT Nasal Spray",
    }
    assert resource["dosageInstruction"][0]["text"]


def test_120_mme_draft_is_critical() -> None:
    findings = check_opioids([draft("d1", PERCOCET, every(6, 4))], [], False)
    (finding,) = findings
    assert finding.severity == "critical"
    assert finding.facts == {"mme": 120, "complete": True}
    assert finding.summary.startswith("Oxycodone/acetaminophen: 120 MME/day total (\u2265 90)")


def test_tramadol_40_mme_and_no_benzodiazepine_is_silent() -> None:
    qid = Dosage(dose=Quantity(50, "mg"), frequency=4, period=1, period_unit="d")
    assert check_opioids([draft("d1", TRAMADOL, qid)], [], False) == []


def test_fentanyl_patch_and_methadone() -> None:
    (patch,) = check_opioids([draft("d1", FENTANYL, every(72, 1, "{patch}"))], [], False)
    assert patch.severity == "warning" and patch.facts["mme"] == 60
    assert "Transdermal fentanyl" in patch.detail
    (methadone,) = check_opioids([draft("d2", METHADONE, every(8))], [], False)
    assert methadone.severity == "critical" and methadone.facts["mme"] == 141
    assert "Methadone" in methadone.detail and "long and" in methadone.detail


def test_active_opioid_and_draft_are_summed() -> None:
    active = (NORCO, med("m1", NORCO.label, every(6)))  # 30 MME
    draft_order = draft(
        "d1", TRAMADOL, Dosage(dose=Quantity(50, "mg"), frequency=4, period=1, period_unit="d")
    )
    (finding,) = check_opioids([draft_order], [active], False)
    assert finding.facts == {"mme": 70, "complete": True}
    assert finding.severity == "warning"
    assert finding.summary.startswith("Tramadol: 70 MME/day total")
    assert "Hydrocodone/acetaminophen (active)" in finding.detail
    assert "Tramadol (this order)" in finding.detail
    # each alone is below 50: silent
    assert check_opioids([draft_order], [], False) == []


def test_active_benzodiazepine_gives_the_combination_finding_and_naloxone() -> None:
    active = (DIAZEPAM, med("m1", DIAZEPAM.label, every(8)))
    findings = check_opioids([draft("d1", NORCO, every(6))], [active], True, patient_id="p9")
    (finding,) = findings  # 30 MME: no dose finding, only the combination
    assert finding.kind == "opioid"
    assert finding.severity == "warning"
    assert "Hydrocodone/acetaminophen" in finding.summary and "Diazepam" in finding.summary
    assert len(finding.summary) < 140
    assert "use particular caution when prescribing opioid pain medication and benzodiazepines" in (
        finding.detail
    )
    assert finding.facts["benzodiazepine"] is True
    (suggestion,) = finding.suggestions
    assert suggestion.label == NALOXONE_LABEL
    assert suggestion.resource is not None
    assert suggestion.resource["subject"] == {"reference": "Patient/p9"}


def test_benzodiazepine_with_high_dose_is_critical_and_naloxone_is_suggested_once() -> None:
    active = (DIAZEPAM, med("m1", DIAZEPAM.label, every(8)))
    findings = check_opioids([draft("d1", PERCOCET, every(6, 2))], [active], True)
    by_key = {f.dedupe_key: f for f in findings}
    assert by_key["opioid:mme"].severity == "warning"
    assert by_key["opioid:benzodiazepine"].severity == "critical"
    assert sum(len(f.suggestions) for f in findings) == 1
    assert by_key["opioid:benzodiazepine"].suggestions[0].label == NALOXONE_LABEL


def test_drafted_benzodiazepine_with_an_active_opioid() -> None:
    active = (NORCO, med("m1", NORCO.label, every(6)))
    (finding,) = check_opioids([draft("d7", DIAZEPAM, every(8))], [active], False)
    assert finding.dedupe_key == "opioid:benzodiazepine"
    assert finding.draft_order_id == "d7"
    assert finding.suggestions and finding.suggestions[0].label == NALOXONE_LABEL


def test_naloxone_already_active_or_drafted_means_no_naloxone_suggestion() -> None:
    benzo = (DIAZEPAM, med("m1", DIAZEPAM.label, every(8)))
    naloxone = (NALOXONE, med("m2", NALOXONE.label))
    findings = check_opioids([draft("d1", PERCOCET, every(6, 2))], [benzo, naloxone], True)
    assert findings and all(not f.suggestions for f in findings)
    drafted = check_opioids([draft("d1", PERCOCET, every(6, 2)), draft("d2", NALOXONE)], [], False)
    assert drafted and all(not f.suggestions for f in drafted)


def test_buprenorphine_naloxone_is_not_rescue_naloxone() -> None:
    active = (BUPRENORPHINE_NALOXONE, med("m1", BUPRENORPHINE_NALOXONE.label, every(24)))
    (finding,) = check_opioids([draft("d1", PERCOCET, every(6, 2))], [active], False)
    assert finding.facts == {"mme": 60, "complete": True}
    assert "buprenorphine: not counted" in finding.detail
    assert finding.suggestions and finding.suggestions[0].label == NALOXONE_LABEL


def test_dose_not_computable_gives_complete_false_and_the_card_says_so() -> None:
    (finding,) = check_opioids([draft("d1", PERCOCET, Dosage(text="as directed"))], [], False)
    assert finding.severity == "info"
    assert finding.facts == {"mme": 0, "complete": False}
    assert "could not be computed" in finding.summary
    assert "could not be fully computed" in finding.detail
    assert not finding.suggestions


def test_incomplete_active_opioid_gives_a_lower_bound() -> None:
    unknown = (NORCO, med("m1", NORCO.label))  # no dosage instructions, as in Synthea
    (finding,) = check_opioids([draft("d1", PERCOCET, every(6, 2))], [unknown], False)
    assert finding.severity == "warning"
    assert finding.facts == {"mme": 60, "complete": False}
    assert "at least 60 MME/day" in finding.summary
    assert "no dosage instructions" in finding.detail


def test_no_opioid_gives_nothing() -> None:
    assert check_opioids([draft("d1", LISINOPRIL, every(24))], [], False) == []
    assert check_opioids([], [], True) == []
    # an active opioid alone (no opioid or benzodiazepine drafted) is not this order's problem
    active = (PERCOCET, med("m1", PERCOCET.label, every(6, 4)))
    assert check_opioids([draft("d1", LISINOPRIL, every(24))], [active], True) == []


def test_summaries_stay_under_140_characters_with_long_names() -> None:
    long = identity(
        "x", ("oxycodone", "acetaminophen", "caffeine", "butalbital"), {"opioid"}, {"oxycodone": 5}
    )
    benzo = identity("y", ("chlordiazepoxide", "clidinium", "amitriptyline"), {"benzodiazepine"})
    drafts = [draft("d1", long, every(6, 4)), draft("d2", long, every(6, 4)), draft("d3", benzo)]
    findings = check_opioids(drafts, [], False)
    assert len(findings) == 2
    assert all(len(f.summary) < 140 for f in findings)
