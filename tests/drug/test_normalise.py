"""Drug normalisation: RxNorm codes and free text → ingredients, strengths, classes."""

from __future__ import annotations

import csv
import re
from functools import cache
from pathlib import Path

import pytest

from fhir_adapters.patient_context import RXNORM, Coding, Concept
from fhir_adapters.synthea import load_bundle, resources_by_type
from models.drug.normalise import CLASS_VOCABULARY, DrugIdentity, identify, ingredient_classes
from tests.conftest import synthea_bundles

KNOWLEDGE = Path(__file__).resolve().parents[2] / "models" / "drug" / "knowledge"
BETA_LACTAMS = {"penicillin", "cephalosporin", "carbapenem", "monobactam"}
SEROTONERGIC = {"ssri", "snri", "tca", "maoi", "triptan"}


def coded(code: str, display: str) -> DrugIdentity:
    return identify(Concept(codings=(Coding(RXNORM, code, display),)))


def text(value: str) -> DrugIdentity:
    return identify(Concept(text=value))


def rows(name: str) -> list[dict[str, str]]:
    with (KNOWLEDGE / name).open(encoding="utf-8", newline="") as handle:
        return list(csv.DictReader(line for line in handle if not line.startswith("#")))


# -- every RxNorm code in the shared Synthea data --------------------------------------------


@cache
def synthea_rxnorm_codes() -> dict[str, str]:
    """code → display for every RxNorm coding of a MedicationRequest or Medication."""
    codes: dict[str, str] = {}
    for path in synthea_bundles():
        resources = resources_by_type(load_bundle(path))
        for resource in resources.get("MedicationRequest", []) + resources.get("Medication", []):
            concept = resource.get("medicationCodeableConcept") or resource.get("code") or {}
            for coding in concept.get("coding", []):
                if coding.get("system") == RXNORM and coding.get("code"):
                    codes.setdefault(coding["code"], coding.get("display", ""))
    return codes


def test_every_synthea_rxnorm_code_is_identified():
    codes = synthea_rxnorm_codes()
    assert len(codes) >= 100
    unidentified = sorted(
        f"{code} {display}" for code, display in codes.items() if not coded(code, "").identified
    )
    assert unidentified == [], "\n".join(unidentified)


def test_every_synthea_code_is_a_product_row():
    """Identified by its code (the product table), not just by parsing its display."""
    products = {row["rxcui"] for row in rows("rxnorm_products.csv")}
    missing = sorted(set(synthea_rxnorm_codes()) - products)
    assert missing == [], missing


# -- products ---------------------------------------------------------------------------------


def test_percocet_like_combination_split_with_strengths():
    drug = coded("1049221", "Acetaminophen 325 MG / oxyCODONE Hydrochloride 5 MG Oral Tablet")
    assert drug.identified and drug.rxcui == "1049221"
    assert drug.ingredients == ("acetaminophen", "oxycodone")
    assert dict(drug.strengths_mg) == {"acetaminophen": 325.0, "oxycodone": 5.0}
    assert drug.dose_form == "tablet"
    assert drug.has_class("opioid") and "N02AA05" in drug.atc


def test_branded_vicodin():
    drug = coded("1310197", "Acetaminophen 300 MG / HYDROcodone Bitartrate 5 MG [Vicodin]")
    assert drug.ingredients == ("acetaminophen", "hydrocodone")
    assert dict(drug.strengths_mg) == {"acetaminophen": 300.0, "hydrocodone": 5.0}
    assert drug.has_class("opioid")


def test_name_only_combination_has_no_strengths():
    drug = coded("856980", "Acetaminophen/Hydrocodone")
    assert drug.ingredients == ("acetaminophen", "hydrocodone")
    assert dict(drug.strengths_mg) == {}


def test_branded_pack_ingredients_come_from_the_table():
    drug = coded("748856", "Yaz 28 Day Pack")
    assert set(drug.ingredients) == {"drospirenone", "ethinyl estradiol"}
    assert drug.dose_form == "pack"


def test_patch_strength_in_mcg_per_hour():
    drug = coded(
        "1534809",
        "168 HR Ethinyl Estradiol 0.00146 MG/HR / norelgestromin 0.00625 MG/HR Transdermal System",
    )
    assert drug.dose_form == "patch"
    assert drug.strengths_mg == {"ethinyl estradiol": 1.46, "norelgestromin": 6.25}
    fentanyl = text("72 HR Fentanyl 0.025 MG/HR Transdermal System")
    assert fentanyl.ingredients == ("fentanyl",)
    assert fentanyl.strengths_mg == {"fentanyl": 25.0}
    assert fentanyl.dose_form == "patch"
    assert fentanyl.has_class("opioid") and fentanyl.has_class("serotonergic")


