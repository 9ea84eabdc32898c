"""Drug-safety services for ``order-select`` and ``order-sign``: findings → CDS Hooks cards.

The checks themselves live in ``models/drug`` (pure); this module declares the two
services and turns each finding into one card: indicator from severity, the source of
the rule, FHIR actions on the draft order where a safe alternative exists, and override
reasons on critical cards. Silent (no cards) when nothing is wrong.
"""

from __future__ import annotations

from typing import Literal

from cds.cards import Action, Card, Coding, Source, Suggestion
from cds.results import CardResult, Code
from cds.services.registry import CdsService, HookCall, ServiceResult
from fhir_adapters import PATIENT_CONTEXT_PREFETCH
from models import registry
from models.drug import MODEL_ID, check_orders
from models.drug.findings import Finding, SuggestedAction

#: Override reasons offered on critical cards (CDS Hooks 2.0 §Overridden guidance).
OVERRIDE_REASON_SYSTEM = "urn:wardround:cds:override-reason"
OVERRIDE_REASONS = (
    Coding(
        system=OVERRIDE_REASON_SYSTEM,
        code="benefit-outweighs-risk",
        display="Benefit outweighs the risk for this patient",
    ),
    Coding(
        system=OVERRIDE_REASON_SYSTEM,
        code="will-monitor",
        display="Will monitor or adjust the dose",
    ),
    Coding(
        system=OVERRIDE_REASON_SYSTEM,
        code="patient-tolerated-before",
        display="Patient has tolerated this before",
    ),
    Coding(
        system=OVERRIDE_REASON_SYSTEM,
        code="alert-incorrect",
        display="Alert does not apply (record is wrong or out of date)",
    ),
)
PREFETCH_KEYS = ("patient", "medications", "allergies", "observations")


def _action(suggested: SuggestedAction) -> Action:
    if suggested.kind == "delete-draft":
        return Action(
            type="delete",
            description=suggested.label,
            resourceId=[f"MedicationRequest/{suggested.resource_id}"],
        )
    action_type = "create" if suggested.kind == "create" else "update"
    return Action(type=action_type, description=suggested.label, resource=suggested.resource)


def card_for(finding: Finding) -> Card:
    primary = finding.citations[0] if finding.citations else None
    suggestions = [
        Suggestion(label=s.label, actions=[_action(s)])
        for s in finding.suggestions
        if s.kind != "delete-draft" or s.resource_id
    ]
    return Card(
        summary=finding.summary,
        detail=finding.detail,
        indicator=finding.severity,
        source=Source(
            label=primary.label[:200] if primary else "Wardround drug safety",
            url=primary.url if primary and primary.url else None,
        ),
        suggestions=suggestions,
        selectionBehavior="at-most-one" if suggestions else None,
        overrideReasons=list(OVERRIDE_REASONS) if finding.severity == "critical" else None,
    )


#: Kinds of drug-safety finding, as codes of the result record (``/fhir`` maps them to
#: DetectedIssue.code).
FINDING_KIND_SYSTEM = "urn:wardround:drug-safety:finding-kind"
_ISSUE_SEVERITY = {"critical": "high", "warning": "moderate", "info": "low"}


def result_for(finding: Finding) -> CardResult:
    """The finding as data: a detected issue on the draft order it concerns."""
    implicated = [f"MedicationRequest/{finding.draft_order_id}"] if finding.draft_order_id else []
    other = finding.facts.get("other_id")
    if isinstance(other, str) and other:
        implicated.append(f"MedicationRequest/{other}")
    allergy = finding.facts.get("allergy_id")
    basis = (f"AllergyIntolerance/{allergy}",) if isinstance(allergy, str) and allergy else ()
    return CardResult(
        kind="detected-issue",
        code=Code(system=FINDING_KIND_SYSTEM, code=finding.kind),
        model=MODEL_ID,
        severity=_ISSUE_SEVERITY[finding.severity],  # type: ignore[arg-type]
        implicated=tuple(dict.fromkeys(implicated)),
        basis=basis,
        text=finding.summary,
        facts=dict(finding.facts),
    )


def _handler(mode: Literal["select", "sign"]):  # type: ignore[no-untyped-def]
    def handle(call: HookCall) -> ServiceResult:
        findings = check_orders(call.patient, mode)
        cards = [card_for(f) for f in findings]
        return ServiceResult(
            cards=cards,
            models=[registry.identity(MODEL_ID)],
            results={card.uuid: result_for(f) for card, f in zip(cards, findings, strict=True)},
        )

    return handle


_PREFETCH = {key: PATIENT_CONTEXT_PREFETCH[key] for key in PREFETCH_KEYS}
_USAGE = (
    "Send draftOrders (MedicationRequests) and the patient, medications, allergies and "
    "observations prefetch, or fhirServer with fhirAuthorization so the service fetches them."
)

ORDER_SELECT = CdsService(
    id="drug-safety-select",
    hook="order-select",
    title="Drug safety (while ordering)",
    description=(
        "Checks the selected medication orders for drug-drug interactions, allergy and "
        "cross-sensitivity conflicts and duplicate therapy."
    ),
    handler=_handler("select"),
    prefetch=_PREFETCH,
    usage_requirements=_USAGE,
)
ORDER_SIGN = CdsService(
    id="drug-safety-sign",
    hook="order-sign",
    title="Drug safety (before signing)",
    description=(
        "Checks every draft medication order for interactions, allergies, duplicate "
        "therapy, renal dosing (eGFR) and opioid dose (CDC 2022 MME) before signing."
    ),
    handler=_handler("sign"),
    prefetch=_PREFETCH,
    usage_requirements=_USAGE,
)
