"""Drug normalisation: a medication concept (RxNorm code and/or text) → ingredients, strengths,
dose form and class tags.

Two curated tables in ``knowledge/``, read once:

* ``ingredients.csv`` — one row per ingredient: RxNorm ingredient RXCUI (where sourced), WHO
  ATC codes, class tags (:data:`CLASS_VOCABULARY`) and the other names it goes by (salts as
  RxNorm writes them, international and brand names).
* ``rxnorm_products.csv`` — one row per RxNorm product code in the shared Synthea sample:
  its ingredients, strengths and dose form.

:func:`identify` tries, in order: a known RxNorm product code, an RxNorm ingredient code, then
the ingredient names and synonyms found in the concept's text / coding displays.
"""

from __future__ import annotations

import csv
import re
from collections.abc import Iterator, Mapping
from dataclasses import dataclass, field
from functools import cache
from pathlib import Path
from types import MappingProxyType

from fhir_adapters.patient_context import RXNORM, Concept

KNOWLEDGE = Path(__file__).resolve().parent / "knowledge"

#: Every class tag a knowledge row or a rule may use.
CLASS_VOCABULARY = frozenset(
    {
        "anticoagulant_vka",
        "anticoagulant_doac",
        "heparin",
        "antiplatelet",
        "salicylate",
        "nsaid",
        "opioid",
        "benzodiazepine",
        "z_drug",
        "ssri",
        "snri",
        "tca",
        "maoi",
        "triptan",
        "serotonergic",
        "qt_prolonging",
        "cyp3a4_strong_inhibitor",
        "cyp3a4_inducer_strong",
        "statin",
        "statin_cyp3a4_sensitive",
        "ace_inhibitor",
        "arb",
        "aliskiren",
        "potassium_sparing_diuretic",
        "potassium_supplement",
        "loop_diuretic",
        "thiazide_diuretic",
        "beta_blocker",
        "non_dhp_ccb",
        "cardiac_glycoside",
        "antiarrhythmic_class_iii",
        "penicillin",
        "cephalosporin",
        "carbapenem",
        "monobactam",
        "beta_lactam",
        "sulfonamide_antibiotic",
        "fluoroquinolone",
        "macrolide",
        "biguanide",
        "sulfonylurea",
        "insulin",
        "sglt2_inhibitor",
        "nitrofuran",
        "bisphosphonate",
        "methotrexate",
        "trimethoprim",
        "pde5_inhibitor",
        "nitrate",
        "corticosteroid_systemic",
        "antipsychotic",
        "gabapentinoid",
        "muscle_relaxant",
        "antihistamine_sedating",
        "naloxone",
        "opioid_antagonist",
    }
)
#: Dose forms that are not systemic: a corticosteroid in them is not ``corticosteroid_systemic``.
_LOCAL_FORMS = frozenset({"cream", "ointment", "lotion", "gel", "ophthalmic", "inhaler", "spray"})


@dataclass(frozen=True)
class DrugIdentity:
    label: str
    #: Canonical lowercase ingredient names, e.g. ("acetaminophen", "oxycodone").
    ingredients: tuple[str, ...]
    #: Class tags (:data:`CLASS_VOCABULARY`), the union over the ingredients.
    classes: frozenset[str]
    #: ATC codes of the ingredients.
    atc: tuple[str, ...]
    #: The RxNorm code of the product, if coded.
    rxcui: str | None
    #: Strength per ingredient per unit (tablet, capsule, mL, actuation) in mg; for patches
    #: (dose form ``patch``) in mcg/h: {"oxycodone": 5.0}.
    strengths_mg: Mapping[str, float] = field(default_factory=dict, hash=False)
    #: "tablet", "capsule", "solution", "patch", "injection", ... if known.
    dose_form: str | None = None
    #: False when no ingredient could be recognised.
    identified: bool = True

    def has_class(self, tag: str) -> bool:
        return tag in self.classes


