"""Tamper-evident audit log: tables, hash chain, writer and verifier."""

from cds.audit.store import AuditLog, AuditUnavailable, CardRecord
from cds.audit.verify import VerifyResult, verify_chain

__all__ = ["AuditLog", "AuditUnavailable", "CardRecord", "VerifyResult", "verify_chain"]
