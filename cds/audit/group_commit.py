"""Group commit: many requests' writes share one database transaction.

Each gunicorn worker serves requests on several threads. A thread that has rows to write
queues them; if no thread is writing at that moment it becomes the *leader* and commits
everything queued (up to ``max_batch``) in one transaction, its own rows included, then
hands leadership on. Threads that queued while a leader was busy wait: their rows go into
the leader's next transaction, or one of them leads next. With no contention a request
simply commits its own rows on its own thread (no hand-off to another thread); under load
the commits, the chain-head lock and the round trips are shared. A request still gets its
answer only after its own rows are durable.

If a batch fails, its items are retried one by one so that a single bad item cannot fail
its neighbours; an item that still fails raises in the request thread that submitted it.
"""

from __future__ import annotations

import logging
import threading
import time
from collections import deque
from collections.abc import Callable, Sequence
from concurrent.futures import Future
from typing import Generic, TypeVar

from sqlalchemy.exc import SQLAlchemyError
from sqlalchemy.orm import Session, sessionmaker

from cds import metrics

log = logging.getLogger(__name__)

Item = TypeVar("Item")
Result = TypeVar("Result")

#: Writes a batch inside an open transaction; returns one result per item, in order.
BatchWriter = Callable[[Session, Sequence[Item]], Sequence[Result]]


class WriteFailed(RuntimeError):
    """The database did not commit this item (unreachable, or it refused the write)."""


class GroupCommitter(Generic[Item, Result]):
    def __init__(
        self,
        name: str,
        sessions: sessionmaker,
        write_batch: BatchWriter,
        max_batch: int = 128,
        timeout_s: float = 10.0,
    ) -> None:
        self._name = name
        self._sessions = sessions
        self._write_batch = write_batch
        self._max_batch = max_batch
        self._timeout = timeout_s
        self._pending: deque[tuple[Item, Future[Result]]] = deque()
        self._cond = threading.Condition()
        self._leading = False

    def submit(self, item: Item) -> Result:
        """Write ``item`` and return its result once committed; :class:`WriteFailed` if not."""
        future: Future[Result] = Future()
        deadline = time.monotonic() + self._timeout
        with self._cond:
            self._pending.append((item, future))
            metrics.AUDIT_QUEUE_DEPTH.labels(self._name).inc()
            while self._leading and not future.done():
                remaining = deadline - time.monotonic()
                if remaining <= 0:
                    return self._give_up(item, future)
                self._cond.wait(remaining)
            if future.done():
                return future.result()
            self._leading = True
        try:
            self._lead_until_done(future)
        finally:
            with self._cond:
                self._leading = False
                self._cond.notify_all()
        return future.result()

    def _give_up(self, item: Item, future: Future[Result]) -> Result:
        """Past the deadline (caller holds the condition's lock)."""
        if (item, future) in self._pending:
            # Still queued: withdraw it, so that it is never written after the caller was
            # told it failed (a 503'd request must leave no rows behind).
            self._pending.remove((item, future))
            metrics.AUDIT_QUEUE_DEPTH.labels(self._name).dec()
            raise WriteFailed(f"{self._name}: no commit within {self._timeout} s")
        # Already inside a transaction: only its outcome may be reported, so wait for it.
        while not future.done():
            self._cond.wait()
        return future.result()

    def _lead_until_done(self, own: Future[Result]) -> None:
        """Commit queued batches until this thread's own item has its outcome."""
        while not own.done():
            with self._cond:
                batch = [
                    self._pending.popleft() for _ in range(min(self._max_batch, len(self._pending)))
                ]
            metrics.AUDIT_QUEUE_DEPTH.labels(self._name).dec(len(batch))
            for _, future in batch:
                future.set_running_or_notify_cancel()
            self._commit(batch)
            with self._cond:
                self._cond.notify_all()

    def _commit(self, batch: list[tuple[Item, Future[Result]]]) -> None:
        started = time.perf_counter()
        try:
            results = self._transaction([item for item, _ in batch])
        except SQLAlchemyError as exc:
            if len(batch) == 1:
                batch[0][1].set_exception(WriteFailed(type(exc).__name__))
                return
            log.warning(
                "group commit failed; retrying items singly",
                extra={"writer": self._name, "batch": len(batch), "error": type(exc).__name__},
            )
            for pair in batch:
                self._commit([pair])
            return
        except Exception as exc:  # a defect in the batch writer must not kill the thread
            log.error("group commit crashed", extra={"writer": self._name, "error": repr(exc)})
            for _, future in batch:
                future.set_exception(WriteFailed(type(exc).__name__))
            return
        metrics.AUDIT_WRITE_SECONDS.labels(self._name).observe(time.perf_counter() - started)
        metrics.AUDIT_BATCH_SIZE.labels(self._name).observe(len(batch))
        for (_, future), result in zip(batch, results, strict=True):
            future.set_result(result)

    def _transaction(self, items: list[Item]) -> Sequence[Result]:
        with self._sessions.begin() as session:
            return self._write_batch(session, items)
