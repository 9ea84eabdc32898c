"""What request handlers take from the running app (set up once by ``cds.app.create_app``):
one accessor each, so that every blueprint reads settings, the audit log, the service
registry and the public base URL the same way; and the access-log write that every read
of the audit (FHIR API, review page) makes before its data leaves."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from flask import current_app, request

from cds.access import Principal, access_row

if TYPE_CHECKING:
    from sqlalchemy.orm import Session

    from cds.audit import AuditLog
    from cds.config import Settings
    from cds.services.registry import ServiceRegistry


def settings() -> Settings:
    return current_app.config["WARDROUND_SETTINGS"]


def audit_log() -> AuditLog:
    return current_app.extensions["wardround.audit"]


def snapshot_session() -> Session:
    """A new read-only session on one snapshot of the audit database (close it after use)."""
    return current_app.extensions["wardround.snapshot_sessions"]()


def service_registry() -> ServiceRegistry:
    return current_app.extensions["wardround.registry"]


def public_base_url() -> str:
    """Absolute URLs in answers (links, ``fullUrl``, exports): ``WARDROUND_PUBLIC_BASE_URL``,
    else the URL this request came to. (JWT ``aud`` checks use the setting only.)"""
    return settings().public_base_url or request.host_url.rstrip("/")


def record_access(principal: Principal, action: str, status: int, **fields: Any) -> None:
    """Write one access-log row (``cds.access.access_row``) for this request, committed in
    the hash chain; raises ``AuditUnavailable`` if it cannot be written (then no audit
    data may leave)."""
    audit_log().record_access(
        [access_row(principal, action, status=status, remote_addr=request.remote_addr, **fields)]
    )
