"""The finding set the report reader knows: labels, display names and codes."""

from __future__ import annotations

from dataclasses import dataclass

from fhir_adapters.patient_context import SNOMED

#: For the one finding with no SNOMED CT concept of its own meaning ("no acute finding").
LOCAL = "urn:wardround:report-nlp:finding"


@dataclass(frozen=True)
class FindingKind:
    label: str
    display: str
    system: str
    code: str


FINDINGS: tuple[FindingKind, ...] = (
    FindingKind("cardiomegaly", "Cardiomegaly", SNOMED, "8186001"),
    FindingKind("pleural_effusion", "Pleural effusion", SNOMED, "60046008"),
    FindingKind("pneumothorax", "Pneumothorax", SNOMED, "36118008"),
    FindingKind("consolidation_pneumonia", "Consolidation / pneumonia", SNOMED, "95436008"),
    FindingKind("pulmonary_edema", "Pulmonary edema", SNOMED, "19242006"),
    FindingKind("atelectasis", "Atelectasis", SNOMED, "46621007"),
    FindingKind("lung_nodule_mass", "Lung nodule / mass", SNOMED, "786838002"),
    FindingKind("fracture", "Fracture", SNOMED, "125605004"),
    FindingKind("no_acute_finding", "No acute finding", LOCAL, "no-acute-finding"),
)
LABELS: tuple[str, ...] = tuple(f.label for f in FINDINGS)
NO_ACUTE = "no_acute_finding"
ACUTE_LABELS: frozenset[str] = frozenset(LABELS) - {NO_ACUTE}
BY_LABEL: dict[str, FindingKind] = {f.label: f for f in FINDINGS}
