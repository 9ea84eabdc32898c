"""FHIR R4 API over the audit log: CDS results and AuditEvents (``/fhir``, read and search)."""

from cds.fhir_api.api import bp

__all__ = ["bp"]
