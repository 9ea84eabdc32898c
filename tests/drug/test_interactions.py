"""Drug-drug interactions (models/drug/interactions.py and knowledge/interactions.csv)."""

from __future__ import annotations

import csv
import re

import pytest

from models.drug import interactions
from models.drug.findings import Finding
from models.drug.interactions import (
    COLUMNS,
    KNOWLEDGE_FILE,
    find_interactions,
    load_rules,
    parse_rules,
)
from models.drug.normalise import CLASS_VOCABULARY, DrugIdentity

#: Class tags of the drugs these tests use (as models/drug/normalise.py tags them).
CLASSES: dict[str, set[str]] = {
    "warfarin": {"anticoagulant_vka"},
    "apixaban": {"anticoagulant_doac"},
    "naproxen": {"nsaid"},
    "ibuprofen": {"nsaid"},
    "diclofenac": {"nsaid"},
    "meloxicam": {"nsaid"},
    "celecoxib": {"nsaid"},
    "ketorolac": {"nsaid"},
    "aspirin": {"salicylate", "antiplatelet"},
    "clopidogrel": {"antiplatelet"},
    "digoxin": {"cardiac_glycoside"},
    "verapamil": {"non_dhp_ccb"},
    "amiodarone": {"antiarrhythmic_class_iii", "qt_prolonging"},
    "oxycodone": {"opioid"},
    "acetaminophen": set(),
    "alprazolam": {"benzodiazepine"},
    "zolpidem": {"z_drug"},
    "gabapentin": {"gabapentinoid"},
    "tramadol": {"opioid", "serotonergic"},
    "methadone": {"opioid", "serotonergic", "qt_prolonging"},
    "sertraline": {"ssri", "serotonergic"},
    "citalopram": {"ssri", "serotonergic", "qt_prolonging"},
    "phenelzine": {"maoi", "serotonergic"},
    "rasagiline": {"maoi", "serotonergic"},
    "linezolid": {"maoi", "serotonergic"},
    "simvastatin": {"statin", "statin_cyp3a4_sensitive"},
    "atorvastatin": {"statin"},
    "clarithromycin": {"macrolide", "cyp3a4_strong_inhibitor", "qt_prolonging"},
    "erythromycin": {"macrolide", "qt_prolonging"},
    "methotrexate": {"methotrexate"},
    "trimethoprim": {"trimethoprim"},
    "sulfamethoxazole": {"sulfonamide_antibiotic"},
    "lisinopril": {"ace_inhibitor"},
    "losartan": {"arb"},
    "spironolactone": {"potassium_sparing_diuretic"},
    "sildenafil": {"pde5_inhibitor"},
    "nitroglycerin": {"nitrate"},
    "isosorbide mononitrate": {"nitrate"},
    "amlodipine": set(),
    "metformin": {"biguanide"},
    "ondansetron": {"qt_prolonging"},
    "omeprazole": set(),
    "pantoprazole": set(),
}


def drug(*ingredients: str, classes: set[str] | None = None, label: str | None = None):
    """A DrugIdentity built by hand (the classes are the union over the ingredients)."""
    tags = set().union(*(CLASSES[i] for i in ingredients)) if classes is None else classes
    return DrugIdentity(
        label=label or " / ".join(ingredients),
        ingredients=tuple(ingredients),
        classes=frozenset(tags),
        atc=(),
        rxcui=None,
        strengths_mg={},
        dose_form=None,
        identified=True,
    )


def one(findings: list[Finding]) -> Finding:
    assert len(findings) == 1, [f.summary for f in findings]
    return findings[0]


def check(draft: str, active: str) -> list[Finding]:
    return find_interactions([("draft-1", drug(draft))], [("med-1", drug(active))])


# -- the named pairs -------------------------------------------------------------------------


def test_warfarin_naproxen():
    finding = one(check("naproxen", "warfarin"))
    assert finding.kind == "interaction"
    assert finding.severity == "warning"
    assert finding.summary.startswith("Warfarin + naproxen: bleeding risk")
    assert len(finding.summary) < 140
    assert finding.draft_order_id == "draft-1"
    assert finding.dedupe_key == "interaction:naproxen+warfarin"
    assert finding.facts == {
        "rule": "warfarin-nsaid",
        "pair": ["warfarin", "naproxen"],
        "with": "active",
        "other_order_id": "med-1",
    }
    for section in ("**Mechanism**", "**Management**", "**Evidence**", "**Source**"):
        assert section in finding.detail
    assert "acetaminophen" in finding.detail
    assert "(active medication)" in finding.detail and "(the draft order)" in finding.detail
    assert finding.citations and all(c.label for c in finding.citations)
    assert any(c.url and c.url.startswith("https://") for c in finding.citations)
    assert finding.suggestions == ()  # a warning: no removal offered


