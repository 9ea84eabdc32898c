"""Duplicate therapy: the same ingredient, or a second drug of a class where two at once is a
real problem, ordered while already active (or in two draft orders).

Same ingredient is always reported (acetaminophen across products included: the total
daily dose is what injures the liver). Same therapeutic class is reported only for the
explicit list :data:`DUPLICATE_CLASSES`, each with its reason and source; most other class
pairs (two antihypertensives of different classes, say) are deliberate combinations.

A draft that is the same MedicationRequest as an active one (same id: a renewal or an
edit) is not a duplicate of it. Each pair is reported once (``dedupe_key`` holds the pair).
"""

from __future__ import annotations

import itertools
import re
from collections.abc import Sequence
from dataclasses import dataclass

from models.drug.findings import Citation, Finding, SuggestedAction
from models.drug.normalise import DrugIdentity, ingredient_classes

Entry = tuple[str | None, DrugIdentity]

ACETAMINOPHEN_SOURCE = Citation(
    "FDA Drug Safety Communication, 13 January 2011: prescription acetaminophen products to "
    "be limited to 325 mg per dosage unit; boxed warning on severe liver injury (cases with "
    "more than 4,000 mg a day or more than one acetaminophen-containing product at a time)"
)
INGREDIENT_SOURCE = Citation(
    "The Joint Commission, National Patient Safety Goal NPSG.03.06.01: compare the "
    "medications ordered with those the patient takes and resolve duplications",
    "https://www.jointcommission.org/standards/national-patient-safety-goals/",
)


@dataclass(frozen=True)
class DuplicateClass:
    """A therapeutic class where two drugs at once is a problem worth an alert."""

    name: str
    #: Class tags (normaliser vocabulary); an ingredient with any of them is a member.
    tags: frozenset[str]
    #: Plural noun for the summary: "Two {label}: ...".
    label: str
    why: str
    citations: tuple[Citation, ...]
    #: Members carrying any of these tags are left out (e.g. low-dose aspirin from NSAIDs).
    exclude_tags: frozenset[str] = frozenset()
    #: Only long-acting products count (ER/LA opioids).
    long_acting_only: bool = False


