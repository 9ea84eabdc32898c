"""Opioid checks after the CDC Clinical Practice Guideline for Prescribing Opioids for Pain,
United States, 2022 (Dowell et al., MMWR Recomm Rep 2022;71(No. RR-3)).

* :func:`daily_mme`: morphine milligram equivalents per day of one medication, with the
  arithmetic spelled out (dose per administration in mg, times administrations per day, times
  the CDC conversion factor; fentanyl patches: mcg/h times 2.4). It never guesses: a dose it
  cannot compute makes the result ``complete=False`` with the reason.
* :func:`check_opioids`: the total daily MME of the draft opioid order(s) plus the active
  opioids (alert at >= 50 and >= 90 MME/day), opioid + benzodiazepine, and a naloxone
  co-prescription suggestion.

Conventions (stated on the cards as well):

* As-needed doses count at their maximum frequency (``q6h PRN`` = 4 a day); an as-needed
  dose without a frequency cannot be computed.
* Several dosage instructions on one order are summed (taken as concurrent doses).
* A fentanyl patch's dose is a rate, not a daily dose: MME/day = mcg/h x 2.4, whatever the
  patch change interval.
* Buprenorphine is not converted: the CDC 2022 MME table does not include it (it is a
  partial agonist). It is listed on the card as not counted, and still counts as an opioid
  for the benzodiazepine check.
* Conversion factors are for oral doses (and transdermal fentanyl); an opioid given by
  another route (injection, buccal, sublingual, rectal, nasal) has no CDC factor here and
  its MME is reported as not computable. When neither the dose form nor the route is
  known, the oral factor is used and the card says so.
"""

from __future__ import annotations

import csv
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, replace
from functools import cache
from pathlib import Path
from typing import Any

from fhir_adapters.patient_context import SNOMED, Dosage, Medication
from models.draft_orders import dosage_instruction, medication_request
from models.drug.findings import SEVERITY_RANK, Citation, Finding, Severity, SuggestedAction
from models.drug.normalise import DrugIdentity, ingredient_classes

FACTORS_CSV = Path(__file__).resolve().parent / "knowledge" / "mme_factors.csv"

TIMES = "\u00d7"
GE = "\u2265"
#: Alert thresholds of this service (issue #4), in MME/day.
WARNING_MME = 50.0
CRITICAL_MME = 90.0

CDC_2022_URL = "https://www.cdc.gov/mmwr/volumes/71/rr/pdfs/rr7103a1-H.pdf"
CDC_2022 = Citation(
    "CDC Clinical Practice Guideline for Prescribing Opioids for Pain, United States, 2022 "
    "(Dowell et al., MMWR Recomm Rep 2022;71(No. RR-3))",
    CDC_2022_URL,
)
FDA_2016_BENZODIAZEPINE = Citation(
    "FDA Drug Safety Communication, 31 August 2016: boxed warnings on the concomitant use of "
    "opioid pain or cough medicines and benzodiazepines"
)

#: The guideline's own words (checked against the published recommendation statements).
REC_4_2022 = (
    "When opioids are initiated for opioid-naïve patients with acute, subacute, or chronic "
    "pain, clinicians should prescribe the lowest effective dosage. If opioids are continued "
    "for subacute or chronic pain, clinicians should use caution when prescribing opioids at "
    "any dosage, should carefully evaluate individual benefits and risks when considering "
    "increasing dosage, and should avoid increasing dosage above levels likely to yield "
    "diminishing returns in benefits relative to risks to patients"
)
REC_5_2016 = (
    "Clinicians should use caution when prescribing opioids at any dosage, should carefully "
    "reassess evidence of individual benefits and risks when increasing dosage to ≥50 "
    "morphine milligram equivalents (MME)/day, and should avoid increasing dosage to ≥90 "
    "MME/day or carefully justify a decision to titrate dosage to ≥90 MME/day"
)
REC_8_2022 = (
    "Before starting and periodically during continuation of opioid therapy, clinicians "
    "should evaluate risk for opioid-related harms and discuss risk with patients. Clinicians "
    "should work with patients to incorporate into the management plan strategies to "
    "mitigate risk, including offering naloxone"
)
REC_11_2022 = (
    "Clinicians should use particular caution when prescribing opioid pain medication and "
    "benzodiazepines concurrently and consider whether benefits outweigh risks of concurrent "
    "prescribing of opioids and other central nervous system depressants"
)
REC_11_2016 = (
    "Clinicians should avoid prescribing opioid pain medication and benzodiazepines "
    "concurrently whenever possible"
)
METHADONE_CAUTION = (
    "Use particular caution with methadone dose conversions because methadone has a long and "
    "variable half-life, and peak respiratory depressant effect occurs later and lasts longer "
    "than peak analgesic effect"
)

