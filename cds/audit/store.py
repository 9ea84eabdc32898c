"""Writes to the audit log. A card leaves the service only after these writes commit.

Writes go through a per-process :class:`GroupCommitter`: concurrent requests share one
transaction, which takes the chain-head lock once, appends every row of the batch in
order and commits. ``record_*`` return only after that commit.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

from sqlalchemy import insert, select, update
from sqlalchemy.exc import SQLAlchemyError
from sqlalchemy.orm import Session, sessionmaker

from cds.audit.chain import content_hash, row_values
from cds.audit.group_commit import GroupCommitter, WriteFailed
from cds.audit.jti import SeenToken, TokenMemory
from cds.audit.tables import Access, Card, ChainedRow, ChainHead, Feedback, Invocation


class AuditUnavailable(RuntimeError):
    """The audit database could not commit; the caller must not release any card."""


class TokenReplayed(RuntimeError):
    """The call's JWT id was already used: nothing was written, nothing may be released."""


@dataclass(frozen=True)
class CardRecord:
    uuid: str
    summary: str
    indicator: str
    card_json: dict
    #: What the card asserts, as data (``CardResult.to_json()``), if anything.
    result: dict | None = None


def utc_now() -> datetime:
    return datetime.now(UTC)


@dataclass
class _Append:
    """One request's rows: its invocation and cards, its feedback entries, or its reads."""

    invocation: dict[str, Any] | None
    cards: Sequence[CardRecord] = ()
    feedback: Sequence[dict[str, Any]] = ()
    access: Sequence[dict[str, Any]] = ()
    #: The caller's JWT, recorded in the same transaction (replay protection).
    token: SeenToken | None = None


def _lock_head(session: Session) -> tuple[int, str]:
    """Lock the chain head row (``SELECT … FOR UPDATE``; SQLite holds its write lock already)."""
    head = (
        session.connection()
        .execute(
            select(ChainHead.last_seq, ChainHead.last_hash)
            .where(ChainHead.id == 1)
            .with_for_update()
        )
        .one_or_none()
    )
    if head is None:
        raise SQLAlchemyError("audit_chain_head row missing: run `cds db upgrade`")
    return head.last_seq, head.last_hash


class _Chain:
    """Assigns seq / prev_hash / hash to rows in order, within one locked transaction."""

    def __init__(self, head: tuple[int, str]) -> None:
        self.seq, self.hash = head
        self.rows: dict[type[ChainedRow], list[dict[str, Any]]] = {
            Invocation: [], Card: [], Feedback: [], Access: []
        }  # fmt: skip

    def link(self, table: type[ChainedRow], values: dict[str, Any]) -> dict[str, Any]:
        self.seq += 1
        values = {**values, "seq": self.seq, "prev_hash": self.hash}
        values["hash"] = self.hash = content_hash(table, values)
        self.rows[table].append(values)
        return values


def _write_appends(
    session: Session, appends: Sequence[_Append], tokens: TokenMemory
) -> list[int | list[int] | TokenReplayed]:
    with_token = [item for item in appends if item.token is not None]
    fresh = dict(
        zip(
            map(id, with_token),
            tokens.remember(session, [item.token for item in with_token]),  # type: ignore[misc]
            strict=True,
        )
    )
    head = _lock_head(session)
    chain = _Chain(head)
    results: list[int | list[int] | TokenReplayed] = []
    for item in appends:
        if not fresh.get(id(item), True):
            results.append(TokenReplayed("jti already used"))
        elif item.invocation is not None:
            invocation = chain.link(Invocation, item.invocation)
            for card in item.cards:
                chain.link(
                    Card,
                    {
                        "invocation_seq": invocation["seq"],
                        "uuid": card.uuid,
                        "service_id": invocation["service_id"],
                        "summary": card.summary,
                        "indicator": card.indicator,
                        "card_json": card.card_json,
                        "result": card.result,
                    },
                )
            results.append(invocation["seq"])
        elif item.access:
            results.append([chain.link(Access, entry)["seq"] for entry in item.access])
        else:
            results.append([chain.link(Feedback, entry)["seq"] for entry in item.feedback])
    # Parents before children (card → invocation, feedback → card) for the foreign keys.
    for table, rows in chain.rows.items():
        if rows:
            # Core executemany (one round trip), not the heavier ORM bulk path.
            session.connection().execute(insert(table.__table__), rows)  # type: ignore[attr-defined]
    session.connection().execute(
        update(ChainHead).where(ChainHead.id == 1).values(last_seq=chain.seq, last_hash=chain.hash)
    )
    return results


def _values(row: ChainedRow | Mapping[str, Any]) -> dict[str, Any]:
    if isinstance(row, Mapping):
        return dict(row)
    return {
        name: value for name, value in row_values(row).items() if name not in ("seq", "prev_hash")
    }


class AuditLog:
    """The one door to the audit tables for writers."""

    def __init__(
        self,
        sessions: sessionmaker,
        max_batch: int = 128,
        timeout_s: float = 10.0,
        purge_every: int = 500,
    ) -> None:
        self._sessions = sessions
        tokens = TokenMemory(purge_every)
        self._writer: GroupCommitter[_Append, Any] = GroupCommitter(
            "audit",
            sessions,
            lambda session, items: _write_appends(session, items, tokens),
            max_batch=max_batch,
            timeout_s=timeout_s,
        )

    def record_invocation(
        self,
        invocation: Invocation | Mapping[str, Any],
        cards: Sequence[CardRecord],
        token: SeenToken | None = None,
    ) -> int:
        """Append the invocation and its cards atomically; return the invocation's seq.

        With ``token``, its jti is recorded in the same transaction; if it was already
        known, nothing is written and :class:`TokenReplayed` is raised.
        """
        item = _Append(invocation=_values(invocation), cards=cards, token=token)
        seq = self._submit(item)
        if isinstance(invocation, Invocation):
            invocation.seq = seq
        return seq

    def record_feedback(
        self, entries: Sequence[Feedback | Mapping[str, Any]], token: SeenToken | None = None
    ) -> list[int]:
        """Append feedback entries atomically (see :meth:`record_invocation` for ``token``)."""
        return self._submit(
            _Append(invocation=None, feedback=[_values(entry) for entry in entries], token=token)
        )

    def record_access(self, entries: Sequence[Access | Mapping[str, Any]]) -> list[int]:
        """Append reads of the audit (and reviewer log-ins), before the data is released."""
        return self._submit(_Append(invocation=None, access=[_values(entry) for entry in entries]))

    def _submit(self, item: _Append) -> Any:
        try:
            result = self._writer.submit(item)
        except WriteFailed as exc:
            raise AuditUnavailable(str(exc)) from exc
        if isinstance(result, TokenReplayed):
            raise result
        return result

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
