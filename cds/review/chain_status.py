"""The hash chain's status for the review page, without walking the whole chain per view.

Walking the chain is O(rows). A :class:`ChainMonitor` per process keeps the last link it
verified and, when a page asks, verifies only the rows added since (incremental), in a
background thread; at most every ``full_every_s`` seconds that thread walks the whole
chain again from the genesis row, which is what catches an old row modified in place.
A page waits a moment for the check it started and otherwise shows the last result.
A broken link stays reported until a full walk finds the chain intact again.
"""

from __future__ import annotations

import logging
import threading
import time
from dataclasses import dataclass, replace
from datetime import UTC, datetime

from sqlalchemy import select
from sqlalchemy.exc import SQLAlchemyError
from sqlalchemy.orm import sessionmaker

from cds.audit.tables import GENESIS_HASH, ChainHead
from cds.audit.verify import verify_chain

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class ChainStatus:
    ok: bool | None  # None: not checked yet
    #: Every row up to this seq is verified (by the last full walk and the increments since).
    verified_seq: int = 0
    head_seq: int = 0
    broken_seq: int | None = None
    broken_table: str | None = None
    reason: str | None = None
    checked_at: datetime | None = None
    full_check_at: datetime | None = None
    error: str | None = None

    @property
    def pending(self) -> int:
        return max(0, self.head_seq - self.verified_seq)


class ChainMonitor:
    def __init__(
        self, sessions: sessionmaker, full_every_s: float = 900, fresh_s: float = 5
    ) -> None:
        self._sessions = sessions
        self._full_every_s = full_every_s
        self._fresh_s = fresh_s
        self._lock = threading.Lock()
        self._status = ChainStatus(ok=None)
        self._link: tuple[int, str] = (0, GENESIS_HASH)
        self._last_full = float("-inf")
        self._last_check = float("-inf")
        self._wake = threading.Event()
        self._done = threading.Condition()
        self._thread: threading.Thread | None = None

    def status(self, wait_s: float = 1.0) -> ChainStatus:
        """The latest status; if it is stale, start a check and wait up to ``wait_s`` for it."""
        if time.monotonic() - self._last_check > self._fresh_s:
            self._ensure_thread()
            with self._done:
                started = self._last_check
                self._wake.set()
                self._done.wait_for(lambda: self._last_check != started, timeout=wait_s)
        with self._lock:
            return self._status

    def _ensure_thread(self) -> None:
        with self._lock:
            if self._thread is None or not self._thread.is_alive():
                self._thread = threading.Thread(target=self._run, name="chain-monitor", daemon=True)
                self._thread.start()

    def _run(self) -> None:
        while True:
            self._wake.wait()
            self._wake.clear()
            try:
                self.refresh()
            except Exception as exc:  # keep the thread; the page shows the error type
                log.error("chain check crashed", extra={"error": type(exc).__name__})

    def refresh(self) -> ChainStatus:
        """Check now (in the caller's thread): incremental, or a full walk when one is due."""
        full = time.monotonic() - self._last_full >= self._full_every_s or self._status.ok is False
        after = None if full else self._link
        now = datetime.now(UTC)
        try:
            with self._sessions() as session:
                result = verify_chain(session, after=after)
                head = session.execute(select(ChainHead.last_seq).where(ChainHead.id == 1))
                head_seq = head.scalar_one_or_none() or 0
        except SQLAlchemyError as exc:
            log.warning("chain check failed", extra={"error": type(exc).__name__})
            with self._lock:
                self._status = replace(self._status, error=type(exc).__name__, checked_at=now)
            self._finish()
            return self._status
        with self._lock:
            if result.ok:
                self._link = (result.last_seq, result.last_hash)
                self._status = ChainStatus(
                    ok=True,
                    verified_seq=result.last_seq,
                    head_seq=max(head_seq, result.last_seq),
                    checked_at=now,
                    full_check_at=now if full else self._status.full_check_at,
                )
            else:
                self._status = ChainStatus(
                    ok=False,
                    verified_seq=result.last_seq,
                    head_seq=head_seq,
                    broken_seq=result.broken_seq,
                    broken_table=result.broken_table,
                    reason=result.reason,
                    checked_at=now,
                    full_check_at=now if full else self._status.full_check_at,
                )
            if full:
                self._last_full = time.monotonic()
            status = self._status
        self._finish()
        return status

    def _finish(self) -> None:
        with self._done:
            self._last_check = time.monotonic()
            self._done.notify_all()