NALOXONE_RXCUI = "1725059"
NALOXONE_DISPLAY = "naloxone hydrochloride 4 MG/ACTUAT Nasal Spray"
NALOXONE_LABEL = "Co-prescribe naloxone 4 mg nasal spray"
NALOXONE_DIRECTIONS = (
    "For suspected opioid overdose: spray the whole device (4 mg) into one nostril and call "
    "emergency services. If there is no response, or breathing slows again, give another "
    "dose with a new device in the other nostril every 2 to 3 minutes until help arrives."
)

#: Dose units that count dose units (tablets, capsules, patches) rather than a mass.
_COUNT_UNITS = frozenset(
    {"", "1", "tbl", "tab", "tablet", "cap", "capsule", "patch", "patches", "each", "ea", "dose"}
)
_MASS_TO_MG = {"mg": 1.0, "ug": 0.001, "mcg": 0.001, "µg": 0.001, "g": 1000.0}
_RATE_UNITS = frozenset({"ug/h", "mcg/h", "mcg/hr", "µg/h", "ug/hr"})
_VOLUME_UNITS = frozenset({"ml", "mL"})
_LIQUID_FORMS = ("solution", "suspension", "syrup", "elixir", "liquid", "concentrate")
_ORAL_FORMS = ("tablet", "capsule", "oral", *_LIQUID_FORMS)
_NON_ORAL_WORDS = ("inject", "buccal", "sublingual", "nasal", "rectal", "suppositor", "lozenge")
_SNOMED_ORAL = "26643006"
_SNOMED_TRANSDERMAL = "45890007"


@dataclass(frozen=True)
class MmeFactor:
    ingredient: str
    route: str
    #: ``mg`` (factor per mg/day) or ``mcg/h`` (factor per mcg/h, fentanyl patches).
    unit: str
    factor: float
    source: str
    source_url: str | None


@dataclass(frozen=True)
class MmeResult:
    """Daily MME of one medication, with the arithmetic as text."""

    #: Short name, opioid first: "Oxycodone/acetaminophen".
    drug: str
    #: MME/day of what could be computed (a lower bound when ``complete`` is False).
    total: float
    #: One line of arithmetic per opioid ingredient and dosage instruction, e.g.
    #: "oxycodone 5 mg x 2 tablets x 4/day x 1.5 = 60 MME/day" (with multiplication signs).
    lines: tuple[str, ...]
    complete: bool
    #: Why the MME could not be (fully) computed.
    reason: str | None = None
    #: True when an as-needed dose was counted at its maximum frequency.
    as_needed: bool = False


@cache
def mme_factors() -> Mapping[tuple[str, str], MmeFactor]:
    """The conversion factors by (ingredient, route), read once from ``mme_factors.csv``."""
    factors: dict[tuple[str, str], MmeFactor] = {}
    with FACTORS_CSV.open(newline="", encoding="utf-8") as handle:
        for row in csv.DictReader(handle):
            if not row["source"].strip():
                raise ValueError(f"mme_factors.csv: row without a source: {row}")
            factor = MmeFactor(
                ingredient=row["ingredient"].strip().lower(),
                route=row["route"].strip().lower(),
                unit=row["unit"].strip(),
                factor=float(row["factor"]),
                source=row["source"].strip(),
                source_url=row["source_url"].strip() or None,
            )
            factors[(factor.ingredient, factor.route)] = factor
    return factors