@pytest.mark.parametrize(
    "nsaid", ["ibuprofen", "diclofenac", "meloxicam", "celecoxib", "ketorolac"]
)
def test_class_rule_covers_every_nsaid(nsaid):
    finding = one(check(nsaid, "warfarin"))
    assert finding.facts["rule"] == "warfarin-nsaid"
    assert finding.summary.startswith(f"Warfarin + {nsaid}:")


def test_an_unknown_member_of_a_class_is_covered_through_its_tag():
    """A rule names a class, not a list: any drug normalise tags as an NSAID is covered."""
    finding = one(
        find_interactions(
            [("d", drug("zaltoprofen", classes={"nsaid"}))], [("m", drug("warfarin"))]
        )
    )
    assert finding.facts["rule"] == "warfarin-nsaid"


def test_warfarin_aspirin_and_clopidogrel():
    assert one(check("aspirin", "warfarin")).facts["rule"] == "warfarin-antiplatelet"
    assert one(check("clopidogrel", "warfarin")).severity == "warning"


def test_digoxin_verapamil():
    finding = one(check("verapamil", "digoxin"))
    assert finding.severity == "warning"
    assert finding.facts["rule"] == "digoxin-verapamil"
    assert finding.summary.startswith("Digoxin + verapamil:")
    assert "30-50%" in finding.detail


def test_digoxin_amiodarone():
    assert one(check("amiodarone", "digoxin")).facts["rule"] == "digoxin-amiodarone"


def test_oxycodone_alprazolam():
    finding = one(check("oxycodone", "alprazolam"))
    assert finding.severity == "critical"
    assert finding.facts["rule"] == "opioid-benzodiazepine"
    assert finding.summary.startswith("Oxycodone + alprazolam:")
    [action] = finding.suggestions
    assert action.kind == "delete-draft"
    assert action.resource_id == "draft-1"
    assert action.label == "Remove the draft order for oxycodone"


def test_opioid_with_z_drug_and_gabapentinoid():
    assert one(check("zolpidem", "oxycodone")).facts["rule"] == "opioid-z-drug"
    finding = one(check("gabapentin", "oxycodone"))
    assert (finding.facts["rule"], finding.severity) == ("opioid-gabapentinoid", "warning")


def test_combination_product_interacts_through_its_ingredient():
    finding = one(
        find_interactions(
            [("percocet-1", drug("acetaminophen", "oxycodone"))], [("m", drug("alprazolam"))]
        )
    )
    assert finding.facts["pair"] == ["oxycodone", "alprazolam"]
    assert finding.suggestions[0].label == "Remove the draft order for acetaminophen/oxycodone"


def test_sertraline_phenelzine_is_critical():
    finding = one(check("sertraline", "phenelzine"))
    assert finding.severity == "critical"
    # the ONC high-priority pair names both ingredients, so it beats the class-level rule
    assert finding.facts["rule"] == "onc-ssri-snri-maoi"
    assert finding.summary.startswith("Sertraline + phenelzine: serotonin syndrome")
    assert any("doi.org/10.1136/amiajnl-2011-000612" in (c.url or "") for c in finding.citations)


def test_tramadol_sertraline_serotonergic_warning():
    finding = one(check("tramadol", "sertraline"))
    assert (finding.facts["rule"], finding.severity) == (
        "serotonergic-opioid-antidepressant",
        "warning",
    )


def test_linezolid_with_an_ssri_is_a_warning_but_with_an_maoi_critical():
    # linezolid is tagged maoi, but the MAOI rules name the MAO-inhibitor drugs themselves
    finding = one(check("linezolid", "sertraline"))
    assert (finding.facts["rule"], finding.severity) == ("linezolid-serotonergic", "warning")
    finding = one(check("linezolid", "phenelzine"))
    assert (finding.facts["rule"], finding.severity) == ("serotonergic-maoi", "critical")


def test_ssri_with_rasagiline_is_critical():
    assert one(check("sertraline", "rasagiline")).facts["rule"] == "serotonergic-maoi"


def test_simvastatin_clarithromycin_is_critical():
    finding = one(check("clarithromycin", "simvastatin"))
    assert finding.severity == "critical"
    assert finding.facts["rule"] == "onc-statin-cyp3a4"
    assert finding.summary.startswith("Simvastatin + clarithromycin:")
    assert "pravastatin" in finding.detail


