"""What the drug-safety checks return: typed findings, one per problem (no cards, no FHIR JSON
beyond what a suggested action needs). ``cds/services/drug_safety.py`` turns them into cards."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Literal

Severity = Literal["info", "warning", "critical"]
Kind = Literal["interaction", "allergy", "duplicate", "renal", "opioid", "unidentified"]
SEVERITY_RANK: dict[str, int] = {"critical": 0, "warning": 1, "info": 2}


@dataclass(frozen=True)
class Citation:
    """Where a rule comes from (shown on the card's detail and as its source)."""

    label: str
    url: str | None = None


@dataclass(frozen=True)
class SuggestedAction:
    """A FHIR action on the EHR's draft order.

    ``kind``: ``delete-draft`` (remove the draft order ``resource_id``), ``create``
    (``resource`` is a FHIR R4 resource JSON to create, e.g. a naloxone MedicationRequest),
    ``update-dose`` (``resource`` is the draft MedicationRequest JSON with the new dose).
    """

    label: str
    kind: Literal["delete-draft", "create", "update-dose"]
    resource_id: str | None = None
    resource: dict[str, Any] | None = None


@dataclass(frozen=True)
class Finding:
    kind: Kind
    severity: Severity
    #: Card summary: under 140 characters, naming the drugs involved.
    summary: str
    #: Markdown: mechanism, management, evidence, the arithmetic where there is some.
    detail: str
    citations: tuple[Citation, ...]
    #: The draft order this finding is about (its FHIR id), if any.
    draft_order_id: str | None = None
    #: Two findings with the same key are the same problem: only the first is reported.
    dedupe_key: str = ""
    suggestions: tuple[SuggestedAction, ...] = ()
    #: Machine-readable facts for tests and the audit (e.g. {"mme": 60.0}).
    facts: dict[str, Any] = field(default_factory=dict)

    def __post_init__(self) -> None:
        if len(self.summary) >= 140:
            raise ValueError(f"summary must be under 140 characters: {self.summary!r}")
