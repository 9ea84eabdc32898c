"""Drug safety: checks of draft medication orders against the patient's record.

The one door is :func:`check_orders` (PatientContext in, findings out). The knowledge base
is the CSV files in ``knowledge/``, every row with its source; :data:`MODEL_VERSION` names
the code version and a digest of those files, so the audit log records exactly which
knowledge produced a card.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from datetime import date
from functools import cache
from pathlib import Path
from typing import Literal

from fhir_adapters.patient_context import Medication, PatientContext
from models.artifacts import ModelIdentity, files_sha256
from models.drug.allergy import find_allergy_conflicts
from models.drug.duplicates import find_duplicates
from models.drug.findings import SEVERITY_RANK, Citation, Finding
from models.drug.interactions import find_interactions
from models.drug.normalise import DrugIdentity, identify
from models.drug.opioids import check_opioids
from models.drug.renal import check_renal

MODEL_ID = "drug-safety"
#: The interaction rule (interactions.csv) that the opioid check supersedes at order-sign.
OPIOID_BZD = "opioid-benzodiazepine"
CODE_VERSION = "1.0.0"
KNOWLEDGE = Path(__file__).resolve().parent / "knowledge"
Mode = Literal["select", "sign"]


@cache
def knowledge_sha256() -> str:
    return files_sha256(KNOWLEDGE, "*.csv")


def knowledge_digest() -> str:
    return knowledge_sha256()[:12]


def model_version() -> str:
    return f"{CODE_VERSION}+kb.{knowledge_digest()}"


@dataclass(frozen=True)
class DrugSafetyRules:
    """The rule set as the model registry serves it (its identity goes into the audit)."""

    identity: ModelIdentity


def load() -> DrugSafetyRules:
    """Model-registry loader (``models.registry``)."""
    return DrugSafetyRules(ModelIdentity(MODEL_ID, model_version(), knowledge_sha256()))


@dataclass(frozen=True)
class DrugOrder:
    """A draft medication order (or an active medication) with its identified drug."""

    id: str | None
    identity: DrugIdentity
    medication: Medication


def _unidentified(order: DrugOrder) -> Finding:
    label = order.identity.label or "an ordered drug"
    return Finding(
        kind="unidentified",
        severity="info",
        summary=f"Could not identify {label[:80]}: drug-safety checks did not run for it",
        detail=(
            f"**{label}** matched no RxNorm code or ingredient name in the knowledge base, "
            "so interactions, allergies, duplicates, renal dosing and opioid doses were not "
            "checked for it. Check it by hand."
        ),
        citations=(Citation("Wardround drug knowledge base"),),
        draft_order_id=order.id,
        dedupe_key=f"unidentified:{order.id or label}",
    )


def _ranked(findings: list[Finding]) -> list[Finding]:
    """Most severe first; the same problem (dedupe key) reported once."""
    seen: set[str] = set()
    kept = []
    for finding in sorted(findings, key=lambda f: SEVERITY_RANK[f.severity]):
        key = finding.dedupe_key or finding.summary
        if key not in seen:
            seen.add(key)
            kept.append(finding)
    return kept


def check_orders(patient: PatientContext, mode: Mode, today: date | None = None) -> list[Finding]:
    """Findings for the draft MedicationRequests of an order-select / order-sign call.

    ``select`` checks only the orders the clinician just selected (the light checks:
    interactions, allergies, duplicates); ``sign`` checks every draft with every check.
    """
    today = today or date.today()
    all_drafts = [
        (o.selected, DrugOrder(o.id, identify(o.concept), o.medication))
        for o in patient.draft_orders
        if o.medication is not None
    ]
    drafts = [d for selected, d in all_drafts if mode == "sign" or selected]
    draft_ids = {o.id for o in patient.draft_orders if o.id}
    actives = [
        DrugOrder(m.id, identify(m.concept), m)
        for m in patient.medications
        if m.id not in draft_ids  # a draft that edits an active order replaces it
    ]
    if mode == "select":  # drafts not selected now are on the order list all the same
        actives += [d for selected, d in all_drafts if not selected]
    known = [d for d in drafts if d.identity.identified]
    findings = [_unidentified(d) for d in drafts if not d.identity.identified]
    pairs = [(d.id, d.identity) for d in known]
    active_pairs = [(a.id, a.identity) for a in actives if a.identity.identified]
    findings += find_interactions(pairs, active_pairs)
    findings += find_allergy_conflicts(pairs, patient.allergies)
    findings += find_duplicates(pairs, active_pairs)
    if mode == "sign":
        findings += check_renal(pairs, patient, today)
        findings += check_opioids(
            [(d.id, d.identity, d.medication) for d in known],
            [(a.identity, a.medication) for a in actives if a.identity.identified],
            any(a.identity.has_class("benzodiazepine") for a in actives),
            patient_id=patient.patient_id,
        )
        findings = _merge_opioid_benzodiazepine(findings)
    return _ranked(findings)


def _merge_opioid_benzodiazepine(findings: list[Finding]) -> list[Finding]:
    """At order-sign the opioid check reports opioid + benzodiazepine with the MME and the
    naloxone suggestion: it replaces the interaction card for that pair (keeping the more
    severe indicator), so the clinician sees one card, not two."""
    combined = [f for f in findings if f.dedupe_key == "opioid:benzodiazepine"]
    if not combined:
        return findings
    pair = [f for f in findings if f.kind == "interaction" and f.facts.get("rule") == OPIOID_BZD]
    if not pair:
        return findings
    worst = min((f.severity for f in [*pair, *combined]), key=SEVERITY_RANK.__getitem__)
    kept = [f for f in findings if f not in pair and f not in combined]
    return kept + [dataclasses.replace(f, severity=worst) for f in combined]


__all__ = ["MODEL_ID", "DrugOrder", "Finding", "check_orders", "model_version"]
