"""Drug-allergy checks: each draft order against the patient's AllergyIntolerance records.

An allergy's substance is resolved to an :class:`Allergen` (ingredients and whole-class
groups) by, in order:

1. ``knowledge/allergy_groups.csv``: SNOMED CT substance / "allergy to X" codes and the
   RxNorm codes Synthea and other EHRs put on AllergyIntolerance.code;
2. other RxNorm codes, through the drug normaliser (:func:`identify`);
3. only when no code resolved and the allergy may be to a medication: class names in the
   text (``text`` rows of the CSV, whole words) and ingredient names (:func:`identify` on
   the text).

An allergy to one penicillin, or to one sulfonamide antibiotic, is treated as an allergy
to the class (:data:`CLASS_WIDE`): that is how such labels are used clinically, and
cross-reactivity inside those classes is expected.

Match levels, most specific first:

* **same ingredient** or **same group**: critical when the allergy's criticality is high
  or a recorded reaction was severe (anaphylaxis, angioedema, SJS/TEN, DRESS: the
  high-risk features of PEN-FAST), else warning;
* **cross-sensitivity** (:func:`_cross`): penicillin allergy vs cephalosporin (warning,
  ~2% or less; higher, and critical for a high-risk allergy, with an identical R1 side
  chain), vs carbapenem (info, <1%); cephalosporin allergy vs a beta-lactam sharing its
  R1 side chain (warning) or another cephalosporin (info); NSAID/aspirin allergy vs other
  NSAIDs (warning; info for COX-2 selective ones).

Deliberately silent: sulfonamide antibiotic allergy vs non-antibiotic sulfonamides
(furosemide, thiazides, sulfonylureas, celecoxib...): no cross-reactivity beyond a general
predisposition to drug allergy (Strom et al., N Engl J Med 2003;349:1628-35; 2022 drug
allergy practice parameter). Penicillin allergy vs aztreonam: negligible.

Status: refuted / entered-in-error and inactive / resolved allergies are ignored; an
unconfirmed one still alerts and says "unconfirmed". An intolerance (``type`` intolerance)
gives a warning at most.
"""

from __future__ import annotations

import csv
import re
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from functools import cache
from pathlib import Path

from fhir_adapters.patient_context import RXNORM, Allergy, Concept
from models.drug.findings import SEVERITY_RANK, Citation, Finding, Severity, SuggestedAction
from models.drug.normalise import DrugIdentity, identify, ingredient_classes

KNOWLEDGE = Path(__file__).resolve().parent / "knowledge"

IGNORED_VERIFICATION = frozenset({"refuted", "entered-in-error"})
IGNORED_CLINICAL = frozenset({"inactive", "resolved"})
#: Categories for which the text fallback runs (absent categories count as "maybe").
DRUG_CATEGORIES = frozenset({"medication", "biologic"})
#: An allergy to one member of these classes is treated as an allergy to the class.
CLASS_WIDE = frozenset({"penicillin", "sulfonamide_antibiotic"})
#: Reaction words that make an allergy high-risk whatever its criticality (PEN-FAST).
SEVERE_REACTION = re.compile(
    r"anaphyla|angio-?edema|stevens|johnson|epidermal necrolysis|\bDRESS\b|"
    r"eosinophilia and systemic|exanthematous pustulosis|laryngeal (o)?edema",
    re.IGNORECASE,
)
#: Selective COX-2 inhibitors: usually tolerated by patients with cross-reactive NSAID
#: hypersensitivity (EAACI/ENDA 2013; 2022 practice parameter).
COX2_SELECTIVE = frozenset({"celecoxib", "etoricoxib", "parecoxib", "rofecoxib", "valdecoxib"})
#: Non-antibiotic sulfonamides: no alert for a sulfonamide antibiotic allergy (documented
#: here for the tests and the reader; nothing matches them since they are not tagged
#: sulfonamide_antibiotic).
NON_ANTIBIOTIC_SULFONAMIDES = frozenset(
    {
        "furosemide",
        "bumetanide",
        "torsemide",
        "hydrochlorothiazide",
        "chlorthalidone",
        "indapamide",
        "acetazolamide",
        "glipizide",
        "glyburide",
        "glimepiride",
        "celecoxib",
        "sumatriptan",
        "topiramate",
    }
)
#: beta-lactams with identical or very similar R1 side chains: the main determinant of
#: cross-reactivity between penicillins and cephalosporins and among cephalosporins.
R1_SIDE_CHAIN_GROUPS: tuple[frozenset[str], ...] = (
    frozenset({"amoxicillin", "cefadroxil", "cefprozil", "cefatrizine"}),
    frozenset({"ampicillin", "cephalexin", "cefaclor", "cephradine", "loracarbef"}),
    frozenset({"ceftriaxone", "cefotaxime", "cefpodoxime", "cefepime", "cefditoren"}),
    frozenset({"ceftazidime", "aztreonam"}),
    frozenset({"cefoxitin", "cephalothin"}),
)

