"""Drug-drug interactions: each draft order against the active medications and the other drafts.

The rules are ``knowledge/interactions.csv``, one row per interacting pair of drug sets, each
with its severity, mechanism, management, evidence and source. A side of a rule (``a`` or
``b``) is one or more selectors joined by ``|``: ``ingredient:<name>`` (a canonical lowercase
ingredient name) or ``class:<tag>`` (a class tag of :mod:`models.drug.normalise`, so a class
rule covers every member of the class). Two drugs interact under a rule when one matches ``a``
and the other ``b``, in either order.

Drugs are compared ingredient by ingredient (a combination product such as
acetaminophen/oxycodone takes part through each of its ingredients), a drug never interacts
with itself (the same ingredient on both sides is duplicate therapy, reported elsewhere), and
when several rules match the same two ingredients only the most severe is kept, then the most
specific (ingredient selectors beat class selectors), then the first in the file. One finding
per drug pair and rule (ingredients of one product matching the same rule are named together,
e.g. ``sulfamethoxazole/trimethoprim``), and the same pair is reported once however many orders
carry it (:attr:`Finding.dedupe_key`).
"""

from __future__ import annotations

import csv
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from functools import cache
from pathlib import Path
from typing import cast

from models.drug.findings import SEVERITY_RANK, Citation, Finding, Severity, SuggestedAction
from models.drug.normalise import DrugIdentity, ingredient_classes

KNOWLEDGE_FILE = Path(__file__).resolve().parent / "knowledge" / "interactions.csv"
COLUMNS = (
    "id",
    "a",
    "b",
    "severity",
    "summary",
    "mechanism",
    "management",
    "evidence",
    "source",
    "source_url",
)
RULE_SEVERITIES = ("critical", "warning")
#: Separates several sources in one cell (``source`` and ``source_url`` alike, same order).
SOURCE_SEPARATOR = "|"
SUMMARY_LIMIT = 139


@dataclass(frozen=True)
class Side:
    """One side of a rule: the ingredients and class tags it names."""

    ingredients: frozenset[str]
    classes: frozenset[str]

    @classmethod
    def parse(cls, text: str) -> Side:
        ingredients: set[str] = set()
        classes: set[str] = set()
        for selector in text.split("|"):
            kind, _, name = selector.strip().partition(":")
            name = name.strip().lower()
            if not name or kind not in ("ingredient", "class"):
                raise ValueError(
                    f"bad selector {selector!r} (want ingredient:<name> or class:<tag>)"
                )
            (ingredients if kind == "ingredient" else classes).add(name)
        return cls(frozenset(ingredients), frozenset(classes))

    def level(self, unit: _Unit) -> int | None:
        """2 when the unit is named as an ingredient, 1 when through a class, else None."""
        if unit.single and unit.name in self.ingredients:
            return 2
        if unit.classes & self.classes:
            return 1
        return None


@dataclass(frozen=True)
class Rule:
    id: str
    a: Side
    b: Side
    severity: Severity
    summary: str
    mechanism: str
    management: str
    evidence: str
    citations: tuple[Citation, ...]
    #: Position in the file: the tie-breaker between equally severe, equally specific rules.
    order: int


@dataclass(frozen=True)
class _Unit:
    """What takes part in an interaction: one ingredient of a drug, or (for class tags of a
    combination product that no single ingredient accounts for) the whole product."""

    name: str
    ingredients: frozenset[str]
    classes: frozenset[str]
    single: bool


def _citations(row: dict[str, str]) -> tuple[Citation, ...]:
    labels = [s.strip() for s in row["source"].split(SOURCE_SEPARATOR)]
    urls = [u.strip() for u in (row.get("source_url") or "").split(SOURCE_SEPARATOR)]
    urls += [""] * (len(labels) - len(urls))
    return tuple(Citation(label, url or None) for label, url in zip(labels, urls, strict=False))


