"""Drug-allergy checks: direct and class matches, cross-sensitivity, status handling, and the
negative cases (refuted, inactive, unrelated drug, sulfonamide non-antibiotics)."""

from __future__ import annotations

import csv
import re

import pytest

from fhir_adapters.patient_context import RXNORM, SNOMED, Allergy, Coding, Concept
from models.drug.allergy import (
    KNOWLEDGE,
    NON_ANTIBIOTIC_SULFONAMIDES,
    find_allergy_conflicts,
    resolve_allergen,
)
from models.drug.normalise import CLASS_VOCABULARY, DrugIdentity
from tests.drug.identities import drug
from tests.support.missing import shared_file


def allergy(
    code: str | None = None,
    display: str | None = None,
    system: str = SNOMED,
    text: str | None = None,
    criticality: str | None = "low",
    kind: str | None = "allergy",
    categories: tuple[str, ...] = ("medication",),
    clinical: str | None = "active",
    verification: str | None = "confirmed",
    reactions: tuple[str, ...] = (),
    aid: str = "a1",
) -> Allergy:
    codings = (Coding(system, code, display),) if code else ()
    return Allergy(
        id=aid,
        substance=Concept(codings=codings, text=text),
        criticality=criticality,
        type=kind,
        categories=categories,
        clinical_status=clinical,
        verification_status=verification,
        reactions=reactions,
    )


PENICILLIN_HIGH = allergy(
    "764146007", "Penicillin (substance)", text="Penicillin", criticality="high"
)
AMOXICILLIN = ("d1", drug("Amoxicillin 500 MG Oral Capsule", "amoxicillin"))


def conflicts(draft: tuple[str, DrugIdentity], *allergies: Allergy):
    return find_allergy_conflicts([draft], list(allergies))


# --- direct and class matches ---------------------------------------------------------


def test_penicillin_allergy_high_criticality_and_amoxicillin_is_critical():
    (finding,) = conflicts(AMOXICILLIN, PENICILLIN_HIGH)
    assert finding.kind == "allergy" and finding.severity == "critical"
    assert finding.summary == "Penicillin allergy (high criticality): amoxicillin ordered"
    assert finding.draft_order_id == "d1"
    assert finding.suggestions[0].kind == "delete-draft"
    assert finding.suggestions[0].resource_id == "d1"
    assert finding.facts["match"] == "group" and finding.facts["group"] == "penicillin"
    assert any("2022 practice parameter" in c.label for c in finding.citations)


def test_synthea_penicillin_v_allergy_covers_the_class_at_warning_when_low():
    # Synthea writes drug allergies with RxNorm ingredient codes (7984 Penicillin V).
    penicillin_v = allergy("7984", "Penicillin V", system=RXNORM, criticality="low")
    (finding,) = conflicts(AMOXICILLIN, penicillin_v)
    assert finding.severity == "warning"
    assert finding.summary == "Penicillin V allergy (low criticality): amoxicillin ordered"
    assert finding.suggestions == ()


def test_same_ingredient_match():
    ibuprofen_allergy = allergy("5640", "Ibuprofen", system=RXNORM, criticality="high")
    (finding,) = conflicts(
        ("d2", drug("Ibuprofen 400 MG Oral Tablet", "ibuprofen")), ibuprofen_allergy
    )
    assert finding.facts["match"] == "ingredient" and finding.severity == "critical"


def test_a_severe_reaction_makes_a_low_criticality_allergy_critical():
    anaphylaxis = allergy("294505008", "Amoxicillin allergy", reactions=("Anaphylaxis (disorder)",))
    (finding,) = conflicts(AMOXICILLIN, anaphylaxis)
    assert finding.severity == "critical"


def test_an_intolerance_is_a_warning_at_most():
    ace_intolerance = allergy(
        "29046", "Lisinopril", system=RXNORM, criticality="high", kind="intolerance"
    )
    (finding,) = conflicts(
        ("d3", drug("Lisinopril 10 MG Oral Tablet", "lisinopril")), ace_intolerance
    )
    assert finding.severity == "warning"
    assert finding.summary.startswith("Lisinopril intolerance (high criticality)")


def test_unconfirmed_still_alerts_and_says_so():
    unconfirmed = allergy("91936005", "Allergy to penicillin (finding)", verification="unconfirmed")
    (finding,) = conflicts(AMOXICILLIN, unconfirmed)
    assert "unconfirmed" in finding.summary
    assert "**unconfirmed**" in finding.detail


# --- negative cases -------------------------------------------------------------------