PRACTICE_PARAMETER = Citation(
    "Khan DA, Banerji A, Blumenthal KG, et al. Drug allergy: a 2022 practice parameter "
    "update (AAAAI/ACAAI). J Allergy Clin Immunol 2022;150(6):1333-1393",
    "https://doi.org/10.1016/j.jaci.2022.08.028",
)
BETA_LACTAM_REVIEW = Citation(
    "β-Lactam allergy and cross-reactivity: a clinician's guide to selecting an alternative "
    "antibiotic. J Asthma Allergy 2021;14:31-46 (side-chain identity drives cross-reactivity; "
    "<1% between penicillins and carbapenems or aztreonam)",
    "https://doi.org/10.2147/JAA.S242061",
)
R1_REVIEW = Citation(
    "Pichichero ME, Zagursky R. Penicillin and cephalosporin allergy. Ann Allergy Asthma "
    "Immunol 2014;112:404-412 (R1 side-chain similarity between penicillins and "
    "cephalosporins)"
)
NSAID_REVIEW = Citation(
    "Kowalski ML, Asero R, Bavbek S, et al. Classification and practical approach to the "
    "diagnosis and management of hypersensitivity to nonsteroidal anti-inflammatory drugs "
    "(EAACI/ENDA). Allergy 2013;68:1219-1232",
    "https://doi.org/10.1111/all.12260",
)
PEN_FAST = Citation(
    "Trubiano JA, Vogrin S, Chua KYL, et al. Development and validation of a penicillin "
    "allergy clinical decision rule (PEN-FAST). JAMA Intern Med 2020;180(5):745-752 "
    "(anaphylaxis/angioedema or severe cutaneous reaction = high risk)",
    "https://doi.org/10.1001/jamainternmed.2020.0403",
)
SULFONAMIDE_STUDY = Citation(
    "Strom BL, Schinnar R, Apter AJ, et al. Absence of cross-reactivity between sulfonamide "
    "antibiotics and sulfonamide nonantibiotics. N Engl J Med 2003;349:1628-35",
    "https://doi.org/10.1056/NEJMoa022963",
)


# --- knowledge -------------------------------------------------------------------------


@dataclass(frozen=True)
class AllergenRow:
    system: str
    code: str
    display: str
    ingredients: frozenset[str]
    groups: frozenset[str]
    citation: Citation


def _targets(value: str) -> tuple[frozenset[str], frozenset[str]]:
    ingredients, groups = set(), set()
    for target in value.split("|"):
        kind, _, name = target.strip().partition(":")
        if kind == "ingredient":
            ingredients.add(name.strip())
        elif kind == "group":
            groups.add(name.strip())
        else:
            raise ValueError(f"allergy target must be ingredient:<name> or group:<tag>: {target!r}")
    return frozenset(ingredients), frozenset(groups)


