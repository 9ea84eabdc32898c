"""Finding mentions (lexicon phrases) with their ConText assertion, and the rules-only reader.

The lexicon (``knowledge/findings.csv``) maps phrases (regular expressions over the
lower-cased clean sentence) to the finding set of :mod:`models.nlp.findings`. A pattern
may name its *target* words ``(?P<t>...)``: only those are the mention ("the cardiac
silhouette is not **enlarged**"), so ConText sees the words around them.

A report's finding is decided from its mentions in the finding sections (findings,
impression, recommendation, or a note's body; never the indication or comparison):
present if any current mention is present, else uncertain if any is, else absent.
Historical mentions and mentions about someone else are kept out.
"""

from __future__ import annotations

import csv
import re
from collections.abc import Sequence
from dataclasses import dataclass
from functools import cache

from models.nlp.context import KNOWLEDGE, Assertion, ContextResult, assert_mention, find_triggers
from models.nlp.findings import ACUTE_LABELS, LABELS, NO_ACUTE
from models.nlp.text import FINDING_SECTIONS, Sentence, split_sentences

FINDINGS_CSV = KNOWLEDGE / "findings.csv"
_RANK: dict[Assertion, int] = {"present": 2, "uncertain": 1, "absent": 0}


@dataclass(frozen=True)
class Mention:
    label: str
    sentence: Sentence
    #: Offsets of the finding's words in ``sentence.clean``.
    start: int
    end: int
    context: ContextResult

    @property
    def assertion(self) -> Assertion:
        return self.context.assertion

    @property
    def current(self) -> bool:
        """About this patient now (not history, not a relative) and in a finding section."""
        return (
            not self.context.historical
            and not self.context.other_experiencer
            and self.sentence.section in FINDING_SECTIONS
        )


@dataclass(frozen=True)
class RuleFinding:
    """The rules' verdict on one finding of one report."""

    label: str
    assertion: Assertion
    #: The mention that decided it (its sentence is the evidence).
    mention: Mention


@cache
def _lexicon() -> tuple[tuple[str, re.Pattern[str]], ...]:
    with FINDINGS_CSV.open(newline="", encoding="utf-8") as handle:
        rows = list(csv.DictReader(handle))
    unknown = {r["label"] for r in rows} - set(LABELS)
    if unknown:
        raise ValueError(f"findings.csv names unknown labels {sorted(unknown)}")
    return tuple((r["label"], re.compile(r["pattern"])) for r in rows)


def mentions_in(sentence: Sentence) -> list[Mention]:
    """Every finding mention in one sentence, with its ConText assertion."""
    lowered = sentence.clean.lower()
    spans: list[tuple[str, int, int]] = []
    for label, pattern in _lexicon():
        for match in pattern.finditer(lowered):
            start, end = match.span("t") if "t" in pattern.groupindex else match.span()
            spans.append((label, start, end))
    if not spans:
        return []
    triggers = find_triggers(lowered)
    seen: set[tuple[str, int, int]] = set()
    mentions = []
    for label, start, end in sorted(spans, key=lambda s: (s[1], s[2])):
        if (label, start, end) in seen:
            continue
        seen.add((label, start, end))
        mentions.append(
            Mention(label, sentence, start, end, assert_mention(lowered, start, end, triggers))
        )
    return mentions


def mentions(text: str | Sequence[Sentence]) -> list[Mention]:
    sentences = split_sentences(text) if isinstance(text, str) else text
    return [m for s in sentences for m in mentions_in(s)]


def _decide(found: Sequence[Mention]) -> Mention:
    """Present beats uncertain beats absent; ties go to the impression, then the first."""
    return max(
        found,
        key=lambda m: (_RANK[m.assertion], m.sentence.section == "impression", -m.sentence.start),
    )


def read_rules(text: str | Sequence[Sentence]) -> dict[str, RuleFinding]:
    """Label → the rules' verdict, for every finding the report mentions (current mentions)."""
    by_label: dict[str, list[Mention]] = {}
    for mention in mentions(text):
        if mention.current:
            by_label.setdefault(mention.label, []).append(mention)
    verdicts = {
        label: RuleFinding(label, (m := _decide(found)).assertion, m)
        for label, found in by_label.items()
    }
    no_acute = verdicts.get(NO_ACUTE)
    if no_acute is not None and no_acute.assertion != "absent":
        # "No acute finding" is contradicted by an acute finding the report affirms.
        contradicting = [
            v for label, v in verdicts.items() if label in ACUTE_LABELS and v.assertion == "present"
        ]
        if contradicting:
            verdicts[NO_ACUTE] = RuleFinding(NO_ACUTE, "absent", contradicting[0].mention)
    return verdicts