def test_simvastatin_erythromycin_is_critical_though_erythromycin_is_not_strong():
    finding = one(check("erythromycin", "simvastatin"))
    assert (finding.facts["rule"], finding.severity) == ("onc-statin-cyp3a4", "critical")


def test_atorvastatin_clarithromycin_is_not_the_simvastatin_rule():
    assert check("clarithromycin", "atorvastatin") == []


def test_methotrexate_trimethoprim():
    finding = one(check("trimethoprim", "methotrexate"))
    assert finding.severity == "critical"
    assert finding.facts["rule"] == "methotrexate-trimethoprim"


def test_co_trimoxazole_with_methotrexate_is_one_finding():
    finding = one(
        find_interactions(
            [("bactrim-1", drug("sulfamethoxazole", "trimethoprim"))],
            [("m", drug("methotrexate"))],
        )
    )
    assert finding.summary.startswith("Methotrexate + sulfamethoxazole/trimethoprim:")
    assert finding.dedupe_key == "interaction:methotrexate+sulfamethoxazole/trimethoprim"


def test_lisinopril_spironolactone():
    finding = one(check("spironolactone", "lisinopril"))
    assert (finding.facts["rule"], finding.severity) == ("raas-potassium-sparing", "warning")
    assert "potassium" in finding.detail


def test_ace_inhibitor_with_arb():
    assert one(check("losartan", "lisinopril")).facts["rule"] == "acei-arb"


def test_sildenafil_nitroglycerin_is_critical():
    finding = one(check("sildenafil", "nitroglycerin"))
    assert finding.severity == "critical"
    assert finding.facts["rule"] == "pde5-nitrate"
    assert finding.suggestions[0].resource_id == "draft-1"


def test_clopidogrel_omeprazole_but_not_pantoprazole():
    assert one(check("omeprazole", "clopidogrel")).facts["rule"] == "clopidogrel-omeprazole"
    assert check("pantoprazole", "clopidogrel") == []


def test_qt_prolonging_pair():
    finding = one(check("ondansetron", "amiodarone"))
    assert (finding.facts["rule"], finding.severity) == ("onc-qt-qt", "critical")


# -- negative cases --------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("draft", "active"),
    [("amlodipine", "lisinopril"), ("metformin", "lisinopril"), ("acetaminophen", "warfarin")],
)
def test_no_rule_no_finding(draft, active):
    assert check(draft, active) == []
    assert check(active, draft) == []


def test_a_drug_never_interacts_with_itself():
    # citalopram is QT-prolonging: the QT rule must not pair it with itself
    assert check("citalopram", "citalopram") == []
    # the same ingredient inside a combination product is duplicate therapy, not ours
    assert (
        find_interactions([("d", drug("oxycodone"))], [("m", drug("acetaminophen", "oxycodone"))])
        == []
    )


def test_unidentified_drugs_are_skipped():
    unknown = DrugIdentity(
        label="Zyxoflam 10 MG",
        ingredients=(),
        classes=frozenset(),
        atc=(),
        rxcui=None,
        strengths_mg={},
        dose_form=None,
        identified=False,
    )
    assert find_interactions([("d", unknown)], [("m", drug("warfarin"))]) == []
    assert find_interactions([("d", drug("naproxen"))], [("m", unknown)]) == []


def test_nothing_to_check():
    assert find_interactions([], [("m", drug("warfarin"))]) == []
    assert find_interactions([("d", drug("naproxen"))], []) == []


# -- severity, specificity, de-duplication ---------------------------------------------------


def test_a_pair_under_two_rules_is_reported_once_with_the_higher_severity():
    # citalopram + methadone: QT pair (critical) and serotonergic opioid (warning)
    finding = one(check("methadone", "citalopram"))
    assert finding.severity == "critical"
    assert finding.facts["rule"] == "onc-qt-qt"


SYNTHETIC = [
    ",".join(COLUMNS),
    "class-warn,class:nsaid,class:anticoagulant_vka,warning,class warning,m,g,e,src,https://x",
    "ingr-warn,ingredient:naproxen,ingredient:warfarin,warning,ingredient warning,m,g,e,src,",
    "class-crit,class:nsaid,class:anticoagulant_vka,critical,class critical,m,g,e,src,",
    "mixed-warn,ingredient:ibuprofen,class:anticoagulant_vka,warning,mixed warning,m,g,e,src,",
]