def _factor_ingredients() -> frozenset[str]:
    return frozenset(ingredient for ingredient, _ in mme_factors())


def is_opioid_ingredient(ingredient: str) -> bool:
    return (
        ingredient in _factor_ingredients()
        or ingredient == "buprenorphine"
        or "opioid" in ingredient_classes(ingredient)
    )


def is_opioid(identity: DrugIdentity) -> bool:
    return identity.has_class("opioid") or any(
        is_opioid_ingredient(i) for i in identity.ingredients
    )


def is_rescue_naloxone(identity: DrugIdentity) -> bool:
    """Naloxone on its own (not the naloxone in buprenorphine/naloxone or oxycodone/naloxone)."""
    has_naloxone = "naloxone" in identity.ingredients or identity.has_class("naloxone")
    return has_naloxone and not is_opioid(identity)


def drug_name(identity: DrugIdentity) -> str:
    """Short name, e.g. "Oxycodone/acetaminophen": ingredients, opioids first (else the label)."""
    if not identity.ingredients:
        return identity.label or "Opioid"
    opioids = [i for i in identity.ingredients if is_opioid_ingredient(i)]
    name = "/".join(opioids + [i for i in identity.ingredients if i not in opioids])
    return name[:1].upper() + name[1:]


def fmt(value: float) -> str:
    """Numbers as people write them: 60, 1.5, 0.15, 141, 0.33."""
    return f"{round(value, 2):g}"


def _plural(count: float, word: str) -> str:
    if count == 1:
        return f"1 {word}"
    return f"{fmt(count)} {word}{'es' if word.endswith('ch') else 's'}"


def _route(identity: DrugIdentity, dosage: Dosage) -> str | None:
    """``oral``, ``transdermal``, another route's name, or None when nothing says."""
    if dosage.route is not None:
        words = [dosage.route.text or ""] + [c.display or "" for c in dosage.route.codings]
        text = " ".join(words).strip().lower()
        codes = dosage.route.codes(SNOMED)
        if _SNOMED_TRANSDERMAL in codes or "transdermal" in text:
            return "transdermal"
        if _SNOMED_ORAL in codes or "oral" in text or "mouth" in text or text == "po":
            return "oral"
        if text or codes:
            return text or f"SNOMED {codes[0]}"
    form = (identity.dose_form or "").lower()
    if not form:
        return None
    if "patch" in form or "transdermal" in form:
        return "transdermal"
    if any(w in form for w in _NON_ORAL_WORDS):
        return form
    if any(w in form for w in _ORAL_FORMS):
        return "oral"
    return form


def _unit(dosage: Dosage) -> str:
    unit = (dosage.dose.unit if dosage.dose else None) or ""
    return unit.strip().strip("{}").strip()


def _count_word(identity: DrugIdentity, unit: str) -> str:
    form = (identity.dose_form or "").lower()
    for word in ("tablet", "capsule", "patch"):
        if word in form or word in unit.lower():
            return word
    return "dose unit"


def _is_count(unit: str) -> bool:
    lowered = unit.lower()
    return lowered in _COUNT_UNITS or lowered.rstrip("s") in _COUNT_UNITS


@dataclass(frozen=True)
class _Line:
    mme: float | None
    text: str
    as_needed: bool = False


def _patch_line(
    ingredient: str, identity: DrugIdentity, dosage: Dosage, factor: MmeFactor
) -> _Line:
    dose = dosage.dose
    unit = _unit(dosage)
    if dose is None:
        return _Line(None, f"{ingredient}: no structured dose on the order")
    if unit.lower() in _RATE_UNITS:
        mme = dose.value * factor.factor
        text = f"{ingredient} {fmt(dose.value)} mcg/h {TIMES} {fmt(factor.factor)}"
        return _Line(mme, f"{text} = {fmt(mme)} MME/day")
    if _is_count(unit):
        strength = identity.strengths_mg.get(ingredient)
        if strength is None:
            return _Line(None, f"{ingredient}: the patch strength (mcg/h) is not known")
        mme = strength * dose.value * factor.factor
        patches = "1 patch" if dose.value == 1 else f"{fmt(dose.value)} patches"
        text = f"{ingredient} {fmt(strength)} mcg/h {TIMES} {patches}"
        return _Line(mme, f"{text} {TIMES} {fmt(factor.factor)} = {fmt(mme)} MME/day")
    return _Line(None, f"{ingredient}: patch dose unit {unit!r} is not a patch count or mcg/h")


