"""The ``jti`` replay store, in the audit database so every gunicorn worker shares it."""

from __future__ import annotations

import itertools
import threading
from datetime import UTC, datetime, timedelta

from sqlalchemy import delete
from sqlalchemy.dialects.postgresql import insert as pg_insert
from sqlalchemy.dialects.sqlite import insert as sqlite_insert
from sqlalchemy.exc import SQLAlchemyError
from sqlalchemy.orm import sessionmaker

from cds.audit.store import AuditUnavailable
from cds.audit.tables import JwtReplay

PURGE_EVERY = 500


class DatabaseReplayStore:
    """Remember each accepted (iss, jti) until the token's ``exp`` plus the leeway."""

    def __init__(self, sessions: sessionmaker, leeway_s: int) -> None:
        self._sessions = sessions
        self._leeway = timedelta(seconds=leeway_s)
        self._dialect = sessions.kw["bind"].dialect.name
        self._counter = itertools.count(1)
        self._lock = threading.Lock()

    def __call__(self, iss: str, jti: str, exp: int) -> bool:
        insert = pg_insert if self._dialect == "postgresql" else sqlite_insert
        expires_at = datetime.fromtimestamp(exp, UTC) + self._leeway
        statement = (
            insert(JwtReplay)
            .values(iss=iss, jti=jti, expires_at=expires_at)
            .on_conflict_do_nothing(index_elements=["iss", "jti"])
            .returning(JwtReplay.jti)  # a row comes back only if this jti is new
        )
        with self._lock:
            purge = next(self._counter) % PURGE_EVERY == 0
        try:
            with self._sessions.begin() as session:
                inserted = session.execute(statement).first() is not None
                if purge:
                    session.execute(
                        delete(JwtReplay).where(JwtReplay.expires_at < datetime.now(UTC))
                    )
        except SQLAlchemyError as exc:
            raise AuditUnavailable(type(exc).__name__) from exc
        return inserted