#: The explicit list of class duplications worth an alert; every other class pair is silent.
DUPLICATE_CLASSES: tuple[DuplicateClass, ...] = (
    DuplicateClass(
        name="nsaid",
        tags=frozenset({"nsaid"}),
        label="NSAIDs",
        why=(
            "Two NSAIDs add gastrointestinal bleeding, kidney and cardiovascular risk without "
            "added benefit. US NSAID labels: concomitant use with other NSAIDs or salicylates "
            "is not recommended."
        ),
        citations=(
            Citation(
                "US NSAID prescribing information (e.g. naproxen, ibuprofen), section 7 "
                "Drug interactions: NSAIDs and salicylates",
                "https://dailymed.nlm.nih.gov/dailymed/search.cfm?labeltype=all&query=naproxen",
            ),
        ),
        # Low-dose aspirin for cardioprotection with an NSAID is an interaction (the
        # interaction check's business), not a duplicate analgesic.
        exclude_tags=frozenset({"antiplatelet"}),
    ),
    DuplicateClass(
        name="raas",
        tags=frozenset({"ace_inhibitor", "arb", "aliskiren"}),
        label="RAAS blockers",
        why=(
            "Dual renin-angiotensin-aldosterone blockade (ACE inhibitor, ARB or aliskiren "
            "together, or two of one class) raises the risk of hyperkalemia, hypotension and "
            "acute kidney injury without cardiovascular benefit (ONTARGET; VA NEPHRON-D). "
            "2017 ACC/AHA guideline: combined use is potentially harmful and not recommended."
        ),
        citations=(
            Citation(
                "Whelton PK et al. 2017 ACC/AHA guideline for high blood pressure in adults "
                "(Hypertension 2018;71:e13-e115): simultaneous ACE inhibitor, ARB and/or renin "
                "inhibitor not recommended (harm)",
                "https://doi.org/10.1161/HYP.0000000000000065",
            ),
            Citation(
                "ONTARGET Investigators. Telmisartan, ramipril, or both in patients at high "
                "risk for vascular events. N Engl J Med 2008;358:1547-59",
                "https://doi.org/10.1056/NEJMoa0801317",
            ),
            Citation(
                "Fried LF et al. (VA NEPHRON-D). Combined angiotensin inhibition for the "
                "treatment of diabetic nephropathy. N Engl J Med 2013;369:1892-903",
                "https://doi.org/10.1056/NEJMoa1303154",
            ),
        ),
    ),
    DuplicateClass(
        name="ssri",
        tags=frozenset({"ssri"}),
        label="SSRIs",
        why=(
            "Two SSRIs give no added antidepressant benefit and add serotonin toxicity, "
            "hyponatremia and bleeding risk. SSRI labels warn against combining serotonergic "
            "drugs (serotonin syndrome)."
        ),
        citations=(
            Citation(
                "US SSRI prescribing information (e.g. sertraline), section 5 Warnings: "
                "serotonin syndrome with other serotonergic drugs",
                "https://dailymed.nlm.nih.gov/dailymed/search.cfm?labeltype=all&query=sertraline",
            ),
        ),
    ),
    DuplicateClass(
        name="benzodiazepine",
        tags=frozenset({"benzodiazepine"}),
        label="benzodiazepines",
        why=(
            "Two benzodiazepines add sedation, falls, respiratory depression and dependence "
            "without added benefit. FDA (2020) boxed warning on the class: abuse, misuse, "
            "addiction, dependence and withdrawal."
        ),
        citations=(
            Citation(
                "FDA Drug Safety Communication, 23 September 2020: Boxed Warning updated to "
                "improve safe use of benzodiazepine drug class",
                "https://www.fda.gov/drugs/drug-safety-and-availability/fda-requiring-boxed-"
                "warning-updated-improve-safe-use-benzodiazepine-drug-class",
            ),
            Citation(
                "AGS Beers Criteria 2023 (J Am Geriatr Soc 2023;71:2052-81): benzodiazepines "
                "and combinations of CNS-active drugs",
                "https://doi.org/10.1111/jgs.18372",
            ),
        ),
    ),
    DuplicateClass(
        name="long_acting_opioid",
        tags=frozenset({"opioid"}),
        label="long-acting opioids",
        why=(
            "Two extended-release/long-acting opioids stack baseline opioid exposure and "
            "overdose risk; a long-acting opioid with a short-acting one for breakthrough pain "
            "is a usual regimen and is not flagged here (the opioid check sums the MME)."
        ),
        citations=(
            Citation(
                "Dowell D et al. CDC Clinical Practice Guideline for Prescribing Opioids for "
                "Pain, United States, 2022. MMWR Recomm Rep 2022;71(No. RR-3):1-95",
                "https://www.cdc.gov/mmwr/volumes/71/rr/rr7103a1.htm",
            ),
        ),
        long_acting_only=True,
    ),
    DuplicateClass(
        name="anticoagulant",
        tags=frozenset({"anticoagulant_vka", "anticoagulant_doac", "heparin"}),
        label="anticoagulants",
        why=(
            "Two anticoagulants at once multiply bleeding risk. Overlap is intended only "
            "during a planned bridge or switch (e.g. heparin while warfarin reaches a "
            "therapeutic INR): otherwise stop one. Anticoagulants are ISMP high-alert "
            "medications."
        ),
        citations=(
            Citation(
                "ISMP List of High-Alert Medications in Acute Care Settings (anticoagulants)",
                "https://www.ismp.org/recommendations/high-alert-medications-acute-list",
            ),
        ),
    ),
)

_LONG_ACTING = re.compile(
    r"extended[- ]release|\bER\b|\bXR\b|\bSR\b|\bCR\b|\bLA\b|\b(12|24|72) ?HR\b|"
    r"transdermal|\bpatch\b|controlled[- ]release|sustained[- ]release",
    re.IGNORECASE,
)
#: Opioids that are long-acting whatever the product.
_INTRINSICALLY_LONG_ACTING = frozenset({"methadone"})


def _long_acting(identity: DrugIdentity) -> bool:
    if _INTRINSICALLY_LONG_ACTING & set(identity.ingredients):
        return True
    if identity.dose_form and identity.dose_form.lower() in ("patch", "transdermal system"):
        return True
    return bool(_LONG_ACTING.search(identity.label or ""))


def _breakthrough_regimen(a: DrugIdentity, b: DrugIdentity, shared: list[str]) -> bool:
    """A long-acting and a short-acting product of the same opioid (e.g. oxycodone ER with
    oxycodone IR for breakthrough pain): a usual regimen, not a duplicate. The opioid check
    sums their MME."""
    opioid_only = all("opioid" in ingredient_classes(i) for i in shared)
    return opioid_only and _long_acting(a) != _long_acting(b)


def _members(identity: DrugIdentity, group: DuplicateClass) -> list[str]:
    members = []
    for ingredient in identity.ingredients:
        classes = ingredient_classes(ingredient)
        if classes & group.tags and not classes & group.exclude_tags:
            members.append(ingredient)
    return members


def _short(label: str | None, limit: int = 40) -> str:
    label = (label or "another order").strip()
    return label if len(label) <= limit else label[: limit - 1].rstrip() + "…"


def _pair_key(kind: str, a: Entry, b: Entry) -> str:
    ids = sorted(str(x[0] or x[1].label) for x in (a, b))
    return f"duplicate:{kind}:{ids[0]}|{ids[1]}"


