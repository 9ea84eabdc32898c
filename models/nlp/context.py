"""Negation, uncertainty and temporality of a finding mention: the ConText algorithm.

An implementation of ConText (Harkema et al., J Biomed Inform 2009), the extension of NegEx
(Chapman et al., J Biomed Inform 2001), over the trigger lexicon in
``knowledge/context_triggers.csv`` (each trigger with its source):

* A **trigger** has a category (negated, resolved, uncertain, historical, hypothetical,
  experiencer) and a direction: *forward* triggers modify what follows them, *backward*
  triggers what precedes them ("pneumothorax has resolved").
* **Pseudo-triggers** look like triggers but are not ("no change in the small effusion"
  asserts the effusion); they are matched first and hide the triggers inside them.
* A trigger's **scope** runs to the end (or start) of the sentence, and stops early at a
  **termination term** ("but", "however", ";", ...), at a trigger of another category, or
  after :data:`MAX_SCOPE_WORDS` words.
* At one place in the text the longest trigger wins; a trigger inside the finding's own
  words is ignored (the "no" of "no acute cardiopulmonary process").

When several triggers cover a mention the nearest decides. Negated and resolved mean the
finding is **absent** now; uncertain and hypothetical make it **uncertain**; historical and
experiencer (someone else) mentions are flagged so that callers can leave them out.

``medspaCy``'s ConText was not used: it pins spaCy < 3.8, whose dependencies would
downgrade numpy under torch and xgboost. ``negspaCy`` has negation only (no uncertainty).
"""

from __future__ import annotations

import csv
import re
from dataclasses import dataclass
from functools import cache
from pathlib import Path
from typing import Literal

Category = Literal["negated", "resolved", "uncertain", "historical", "hypothetical", "experiencer"]
Assertion = Literal["present", "absent", "uncertain"]
Direction = Literal["forward", "backward"]

KNOWLEDGE = Path(__file__).resolve().parent / "knowledge"
TRIGGERS_CSV = KNOWLEDGE / "context_triggers.csv"
#: Longest scope of a trigger, in words (ConText: the sentence; NegEx: 5 or 6 words).
MAX_SCOPE_WORDS = 15
#: Backward triggers reach less far: they follow a short subject ("left effusion has resolved").
MAX_BACKWARD_WORDS = 8

_WORD = re.compile(r"[a-z0-9]+")
_ABSENT = frozenset({"negated", "resolved"})
_UNCERTAIN = frozenset({"uncertain", "hypothetical"})


@dataclass(frozen=True)
class _Rule:
    category: str  # a Category, "pseudo" or "terminate"
    direction: str  # "forward" | "backward" | "-"
    pattern: str


@dataclass(frozen=True)
class Trigger:
    category: str
    direction: str
    start: int
    end: int
    #: Character offset where the trigger's scope ends (forward) or starts (backward).
    scope: int = 0


@dataclass(frozen=True)
class ContextResult:
    assertion: Assertion
    historical: bool = False
    #: The finding is about someone else (family history).
    other_experiencer: bool = False
    #: The trigger that decided (its category and the words), if any.
    trigger: str | None = None
    resolved: bool = False


def _bounded(pattern: str) -> str:
    left = "" if pattern[0] in ";," else r"(?<![a-z0-9/])"
    return f"{left}(?:{pattern})(?![a-z0-9])"


@cache
def _rules() -> tuple[_Rule, ...]:
    with TRIGGERS_CSV.open(newline="", encoding="utf-8") as handle:
        rows = list(csv.DictReader(handle))
    rules = tuple(_Rule(r["category"], r["direction"], r["pattern"]) for r in rows)
    for rule in rules:
        re.compile(rule.pattern)  # a broken pattern fails at load, not on a patient's text
    return rules


@cache
def _compiled() -> tuple[tuple[_Rule, re.Pattern[str]], ...]:
    return tuple((rule, re.compile(_bounded(rule.pattern))) for rule in _rules())