def _mg_line(ingredient: str, identity: DrugIdentity, dosage: Dosage, factor: MmeFactor) -> _Line:
    dose = dosage.dose
    unit = _unit(dosage)
    if dose is None:
        return _Line(None, f"{ingredient}: no structured dose on the order")
    strength = identity.strengths_mg.get(ingredient)
    form = (identity.dose_form or "").lower()
    if unit.lower() in _MASS_TO_MG and unit:
        if len(identity.ingredients) > 1:  # 650 mg of Percocet is not 650 mg of oxycodone
            return _Line(None, f"{ingredient}: a mg dose of a combination product is ambiguous")
        per_dose = dose.value * _MASS_TO_MG[unit.lower()]
        piece = f"{fmt(per_dose)} mg"
    elif unit in _VOLUME_UNITS:
        if strength is None or not any(w in form for w in _LIQUID_FORMS):
            return _Line(None, f"{ingredient}: the strength per mL is not known")
        per_dose = strength * dose.value
        piece = f"{fmt(strength)} mg/mL {TIMES} {fmt(dose.value)} mL"
    elif _is_count(unit):
        if strength is None:
            return _Line(None, f"{ingredient}: the strength per dose unit is not known")
        if any(w in form for w in _LIQUID_FORMS):
            return _Line(None, f"{ingredient}: a liquid dose without a volume unit")
        per_dose = strength * dose.value
        piece = f"{fmt(strength)} mg {TIMES} {_plural(dose.value, _count_word(identity, unit))}"
    else:
        return _Line(None, f"{ingredient}: dose unit {unit!r} cannot be converted to mg")
    per_day = dosage.doses_per_day
    if per_day is None:
        if dosage.as_needed:
            return _Line(None, f"{ingredient}: as-needed dose without a maximum frequency")
        return _Line(None, f"{ingredient}: no frequency on the order")
    mme = per_dose * per_day * factor.factor
    text = f"{ingredient} {piece} {TIMES} {fmt(per_day)}/day {TIMES} {fmt(factor.factor)}"
    text += f" = {fmt(mme)} MME/day"
    if dosage.as_needed:
        text += " (as needed: counted at the maximum frequency)"
    return _Line(mme, text, as_needed=dosage.as_needed)


def _ingredient_lines(
    ingredient: str, identity: DrugIdentity, dosages: Sequence[Dosage]
) -> list[_Line]:
    if ingredient == "buprenorphine":
        return [_Line(0.0, "buprenorphine: not counted (not in the CDC 2022 MME table)")]
    if ingredient not in _factor_ingredients():
        return [_Line(None, f"{ingredient}: no CDC conversion factor to MME")]
    if not dosages:
        return [_Line(None, f"{ingredient}: no dosage instructions on the order")]
    lines = []
    for dosage in dosages:
        route = _route(identity, dosage)
        assumed = False
        if route is None:
            patch_rate = _unit(dosage).lower() in _RATE_UNITS
            route, assumed = ("transdermal", False) if patch_rate else ("oral", True)
        factor = mme_factors().get((ingredient, route))
        if factor is None:
            lines.append(
                _Line(None, f"{ingredient}: no CDC conversion factor for the {route} route")
            )
            continue
        if factor.unit == "mcg/h":
            line = _patch_line(ingredient, identity, dosage, factor)
        else:
            line = _mg_line(ingredient, identity, dosage, factor)
        if assumed and line.mme is not None:
            line = _Line(line.mme, f"{line.text} (route not stated: oral factor)", line.as_needed)
        lines.append(line)
    return lines


