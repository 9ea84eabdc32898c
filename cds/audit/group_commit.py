"""Group commit: many requests' writes share one database transaction.

Each gunicorn worker serves requests on several threads. Instead of one transaction per
request (and, for the audit chain, one wait on the chain-head lock per request), request
threads hand their rows to one writer thread per process and block until the
transaction holding them has committed. The writer drains whatever is queued (up to
``max_batch``) into a single transaction. A request therefore still gets its answer only
after its own rows are durable; under load the commits, lock waits and round trips are
shared.

If a batch fails, its items are retried one by one so that a single bad item cannot fail
its neighbours; an item that still fails raises in the request thread that submitted it.
"""

from __future__ import annotations

import logging
import os
import queue
import threading
import time
from collections.abc import Callable, Sequence
from concurrent.futures import Future
from concurrent.futures import TimeoutError as FutureTimeout
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
        self._queue: queue.SimpleQueue[tuple[Item, Future[Result]]] = queue.SimpleQueue()
        self._lock = threading.Lock()
        self._owner_pid: int | None = None

    def submit(self, item: Item) -> Result:
        """Queue ``item`` and wait until it is committed; raise :class:`WriteFailed` if not."""
        self._ensure_writer()
        future: Future[Result] = Future()
        self._queue.put((item, future))
        metrics.AUDIT_QUEUE_DEPTH.labels(self._name).inc()
        try:
            return future.result(timeout=self._timeout)
        except FutureTimeout:
            # Still queued: withdraw it, so that it is never written after the caller was
            # told it failed (a 503'd request must leave no rows behind).
            if future.cancel():
                raise WriteFailed(f"{self._name}: no commit within {self._timeout} s") from None
        # Already inside a transaction: only its outcome may be reported, so wait for it.
        return future.result()

    def _ensure_writer(self) -> None:
        # Started lazily and per process: a thread does not survive fork().
        if self._owner_pid == os.getpid():
            return
        with self._lock:
            if self._owner_pid != os.getpid():
                self._queue = queue.SimpleQueue()
                thread = threading.Thread(
                    target=self._run, name=f"group-commit-{self._name}", daemon=True
                )
                thread.start()
                self._owner_pid = os.getpid()

    def _run(self) -> None:
        while True:
            batch = [self._queue.get()]
            while len(batch) < self._max_batch:
                try:
                    batch.append(self._queue.get_nowait())
                except queue.Empty:
                    break
            metrics.AUDIT_QUEUE_DEPTH.labels(self._name).dec(len(batch))
            live = [(item, fut) for item, fut in batch if fut.set_running_or_notify_cancel()]
            if live:
                self._commit(live)

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