def find_triggers(sentence: str) -> list[Trigger]:
    """Non-overlapping trigger matches in a lower-cased sentence, in order (pseudo dropped).

    Pseudo-triggers are taken first and hide what they overlap; then, left to right, the
    longest match wins. A phrase listed both forward and backward ("possible") acts both ways.
    """
    matches = [
        (m.start(), m.end(), rule)
        for rule, pattern in _compiled()
        for m in pattern.finditer(sentence)
        if m.end() > m.start()
    ]
    pseudo = [(s, e) for s, e, rule in matches if rule.category == "pseudo"]
    taken: list[tuple[int, int, list[_Rule]]] = []
    for start, end, rule in sorted(matches, key=lambda m: (m[0], m[0] - m[1])):
        if rule.category == "pseudo" or any(s < end and start < e for s, e in pseudo):
            continue
        if taken and taken[-1][0] == start and taken[-1][1] == end:
            taken[-1][2].append(rule)  # the same words, another direction or category
        elif not taken or start >= taken[-1][1]:
            taken.append((start, end, [rule]))
    found = []
    for start, end, rules in taken:
        for direction in dict.fromkeys(r.direction for r in rules):
            category = next(r.category for r in rules if r.direction == direction)
            found.append(Trigger(category, direction, start, end))
    return _with_scopes(sentence, found)


def _word_limit(sentence: str, start: int, end: int, words: int, forward: bool) -> int:
    spans = list(_WORD.finditer(sentence, start, end))
    if len(spans) <= words:
        return end if forward else start
    return spans[words - 1].end() if forward else spans[-words].start()


def _with_scopes(sentence: str, triggers: list[Trigger]) -> list[Trigger]:
    scoped = []
    for index, trigger in enumerate(triggers):
        if trigger.category == "terminate":
            scoped.append(trigger)
            continue
        if trigger.direction == "forward":
            end = len(sentence)
            for later in triggers[index + 1 :]:
                if later.category != trigger.category:
                    end = later.start
                    break
            scope = _word_limit(sentence, trigger.end, end, MAX_SCOPE_WORDS, forward=True)
        else:
            start = 0
            for earlier in reversed(triggers[:index]):
                if earlier.category != trigger.category:
                    start = earlier.end
                    break
            scope = _word_limit(sentence, start, trigger.start, MAX_BACKWARD_WORDS, forward=False)
        scoped.append(
            Trigger(trigger.category, trigger.direction, trigger.start, trigger.end, scope)
        )
    return scoped


def assert_mention(
    sentence: str, start: int, end: int, triggers: list[Trigger] | None = None
) -> ContextResult:
    """The assertion of the finding at ``sentence[start:end]`` (a lower-cased sentence)."""
    if triggers is None:
        triggers = find_triggers(sentence)
    covering: list[tuple[int, Trigger]] = []
    for trigger in triggers:
        if trigger.category == "terminate" or (trigger.start < end and start < trigger.end):
            continue  # a terminator, or a trigger inside the finding's own words
        if trigger.direction == "forward" and trigger.end <= start < trigger.scope:
            covering.append((start - trigger.end, trigger))
        elif trigger.direction == "backward" and trigger.scope <= start and end <= trigger.start:
            covering.append((trigger.start - end, trigger))
    if not covering:
        return ContextResult("present")
    historical = any(t.category == "historical" for _, t in covering)
    other = any(t.category == "experiencer" for _, t in covering)
    deciding = [(d, t) for d, t in covering if t.category in _ABSENT | _UNCERTAIN]
    if not deciding:
        return ContextResult("present", historical=historical, other_experiencer=other)
    _, nearest = min(deciding, key=lambda pair: pair[0])
    words = sentence[nearest.start : nearest.end]
    assertion: Assertion = "absent" if nearest.category in _ABSENT else "uncertain"
    return ContextResult(
        assertion,
        historical=historical,
        other_experiencer=other,
        trigger=f"{nearest.category}: {words}",
        resolved=nearest.category == "resolved",
    )