def test_solution_strength_per_ml():
    drug = coded("311989", "Nitrofurantoin 5 MG/ML Oral Suspension")
    assert drug.strengths_mg == {"nitrofurantoin": 5.0}
    assert drug.dose_form == "suspension" and drug.has_class("nitrofuran")


def test_misspelt_sample_display_still_identified_by_code():
    drug = coded("316672", "Simvistatin 10 MG")
    assert drug.ingredients == ("simvastatin",)
    assert drug.has_class("statin_cyp3a4_sensitive")


def test_topical_corticosteroid_is_not_systemic():
    cream = coded("106258", "Hydrocortisone 10 MG/ML Topical Cream")
    assert cream.dose_form == "cream" and not cream.has_class("corticosteroid_systemic")
    assert coded("312617", "predniSONE 5 MG Oral Tablet").has_class("corticosteroid_systemic")


def test_label_is_the_concept_text_or_display():
    assert coded("198014", "Naproxen 500 MG Oral Tablet").label == "Naproxen 500 MG Oral Tablet"
    concept = Concept(codings=(Coding(RXNORM, "198014", None),), text="naproxen for knee pain")
    assert identify(concept).label == "naproxen for knee pain"


# -- names and free text ----------------------------------------------------------------------


def test_tall_man_and_salt_names():
    drug = text("oxyCODONE Hydrochloride 10 MG Oral Tablet")
    assert drug.ingredients == ("oxycodone",) and drug.strengths_mg == {"oxycodone": 10.0}
    drug = text("HYDROmorphone HCl 2 mg tablet")
    assert drug.ingredients == ("hydromorphone",) and drug.strengths_mg == {"hydromorphone": 2.0}
    assert text("diphenhydrAMINE Hydrochloride 25 MG").ingredients == ("diphenhydramine",)
    assert text("Amoxicillin Trihydrate 500 mg capsule").strengths_mg == {"amoxicillin": 500.0}
    assert text("Cefalexin 500 mg").ingredients == ("cephalexin",)
    assert text("Paracetamol 500 mg").ingredients == ("acetaminophen",)


def test_uncoded_free_text_identified_by_name():
    drug = text("naproxen 500 mg tablet")
    assert drug.identified and drug.rxcui is None
    assert drug.ingredients == ("naproxen",)
    assert drug.strengths_mg == {"naproxen": 500.0}
    assert drug.dose_form == "tablet" and drug.has_class("nsaid")


def test_unknown_code_falls_back_to_display():
    drug = coded("99999999", "Warfarin Sodium 2.5 MG Oral Tablet")
    assert drug.identified and drug.rxcui == "99999999"
    assert drug.ingredients == ("warfarin",) and drug.strengths_mg == {"warfarin": 2.5}


def test_ingredient_rxcui():
    drug = identify(Concept(codings=(Coding(RXNORM, "7804", None),)))
    assert drug.identified and drug.ingredients == ("oxycodone",) and drug.rxcui == "7804"


def test_units_are_converted_to_mg():
    assert text("levothyroxine 75 mcg tablet").strengths_mg == {"levothyroxine": 0.075}
    assert text("Sertraline 100MG").strengths_mg == {"sertraline": 100.0}


def test_combination_brand_names_both_ingredients():
    assert set(text("Percocet 5/325").ingredients) == {"oxycodone", "acetaminophen"}
    assert set(text("Bactrim DS").ingredients) == {"sulfamethoxazole", "trimethoprim"}


def test_unknown_drug_not_identified():
    drug = text("Unobtainium 10 MG Oral Tablet")
    assert not drug.identified
    assert drug.ingredients == () and drug.classes == frozenset() and drug.atc == ()
    assert not identify(Concept()).identified


def test_words_inside_other_names_do_not_match():
    # "codeine" is not read out of "hydrocodone"; "estradiol" not out of "ethinyl estradiol"
    assert text("hydrocodone 5 mg").ingredients == ("hydrocodone",)
    assert text("ethinyl estradiol 0.03 mg").ingredients == ("ethinyl estradiol",)
    assert text("atorvastatin calcium 20 mg").ingredients == ("atorvastatin",)


# -- classes ----------------------------------------------------------------------------------