@dataclass(frozen=True)
class _Ingredient:
    name: str
    rxcui: str | None
    atc: tuple[str, ...]
    classes: frozenset[str]
    synonyms: tuple[str, ...]


@dataclass(frozen=True)
class _Product:
    rxcui: str
    display: str
    ingredients: tuple[str, ...]
    strengths: Mapping[str, float]
    dose_form: str | None


def _rows(name: str) -> Iterator[dict[str, str]]:
    with (KNOWLEDGE / name).open(encoding="utf-8", newline="") as handle:
        yield from csv.DictReader(line for line in handle if not line.startswith("#"))


def _split(value: str) -> tuple[str, ...]:
    return tuple(part.strip() for part in value.split(";") if part.strip())


@cache
def _ingredients() -> Mapping[str, _Ingredient]:
    table = {}
    for row in _rows("ingredients.csv"):
        name = row["ingredient"].strip().lower()
        table[name] = _Ingredient(
            name=name,
            rxcui=row["rxcui"].strip() or None,
            atc=_split(row["atc"]),
            classes=frozenset(_split(row["classes"])),
            synonyms=tuple(s.lower() for s in _split(row["synonyms"])),
        )
    return MappingProxyType(table)


@cache
def _products() -> Mapping[str, _Product]:
    table = {}
    for row in _rows("rxnorm_products.csv"):
        strengths = {}
        for pair in _split(row["strengths_mg"]):
            ingredient, _, value = pair.partition("=")
            strengths[ingredient.strip()] = float(value)
        table[row["rxcui"].strip()] = _Product(
            rxcui=row["rxcui"].strip(),
            display=row["display"],
            ingredients=_split(row["ingredients"]),
            strengths=MappingProxyType(strengths),
            dose_form=row["dose_form"].strip() or None,
        )
    return MappingProxyType(table)


@cache
def _ingredient_by_rxcui() -> Mapping[str, str]:
    return MappingProxyType({i.rxcui: i.name for i in _ingredients().values() if i.rxcui})


@cache
def _terms() -> tuple[re.Pattern[str], Mapping[str, tuple[str, ...]]]:
    """One regex over every name and synonym (longest first, word-bounded), and what each
    term stands for (a combination brand such as "percocet" stands for two ingredients)."""
    meaning: dict[str, list[str]] = {}
    for ingredient in _ingredients().values():
        for term in (ingredient.name, *ingredient.synonyms):
            names = meaning.setdefault(term, [])
            if ingredient.name not in names:
                names.append(ingredient.name)
    alternatives = (
        r"\s+".join(re.escape(word) for word in term.split())
        for term in sorted(meaning, key=len, reverse=True)
    )
    pattern = re.compile(r"(?<![a-z0-9])(" + "|".join(alternatives) + r")(?![a-z0-9])")
    return pattern, MappingProxyType({t: tuple(n) for t, n in meaning.items()})


def ingredient_classes(ingredient: str) -> frozenset[str]:
    """The class tags of an ingredient (canonical name or synonym); empty when unknown."""
    key = " ".join(ingredient.lower().split())
    found = _ingredients().get(key)
    if found is None:
        names = _terms()[1].get(key, ())
        return frozenset().union(*(_ingredients()[n].classes for n in names))
    return found.classes


# ------------------------------------------------------------------------------ text parsing
_STRENGTH = re.compile(
    r"[\s,]*(?:[a-z][a-z-]*\s+){0,3}?(\d+(?:\.\d+)?)\s*(mg|mcg|µg|ug|g)(?![a-z])"
    r"(?:\s*/\s*(ml|actuat|24\s*hr|hr|h)(?![a-z]))?"
)
_SCALE = {"mg": 1.0, "mcg": 0.001, "µg": 0.001, "ug": 0.001, "g": 1000.0}
_DOSE_FORMS = (
    (r"transdermal|patch", "patch"),
    (r"inject|syringe|auto-injector|intravenous", "injection"),
    (r"spray", "spray"),
    (r"inhaler|inhalation", "inhaler"),
    (r"ophthalmic|eye drop", "ophthalmic"),
    (r"cream", "cream"),
    (r"ointment", "ointment"),
    (r"lotion", "lotion"),
    (r"\bgel\b", "gel"),
    (r"intrauterine", "intrauterine system"),
    (r"vaginal ring", "vaginal ring"),
    (r"implant", "implant"),
    (r"\bday pack\b", "pack"),
    (r"suspension", "suspension"),
    (r"solution|syrup|elixir|liquid", "solution"),
    (r"capsule|\bcaps?\b", "capsule"),
    (r"tablet|\btabs?\b|caplet", "tablet"),
)


