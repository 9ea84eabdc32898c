"""Writes to the audit log. A card leaves the service only after these writes commit."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from datetime import UTC, datetime

from sqlalchemy import select
from sqlalchemy.exc import SQLAlchemyError
from sqlalchemy.orm import Session, sessionmaker

from cds.audit.chain import row_hash
from cds.audit.tables import GENESIS_HASH, Card, ChainedRow, ChainHead, Feedback, Invocation


class AuditUnavailable(RuntimeError):
    """The audit database could not commit; the caller must not release any card."""


@dataclass(frozen=True)
class CardRecord:
    uuid: str
    summary: str
    indicator: str
    card_json: dict


def _lock_head(session: Session) -> ChainHead:
    """Lock the chain head row (``SELECT … FOR UPDATE``; SQLite holds its write lock already)."""
    head = session.execute(
        select(ChainHead).where(ChainHead.id == 1).with_for_update()
    ).scalar_one_or_none()
    if head is None:
        head = ChainHead(id=1, last_seq=0, last_hash=GENESIS_HASH)
        session.add(head)
        session.flush()
    return head


def _append(session: Session, head: ChainHead, rows: Sequence[ChainedRow]) -> None:
    for row in rows:
        row.seq = head.last_seq + 1
        row.prev_hash = head.last_hash
        row.hash = row_hash(row)
        head.last_seq, head.last_hash = row.seq, row.hash
        session.add(row)
        # Flush in chain order so that foreign keys (card → invocation) resolve.
        session.flush()


class AuditLog:
    """The one door to the audit tables for writers."""

    def __init__(self, sessions: sessionmaker) -> None:
        self._sessions = sessions

    def record_invocation(self, invocation: Invocation, cards: Sequence[CardRecord]) -> int:
        """Append the invocation and its cards in one transaction; return the invocation seq."""
        try:
            with self._sessions.begin() as session:
                head = _lock_head(session)
                _append(session, head, [invocation])
                _append(
                    session,
                    head,
                    [
                        Card(
                            invocation_seq=invocation.seq,
                            uuid=card.uuid,
                            service_id=invocation.service_id,
                            summary=card.summary,
                            indicator=card.indicator,
                            card_json=card.card_json,
                        )
                        for card in cards
                    ],
                )
                return invocation.seq
        except SQLAlchemyError as exc:
            raise AuditUnavailable(type(exc).__name__) from exc

    def card_service_ids(self, uuids: Sequence[str]) -> dict[str, tuple[str, frozenset[str]]]:
        """Map each known card uuid to (service id, its suggestion uuids)."""
        try:
            with self._sessions() as session:
                rows = session.execute(
                    select(Card.uuid, Card.service_id, Card.card_json).where(Card.uuid.in_(uuids))
                ).all()
        except SQLAlchemyError as exc:
            raise AuditUnavailable(type(exc).__name__) from exc
        return {
            uuid: (
                service_id,
                frozenset(s["uuid"] for s in card_json.get("suggestions", []) if "uuid" in s),
            )
            for uuid, service_id, card_json in rows
        }

    def record_feedback(self, entries: Sequence[Feedback]) -> list[int]:
        try:
            with self._sessions.begin() as session:
                head = _lock_head(session)
                _append(session, head, entries)
                return [entry.seq for entry in entries]
        except SQLAlchemyError as exc:
            raise AuditUnavailable(type(exc).__name__) from exc


def utc_now() -> datetime:
    return datetime.now(UTC)
