"""Audit tables. Every chained row carries ``seq``, ``prev_hash`` and ``hash``.

The three chained tables (invocation, card, feedback) share one sequence: ``seq`` is
assigned from the single ``audit_chain_head`` row, which is locked for the length of the
writing transaction, so concurrent writers queue instead of forking the chain.
"""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

from sqlalchemy import JSON, BigInteger, DateTime, Float, ForeignKey, Integer, String, Text
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


CHAINED_TABLES: tuple[type[ChainedRow], ...] = (Invocation, Card, Feedback)