def _dose_form(text: str) -> str | None:
    return next((form for rx, form in _DOSE_FORMS if re.search(rx, text)), None)


def _parse(text: str) -> tuple[tuple[str, ...], dict[str, float], str | None]:
    """Ingredients named in free text, each one's strength (the "<n> MG" that follows it),
    and the dose form."""
    lowered = text.lower()
    pattern, meaning = _terms()
    form = _dose_form(lowered)
    matches = list(pattern.finditer(lowered))
    ingredients: list[str] = []
    strengths: dict[str, float] = {}
    for index, match in enumerate(matches):
        names = meaning[" ".join(match.group(1).split())]
        ingredients += [n for n in names if n not in ingredients]
        end = matches[index + 1].start() if index + 1 < len(matches) else len(lowered)
        found = _STRENGTH.match(lowered, match.end(), end)
        if found is None or len(names) != 1:
            continue
        mg = float(found.group(1)) * _SCALE[found.group(2)]
        per = re.sub(r"\s", "", found.group(3) or "")
        if per.startswith("24"):  # "21 MG/24HR": per day, to mcg/h
            mg /= 24
        if per.startswith("24") or per in ("hr", "h") or (form == "patch" and not per):
            mg *= 1000  # patches are in mcg/h ("fentanyl 25 mcg patch" is 25 mcg/h)
        strengths[names[0]] = round(mg, 6)
    return tuple(ingredients), strengths, form


# ------------------------------------------------------------------------------ identify
def _build(
    label: str,
    ingredients: tuple[str, ...],
    rxcui: str | None,
    strengths: Mapping[str, float],
    dose_form: str | None,
) -> DrugIdentity:
    known = [_ingredients()[n] for n in ingredients if n in _ingredients()]
    classes = frozenset().union(*(i.classes for i in known))
    if dose_form in _LOCAL_FORMS:
        classes -= {"corticosteroid_systemic"}
    atc = tuple(dict.fromkeys(code for i in known for code in i.atc))
    return DrugIdentity(
        label=label,
        ingredients=ingredients,
        classes=classes,
        atc=atc,
        rxcui=rxcui,
        strengths_mg=MappingProxyType(dict(strengths)),
        dose_form=dose_form,
        identified=bool(ingredients),
    )


def identify(concept: Concept) -> DrugIdentity:
    """Who is this drug: by RxNorm product code, RxNorm ingredient code, else by name."""
    label = concept.label or ""
    codes = concept.codes(RXNORM)
    for code in codes:
        product = _products().get(code)
        if product is not None:
            return _build(
                label or product.display,
                product.ingredients,
                code,
                product.strengths,
                product.dose_form,
            )
    texts = [t for t in (concept.text, *(c.display for c in concept.codings)) if t]
    parsed = next((p for p in map(_parse, texts) if p[0]), ((), {}, None))
    for code in codes:
        ingredient = _ingredient_by_rxcui().get(code)
        if ingredient is not None:
            strengths = {k: v for k, v in parsed[1].items() if k == ingredient}
            return _build(label or ingredient, (ingredient,), code, strengths, parsed[2])
    ingredients, strengths, form = parsed
    return _build(label, ingredients, codes[0] if codes else None, strengths, form)


__all__ = ["CLASS_VOCABULARY", "DrugIdentity", "identify", "ingredient_classes"]