def test_class_expansion():
    assert {"penicillin", "beta_lactam"} <= text("amoxicillin 500 mg").classes
    assert {"ssri", "serotonergic"} <= text("sertraline 50 mg").classes
    assert ingredient_classes("amoxicillin") >= {"penicillin", "beta_lactam"}
    assert ingredient_classes("Sertraline Hydrochloride") >= {"ssri", "serotonergic"}
    assert ingredient_classes("unobtainium") == frozenset()
    assert "cephalosporin" in ingredient_classes("cefalexin")


def test_identity_classes_are_the_union_over_ingredients():
    drug = coded("562251", "Amoxicillin 250 MG / Clavulanate 125 MG Oral Tablet")
    expected = frozenset().union(*(ingredient_classes(i) for i in drug.ingredients))
    assert drug.classes == expected


# -- the knowledge files ----------------------------------------------------------------------


def test_ingredients_csv_integrity():
    table = rows("ingredients.csv")
    names = [row["ingredient"] for row in table]
    assert len(names) >= 300
    assert len(names) == len(set(names)), "duplicate ingredient rows"
    assert all(name == name.strip().lower() and name for name in names)
    for row in table:
        assert row["source"].strip(), row["ingredient"]
        classes = set(filter(None, row["classes"].split(";")))
        assert classes <= CLASS_VOCABULARY, (row["ingredient"], classes - CLASS_VOCABULARY)
        if classes & BETA_LACTAMS:
            assert "beta_lactam" in classes, row["ingredient"]
        if classes & SEROTONERGIC:
            assert "serotonergic" in classes, row["ingredient"]
        for code in filter(None, row["atc"].split(";")):
            assert re.fullmatch(r"[A-Z]\d\d[A-Z]{2}\d\d", code), (row["ingredient"], code)
        assert re.fullmatch(r"\d*", row["rxcui"]), row["ingredient"]
    rxcuis = [row["rxcui"] for row in table if row["rxcui"]]
    assert len(rxcuis) == len(set(rxcuis)), "one RXCUI on two ingredients"


def test_products_csv_integrity():
    ingredients = {row["ingredient"] for row in rows("ingredients.csv")}
    table = rows("rxnorm_products.csv")
    codes = [row["rxcui"] for row in table]
    assert len(codes) == len(set(codes))
    for row in table:
        assert row["source"].strip(), row["rxcui"]
        named = row["ingredients"].split(";")
        assert named and set(named) <= ingredients, (row["rxcui"], set(named) - ingredients)
        for pair in filter(None, row["strengths_mg"].split(";")):
            name, _, value = pair.partition("=")
            assert name in named and float(value) > 0, (row["rxcui"], pair)


@pytest.mark.parametrize(
    "ingredient",
    [
        "verapamil", "digoxin", "amiodarone", "methotrexate", "trimethoprim", "sulfamethoxazole",
        "clarithromycin", "ketoconazole", "itraconazole", "ritonavir", "simvastatin",
        "lovastatin", "spironolactone", "eplerenone", "amiloride", "triamterene", "tramadol",
        "meperidine", "linezolid", "phenelzine", "selegiline", "sumatriptan", "naloxone",
        "nitrofurantoin", "penicillin g", "penicillin v", "amoxicillin", "ampicillin",
        "piperacillin", "cephalexin", "ceftriaxone", "cefuroxime", "cefdinir", "meropenem",
        "aztreonam", "oxycodone", "hydrocodone", "codeine", "morphine", "hydromorphone",
        "oxymorphone", "fentanyl", "methadone", "tapentadol", "buprenorphine", "alprazolam",
        "lorazepam", "clonazepam", "diazepam", "temazepam", "zolpidem", "warfarin", "apixaban",
        "rivaroxaban", "dabigatran", "clopidogrel", "ticagrelor", "prasugrel", "aspirin",
        "ibuprofen", "naproxen", "diclofenac", "meloxicam", "celecoxib", "ketorolac",
        "indomethacin", "metformin", "glipizide", "glyburide", "sildenafil", "tadalafil",
        "nitroglycerin", "isosorbide mononitrate", "citalopram", "escitalopram", "ondansetron",
        "haloperidol", "azithromycin", "levofloxacin", "moxifloxacin", "ciprofloxacin",
        "erythromycin", "sotalol", "dofetilide", "lithium", "potassium chloride",
    ],
)  # fmt: skip
def test_rule_ingredients_are_known(ingredient):
    assert text(ingredient).ingredients == (ingredient,)