def daily_mme(identity: DrugIdentity, dosages: Sequence[Dosage]) -> MmeResult | None:
    """Daily MME of one medication; None when it contains no opioid."""
    if not is_opioid(identity):
        return None
    ingredients = [i for i in identity.ingredients if is_opioid_ingredient(i)]
    lines: list[_Line] = []
    if not ingredients:  # tagged opioid, but no ingredient we can name as one
        lines.append(_Line(None, f"{identity.label}: no CDC conversion factor to MME"))
    for ingredient in ingredients:
        lines += _ingredient_lines(ingredient, identity, dosages)
    missing = [line.text for line in lines if line.mme is None]
    return MmeResult(
        drug=drug_name(identity),
        total=round(sum(line.mme for line in lines if line.mme is not None), 2),
        lines=tuple(line.text for line in lines),
        complete=not missing,
        reason="; ".join(missing) or None,
        as_needed=any(line.as_needed for line in lines),
    )


def naloxone_request(patient_id: str | None) -> dict[str, Any]:
    """A draft FHIR R4 MedicationRequest for naloxone 4 mg nasal spray (RxNorm 1725059)."""
    return medication_request(
        patient_id,
        (NALOXONE_RXCUI, NALOXONE_DISPLAY),
        text="Naloxone 4 mg nasal spray",
        instruction=dosage_instruction(
            text=NALOXONE_DIRECTIONS, as_needed="suspected opioid overdose"
        ),
    )


def _names(names: Sequence[str], limit: int) -> str:
    unique = list(dict.fromkeys(names))
    text = " + ".join(unique)
    return text if len(text) <= limit else text[: limit - 3].rstrip() + "..."


@dataclass(frozen=True)
class _Counted:
    role: str  # "this order" / "active"
    result: MmeResult
    methadone: bool
    fentanyl: bool


def _counted(role: str, identity: DrugIdentity, medication: Medication) -> _Counted | None:
    result = daily_mme(identity, medication.dosages)
    if result is None:
        return None
    return _Counted(
        role, result, "methadone" in identity.ingredients, "fentanyl" in identity.ingredients
    )


def _arithmetic(counted: Sequence[_Counted], total: float, complete: bool) -> str:
    rows = []
    for item in counted:
        for line in item.result.lines:
            rows.append(f"- {item.result.drug} ({item.role}): {line}")
    rows.append(f"- **Total: {'at least ' if not complete else ''}{fmt(total)} MME/day**")
    notes = []
    if not complete:
        reasons = "; ".join(
            f"{c.result.drug} ({c.role}): {c.result.reason}"
            for c in counted
            if not c.result.complete
        )
        notes.append(
            f"**The MME could not be fully computed** ({reasons}). The total counts only what "
            "could be computed and may be higher: check these doses by hand."
        )
    if any(c.result.as_needed for c in counted):
        notes.append("As-needed doses are counted at their maximum frequency.")
    return "\n".join(rows) + ("\n\n" + "\n\n".join(notes) if notes else "")


def _mme_detail(counted: Sequence[_Counted], total: float, complete: bool) -> str:
    parts = [
        "**Daily opioid dose in morphine milligram equivalents (MME)**, this order plus the "
        "patient's active opioids, with the CDC 2022 conversion factors "
        "(dose per administration in mg "
        f"{TIMES} administrations per day {TIMES} factor; fentanyl patch: mcg/h {TIMES} 2.4):",
        _arithmetic(counted, total, complete),
        "**Why it matters:** the risk of overdose rises with the daily opioid dose. CDC 2022 "
        f'Recommendation 4 (category A): "{REC_4_2022}." The 2022 guideline moved away '
        "from the fixed dose thresholds of the 2016 guideline and is not meant to be applied "
        f"as a rigid limit. This service alerts at {GE} 50 MME/day (warning) and {GE} 90 MME/day "
        "(critical), the levels named by the 2016 guideline (Recommendation 5: "
        f'"{REC_5_2016}"), as prompts to reassess, not as limits.',
        "**Management:** reassess benefits and risks with the patient and use the lowest "
        "effective dose; for a patient already taking opioids, change the dose with care and "
        "do not stop them abruptly (CDC 2022 Recommendation 5). Offer naloxone "
        f'(CDC 2022 Recommendation 8: "{REC_8_2022}."). MME are estimates: do not use them '
        "to convert one opioid to another (the new opioid is dosed substantially lower).",
    ]
    if any(c.methadone for c in counted):
        parts.append(f'**Methadone:** "{METHADONE_CAUTION}" (CDC 2022, MME table).')
    if any(c.fentanyl for c in counted):
        parts.append(
            "**Transdermal fentanyl** is dosed in mcg/h, not mg/day, and its absorption "
            "varies (e.g. with heat): use particular caution (CDC 2022, MME table)."
        )
    parts.append(f"Source: {CDC_2022.label}, {CDC_2022_URL}")
    return "\n\n".join(parts)