@cache
def allergy_rows() -> tuple[AllergenRow, ...]:
    """The rows of ``knowledge/allergy_groups.csv``, read once."""
    with (KNOWLEDGE / "allergy_groups.csv").open(newline="", encoding="utf-8") as handle:
        reader = csv.DictReader(handle)
        rows = []
        for row in reader:
            ingredients, groups = _targets(row["group_or_ingredient"])
            rows.append(
                AllergenRow(
                    system=row["system"].strip(),
                    code=row["code"].strip(),
                    display=row["display"].strip(),
                    ingredients=ingredients,
                    groups=groups,
                    citation=Citation(row["source"].strip(), row["source_url"].strip() or None),
                )
            )
    return tuple(rows)


@cache
def _by_code() -> dict[tuple[str, str], AllergenRow]:
    return {(r.system, r.code): r for r in allergy_rows() if r.system != "text"}


def _normalise_text(text: str) -> str:
    text = text.lower().replace("β", "beta")
    return " " + re.sub(r"[^a-z0-9]+", " ", text).strip() + " "


@cache
def _text_patterns() -> tuple[tuple[re.Pattern[str], AllergenRow], ...]:
    patterns = []
    for row in allergy_rows():
        if row.system == "text":
            words = _normalise_text(row.code).strip()
            patterns.append((re.compile(rf" {re.escape(words)}s? "), row))
    return tuple(patterns)


# --- allergens -------------------------------------------------------------------------


@dataclass(frozen=True)
class Allergen:
    """What an allergy record is to: ingredients, and classes the patient avoids whole."""

    label: str
    ingredients: frozenset[str]
    groups: frozenset[str]
    #: How it was recognised: "code", "rxnorm" or "text".
    via: str

    @property
    def classes(self) -> frozenset[str]:
        """Every class tag of the allergen: its groups and its ingredients' classes."""
        tags = set(self.groups)
        for ingredient in self.ingredients:
            tags |= ingredient_classes(ingredient)
        return frozenset(tags)


def _allergen(label: str, ingredients: Iterable[str], groups: Iterable[str], via: str) -> Allergen:
    ingredients, groups = frozenset(ingredients), set(groups)
    for ingredient in ingredients:
        groups |= ingredient_classes(ingredient) & CLASS_WIDE
    return Allergen(label, ingredients, frozenset(groups), via)


def resolve_allergen(allergy: Allergy) -> Allergen | None:
    """The ingredients and groups an allergy record is to, or None if not a known drug."""
    substance = allergy.substance
    label = substance.label or "Unnamed substance"
    ingredients: set[str] = set()
    groups: set[str] = set()
    via = None
    for coding in substance.codings:
        if not coding.system or not coding.code:
            continue
        row = _by_code().get((coding.system, coding.code))
        if row is not None:
            ingredients |= row.ingredients
            groups |= row.groups
            via = via or "code"
        elif coding.system == RXNORM:
            identity = identify(Concept(codings=(coding,)))
            if identity.identified:
                ingredients |= set(identity.ingredients)
                via = via or "rxnorm"
    if via is not None:
        return _allergen(label, ingredients, groups, via)
    categories = set(allergy.categories)
    if categories and not categories & DRUG_CATEGORIES:
        return None  # a food or environmental allergy: no text guessing
    texts = [t for t in [substance.text, *(c.display for c in substance.codings)] if t]
    for text in texts:
        normalised = _normalise_text(text)
        for pattern, row in _text_patterns():
            if pattern.search(normalised):
                groups |= row.groups
                ingredients |= row.ingredients
        identity = identify(Concept(text=text))
        if identity.identified:
            ingredients |= set(identity.ingredients)
    if not ingredients and not groups:
        return None
    return _allergen(label, ingredients, groups, "text")


def _active(allergy: Allergy) -> bool:
    verification = (allergy.verification_status or "").lower()
    clinical = (allergy.clinical_status or "").lower()
    return verification not in IGNORED_VERIFICATION and clinical not in IGNORED_CLINICAL


