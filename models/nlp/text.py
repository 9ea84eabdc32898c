"""Report text → sections → sentences, with de-identification artefacts handled.

Radiology reports and clinical notes arrive as plain text (``fhir_adapters.report_text``).
This module finds the report's sections (indication, comparison, technique, findings,
impression, recommendation; a note without headers is one ``body`` section), splits each
section into sentences with their character offsets in the original text, and gives every
sentence a *clean* form for matching and encoding: de-identification placeholders
(``XXXX`` runs, as in the Open-i reports) are removed and whitespace collapsed. Evidence
quoted to a clinician is always the original sentence.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Literal

SectionKind = Literal[
    "indication", "comparison", "technique", "findings", "impression", "recommendation", "body"
]

#: Sections whose sentences state findings; the others say why and how the study was done.
FINDING_SECTIONS: frozenset[SectionKind] = frozenset(
    {"findings", "impression", "recommendation", "body"}
)

_HEADERS: dict[str, SectionKind] = {
    "indication": "indication",
    "indications": "indication",
    "clinical indication": "indication",
    "history": "indication",
    "clinical history": "indication",
    "clinical information": "indication",
    "clinical details": "indication",
    "reason for exam": "indication",
    "reason for examination": "indication",
    "reason for study": "indication",
    "reason for referral": "indication",
    "chief complaint": "indication",
    "history of present illness": "indication",
    "comparison": "comparison",
    "comparisons": "comparison",
    "prior": "comparison",
    "technique": "technique",
    "exam": "technique",
    "examination": "technique",
    "procedure": "technique",
    "findings": "findings",
    "finding": "findings",
    "report": "findings",
    "description": "findings",
    "impression": "impression",
    "impressions": "impression",
    "conclusion": "impression",
    "conclusions": "impression",
    "summary": "impression",
    "opinion": "impression",
    "interpretation": "impression",
    "assessment": "impression",
    "assessment and plan": "impression",
    "recommendation": "recommendation",
    "recommendations": "recommendation",
    "plan": "recommendation",
}
# A header: at the start of the text or a line, or after a sentence end; "Findings:" with a
# colon, or a whole line of its own (markdown "# Impression", "IMPRESSION").
_HEADER_NAMES = "|".join(sorted((re.escape(h) for h in _HEADERS), key=len, reverse=True))
_HEADER = re.compile(
    rf"(?:(?<=\A)|(?<=\n)|(?<=[.!?] ))[ \t]*(?:#+[ \t]*)?(?P<name>{_HEADER_NAMES})"
    rf"(?:[ \t]*:[ \t]*|[ \t]*(?=\n|\Z))",
    re.IGNORECASE,
)

#: De-identification placeholders: runs of ``XXXX`` (with the ``/``, ``-`` or spaces between).
_DEID_RUN = re.compile(r"X{3,}(?:[\s/\-.,:<>]*X{3,})*")
_SPACES = re.compile(r"[ \t\r\f\v]+")
_SPACE_BEFORE_PUNCT = re.compile(r"\s+([,.;:!?])")
_DOUBLE_PUNCT = re.compile(r"([,;:])\s*(?=[,.;:])")


@dataclass(frozen=True)
class Sentence:
    #: The sentence as written (quoted as evidence).
    text: str
    #: De-identification placeholders removed, whitespace collapsed (matched and encoded).
    clean: str
    section: SectionKind
    #: Character offsets of ``text`` in the whole report text.
    start: int
    end: int


@dataclass(frozen=True)
class Section:
    kind: SectionKind
    start: int
    end: int


def clean(text: str) -> str:
    """``text`` without de-identification runs, with single spaces."""
    without = _DEID_RUN.sub(" ", text)
    without = _DOUBLE_PUNCT.sub(r"\1", without)
    without = _SPACE_BEFORE_PUNCT.sub(r"\1", _SPACES.sub(" ", without))
    return " ".join(without.split()).lstrip("-/.,:;) ")


def sections(text: str) -> list[Section]:
    """The report's sections in order; text before the first header is ``body``."""
    found: list[tuple[int, int, SectionKind]] = [
        (m.start(), m.end(), _HEADERS[m.group("name").lower()]) for m in _HEADER.finditer(text)
    ]
    result: list[Section] = []
    first = found[0][0] if found else len(text)
    if text[:first].strip():
        result.append(Section("body", 0, first))
    for index, (_, body_start, kind) in enumerate(found):
        end = found[index + 1][0] if index + 1 < len(found) else len(text)
        if text[body_start:end].strip():
            result.append(Section(kind, body_start, end))
    return result


# Sentence ends: . ! ? followed by whitespace and a capital, digit or opening mark (or the
# end); a line break always ends a sentence. Abbreviations and list numbers are kept whole.
_END = re.compile(r"[.!?]+(?=\s+[\"'(\[]?[A-Z0-9]|\s*\Z)|\n+")
_ABBREVIATIONS = frozenset(
    {"dr", "mr", "mrs", "ms", "st", "vs", "approx", "e.g", "i.e", "etc", "no", "fig", "cf", "pt"}
)
_LIST_NUMBER = re.compile(r"^\s*\(?\d{1,2}[.)]?$")


def _is_abbreviation(chunk: str) -> bool:
    words = chunk.rstrip(".").split()
    if not words:
        return False
    last = words[-1].lower().lstrip("(")
    return last in _ABBREVIATIONS or bool(_LIST_NUMBER.match(chunk.strip()))


def _split(text: str, start: int, end: int) -> list[tuple[int, int]]:
    spans: list[tuple[int, int]] = []
    cursor = start
    for match in _END.finditer(text, start, end):
        stop = match.end() if not match.group().startswith("\n") else match.start()
        piece = text[cursor:stop]
        if match.group().startswith(".") and _is_abbreviation(piece):
            continue
        spans.append((cursor, stop))
        cursor = match.end()
    spans.append((cursor, end))
    result = []
    for s, e in spans:
        while s < e and text[s].isspace():
            s += 1
        while e > s and text[e - 1].isspace():
            e -= 1
        if s < e:
            result.append((s, e))
    return result


def split_sentences(text: str) -> list[Sentence]:
    """Every sentence of every section, in order, with its offsets and clean form."""
    sentences = []
    for section in sections(text):
        for s, e in _split(text, section.start, section.end):
            original = text[s:e]
            cleaned = clean(original)
            if any(c.isalnum() for c in cleaned):
                sentences.append(Sentence(original, cleaned, section.kind, s, e))
    return sentences
