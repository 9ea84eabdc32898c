"""Every ingredient a knowledge rule names is a canonical ingredient of ``ingredients.csv``.

A rule selector ``ingredient:<name>`` only fires when ``<name>`` is what
:func:`models.drug.normalise.identify` returns, i.e. the ``ingredient`` column of
``ingredients.csv`` (a synonym or salt name never comes back from ``identify``).
"""

from __future__ import annotations

import csv
from pathlib import Path

KNOWLEDGE = Path(__file__).resolve().parents[2] / "models" / "drug" / "knowledge"
#: Files whose cells hold selectors (``ingredient:<name>``, several joined with ``|``).
SELECTOR_FILES = ("interactions.csv", "renal_rules.csv", "allergy_groups.csv")
PREFIX = "ingredient:"


def rows(name: str) -> list[dict[str, str]]:
    with (KNOWLEDGE / name).open(encoding="utf-8", newline="") as handle:
        return list(csv.DictReader(line for line in handle if not line.startswith("#")))


def named_ingredients() -> list[tuple[str, str]]:
    """(where, name) for every ingredient the rule files name."""
    named = []
    for file in SELECTOR_FILES:
        for number, row in enumerate(rows(file), start=2):
            for cell in row.values():
                for part in (cell or "").split("|"):
                    part = part.strip()
                    if part.startswith(PREFIX):
                        named.append((f"{file} row {number}", part[len(PREFIX) :].strip()))
    for number, row in enumerate(rows("mme_factors.csv"), start=2):
        named.append((f"mme_factors.csv row {number}", row["ingredient"].strip()))
    return named


def test_every_rule_ingredient_is_a_canonical_ingredient():
    canonical = {row["ingredient"] for row in rows("ingredients.csv")}
    named = named_ingredients()
    assert any(where.startswith("interactions.csv") for where, _ in named), "no selector read"
    missing = sorted(f"{where}: {name!r}" for where, name in named if name not in canonical)
    assert missing == [], "not in ingredients.csv:\n" + "\n".join(missing)