def test_most_severe_then_most_specific_rule_wins(monkeypatch):
    rules = parse_rules(SYNTHETIC)
    monkeypatch.setattr(interactions, "load_rules", lambda: rules)
    assert one(check("naproxen", "warfarin")).facts["rule"] == "class-crit"
    monkeypatch.setattr(interactions, "load_rules", lambda: rules[:2])
    assert one(check("naproxen", "warfarin")).facts["rule"] == "ingr-warn"
    assert one(check("ibuprofen", "warfarin")).facts["rule"] == "class-warn"
    monkeypatch.setattr(interactions, "load_rules", lambda: (rules[0], rules[3]))
    assert one(check("ibuprofen", "warfarin")).facts["rule"] == "mixed-warn"


def test_the_same_pair_is_reported_once_across_orders():
    findings = find_interactions(
        [("d1", drug("naproxen")), ("d2", drug("naproxen"))],
        [("m1", drug("warfarin")), ("m2", drug("warfarin"))],
    )
    finding = one(findings)
    assert (finding.draft_order_id, finding.facts["other_order_id"]) == ("d1", "m1")


def test_draft_against_draft():
    finding = one(find_interactions([("d1", drug("warfarin")), ("d2", drug("ibuprofen"))], []))
    assert finding.draft_order_id == "d2"
    assert finding.summary.startswith("Warfarin + ibuprofen:")
    assert finding.facts["with"] == "draft" and finding.facts["other_order_id"] == "d1"
    assert "(another draft order)" in finding.detail


def test_critical_draft_pair_offers_removing_either_draft():
    finding = one(
        find_interactions([("d1", drug("isosorbide mononitrate")), ("d2", drug("sildenafil"))], [])
    )
    assert finding.severity == "critical"
    assert [(s.kind, s.resource_id) for s in finding.suggestions] == [
        ("delete-draft", "d2"),
        ("delete-draft", "d1"),
    ]


def test_a_draft_without_an_id_gets_no_removal_suggestion():
    finding = one(find_interactions([(None, drug("sildenafil"))], [("m", drug("nitroglycerin"))]))
    assert finding.draft_order_id is None
    assert finding.suggestions == ()


def test_several_findings_most_severe_first():
    findings = find_interactions(
        [("d", drug("oxycodone"))],
        [("m1", drug("gabapentin")), ("m2", drug("alprazolam"))],
    )
    assert [f.facts["rule"] for f in findings] == ["opioid-benzodiazepine", "opioid-gabapentinoid"]


def test_summaries_stay_under_140_characters_with_long_names(monkeypatch):
    phrase = "a deliberately long interaction summary phrase that fills most of the card header"
    row = f"long,class:nsaid,class:anticoagulant_vka,warning,{phrase},m,g,e,src,"
    monkeypatch.setattr(interactions, "load_rules", lambda: parse_rules([SYNTHETIC[0], row]))
    findings = find_interactions(
        [("d", drug("naproxen", classes={"nsaid"}, label="n"))],
        [
            (
                "m",
                drug(
                    "phenprocoumon with a very very long ingredient name",
                    classes={"anticoagulant_vka"},
                ),
            )
        ],
    )
    summary = one(findings).summary
    assert len(summary) == 139 and summary.endswith("…")
    assert summary.startswith("Naproxen + phenprocoumon with a very very long ingredient name: ")


# -- with the real normalisation -------------------------------------------------------------

RXNORM = "http://www.nlm.nih.gov/research/umls/rxnorm"


def identified(code: str | None, display: str) -> DrugIdentity:
    from fhir_adapters.patient_context import Coding, Concept
    from models.drug.normalise import identify

    concept = Concept(codings=(Coding(RXNORM, code, display),)) if code else Concept(text=display)
    identity = identify(concept)
    assert identity.identified, display
    return identity


@pytest.mark.parametrize(
    ("draft", "active", "rule"),
    [
        (
            ("198014", "Naproxen 500 MG Oral Tablet"),
            (None, "Warfarin Sodium 5 MG Oral Tablet"),
            "warfarin-nsaid",
        ),
        (
            ("897718", "Verapamil Hydrochloride 40 MG"),
            (None, "Digoxin 0.125 MG Oral Tablet"),
            "digoxin-verapamil",
        ),
        (
            ("1049221", "Acetaminophen 325 MG / oxyCODONE Hydrochloride 5 MG Oral Tablet"),
            (None, "Alprazolam 0.5 MG Oral Tablet"),
            "opioid-benzodiazepine",
        ),
        (
            (None, "Sertraline 50 MG Oral Tablet"),
            (None, "Phenelzine 15 MG Oral Tablet"),
            "onc-ssri-snri-maoi",
        ),
        (
            (None, "Clarithromycin 500 MG Oral Tablet"),
            (None, "Simvastatin 20 MG Oral Tablet"),
            "onc-statin-cyp3a4",
        ),
        (
            (None, "Sildenafil 50 MG Oral Tablet"),
            (None, "Nitroglycerin 0.4 MG Sublingual Tablet"),
            "pde5-nitrate",
        ),
        (
            (None, "Spironolactone 25 MG Oral Tablet"),
            (None, "Lisinopril 10 MG Oral Tablet"),
            "raas-potassium-sparing",
        ),
    ],
)
def test_with_identify(draft, active, rule):
    """The rule ingredient names and class tags agree with models/drug/normalise.py."""
    findings = find_interactions([("d", identified(*draft))], [("m", identified(*active))])
    assert one(findings).facts["rule"] == rule