def _severity_for(total: float) -> Severity | None:
    if total >= CRITICAL_MME:
        return "critical"
    if total >= WARNING_MME:
        return "warning"
    return None


def _mme_finding(
    draft_id: str | None,
    draft_names: Sequence[str],
    counted: Sequence[_Counted],
    total: float,
    complete: bool,
) -> Finding | None:
    severity = _severity_for(total)
    names = _names(draft_names, 60)
    at_least = "" if complete else "at least "
    if severity == "critical":
        summary = (
            f"{names}: {at_least}{fmt(total)} MME/day total ({GE} 90): "
            "avoid or carefully justify this dose"
        )
    elif severity == "warning":
        summary = (
            f"{names}: {at_least}{fmt(total)} MME/day total ({GE} 50): reassess benefits and risks"
        )
    elif not complete:
        severity = "info"
        summary = f"{names}: the daily MME could not be computed: check the opioid dose by hand"
    else:
        return None
    return Finding(
        kind="opioid",
        severity=severity,
        summary=summary,
        detail=_mme_detail(counted, total, complete),
        citations=(CDC_2022,),
        draft_order_id=draft_id,
        dedupe_key="opioid:mme",
        facts={"mme": total, "complete": complete},
    )


def _benzodiazepine_finding(
    draft_id: str | None,
    opioid_names: Sequence[str],
    benzo_names: Sequence[str],
    total: float,
    complete: bool,
) -> Finding:
    high_dose = total >= WARNING_MME
    severity: Severity = "critical" if high_dose else "warning"
    opioids = _names(opioid_names, 45) or "An opioid"
    benzos = _names(benzo_names, 30) or "a benzodiazepine"
    summary = f"{opioids} + {benzos}: opioid with a benzodiazepine: overdose risk, use caution"
    if len(summary) >= 140:
        summary = f"{opioids} + {benzos}: opioid with a benzodiazepine"
    why_critical = (
        f" It is marked critical because the opioid dose is also {GE} 50 MME/day "
        f"({'' if complete else 'at least '}{fmt(total)} MME/day): two risk factors for "
        "overdose at once."
        if high_dose
        else ""
    )
    detail = "\n\n".join(
        [
            f"**{opioids}** (opioid) with **{benzos}** (benzodiazepine).",
            "**Mechanism:** additive depression of the central nervous system and of "
            "breathing; concurrent use carries a higher risk of fatal overdose than an opioid "
            f"alone.{why_critical}",
            f'**CDC 2022 Recommendation 11:** "{REC_11_2022}." (The 2016 wording, "'
            f'{REC_11_2016}", was softened in 2022.) FDA requires a boxed warning on both drug '
            "classes about profound sedation, respiratory depression, coma and death when "
            "they are combined (Drug Safety Communication, August 2016).",
            "**Management:** prefer not to combine them when an alternative exists; if both "
            "are needed, use the lowest effective doses, monitor for sedation and slowed "
            "breathing, and offer naloxone. If the benzodiazepine is to be stopped, taper it "
            "gradually rather than stopping it abruptly.",
            f"Source: {CDC_2022.label}, {CDC_2022_URL}; {FDA_2016_BENZODIAZEPINE.label}.",
        ]
    )
    return Finding(
        kind="opioid",
        severity=severity,
        summary=summary,
        detail=detail,
        citations=(CDC_2022, FDA_2016_BENZODIAZEPINE),
        draft_order_id=draft_id,
        dedupe_key="opioid:benzodiazepine",
        facts={"mme": total, "complete": complete, "benzodiazepine": True},
    )