@pytest.mark.parametrize(
    ("clinical", "verification"),
    [
        ("active", "refuted"),
        ("active", "entered-in-error"),
        ("inactive", "confirmed"),
        ("resolved", "confirmed"),
    ],
)
def test_refuted_entered_in_error_inactive_and_resolved_allergies_are_ignored(
    clinical, verification
):
    ignored = allergy(
        "764146007",
        "Penicillin (substance)",
        criticality="high",
        clinical=clinical,
        verification=verification,
    )
    assert conflicts(AMOXICILLIN, ignored) == []


def test_an_unrelated_drug_is_silent():
    assert (
        conflicts(("d4", drug("Lisinopril 10 MG Oral Tablet", "lisinopril")), PENICILLIN_HIGH) == []
    )
    assert conflicts(("d5", drug("Mystery tincture", identified=False)), PENICILLIN_HIGH) == []


def test_sulfonamide_antibiotic_allergy_vs_non_antibiotic_sulfonamides_is_silent():
    # Strom et al. (N Engl J Med 2003;349:1628-35): after an allergic reaction to a
    # sulfonamide antibiotic, reactions to sulfonamide non-antibiotics were no more
    # likely than reactions to penicillins: a general predisposition to drug allergy, not
    # cross-reactivity (the N1 ring and N4 arylamine that drive it are absent in
    # non-antibiotics). So: no alert for furosemide, thiazides, sulfonylureas, celecoxib.
    sulfa_text = allergy(text="Sulfonamide", criticality="high")
    sulfa_code = allergy("387406002", "Sulfonamide (substance)", criticality="high")
    smx_tmp = allergy("10831", "Sulfamethoxazole / Trimethoprim", system=RXNORM, criticality="high")
    for name in ("furosemide", "hydrochlorothiazide", "glipizide", "celecoxib"):
        assert name in NON_ANTIBIOTIC_SULFONAMIDES
        draft = ("d6", drug(f"{name} oral tablet", name))
        assert conflicts(draft, sulfa_text, sulfa_code, smx_tmp) == [], name
    bactrim = ("d7", drug("SMX 800 MG / TMP 160 MG", "sulfamethoxazole", "trimethoprim"))
    findings = conflicts(bactrim, sulfa_text, sulfa_code, smx_tmp)
    assert len(findings) == 3 and {f.severity for f in findings} == {"critical"}


def test_food_and_environmental_allergies_never_match_a_drug():
    nut = allergy("91934008", "Allergy to nut", text="Allergy to nut", categories=("food",))
    dander = allergy("232347008", "Dander (animal) allergy", categories=("environment",))
    assert resolve_allergen(nut) is None and resolve_allergen(dander) is None
    assert conflicts(AMOXICILLIN, nut, dander) == []


def test_no_allergy_in_the_shared_synthea_sample_is_mistaken_for_a_drug():
    # The shared sample's AllergyIntolerances are foods and environmental allergens
    # (SNOMED CT findings such as 91934008 Allergy to nut): none may resolve to a drug.
    from fhir_adapters.context_builder import allergy as to_allergy
    from fhir_adapters.parsing import parse_resource
    from fhir_adapters.synthea import load_bundle, resources_by_type

    seen: set[tuple[tuple[str | None, str | None], ...]] = set()
    for path in sorted(shared_file("synthea-r4").glob("*.gz")):
        for resource in resources_by_type(load_bundle(path)).get("AllergyIntolerance", []):
            key = tuple((c.get("system"), c.get("code")) for c in resource["code"]["coding"])
            if key in seen:
                continue
            seen.add(key)
            record = to_allergy(parse_resource(resource, "AllergyIntolerance"))
            assert resolve_allergen(record) is None, record.substance.label
    assert seen


# --- cross-sensitivity ----------------------------------------------------------------


def test_penicillin_allergy_vs_cephalosporin_states_the_low_risk():
    (finding,) = conflicts(("d8", drug("Cefazolin 1 G Injection", "cefazolin")), PENICILLIN_HIGH)
    assert finding.severity == "warning"
    assert finding.facts["match"] == "cross" and finding.facts["rule"] == "penicillin-cephalosporin"
    assert "2% or less" in finding.detail and "R1 side chain" in finding.detail
    assert "cephalosporin cross-reactivity" in finding.summary


def test_identical_r1_side_chain_raises_the_risk():
    amoxicillin_high = allergy("294505008", "Amoxicillin allergy", criticality="high")
    cefadroxil = ("d9", drug("Cefadroxil 500 MG Oral Capsule", "cefadroxil"))
    (finding,) = conflicts(cefadroxil, amoxicillin_high)
    assert finding.severity == "critical"
    assert "shares its R1 side chain with amoxicillin" in finding.detail
    amoxicillin_low = allergy("294505008", "Amoxicillin allergy", criticality="low")
    assert conflicts(cefadroxil, amoxicillin_low)[0].severity == "warning"