def parse_rules(lines: Sequence[str] | Iterator[str]) -> tuple[Rule, ...]:
    """Rules from the CSV text (header first); raises ValueError on a malformed row."""
    reader = csv.DictReader(lines)
    if tuple(reader.fieldnames or ()) != COLUMNS:
        raise ValueError(f"interactions.csv columns must be {COLUMNS}, not {reader.fieldnames}")
    rules = []
    seen: set[str] = set()
    for order, row in enumerate(reader):
        rule_id = (row["id"] or "").strip()
        if not rule_id or rule_id in seen:
            raise ValueError(f"row {order + 2}: missing or repeated id {rule_id!r}")
        seen.add(rule_id)
        if row["severity"] not in RULE_SEVERITIES:
            raise ValueError(f"{rule_id}: severity {row['severity']!r} not in {RULE_SEVERITIES}")
        for column in COLUMNS[4:9]:
            if not (row[column] or "").strip():
                raise ValueError(f"{rule_id}: empty {column}")
        rules.append(
            Rule(
                id=rule_id,
                a=Side.parse(row["a"]),
                b=Side.parse(row["b"]),
                severity=cast(Severity, row["severity"]),
                summary=row["summary"].strip(),
                mechanism=row["mechanism"].strip(),
                management=row["management"].strip(),
                evidence=row["evidence"].strip(),
                citations=_citations(row),
                order=order,
            )
        )
    return tuple(rules)


@cache
def load_rules() -> tuple[Rule, ...]:
    """The interaction rules of ``knowledge/interactions.csv`` (read once)."""
    with KNOWLEDGE_FILE.open(newline="", encoding="utf-8") as handle:
        return parse_rules(handle)


def _units(identity: DrugIdentity) -> tuple[_Unit, ...]:
    names = tuple(dict.fromkeys(i.strip().lower() for i in identity.ingredients if i.strip()))
    if not identity.identified or not names:
        return ()
    classes = frozenset(identity.classes)
    if len(names) == 1:
        return (_Unit(names[0], frozenset(names), classes, single=True),)
    units = []
    placed: set[str] = set()
    for name in names:
        own = frozenset(ingredient_classes(name)) & classes
        placed |= own
        units.append(_Unit(name, frozenset((name,)), own, single=True))
    if rest := classes - placed:
        units.append(_Unit("/".join(names), frozenset(names), rest, single=False))
    return tuple(units)


@dataclass(frozen=True)
class _Match:
    rule: Rule
    specificity: int
    #: The unit matching side ``a`` comes first.
    first: _Unit
    second: _Unit

    @property
    def rank(self) -> tuple[int, int, int]:
        return (SEVERITY_RANK[self.rule.severity], -self.specificity, self.rule.order)


def _match(rule: Rule, draft: _Unit, other: _Unit) -> _Match | None:
    """The rule applied to two units, oriented a-side first; the other drug leads a tie."""
    best = None
    for first, second in ((other, draft), (draft, other)):
        a, b = rule.a.level(first), rule.b.level(second)
        if a is not None and b is not None and (best is None or a + b > best.specificity):
            best = _Match(rule, a + b, first, second)
    return best


def _best(rules: Sequence[Rule], draft: _Unit, other: _Unit) -> _Match | None:
    matches = [m for rule in rules if (m := _match(rule, draft, other)) is not None]
    return min(matches, key=lambda m: m.rank, default=None)


def _product(identity: DrugIdentity) -> str:
    return "/".join(dict.fromkeys(i.strip().lower() for i in identity.ingredients)) or (
        identity.label or "this drug"
    )


def _joined(units: Sequence[_Unit]) -> str:
    return "/".join(dict.fromkeys(u.name for u in units))


@dataclass(frozen=True)
class _Hit:
    """A rule matched by a draft and another order, through one or more of their ingredients."""

    match: _Match
    draft_units: tuple[_Unit, ...]
    other_units: tuple[_Unit, ...]

    @property
    def draft_first(self) -> bool:
        return self.match.first in self.draft_units

    @property
    def names(self) -> tuple[str, str]:
        """The two drugs as shown, the a-side first; ingredients of one product that match
        the same rule are shown together (``sulfamethoxazole/trimethoprim``)."""
        draft, other = _joined(self.draft_units), _joined(self.other_units)
        return (draft, other) if self.draft_first else (other, draft)


def _summary(rule: Rule, names: tuple[str, str]) -> str:
    text = f"{names[0].capitalize()} + {names[1]}: {rule.summary}"
    if len(text) > SUMMARY_LIMIT:
        text = text[: SUMMARY_LIMIT - 1].rstrip() + "…"
    return text


