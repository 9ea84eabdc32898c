"""The CDS services this deployment offers. Add a service: write it, then list it here."""

from cds.services import (
    cardiovascular_risk,
    drug_safety,
    patient_summary,
    pneumonia_cxr,
    report_findings,
    risk_models,
    similar_patients,
)
from cds.services.registry import CdsService, ServiceRegistry

BUILT_IN_SERVICES: tuple[CdsService, ...] = (
    patient_summary.SERVICE,
    drug_safety.ORDER_SELECT,
    drug_safety.ORDER_SIGN,
    report_findings.SERVICE,
    pneumonia_cxr.SERVICE,
    cardiovascular_risk.SERVICE,
    risk_models.SERVICE,
    similar_patients.SERVICE,
)


def default_registry() -> ServiceRegistry:
    return ServiceRegistry(BUILT_IN_SERVICES)
