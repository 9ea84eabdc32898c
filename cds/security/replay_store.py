"""The standalone ``jti`` replay store, for calls that write no audit rows (discovery).

Service calls and feedback record their token's jti in the same transaction as their
audit rows (see :mod:`cds.audit.store`), so they need no separate round trip.
"""

from __future__ import annotations

from sqlalchemy.orm import sessionmaker

from cds.audit.group_commit import GroupCommitter, WriteFailed
from cds.audit.jti import SeenToken, TokenMemory
from cds.audit.store import AuditUnavailable


class DatabaseReplayStore:
    """Remember each accepted (iss, jti) until the token's ``exp`` plus the leeway."""

    def __init__(self, sessions: sessionmaker, leeway_s: int) -> None:
        self._leeway_s = leeway_s
        self._tokens = TokenMemory()
        self._writer: GroupCommitter[SeenToken, bool] = GroupCommitter(
            "jti", sessions, self._tokens.remember
        )

    def __call__(self, iss: str, jti: str, exp: int) -> bool:
        """True if the token was new (and is now remembered); False for a replay."""
        try:
            return self._writer.submit(SeenToken.of(iss, jti, exp, self._leeway_s))
        except WriteFailed as exc:
            raise AuditUnavailable(str(exc)) from exc
