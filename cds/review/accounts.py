"""Reviewer accounts: who may log in to ``/review``, with werkzeug password hashes.

Managed with ``cds reviewers add|passwd|disable|enable|list``. A log-in locks the account
for :data:`LOCK_MINUTES` after :data:`MAX_FAILURES` failed attempts in a row. Each account
has a *session epoch*, written into its session cookie at log-in and raised at log-out,
password change and disabling: every older cookie of that account stops working at once.
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta

from sqlalchemy import select, update
from sqlalchemy.orm import sessionmaker
from werkzeug.security import check_password_hash, generate_password_hash

from cds.access import REVIEWER_SYSTEM, ROLES, Principal
from cds.audit.tables import ReviewerAccount

MIN_PASSWORD = 12
MAX_PASSWORD = 256
MAX_FAILURES = 5
LOCK_MINUTES = 15
USERNAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._@-]{0,127}$")
#: Checked against when the user name is unknown, so both cases take the same time.
_DUMMY_HASH = generate_password_hash("wardround-no-such-reviewer")


class AccountError(ValueError):
    """A user name, password or role the account store refuses (the message says why)."""


@dataclass(frozen=True)
class AccountInfo:
    username: str
    roles: tuple[str, ...]
    disabled: bool
    locked_until: datetime | None
    created_at: datetime


def _now() -> datetime:
    return datetime.now(UTC)


def _aware(value: datetime | None) -> datetime | None:
    return value.replace(tzinfo=UTC) if value is not None and value.tzinfo is None else value


def check_username(username: str) -> str:
    if not USERNAME.match(username):
        raise AccountError("user name: 1-128 letters, digits and . _ @ - (starting with one)")
    return username


def check_password(password: str) -> str:
    if not MIN_PASSWORD <= len(password) <= MAX_PASSWORD:
        raise AccountError(f"password: {MIN_PASSWORD} to {MAX_PASSWORD} characters")
    return password


def check_roles(roles: Sequence[str]) -> list[str]:
    unknown = sorted(set(roles) - set(ROLES))
    if unknown or not roles:
        raise AccountError(f"roles: one or more of {', '.join(ROLES)}")
    return sorted(set(roles))


def principal_of(account: ReviewerAccount) -> Principal:
    return Principal(
        channel="review",
        system=REVIEWER_SYSTEM,
        id=account.username,
        roles=frozenset(account.roles or ()),
    )


class ReviewerAccounts:
    def __init__(self, sessions: sessionmaker, read_sessions: sessionmaker | None = None) -> None:
        self._sessions = sessions
        #: Reads that need no lock (every page view checks its session's account).
        self._reads = read_sessions or sessions

    def add(self, username: str, password: str, roles: Sequence[str]) -> None:
        with self._sessions.begin() as session:
            if session.get(ReviewerAccount, check_username(username)) is not None:
                raise AccountError(f"reviewer {username} exists (use passwd)")
            session.add(
                ReviewerAccount(
                    username=username,
                    password_hash=generate_password_hash(check_password(password)),
                    roles=check_roles(roles),
                    created_at=_now(),
                    disabled=False,
                    failed_logins=0,
                    session_epoch=0,
                )
            )

    def set_password(self, username: str, password: str) -> None:
        self._change(
            username,
            password_hash=generate_password_hash(check_password(password)),
            failed_logins=0,
            locked_until=None,
        )

    def set_roles(self, username: str, roles: Sequence[str]) -> None:
        self._change(username, roles=check_roles(roles))

    def set_disabled(self, username: str, disabled: bool) -> None:
        self._change(username, disabled=disabled)

    def end_sessions(self, username: str) -> None:
        """Invalidate every session cookie of ``username`` (log-out)."""
        self._change(username)

    def _change(self, username: str, **values: object) -> None:
        with self._sessions.begin() as session:
            result = session.execute(
                update(ReviewerAccount)
                .where(ReviewerAccount.username == username)
                .values(session_epoch=ReviewerAccount.session_epoch + 1, **values)
            )
            if result.rowcount == 0:  # type: ignore[attr-defined]
                raise AccountError(f"no reviewer {username}")

    def list(self) -> list[AccountInfo]:
        with self._reads() as session:
            return [
                AccountInfo(
                    a.username,
                    tuple(a.roles or ()),
                    a.disabled,
                    _aware(a.locked_until),
                    _aware(a.created_at),  # type: ignore[arg-type]
                )
                for a in session.scalars(select(ReviewerAccount).order_by(ReviewerAccount.username))
            ]

    def authenticate(self, username: str, password: str) -> tuple[Principal, int] | None:
        """(principal, session epoch) if the password is right and the account may log in."""
        now = _now()
        with self._sessions.begin() as session:
            account = (
                session.get(ReviewerAccount, username, with_for_update=True)
                if USERNAME.match(username)
                else None
            )
            if account is None:
                check_password_hash(_DUMMY_HASH, password)
                return None
            locked = _aware(account.locked_until)
            right = check_password_hash(account.password_hash, password)
            if account.disabled or (locked is not None and locked > now):
                return None
            if not right:
                account.failed_logins += 1
                if account.failed_logins >= MAX_FAILURES:
                    account.locked_until = now + timedelta(minutes=LOCK_MINUTES)
                    account.failed_logins = 0
                return None
            account.failed_logins = 0
            account.locked_until = None
            return principal_of(account), account.session_epoch

    def session_principal(self, username: str, epoch: int) -> Principal | None:
        """The principal of a session cookie, if its account still exists, is enabled and
        the cookie's epoch is current."""
        with self._sessions() as session:
            account = session.get(ReviewerAccount, username)
            if account is None or account.disabled or account.session_epoch != epoch:
                return None
            return principal_of(account)