def _ingredient_finding(
    draft: Entry, other: Entry, shared: list[str], other_is_draft: bool
) -> Finding:
    draft_id, identity = draft
    other_id, other_identity = other
    names = ", ".join(shared)
    where = "another draft order" if other_is_draft else "an active medication"
    summary = (
        f"Duplicate {names}: {_short(identity.label)} and {_short(other_identity.label)} "
        f"({'both drafts' if other_is_draft else 'already active'})"
    )
    lines = [
        f"**{identity.label}** contains {names}, which is also in {where}: "
        f"**{other_identity.label}**.",
        "",
        "Two orders of the same ingredient double the dose unless one replaces the other. "
        "If this order is meant to replace it, stop the other; otherwise remove one.",
    ]
    citations = [INGREDIENT_SOURCE]
    if "acetaminophen" in shared:
        lines += [
            "",
            "Acetaminophen: add up the daily dose from every product (combination opioid "
            "products included); above 4,000 mg a day (less with liver disease or heavy "
            "alcohol use) risks severe liver injury.",
        ]
        citations.insert(0, ACETAMINOPHEN_SOURCE)
    suggestions: tuple[SuggestedAction, ...] = ()
    if draft_id and not other_is_draft:
        suggestions = (
            SuggestedAction(f"Remove the duplicate {names} order", "delete-draft", draft_id),
        )
    return Finding(
        kind="duplicate",
        severity="warning",
        summary=summary[:139],
        detail="\n".join(lines),
        citations=tuple(citations),
        draft_order_id=draft_id,
        dedupe_key=_pair_key("ingredient", draft, other),
        suggestions=suggestions,
        facts={
            "duplicate": "ingredient",
            "ingredients": shared,
            "other_id": other_id,
            "other_is_draft": other_is_draft,
        },
    )


def _class_finding(
    draft: Entry,
    other: Entry,
    group: DuplicateClass,
    mine: list[str],
    theirs: list[str],
    other_is_draft: bool,
) -> Finding:
    draft_id, identity = draft
    other_id, other_identity = other
    ours, yours = "/".join(mine), "/".join(theirs)
    status = "another draft" if other_is_draft else "active"
    summary = f"Two {group.label}: {ours} ordered with {yours} ({status})"
    detail = "\n".join(
        [
            f"**{identity.label}** ({ours}) and **{other_identity.label}** ({yours}, "
            f"{'another draft order' if other_is_draft else 'an active medication'}) are both "
            f"{group.label}.",
            "",
            group.why,
            "",
            "Keep one unless the overlap is deliberate (a switch or a planned combination).",
        ]
    )
    return Finding(
        kind="duplicate",
        severity="warning",
        summary=summary[:139],
        detail=detail,
        citations=group.citations,
        draft_order_id=draft_id,
        dedupe_key=_pair_key(group.name, draft, other),
        facts={
            "duplicate": "class",
            "class": group.name,
            "ingredients": mine,
            "other_ingredients": theirs,
            "other_id": other_id,
            "other_is_draft": other_is_draft,
        },
    )


def _compare(draft: Entry, other: Entry, other_is_draft: bool) -> list[Finding]:
    identity, other_identity = draft[1], other[1]
    if not identity.identified or not other_identity.identified:
        return []
    shared = sorted(set(identity.ingredients) & set(other_identity.ingredients))
    if shared and _breakthrough_regimen(identity, other_identity, shared):
        return []
    if shared:  # the more specific problem; the class duplicate would say it again
        return [_ingredient_finding(draft, other, shared, other_is_draft)]
    findings = []
    for group in DUPLICATE_CLASSES:
        mine, theirs = _members(identity, group), _members(other_identity, group)
        if not mine or not theirs:
            continue
        if group.long_acting_only and not (_long_acting(identity) and _long_acting(other_identity)):
            continue
        findings.append(_class_finding(draft, other, group, mine, theirs, other_is_draft))
    return findings


def find_duplicates(drafts: Sequence[Entry], actives: Sequence[Entry]) -> list[Finding]:
    """Duplicate-therapy findings: each draft against the active medications and the other
    drafts. ``drafts`` and ``actives`` are ``(resource id, identity)`` pairs; an active with
    the same id as the draft is the order being renewed or edited and is skipped."""
    findings: list[Finding] = []
    for draft in drafts:
        for active in actives:
            if draft[0] is not None and draft[0] == active[0]:
                continue
            findings += _compare(draft, active, other_is_draft=False)
    for first, second in itertools.combinations(drafts, 2):
        if first[0] is not None and first[0] == second[0]:
            continue
        # Reported against the later draft: the earlier one was there first.
        findings += _compare(second, first, other_is_draft=True)
    seen: set[str] = set()
    unique = []
    for finding in findings:
        if finding.dedupe_key not in seen:
            seen.add(finding.dedupe_key)
            unique.append(finding)
    return unique


__all__ = ["DUPLICATE_CLASSES", "DuplicateClass", "find_duplicates"]
