"""The risk family's knowledge files (``knowledge/``), read once: code sets, PCE coefficients
and the scores' rules. Their digest is part of each score's version, so the audit log
records exactly which knowledge produced a card (as ``models.drug`` does).
"""

from __future__ import annotations

import csv
import hashlib
import json
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from functools import cache
from importlib.resources import files
from types import MappingProxyType
from typing import Any

from fhir_adapters.patient_context import ICD10, ICD10_CM, Coding, Concept

#: Read through importlib.resources: on a Spark cluster the executors import this package
#: from a zip (``population.code_shipping``), where a filesystem path does not exist.
KNOWLEDGE = files(__package__) / "knowledge"
CODE_VERSION = "1.0.0"
ICD10_SYSTEMS = frozenset({ICD10, ICD10_CM})


def _rows(name: str) -> list[dict[str, str]]:
    with (KNOWLEDGE / name).open(encoding="utf-8") as handle:
        return list(csv.DictReader(line for line in handle if not line.startswith("#")))


def _icd(code: str) -> str:
    return code.replace(".", "").upper()


@dataclass(frozen=True)
class CodeMatch:
    """One code of a set: exact, or a prefix for hierarchical systems (ICD-10-CM, ATC)."""

    system: str
    code: str
    prefix: bool = False
    display: str | None = None

    def matches(self, coding: Coding) -> bool:
        if coding.code is None or coding.system is None:
            return False
        if self.system in ICD10_SYSTEMS:
            if coding.system not in ICD10_SYSTEMS:
                return False
            mine, theirs = _icd(self.code), _icd(coding.code)
        else:
            if coding.system != self.system:
                return False
            mine, theirs = self.code, coding.code
        return theirs.startswith(mine) if self.prefix else theirs == mine

    def to_json(self) -> dict[str, Any]:
        out: dict[str, Any] = {"system": self.system, "code": self.code}
        if self.prefix:
            out["match"] = "prefix"
        if self.display:
            out["display"] = self.display
        return out

    @classmethod
    def from_json(cls, data: Mapping[str, Any]) -> CodeMatch:
        return cls(
            system=str(data["system"]),
            code=str(data["code"]),
            prefix=data.get("match") == "prefix",
            display=data.get("display"),
        )


@dataclass(frozen=True)
class CodeSet:
    name: str
    codes: tuple[CodeMatch, ...]

    def matches(self, concept: Concept) -> bool:
        return any(code.matches(c) for c in concept.codings for code in self.codes)

    def matching(self, concepts: Iterable[Concept]) -> list[Concept]:
        return [c for c in concepts if self.matches(c)]


@cache
def code_sets() -> Mapping[str, CodeSet]:
    grouped: dict[str, list[CodeMatch]] = {}
    for row in _rows("code_sets.csv"):
        grouped.setdefault(row["set"], []).append(
            CodeMatch(row["system"], row["code"], row["match"] == "prefix", row["display"])
        )
    return MappingProxyType({name: CodeSet(name, tuple(codes)) for name, codes in grouped.items()})


def code_set(name: str) -> CodeSet:
    return code_sets()[name]


@cache
def pce_coefficients() -> Mapping[str, Mapping[str, float]]:
    groups: dict[str, dict[str, float]] = {}
    for row in _rows("pce_goff_2013.csv"):
        groups.setdefault(row["group"], {})[row["term"]] = float(row["value"])
    return MappingProxyType({g: MappingProxyType(terms) for g, terms in groups.items()})


@cache
def rules() -> Mapping[str, Any]:
    return json.loads((KNOWLEDGE / "score_rules.json").read_text(encoding="utf-8"))


@cache
def knowledge_sha256() -> str:
    digest = hashlib.sha256()
    for path in sorted(KNOWLEDGE.iterdir(), key=lambda entry: entry.name):
        if path.is_file():
            digest.update(path.name.encode())
            digest.update(path.read_bytes())
    return digest.hexdigest()


def knowledge_version() -> str:
    return f"{CODE_VERSION}+kb.{knowledge_sha256()[:12]}"
