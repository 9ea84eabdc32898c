"""Remembering accepted JWT ids (``jti``) in the audit database, many per statement."""

from __future__ import annotations

import itertools
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta

from sqlalchemy import delete
from sqlalchemy.dialects.postgresql import insert as pg_insert
from sqlalchemy.dialects.sqlite import insert as sqlite_insert
from sqlalchemy.orm import Session

from cds.audit.tables import JwtReplay


@dataclass(frozen=True)
class SeenToken:
    """An accepted token's identity, kept until ``expires_at``."""

    iss: str
    jti: str
    expires_at: datetime

    @classmethod
    def of(cls, iss: str, jti: str, exp: int, leeway_s: int) -> SeenToken:
        return cls(iss, jti, datetime.fromtimestamp(exp, UTC) + timedelta(seconds=leeway_s))


def remember_tokens(session: Session, tokens: Sequence[SeenToken]) -> list[bool]:
    """Insert the tokens' (iss, jti); True for each that was new, False for a replay.

    One multi-row ``INSERT … ON CONFLICT DO NOTHING RETURNING``: rows come back only for
    new jtis. Within one call only the first use of a jti counts as new.
    """
    if not tokens:
        return []
    insert = pg_insert if session.get_bind().dialect.name == "postgresql" else sqlite_insert
    first_uses = list({(t.iss, t.jti): t for t in reversed(tokens)}.values())
    # One cached statement, executed for many parameter sets ("insertmanyvalues": a single
    # round trip); rows come back only for jtis that were new.
    statement = (
        insert(JwtReplay.__table__)
        .on_conflict_do_nothing(index_elements=["iss", "jti"])
        .returning(JwtReplay.__table__.c.iss, JwtReplay.__table__.c.jti)
    )
    rows = [{"iss": t.iss, "jti": t.jti, "expires_at": t.expires_at} for t in first_uses]
    new = {tuple(row) for row in session.connection().execute(statement, rows)}
    results = []
    for token in tokens:
        key = (token.iss, token.jti)
        results.append(key in new)
        new.discard(key)
    return results


def purge_expired(session: Session) -> None:
    session.execute(delete(JwtReplay).where(JwtReplay.expires_at < datetime.now(UTC)))


class TokenMemory:
    """:func:`remember_tokens`, plus forgetting expired tokens every ``purge_every`` batches.

    Every writer that records jtis (the audit log for service calls and feedback, the
    standalone replay store for discovery) goes through one of these, so the table stays
    bounded whichever endpoint the traffic hits.
    """

    def __init__(self, purge_every: int = 500) -> None:
        self._purge_every = purge_every
        self._batches = itertools.count(1)

    def remember(self, session: Session, tokens: Sequence[SeenToken]) -> list[bool]:
        results = remember_tokens(session, tokens)
        if tokens and next(self._batches) % self._purge_every == 0:
            purge_expired(session)
        return results
