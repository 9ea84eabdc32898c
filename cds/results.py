"""What a card asserts, machine-readable: the record behind each card in the audit log.

A card is prose for a clinician; a :class:`CardResult` is the same statement as data
(what was found or predicted, about what, from which inputs, by which model). Services
attach one to each card that asserts something (``ServiceResult.results``, keyed by card
uuid); it is written with the card, inside the same hash-chained row (``audit_card.result``),
and the FHIR API serves it as a FHIR resource:

=================== ===================================================================
``kind``            FHIR R4 resource served by ``/fhir``
=================== ===================================================================
``detected-issue``  ``DetectedIssue`` (drug-safety findings: interactions, allergy, …)
``risk-assessment`` ``RiskAssessment`` (risk scores, learned risk models, imaging models)
``observation``     ``Observation`` (a finding read from a report, with its assertion)
=================== ===================================================================

Fields not used by a kind stay ``None``/empty and are omitted from the stored JSON.
References are relative FHIR references to the EHR's own resources (``Observation/123``).
"""

from __future__ import annotations

from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field

ResultKind = Literal["detected-issue", "risk-assessment", "observation"]


class _Frozen(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class Code(_Frozen):
    system: str
    code: str
    display: str | None = None


class Input(_Frozen):
    """One input the result was computed from, as a clinician would read it."""

    name: str
    value: str | float | int | bool | None = None
    unit: str | None = None
    #: ISO date or date-time the value was recorded (FHIR ``effective``/``onset``).
    date: str | None = None
    reference: str | None = None


class Factor(_Frozen):
    """A per-patient explanation term: how much one feature moved the prediction."""

    name: str
    #: Signed contribution (log-odds for xgboost ``pred_contribs``; points for a score).
    contribution: float
    value: str | float | int | None = None


class CardResult(_Frozen):
    kind: ResultKind
    #: What was found or predicted (an interaction rule, an outcome, a finding code).
    code: Code
    #: Registry id of the model or rule set that produced it (see ``models.registry``).
    model: str
    #: FHIR references of the patient data the result rests on.
    basis: tuple[str, ...] = ()
    inputs: tuple[Input, ...] = ()
    #: Free-text rationale or the evidence sentence, as shown on the card.
    text: str | None = None

    # detected-issue
    severity: Literal["high", "moderate", "low"] | None = None
    #: The orders or resources implicated (e.g. ``MedicationRequest/draft-1``).
    implicated: tuple[str, ...] = ()

    # risk-assessment
    probability: float | None = Field(default=None, ge=0, le=1)
    #: A risk band or qualitative result ("high", "7.5-20 %", "suggestive").
    qualitative: str | None = None
    #: Prediction horizon in years (e.g. 10 for the PCE, 3 for a 3-year onset model).
    horizon_years: float | None = None
    factors: tuple[Factor, ...] = ()

    # observation
    #: present | absent | uncertain (a report finding's assertion).
    assertion: Literal["present", "absent", "uncertain"] | None = None

    #: Anything else worth keeping (numbers for tests and reviewers).
    facts: dict[str, Any] = Field(default_factory=dict)

    def to_json(self) -> dict[str, Any]:
        return self.model_dump(mode="json", exclude_none=True, exclude_defaults=True) | {
            "kind": self.kind,
            "code": self.code.model_dump(mode="json", exclude_none=True),
            "model": self.model,
        }
