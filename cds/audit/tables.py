"""Audit tables. Every chained row carries ``seq``, ``prev_hash`` and ``hash``.

The four chained tables (invocation, card, feedback, access) share one sequence: ``seq`` is
assigned from the single ``audit_chain_head`` row, which is locked for the length of the
writing transaction, so concurrent writers queue instead of forking the chain.
"""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

from sqlalchemy import (
    JSON,
    BigInteger,
    Boolean,
    DateTime,
    Float,
    ForeignKey,
    Index,
    Integer,
    String,
    Text,
)
from sqlalchemy.dialects.postgresql import JSONB
from sqlalchemy.orm import Mapped, mapped_column
from sqlalchemy.types import TypeDecorator

from cds.db import Base

JsonType = JSON().with_variant(JSONB(), "postgresql")
GENESIS_HASH = "0" * 64


class UtcDateTime(TypeDecorator[datetime]):
    """``DateTime(timezone=True)`` that stores every aware datetime converted to UTC.

    SQLite keeps no offset: it would store ``12:15+02:00`` as ``12:15`` and hand it back
    naive, read as UTC, so the row (and its hash) would change on the way through.
    """

    impl = DateTime(timezone=True)
    cache_ok = True

    def process_bind_param(self, value: datetime | None, dialect: Any) -> datetime | None:
        if value is not None and value.tzinfo is not None:
            return value.astimezone(UTC)
        return value


class ChainedRow:
    """Columns shared by every row of the hash chain."""

    seq: Mapped[int] = mapped_column(BigInteger, primary_key=True, autoincrement=False)
    prev_hash: Mapped[str] = mapped_column(String(64), nullable=False)
    hash: Mapped[str] = mapped_column(String(64), nullable=False, unique=True)

    #: Columns covered by the row hash, in addition to ``seq`` and ``prev_hash``.
    hashed_columns: tuple[str, ...] = ()
    #: Hashed columns added after the first schema: left out of the hash while NULL, so
    #: rows written before the column existed keep their hash.
    later_hashed_columns: tuple[str, ...] = ()


class Invocation(ChainedRow, Base):
    """One call of a CDS service, whatever its outcome."""

    __tablename__ = "audit_invocation"

    received_at: Mapped[datetime] = mapped_column(UtcDateTime(), nullable=False)
    service_id: Mapped[str] = mapped_column(String(128), nullable=False, index=True)
    hook: Mapped[str | None] = mapped_column(String(128))
    hook_instance: Mapped[str | None] = mapped_column(String(64), index=True)
    fhir_server: Mapped[str | None] = mapped_column(Text)
    client_iss: Mapped[str | None] = mapped_column(Text)
    client_sub: Mapped[str | None] = mapped_column(Text)
    user_id: Mapped[str | None] = mapped_column(Text)
    patient_id: Mapped[str | None] = mapped_column(Text, index=True)
    encounter_id: Mapped[str | None] = mapped_column(Text)
    request_digest: Mapped[str] = mapped_column(String(64), nullable=False)
    prefetch_used: Mapped[list[str]] = mapped_column(JsonType, nullable=False)
    prefetch_fetched: Mapped[list[dict[str, Any]]] = mapped_column(JsonType, nullable=False)
    model_versions: Mapped[list[dict[str, str]]] = mapped_column(JsonType, nullable=False)
    status_code: Mapped[int] = mapped_column(Integer, nullable=False)
    latency_ms: Mapped[float] = mapped_column(Float, nullable=False)
    error_code: Mapped[str | None] = mapped_column(String(64))
    error_detail: Mapped[str | None] = mapped_column(Text)

    hashed_columns = (
        "received_at", "service_id", "hook", "hook_instance", "fhir_server", "client_iss",
        "client_sub", "user_id", "patient_id", "encounter_id", "request_digest",
        "prefetch_used", "prefetch_fetched", "model_versions", "status_code", "latency_ms",
        "error_code", "error_detail",
    )  # fmt: skip

    __table_args__ = (
        # Keyset pages (newest first) of one patient's or one user's calls; date ranges.
        Index("ix_audit_invocation_patient_seq", "patient_id", "seq"),
        Index("ix_audit_invocation_user_seq", "user_id", "seq"),
        Index("ix_audit_invocation_received_at", "received_at"),
        Index("ix_audit_invocation_hook_seq", "hook", "seq"),
    )


class Card(ChainedRow, Base):
    """A card exactly as it was returned to the EHR."""

    __tablename__ = "audit_card"

    invocation_seq: Mapped[int] = mapped_column(
        BigInteger, ForeignKey("audit_invocation.seq"), nullable=False, index=True
    )
    uuid: Mapped[str] = mapped_column(String(36), nullable=False, unique=True)
    service_id: Mapped[str] = mapped_column(String(128), nullable=False)
    summary: Mapped[str] = mapped_column(String(140), nullable=False)
    indicator: Mapped[str] = mapped_column(String(16), nullable=False)
    card_json: Mapped[dict[str, Any]] = mapped_column(JsonType, nullable=False)
    #: What the card asserts, as data (``cds.results.CardResult``); NULL for plain info cards.
    result: Mapped[dict[str, Any] | None] = mapped_column(JsonType)

    hashed_columns = (
        "invocation_seq", "uuid", "service_id", "summary", "indicator", "card_json", "result",
    )  # fmt: skip
    later_hashed_columns = ("result",)