def test_with_identify_negative():
    amlodipine = identified("197361", "Amlodipine 5 MG Oral Tablet")
    lisinopril = identified(None, "Lisinopril 10 MG Oral Tablet")
    metformin = identified(
        "860975", "24 HR Metformin hydrochloride 500 MG Extended Release Oral Tablet"
    )
    assert find_interactions([("d", amlodipine)], [("m", lisinopril)]) == []
    assert find_interactions([("d", metformin)], [("m", lisinopril)]) == []


# -- the knowledge file ----------------------------------------------------------------------


def rows() -> list[dict[str, str]]:
    with KNOWLEDGE_FILE.open(newline="", encoding="utf-8") as handle:
        return list(csv.DictReader(handle))


def test_csv_parses_and_every_row_is_complete():
    rules = load_rules()
    assert len(rules) == len(rows()) >= 40
    for row in rows():
        assert tuple(row) == COLUMNS
        assert row["severity"] in ("critical", "warning"), row["id"]
        for column in ("summary", "mechanism", "management", "evidence", "source"):
            assert row[column].strip(), (row["id"], column)
        assert len(row["summary"]) < 140, row["id"]
        # room for the two drug names in the card summary
        assert len(row["summary"]) <= 90, row["id"]
        sources = row["source"].split(" | ")
        urls = [u for u in row["source_url"].split(" | ") if u]
        assert urls, row["id"]
        assert len(urls) <= len(sources), row["id"]
        assert all(re.match(r"https?://\S+$", u) for u in urls), row["id"]


def test_every_class_tag_is_in_the_vocabulary():
    for rule in load_rules():
        unknown = (rule.a.classes | rule.b.classes) - CLASS_VOCABULARY
        assert not unknown, (rule.id, unknown)


def test_ingredient_names_are_canonical_lowercase():
    for rule in load_rules():
        for name in rule.a.ingredients | rule.b.ingredients:
            assert re.fullmatch(r"[a-z][a-z0-9 .,'/-]*", name), (rule.id, name)


def test_the_onc_high_priority_list_is_there():
    """Phansalkar et al., JAMIA 2012;19(5):735-743: the 15 pairs accepted by the panel."""
    onc = {r.id for r in load_rules() if r.id.startswith("onc-")}
    assert {
        "onc-amphetamine-maoi",
        "onc-atazanavir-ppi",
        "onc-febuxostat-thiopurine",
        "onc-ssri-snri-maoi",
        "onc-irinotecan-cyp3a4",
        "onc-opioid-maoi",
        "onc-tca-maoi",
        "onc-qt-qt",
        "onc-ramelteon-cyp1a2",
        "onc-pi-cyp3a4-inducer",
        "onc-statin-cyp3a4",
        "onc-ergot-cyp3a4",
        "onc-tizanidine-cyp1a2",
        "onc-tranylcypromine-procarbazine",
        "onc-triptan-maoi",
    } <= onc
    for rule in load_rules():
        if rule.id.startswith("onc-"):
            assert any("amiajnl-2011-000612" in (c.url or "") for c in rule.citations), rule.id


def test_malformed_rules_are_refused():
    header = ",".join(COLUMNS)
    with pytest.raises(ValueError, match="severity"):
        parse_rules([header, "x,class:nsaid,class:opioid,major,s,m,g,e,src,"])
    with pytest.raises(ValueError, match="selector"):
        parse_rules([header, "x,nsaid,class:opioid,warning,s,m,g,e,src,"])
    with pytest.raises(ValueError, match="source"):
        parse_rules([header, "x,class:nsaid,class:opioid,warning,s,m,g,e,,"])
    with pytest.raises(ValueError, match="repeated"):
        parse_rules([header] + ["x,class:nsaid,class:opioid,warning,s,m,g,e,src,"] * 2)