def _source_line(citations: tuple[Citation, ...]) -> str:
    return "; ".join(f"[{c.label}]({c.url})" if c.url else c.label for c in citations)


def _detail(rule: Rule, names: tuple[str, str], roles: tuple[str, str]) -> str:
    return "\n\n".join(
        (
            f"**{names[0].capitalize()}** ({roles[0]}) with **{names[1]}** ({roles[1]}): "
            f"{rule.summary}.",
            f"**Mechanism**: {rule.mechanism}",
            f"**Management**: {rule.management}",
            f"**Evidence**: {rule.evidence}",
            f"**Source**: {_source_line(rule.citations)}",
        )
    )


def _finding(
    hit: _Hit,
    draft: tuple[str | None, DrugIdentity],
    other: tuple[str | None, DrugIdentity],
    other_is_draft: bool,
) -> Finding:
    draft_id, draft_identity = draft
    other_id = other[0]
    rule = hit.match.rule
    names = hit.names
    other_role = "another draft order" if other_is_draft else "active medication"
    roles = ("the draft order", other_role)
    roles = roles if hit.draft_first else (roles[1], roles[0])
    suggestions: list[SuggestedAction] = []
    if rule.severity == "critical":
        removable = [(draft_id, draft_identity)] + ([other] if other_is_draft else [])
        suggestions = [
            SuggestedAction(
                label=f"Remove the draft order for {_product(identity)}",
                kind="delete-draft",
                resource_id=order_id,
            )
            for order_id, identity in removable
            if order_id
        ]
    pair = sorted(names)
    return Finding(
        kind="interaction",
        severity=rule.severity,
        summary=_summary(rule, names),
        detail=_detail(rule, names, roles),
        citations=rule.citations,
        draft_order_id=draft_id,
        dedupe_key=f"interaction:{pair[0]}+{pair[1]}",
        suggestions=tuple(suggestions),
        facts={
            "rule": rule.id,
            "pair": list(names),
            "with": "draft" if other_is_draft else "active",
            "other_order_id": other_id,
        },
    )


def _hits(draft_units: Sequence[_Unit], other_units: Sequence[_Unit]) -> list[_Hit]:
    """The rules two orders match, one hit per rule (the best-ranked unit pair leads)."""
    by_rule: dict[str, list[tuple[_Match, _Unit, _Unit]]] = {}
    for other_unit in other_units:
        for draft_unit in draft_units:
            if draft_unit.ingredients & other_unit.ingredients:
                continue  # the same ingredient on both sides: duplicate therapy, not ours
            match = _best(load_rules(), draft_unit, other_unit)
            if match is not None:
                by_rule.setdefault(match.rule.id, []).append((match, draft_unit, other_unit))
    hits = []
    for matches in by_rule.values():
        matches.sort(key=lambda m: m[0].rank)
        hits.append(
            _Hit(
                matches[0][0],
                tuple(dict.fromkeys(d for _, d, _ in matches)),
                tuple(dict.fromkeys(o for _, _, o in matches)),
            )
        )
    return hits


def find_interactions(
    drafts: Sequence[tuple[str | None, DrugIdentity]],
    actives: Sequence[tuple[str | None, DrugIdentity]],
) -> list[Finding]:
    """Interactions of each draft ``(draft id, identity)`` with every active medication and
    every earlier draft (so each pair once), most severe first; one finding per drug pair."""
    found: dict[str, tuple[tuple[int, int, int], Finding]] = {}
    for index, draft in enumerate(drafts):
        draft_units = _units(draft[1])
        others = [(o, False) for o in actives] + [(o, True) for o in drafts[:index]]
        for other, other_is_draft in others:
            for hit in _hits(draft_units, _units(other[1])):
                finding = _finding(hit, draft, other, other_is_draft)
                kept = found.get(finding.dedupe_key)
                if kept is None or hit.match.rank < kept[0]:
                    found[finding.dedupe_key] = (hit.match.rank, finding)
    return [finding for _, finding in sorted(found.values(), key=lambda item: item[0])]


__all__ = ["Rule", "find_interactions", "load_rules", "parse_rules"]