def check_opioids(
    drafts: Sequence[tuple[str | None, DrugIdentity, Medication]],
    actives: Sequence[tuple[DrugIdentity, Medication]],
    active_benzodiazepine: bool,
    patient_id: str | None = None,
) -> list[Finding]:
    """Opioid findings for the draft orders: daily MME (this order plus active opioids),
    opioid + benzodiazepine, and a naloxone co-prescription where MME >= 50 or a
    benzodiazepine is on board (unless naloxone is already active or drafted).

    Silent when no draft is an opioid or a benzodiazepine. ``patient_id`` goes into the
    naloxone MedicationRequest's ``subject``.
    """
    draft_opioids = [(i, ident, med) for i, ident, med in drafts if is_opioid(ident)]
    draft_benzos = [(i, ident) for i, ident, _ in drafts if ident.has_class("benzodiazepine")]
    if not draft_opioids and not draft_benzos:
        return []
    active_opioids = [(ident, med) for ident, med in actives if is_opioid(ident)]
    active_benzos = [ident for ident, _ in actives if ident.has_class("benzodiazepine")]
    benzodiazepine = bool(active_benzodiazepine or active_benzos or draft_benzos)
    naloxone_on_hand = any(is_rescue_naloxone(ident) for ident, _ in actives) or any(
        is_rescue_naloxone(ident) for _, ident, _ in drafts
    )

    counted = [
        c for _, ident, med in draft_opioids if (c := _counted("this order", ident, med))
    ] + [c for ident, med in active_opioids if (c := _counted("active", ident, med))]
    total = round(sum(c.result.total for c in counted), 2)
    complete = all(c.result.complete for c in counted)

    findings: list[Finding] = []
    if draft_opioids:
        mme = _mme_finding(
            draft_opioids[0][0],
            [drug_name(ident) for _, ident, _ in draft_opioids],
            counted,
            total,
            complete,
        )
        if mme is not None:
            findings.append(mme)
    if benzodiazepine and (draft_opioids or active_opioids):
        draft_id = draft_opioids[0][0] if draft_opioids else draft_benzos[0][0]
        opioid_names = [drug_name(ident) for _, ident, _ in draft_opioids] or [
            drug_name(ident) for ident, _ in active_opioids
        ]
        benzo_names = [drug_name(ident) for _, ident in draft_benzos] + [
            drug_name(ident) for ident in active_benzos
        ]
        findings.append(
            _benzodiazepine_finding(draft_id, opioid_names, benzo_names, total, complete)
        )

    wants_naloxone = (total >= WARNING_MME or benzodiazepine) and (draft_opioids or active_opioids)
    eligible = [
        f for f in findings if f.dedupe_key == "opioid:benzodiazepine" or total >= WARNING_MME
    ]
    if wants_naloxone and not naloxone_on_hand and eligible:
        target = min(eligible, key=lambda f: SEVERITY_RANK[f.severity])
        suggestion = SuggestedAction(
            label=NALOXONE_LABEL, kind="create", resource=naloxone_request(patient_id)
        )
        findings = [_with_suggestion(f, suggestion) if f is target else f for f in findings]
    return findings


def _with_suggestion(finding: Finding, suggestion: SuggestedAction) -> Finding:
    return replace(finding, suggestions=(*finding.suggestions, suggestion))


__all__ = [
    "CRITICAL_MME",
    "WARNING_MME",
    "MmeFactor",
    "MmeResult",
    "check_opioids",
    "daily_mme",
    "drug_name",
    "mme_factors",
    "naloxone_request",
]
