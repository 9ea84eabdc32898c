"""Duplicate therapy: same ingredient, the explicit class list, and what stays silent."""

from __future__ import annotations

from models.drug.duplicates import DUPLICATE_CLASSES, find_duplicates
from models.drug.normalise import CLASS_VOCABULARY
from tests.drug.identities import drug

IBUPROFEN = drug("Ibuprofen 400 MG Oral Tablet", "ibuprofen")
NAPROXEN = drug("Naproxen 500 MG Oral Tablet", "naproxen")
ASPIRIN = drug("Aspirin 81 MG Oral Tablet", "aspirin")
PERCOCET = drug("Oxycodone 5 MG / Acetaminophen 325 MG Oral Tablet", "oxycodone", "acetaminophen")
APAP = drug("Acetaminophen 500 MG Oral Tablet", "acetaminophen")
OXY_ER = drug("12 HR Oxycodone Hydrochloride 10 MG Extended Release Oral Tablet", "oxycodone")
OXY_IR = drug("Oxycodone Hydrochloride 5 MG Oral Tablet", "oxycodone")
MORPHINE_ER = drug("12 HR Morphine Sulfate 15 MG Extended Release Oral Tablet", "morphine")
MORPHINE_IR = drug("Morphine Sulfate 15 MG Oral Tablet", "morphine")
METHADONE = drug("Methadone Hydrochloride 10 MG Oral Tablet", "methadone")


def test_same_ingredient_already_active_is_a_warning():
    (finding,) = find_duplicates([("d1", IBUPROFEN)], [("m1", IBUPROFEN)])
    assert finding.kind == "duplicate" and finding.severity == "warning"
    assert finding.facts["duplicate"] == "ingredient"
    assert finding.facts["ingredients"] == ["ibuprofen"]
    assert finding.draft_order_id == "d1"
    assert "ibuprofen" in finding.summary.lower() and len(finding.summary) < 140
    assert finding.suggestions[0].kind == "delete-draft"
    assert finding.suggestions[0].resource_id == "d1"
    assert finding.citations


def test_a_draft_renewing_the_same_request_is_not_a_duplicate():
    assert find_duplicates([("m1", IBUPROFEN)], [("m1", IBUPROFEN)]) == []


def test_the_same_ingredient_in_two_drafts_is_reported_once():
    findings = find_duplicates([("d1", IBUPROFEN), ("d2", IBUPROFEN)], [])
    assert len(findings) == 1
    (finding,) = findings
    assert finding.facts["other_is_draft"] is True
    assert finding.draft_order_id == "d2"  # the later draft
    assert finding.suggestions == ()


def test_acetaminophen_across_products_states_the_daily_limit():
    (finding,) = find_duplicates([("d1", PERCOCET)], [("m1", APAP)])
    assert finding.facts["ingredients"] == ["acetaminophen"]
    assert "4,000 mg" in finding.detail
    assert any("acetaminophen" in c.label.lower() for c in finding.citations)


def test_two_nsaids_are_a_class_duplicate():
    (finding,) = find_duplicates([("d1", NAPROXEN)], [("m1", IBUPROFEN)])
    assert finding.facts == {
        "duplicate": "class",
        "class": "nsaid",
        "ingredients": ["naproxen"],
        "other_ingredients": ["ibuprofen"],
        "other_id": "m1",
        "other_is_draft": False,
    }
    assert finding.summary.startswith("Two NSAIDs: naproxen")


def test_low_dose_aspirin_with_an_nsaid_is_not_a_duplicate():
    assert find_duplicates([("d1", IBUPROFEN)], [("m1", ASPIRIN)]) == []


def test_dual_raas_blockade():
    lisinopril = drug("Lisinopril 10 MG Oral Tablet", "lisinopril")
    losartan = drug("Losartan Potassium 50 MG Oral Tablet", "losartan")
    (finding,) = find_duplicates([("d1", losartan)], [("m1", lisinopril)])
    assert finding.facts["class"] == "raas"
    assert any("ONTARGET" in c.label for c in finding.citations)


def test_two_ssris_two_benzodiazepines_two_anticoagulants():
    cases = [
        ("ssri", drug("Sertraline 50 MG", "sertraline"), drug("Fluoxetine 20 MG", "fluoxetine")),
        (
            "benzodiazepine",
            drug("Lorazepam 1 MG", "lorazepam"),
            drug("Alprazolam 0.5 MG", "alprazolam"),
        ),
        ("anticoagulant", drug("Apixaban 5 MG", "apixaban"), drug("Warfarin 5 MG", "warfarin")),
    ]
    for name, new, old in cases:
        (finding,) = find_duplicates([("d1", new)], [("m1", old)])
        assert finding.facts["class"] == name


def test_two_long_acting_opioids_but_not_long_plus_short_acting():
    (finding,) = find_duplicates([("d1", METHADONE)], [("m1", OXY_ER)])
    assert finding.facts["class"] == "long_acting_opioid"
    assert find_duplicates([("d1", MORPHINE_IR)], [("m1", OXY_ER)]) == []
    assert find_duplicates([("d1", MORPHINE_IR)], [("m1", OXY_IR)]) == []
    assert find_duplicates([("d1", MORPHINE_ER)], [("m1", OXY_ER)])[0].facts["class"] == (
        "long_acting_opioid"
    )


def test_same_opioid_long_plus_short_acting_is_a_breakthrough_regimen():
    assert find_duplicates([("d1", OXY_IR)], [("m1", OXY_ER)]) == []
    # ...but two immediate-release orders of the same opioid are a duplicate.
    assert len(find_duplicates([("d1", OXY_IR)], [("m1", OXY_IR)])) == 1


def test_unrelated_classes_and_unidentified_drugs_are_silent():
    amlodipine = drug("Amlodipine 5 MG Oral Tablet", "amlodipine")
    lisinopril = drug("Lisinopril 10 MG Oral Tablet", "lisinopril")
    metformin = drug("Metformin 500 MG Oral Tablet", "metformin")
    unknown = drug("Mystery tincture", identified=False)
    assert find_duplicates([("d1", amlodipine)], [("m1", lisinopril), ("m2", metformin)]) == []
    assert find_duplicates([("d1", unknown)], [("m1", unknown)]) == []


def test_each_pair_is_reported_once_with_a_pair_key():
    findings = find_duplicates(
        [("d1", NAPROXEN), ("d2", IBUPROFEN)], [("m1", IBUPROFEN), ("m2", NAPROXEN)]
    )
    keys = [f.dedupe_key for f in findings]
    assert len(keys) == len(set(keys))
    # d1-m1 (class), d1-m2 (ingredient), d2-m1 (ingredient), d2-m2 (class), d1-d2 (class)
    assert len(findings) == 5


def test_duplicate_class_list_is_explicit_and_sourced():
    names = [group.name for group in DUPLICATE_CLASSES]
    assert names == [
        "nsaid",
        "raas",
        "ssri",
        "benzodiazepine",
        "long_acting_opioid",
        "anticoagulant",
    ]
    for group in DUPLICATE_CLASSES:
        assert group.tags <= CLASS_VOCABULARY
        assert group.citations and all(c.label for c in group.citations)
        assert group.why
