"""The standalone ``jti`` replay store, for calls that write no audit rows (discovery).

Service calls and feedback record their token's jti in the same transaction as their
audit rows (see :mod:`cds.audit.store`), so they need no separate round trip.
"""

from __future__ import annotations

import itertools
from collections.abc import Sequence

from sqlalchemy.orm import Session, sessionmaker

from cds.audit.group_commit import GroupCommitter, WriteFailed
from cds.audit.jti import SeenToken, purge_expired, remember_tokens
from cds.audit.store import AuditUnavailable

PURGE_EVERY = 500


class DatabaseReplayStore:
    """Remember each accepted (iss, jti) until the token's ``exp`` plus the leeway."""

    def __init__(self, sessions: sessionmaker, leeway_s: int) -> None:
        self._leeway_s = leeway_s
        self._batches = itertools.count(1)
        self._writer: GroupCommitter[SeenToken, bool] = GroupCommitter(
            "jti", sessions, self._write_batch
        )

    def __call__(self, iss: str, jti: str, exp: int) -> bool:
        """True if the token was new (and is now remembered); False for a replay."""
        try:
            return self._writer.submit(SeenToken.of(iss, jti, exp, self._leeway_s))
        except WriteFailed as exc:
            raise AuditUnavailable(str(exc)) from exc

    def _write_batch(self, session: Session, tokens: Sequence[SeenToken]) -> list[bool]:
        results = remember_tokens(session, tokens)
        if next(self._batches) % PURGE_EVERY == 0:
            purge_expired(session)
        return results