def test_penicillin_allergy_vs_carbapenem_is_info_under_one_percent():
    (finding,) = conflicts(("d10", drug("Meropenem 1 G Injection", "meropenem")), PENICILLIN_HIGH)
    assert finding.severity == "info"
    assert "<1%" in finding.summary and "under 1%" in finding.detail


def test_penicillin_allergy_vs_aztreonam_is_silent():
    assert conflicts(("d11", drug("Aztreonam 1 G Injection", "aztreonam")), PENICILLIN_HIGH) == []


def test_cephalosporin_allergy_follows_the_side_chain():
    cephalexin = allergy("2231", "Cephalexin", system=RXNORM, criticality="low")
    ampicillin = ("d12", drug("Ampicillin 500 MG Oral Capsule", "ampicillin"))
    (same_chain,) = conflicts(ampicillin, cephalexin)
    assert same_chain.severity == "warning" and same_chain.facts["rule"] == "r1-side-chain"
    # amoxicillin's side chain differs from cephalexin's: no alert.
    assert conflicts(AMOXICILLIN, cephalexin) == []
    (other_ceph,) = conflicts(("d13", drug("Cefazolin 1 G Injection", "cefazolin")), cephalexin)
    assert other_ceph.severity == "info"


def test_ceftazidime_and_aztreonam_share_a_side_chain():
    ceftazidime = allergy("294546003", "Ceftazidime allergy")
    (finding,) = conflicts(("d14", drug("Aztreonam 1 G Injection", "aztreonam")), ceftazidime)
    assert finding.severity == "warning" and finding.facts["rule"] == "r1-side-chain"


def test_aspirin_allergy_vs_other_nsaids():
    aspirin = allergy("1191", "Aspirin", system=RXNORM, criticality="high")
    (naproxen,) = conflicts(("d15", drug("Naproxen 500 MG Oral Tablet", "naproxen")), aspirin)
    assert naproxen.severity == "warning" and naproxen.facts["rule"] == "nsaid-cross"
    assert "NSAID-exacerbated respiratory disease" in naproxen.detail
    (celecoxib,) = conflicts(("d16", drug("Celecoxib 200 MG Oral Capsule", "celecoxib")), aspirin)
    assert celecoxib.severity == "info"
    acetaminophen = ("d17", drug("Acetaminophen 500 MG Oral Tablet", "acetaminophen"))
    assert conflicts(acetaminophen, aspirin) == []


def test_nsaid_class_allergy_covers_every_nsaid():
    nsaid = allergy("293610009", "Non-steroidal anti-inflammatory drug allergy", criticality="high")
    (finding,) = conflicts(("d18", drug("Ibuprofen 400 MG Oral Tablet", "ibuprofen")), nsaid)
    assert finding.severity == "critical" and finding.facts["match"] == "group"


def test_text_only_allergies_are_recognised():
    sulfa = allergy(text="Sulfa drugs", criticality="low", categories=())
    allergen = resolve_allergen(sulfa)
    assert allergen is not None and "sulfonamide_antibiotic" in allergen.groups
    named = allergy(text="amoxicillin", criticality="low")
    allergen = resolve_allergen(named)
    assert allergen is not None and "amoxicillin" in allergen.ingredients
    assert "penicillin" in allergen.groups  # one penicillin stands for the class


def test_one_finding_per_allergy_and_draft_with_short_summaries():
    many = [
        PENICILLIN_HIGH,
        allergy("294505008", "Amoxicillin allergy", aid="a2"),
        allergy("7984", "Penicillin V", system=RXNORM, aid="a3"),
    ]
    findings = find_allergy_conflicts([AMOXICILLIN], many)
    assert len(findings) == 3
    assert len({f.dedupe_key for f in findings}) == 3
    assert all(len(f.summary) < 140 for f in findings)


# --- knowledge file -------------------------------------------------------------------


def test_every_allergy_group_row_is_sourced_and_well_formed():
    with (KNOWLEDGE / "allergy_groups.csv").open(newline="", encoding="utf-8") as handle:
        rows = list(csv.DictReader(handle))
    assert list(rows[0]) == [
        "system",
        "code",
        "display",
        "group_or_ingredient",
        "source",
        "source_url",
    ]
    keys = [(r["system"], r["code"]) for r in rows]
    assert len(keys) == len(set(keys))
    for row in rows:
        assert row["source"].strip(), row
        assert row["source_url"].startswith("https://"), row
        assert row["display"].strip()
        assert row["system"] in (SNOMED, RXNORM, "text")
        if row["system"] != "text":
            assert re.fullmatch(r"\d+", row["code"]), row
        for target in row["group_or_ingredient"].split("|"):
            kind, _, name = target.partition(":")
            assert kind in ("group", "ingredient"), row
            if kind == "group":
                assert name in CLASS_VOCABULARY, row
            else:
                assert name == name.lower().strip() and name, row
