"""Who may read the audit log, and what: one role model for the FHIR API and the review page.

A :class:`Principal` is either an API client (a bearer JWT from a trusted API issuer,
``cds/fhir_api/auth.py``) or a reviewer logged in to ``/review`` (``cds/review``). Both
carry *roles*; API clients may carry SMART *scopes* instead (or as well):

================================  ==========================================================
grant                             may read
================================  ==========================================================
role ``reviewer``                 the results (GuidanceResponse, DetectedIssue,
                                  RiskAssessment, Observation) and the AuditEvents of CDS
                                  calls and feedback; the review page
role ``auditor``                  all of that, and the access log: the AuditEvents that
                                  record reads of the audit (who looked at what)
``system/*.read``, ``user/*.read``  every resource type, access log included
``system/<Type>.read``            that resource type (``AuditEvent``: access log included)
================================  ==========================================================

SMART v2 scopes work too: ``.rs`` (or ``.r`` / ``.s`` alone, for read / search only) in
place of ``.read``; ``.*`` is ``.read``'s superset. ``patient/…`` scopes grant nothing: the
audit log is not a patient compartment.
"""

from __future__ import annotations

import re
from collections.abc import Iterable
from dataclasses import dataclass
from typing import Literal

from cds.audit.store import utc_now

#: The resource types the FHIR API serves (RequestGroup is contained in GuidanceResponse).
RESULT_TYPES = ("GuidanceResponse", "DetectedIssue", "RiskAssessment", "Observation")
RESOURCE_TYPES = ("AuditEvent", *RESULT_TYPES)
REVIEWER, AUDITOR = "reviewer", "auditor"
ROLES = (REVIEWER, AUDITOR)
#: ``system`` of a reviewer's identifier (their user name is the value).
REVIEWER_SYSTEM = "urn:wardround:reviewer"

Interaction = Literal["read", "search"]
Channel = Literal["fhir-api", "review"]

_SCOPE = re.compile(r"^(system|user|patient)/(\*|[A-Z][A-Za-z]+)\.(read|write|\*|c?r?u?d?s?)$")


@dataclass(frozen=True)
class Scope:
    level: str
    resource_type: str
    read: bool
    search: bool

    @classmethod
    def parse(cls, text: str) -> Scope | None:
        """A SMART v1/v2 resource scope, or None for anything else (openid, launch, …)."""
        match = _SCOPE.match(text)
        if match is None:
            return None
        level, resource_type, permissions = match.groups()
        if permissions in ("read", "*"):
            return cls(level, resource_type, True, True)
        return cls(level, resource_type, "r" in permissions, "s" in permissions)

    def allows(self, resource_type: str, interaction: Interaction) -> bool:
        if self.level == "patient" or self.resource_type not in ("*", resource_type):
            return False
        return self.read if interaction == "read" else self.search


@dataclass(frozen=True)
class Principal:
    """Someone reading the audit log, and what they were granted."""

    channel: Channel
    #: Identifier system: the API token's ``iss``, or :data:`REVIEWER_SYSTEM`.
    system: str
    #: The token's ``sub`` (client id), or the reviewer's user name.
    id: str
    roles: frozenset[str] = frozenset()
    scopes: frozenset[str] = frozenset()

    @property
    def grants(self) -> list[str]:
        """Roles and scopes, as recorded with every read (``audit_access.grants``)."""
        return sorted(f"role:{role}" for role in self.roles) + sorted(self.scopes)

    def _scopes(self) -> Iterable[Scope]:
        return (scope for text in self.scopes if (scope := Scope.parse(text)) is not None)

    def may(self, resource_type: str, interaction: Interaction = "search") -> bool:
        """May read (or search) ``resource_type`` at all."""
        if resource_type not in RESOURCE_TYPES:
            return False
        if self.roles & {REVIEWER, AUDITOR}:
            return True
        return any(scope.allows(resource_type, interaction) for scope in self._scopes())

    def may_read_access_log(self, interaction: Interaction = "search") -> bool:
        """May see the AuditEvents that record reads of the audit (and log-ins)."""
        if AUDITOR in self.roles:
            return True
        return any(scope.allows("AuditEvent", interaction) for scope in self._scopes())

    @property
    def may_review(self) -> bool:
        """May use the review page (a role, not a scope: it is for people)."""
        return bool(self.roles & {REVIEWER, AUDITOR})


def roles_from(value: object) -> frozenset[str]:
    """Known roles named by a claim or a stored list (a list, or a space-separated string)."""
    items = value.split() if isinstance(value, str) else value if isinstance(value, list) else []
    return frozenset(item for item in items if isinstance(item, str) and item in ROLES)


def access_row(
    principal: Principal,
    action: str,
    *,
    status: int,
    target: str | None = None,
    query: dict[str, list[str]] | None = None,
    patient_id: str | None = None,
    count: int | None = None,
    remote_addr: str | None = None,
) -> dict[str, object]:
    """One ``audit_access`` row: who read what, with which filter, how many records."""
    return {
        "at": utc_now(),
        "channel": principal.channel,
        "principal_system": principal.system,
        "principal_id": principal.id,
        "grants": principal.grants,
        "action": action,
        "target": target[:200] if target else None,
        "query": bounded_query(query or {}),
        "patient_id": patient_id,
        "result_count": count,
        "status_code": status,
        "remote_addr": (remote_addr or None) and remote_addr[:64],
    }


#: What an access row keeps of a filter: the first 30 parameters, 20 values each, 200 chars.
MAX_PARAMS, MAX_VALUES, MAX_CHARS = 30, 20, 200


def bounded_query(query: dict[str, list[str]]) -> dict[str, list[str]]:
    return {
        str(name)[:MAX_CHARS]: [str(v)[:MAX_CHARS] for v in values[:MAX_VALUES]]
        for name, values in list(query.items())[:MAX_PARAMS]
    }