def _high_risk(allergy: Allergy) -> bool:
    return (allergy.criticality or "").lower() == "high" or any(
        SEVERE_REACTION.search(reaction) for reaction in allergy.reactions
    )


def _cap(severity: Severity, allergy: Allergy) -> Severity:
    """An intolerance gives a warning at most."""
    if (allergy.type or "").lower() == "intolerance" and severity == "critical":
        return "warning"
    return severity


def _r1_partners(ingredient: str, allergen_ingredients: Iterable[str]) -> list[str]:
    partners = []
    for group in R1_SIDE_CHAIN_GROUPS:
        if ingredient in group:
            partners += [a for a in allergen_ingredients if a in group and a != ingredient]
    return sorted(set(partners))


# --- matching --------------------------------------------------------------------------


@dataclass(frozen=True)
class _Match:
    level: str  # "ingredient" | "group" | "cross"
    ingredient: str
    severity: Severity
    #: For group and cross matches: the class involved, and the cross rule's id.
    group: str | None = None
    rule: str | None = None
    note: str = ""
    why: str = ""
    citations: tuple[Citation, ...] = ()


def _cross(allergy: Allergy, allergen: Allergen, ingredient: str) -> _Match | None:
    """The cross-sensitivity rule for a drug not in the allergen itself, if any."""
    drug = ingredient_classes(ingredient)
    tags = allergen.classes
    r1 = _r1_partners(ingredient, allergen.ingredients)
    high = _high_risk(allergy)
    shared = f"shares its R1 side chain with {', '.join(r1)}" if r1 else ""
    if "penicillin" in tags and "cephalosporin" in drug:
        severity: Severity = "critical" if r1 and high else "warning"
        why = (
            "Penicillin-cephalosporin cross-reactivity is low: about 2% or less in patients "
            "with a confirmed penicillin allergy, lower still for an unverified label. The "
            "2022 practice parameter suggests a cephalosporin with a dissimilar R1 side chain "
            "can be given without testing after a non-anaphylactic penicillin reaction. "
            "The risk is higher when the side chains are identical or similar (amoxicillin "
            "with cefadroxil/cefprozil; ampicillin with cephalexin/cefaclor)."
        )
        if r1:
            why += f" **{ingredient} {shared}**: avoid it, or give it only after allergist "
            why += "evaluation (test dose/graded challenge)."
        return _Match(
            "cross",
            ingredient,
            severity,
            "penicillin",
            "penicillin-cephalosporin",
            "identical R1 side chain" if r1 else "cephalosporin cross-reactivity ~2% or less",
            why,
            (PRACTICE_PARAMETER, R1_REVIEW, BETA_LACTAM_REVIEW),
        )
    if "penicillin" in tags and "carbapenem" in drug:
        return _Match(
            "cross",
            ingredient,
            "info",
            "penicillin",
            "penicillin-carbapenem",
            "carbapenem cross-reactivity <1%",
            "Carbapenem cross-reactivity in penicillin-allergic patients is under 1%; the 2022 "
            "practice parameter suggests carbapenems can be given without testing or "
            "additional precautions.",
            (PRACTICE_PARAMETER, BETA_LACTAM_REVIEW),
        )
    if "cephalosporin" in tags or (r1 and "beta_lactam" in drug):
        if r1:
            return _Match(
                "cross",
                ingredient,
                "critical" if high else "warning",
                "cephalosporin" if "cephalosporin" in tags else None,
                "r1-side-chain",
                "identical R1 side chain",
                f"**{ingredient}** {shared}, the main determinant of beta-lactam "
                "cross-reactivity. Avoid it unless an allergist has cleared it.",
                (PRACTICE_PARAMETER, R1_REVIEW, BETA_LACTAM_REVIEW),
            )
        if "cephalosporin" in drug:
            return _Match(
                "cross",
                ingredient,
                "info",
                "cephalosporin",
                "cephalosporin-cephalosporin",
                "different cephalosporin, dissimilar side chain",
                "Cross-reactivity between cephalosporins follows the R1 side chain; the 2022 "
                "practice parameter suggests a cephalosporin with a dissimilar side chain can "
                "be given after a non-anaphylactic cephalosporin reaction.",
                (PRACTICE_PARAMETER, BETA_LACTAM_REVIEW),
            )
        return None  # a cephalosporin allergy vs a dissimilar penicillin: low risk
    nsaids = frozenset({"nsaid", "salicylate"})
    if tags & nsaids and drug & nsaids:
        cox2 = ingredient in COX2_SELECTIVE
        return _Match(
            "cross",
            ingredient,
            "info" if cox2 else "warning",
            "nsaid",
            "nsaid-cross",
            "COX-2 selective, usually tolerated" if cox2 else "NSAID cross-reactivity",
            (
                "Most NSAID hypersensitivity (NSAID-exacerbated respiratory disease, "
                "NSAID-induced urticaria/angioedema) is cross-reactive across COX-1 inhibitors, "
                "aspirin included."
                + (
                    " Selective COX-2 inhibitors such as this one are usually tolerated; "
                    "consider a supervised first dose."
                    if cox2
                    else " Avoid other NSAIDs unless the reaction was shown to be "
                    "single-drug specific; acetaminophen or a selective COX-2 inhibitor is "
                    "usually tolerated."
                )
            ),
            (NSAID_REVIEW, PRACTICE_PARAMETER),
        )
    return None