class Feedback(ChainedRow, Base):
    """One CDS Hooks feedback entry, stored against the audited card it names."""

    __tablename__ = "audit_feedback"

    received_at: Mapped[datetime] = mapped_column(UtcDateTime(), nullable=False)
    card_uuid: Mapped[str] = mapped_column(
        String(36), ForeignKey("audit_card.uuid"), nullable=False, index=True
    )
    service_id: Mapped[str] = mapped_column(String(128), nullable=False)
    client_iss: Mapped[str | None] = mapped_column(Text)
    outcome: Mapped[str] = mapped_column(String(16), nullable=False)
    outcome_timestamp: Mapped[datetime] = mapped_column(UtcDateTime(), nullable=False)
    accepted_suggestions: Mapped[list[str]] = mapped_column(JsonType, nullable=False)
    override_reason: Mapped[dict[str, Any] | None] = mapped_column(JsonType)

    hashed_columns = (
        "received_at", "card_uuid", "service_id", "client_iss", "outcome",
        "outcome_timestamp", "accepted_suggestions", "override_reason",
    )  # fmt: skip

    __table_args__ = (
        Index("ix_audit_feedback_received_at", "received_at"),
        Index("ix_audit_feedback_service_seq", "service_id", "seq"),
    )


class Access(ChainedRow, Base):
    """One read of the audit log (FHIR API, review page, export) or a reviewer log-in/out.

    Written before the data it describes leaves the service, in the same hash chain as
    what was read, and served back by the FHIR API as an AuditEvent (``acc-<seq>``).
    """

    __tablename__ = "audit_access"

    at: Mapped[datetime] = mapped_column(UtcDateTime(), nullable=False, index=True)
    #: ``fhir-api`` or ``review``.
    channel: Mapped[str] = mapped_column(String(16), nullable=False)
    #: Who: ``urn:wardround:reviewer`` + user name, or a token's ``iss`` + ``sub``.
    principal_system: Mapped[str] = mapped_column(Text, nullable=False)
    principal_id: Mapped[str] = mapped_column(Text, nullable=False, index=True)
    #: The roles and scopes that granted (or failed to grant) the access.
    grants: Mapped[list[str]] = mapped_column(JsonType, nullable=False)
    #: search, read, page, detail, summary, export-csv, export-ndjson, export-bundle,
    #: login, login-failed, logout.
    action: Mapped[str] = mapped_column(String(32), nullable=False)
    #: What was read: a FHIR resource type or ``Type/id``, or a review page.
    target: Mapped[str | None] = mapped_column(String(200))
    #: The filter as applied (search parameters or the review page's form), normalised.
    query: Mapped[dict[str, Any]] = mapped_column(JsonType, nullable=False)
    #: The one patient the read concerned, when the filter or the record names one.
    patient_id: Mapped[str | None] = mapped_column(Text, index=True)
    #: Records returned (for an export: the records it streams).
    result_count: Mapped[int | None] = mapped_column(Integer)
    status_code: Mapped[int] = mapped_column(Integer, nullable=False)
    remote_addr: Mapped[str | None] = mapped_column(String(64))

    hashed_columns = (
        "at", "channel", "principal_system", "principal_id", "grants", "action", "target",
        "query", "patient_id", "result_count", "status_code", "remote_addr",
    )  # fmt: skip


class ReviewerAccount(Base):
    """A person who may log in to the review page (``cds reviewers add``). Not chained:
    log-ins and log-outs are recorded in ``audit_access``."""

    __tablename__ = "reviewer_account"

    username: Mapped[str] = mapped_column(String(128), primary_key=True)
    #: werkzeug.security hash (scrypt), never the password.
    password_hash: Mapped[str] = mapped_column(Text, nullable=False)
    roles: Mapped[list[str]] = mapped_column(JsonType, nullable=False)
    created_at: Mapped[datetime] = mapped_column(UtcDateTime(), nullable=False)
    disabled: Mapped[bool] = mapped_column(Boolean, nullable=False, default=False)
    failed_logins: Mapped[int] = mapped_column(Integer, nullable=False, default=0)
    locked_until: Mapped[datetime | None] = mapped_column(UtcDateTime())
    #: Raised at log-out, password change and disabling: older session cookies stop working.
    session_epoch: Mapped[int] = mapped_column(Integer, nullable=False, default=0)


class ChainHead(Base):
    """The single row that names the chain's last link; locked by every writer."""

    __tablename__ = "audit_chain_head"

    id: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=False)
    last_seq: Mapped[int] = mapped_column(BigInteger, nullable=False)
    last_hash: Mapped[str] = mapped_column(String(64), nullable=False)


class JwtReplay(Base):
    """``jti`` values already accepted, kept until the token expires (shared by all workers)."""

    __tablename__ = "jwt_replay"

    iss: Mapped[str] = mapped_column(String(512), primary_key=True)
    jti: Mapped[str] = mapped_column(String(256), primary_key=True)
    expires_at: Mapped[datetime] = mapped_column(UtcDateTime(), nullable=False, index=True)


CHAINED_TABLES: tuple[type[ChainedRow], ...] = (Invocation, Card, Feedback, Access)