def _match(allergy: Allergy, allergen: Allergen, identity: DrugIdentity) -> _Match | None:
    base: Severity = "critical" if _high_risk(allergy) else "warning"
    for ingredient in identity.ingredients:
        if ingredient in allergen.ingredients:
            return _Match("ingredient", ingredient, base)
    for ingredient in identity.ingredients:
        shared = sorted(ingredient_classes(ingredient) & allergen.groups)
        if shared:
            return _Match("group", ingredient, base, group=shared[0])
    crosses = [c for i in identity.ingredients if (c := _cross(allergy, allergen, i))]
    return min(crosses, key=lambda c: SEVERITY_RANK[c.severity]) if crosses else None


# --- findings --------------------------------------------------------------------------


def _allergy_name(allergy: Allergy, allergen: Allergen, limit: int = 55) -> str:
    name = allergen.label.strip()
    name = re.sub(r"\s*\((substance|finding|disorder|product)\)\s*$", "", name, flags=re.I)
    kind = "intolerance" if (allergy.type or "").lower() == "intolerance" else "allergy"
    if not re.search(r"allerg|intoleran|adverse reaction", name, re.IGNORECASE):
        name = f"{name} {kind}"
    name = name[:1].upper() + name[1:]
    return name if len(name) <= limit else name[: limit - 1].rstrip() + "…"


def _qualifiers(allergy: Allergy) -> list[str]:
    qualifiers = []
    if allergy.criticality in ("high", "low"):
        qualifiers.append(f"{allergy.criticality} criticality")
    if (allergy.verification_status or "").lower() == "unconfirmed":
        qualifiers.append("unconfirmed")
    return qualifiers


def _record_line(allergy: Allergy, allergen: Allergen) -> str:
    parts = [f"substance **{allergen.label}**"]
    parts.append(f"type {allergy.type or 'not stated'}")
    parts.append(f"criticality {allergy.criticality or 'not stated'}")
    parts.append(f"verification {allergy.verification_status or 'not stated'}")
    if allergy.reactions:
        parts.append("reactions: " + ", ".join(allergy.reactions))
    return "Allergy record: " + "; ".join(parts) + "."


def _finding(
    draft_id: str | None, identity: DrugIdentity, allergy: Allergy, allergen: Allergen, m: _Match
) -> Finding:
    severity = _cap(m.severity, allergy)
    name = _allergy_name(allergy, allergen)
    quals = _qualifiers(allergy)
    head = f"{name} ({', '.join(quals)})" if quals else name
    summary = f"{head}: {m.ingredient} ordered"
    if m.level == "cross":
        summary += f" ({m.note})"
    if len(summary) >= 140:
        summary = f"{head}: {m.ingredient} ordered"[:139]
    lines = [f"**{identity.label}** is ordered. {_record_line(allergy, allergen)}", ""]
    citations: list[Citation] = []
    if m.level == "ingredient":
        lines.append(f"The order contains **{m.ingredient}**, the recorded allergen.")
    elif m.level == "group":
        lines.append(
            f"**{m.ingredient}** is a {m.group.replace('_', ' ')}, and the allergy is recorded "
            f"to the {m.group.replace('_', ' ')} class (an allergy to one "
            f"{m.group.replace('_', ' ')} is taken to cover the class)."
        )
    else:
        lines.append(m.why)
    if m.level in ("ingredient", "group"):
        lines += [""]
        if severity == "critical":
            lines.append(
                "High-risk allergy (high criticality or a severe reaction such as anaphylaxis, "
                "angioedema or a severe skin reaction): do not give it; choose a drug from "
                "another class, or have an allergist assess (testing, graded challenge or "
                "desensitisation) if it is essential."
            )
        else:
            lines.append(
                "Low or unstated criticality: confirm what happened (the reaction, when) "
                "before giving it. Many drug allergy labels, penicillin above all, are not "
                "confirmed on testing and can be removed after evaluation (2022 practice "
                "parameter)."
            )
        citations += [PRACTICE_PARAMETER, PEN_FAST]
    if (allergy.type or "").lower() == "intolerance":
        lines += ["", "Recorded as an intolerance (not immune-mediated): warning at most."]
    if (allergy.verification_status or "").lower() == "unconfirmed":
        lines += ["", "The allergy is **unconfirmed** in the record."]
    citations += list(m.citations)
    unique = tuple(dict.fromkeys(citations))
    suggestions: tuple[SuggestedAction, ...] = ()
    if severity == "critical" and draft_id:
        suggestions = (
            SuggestedAction(f"Remove the {m.ingredient} order", "delete-draft", draft_id),
        )
    return Finding(
        kind="allergy",
        severity=severity,
        summary=summary,
        detail="\n".join(lines),
        citations=unique,
        draft_order_id=draft_id,
        dedupe_key=f"allergy:{allergy.id or allergen.label}:{draft_id or identity.label}",
        suggestions=suggestions,
        facts={
            "allergy_id": allergy.id,
            "substance": allergen.label,
            "match": m.level,
            "ingredient": m.ingredient,
            "group": m.group,
            "rule": m.rule,
            "criticality": allergy.criticality,
            "verification_status": allergy.verification_status,
            "type": allergy.type,
            "resolved_via": allergen.via,
        },
    )


def find_allergy_conflicts(
    drafts: Sequence[tuple[str | None, DrugIdentity]], allergies: Sequence[Allergy]
) -> list[Finding]:
    """Allergy and cross-sensitivity findings: one per (allergy, draft order) at most.

    ``drafts`` are ``(draft order id, identity)`` pairs. Refuted, entered-in-error,
    inactive and resolved allergies are skipped; allergies to foods or environmental
    substances never match a drug.
    """
    resolved = [
        (allergy, allergen)
        for allergy in allergies
        if _active(allergy) and (allergen := resolve_allergen(allergy)) is not None
    ]
    findings = []
    for draft_id, identity in drafts:
        if not identity.identified:
            continue
        for allergy, allergen in resolved:
            match = _match(allergy, allergen, identity)
            if match is not None:
                findings.append(_finding(draft_id, identity, allergy, allergen, match))
    return findings


__all__ = [
    "CLASS_WIDE",
    "NON_ANTIBIOTIC_SULFONAMIDES",
    "R1_SIDE_CHAIN_GROUPS",
    "Allergen",
    "allergy_rows",
    "find_allergy_conflicts",
    "resolve_allergen",
]
