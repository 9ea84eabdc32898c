"""gunicorn worker for Wardround: gthread, hardened against slow clients (slowloris)."""

import contextlib
import os
import time

from gunicorn.workers import gthread

# A request (request line, headers and body) must arrive within this many seconds of the
# client's first byte, and a new connection must start sending within it; slower clients
# are disconnected. See SlowClientGuardWorker.
REQUEST_READ_TIMEOUT_S = float(os.environ.get("WARDROUND_REQUEST_READ_TIMEOUT_S", "10"))
_HEAD_BUFFER_MAX = 64 * 1024
_DEFER = getattr(gthread, "_DEFER", None)  # gunicorn's "park this connection" sentinel


class _DeadlineSocket:
    """A client socket whose reads fail (look like EOF) once the request deadline passes."""

    def __init__(self, sock):  # type: ignore[no-untyped-def]
        self._sock = sock
        self.deadline: float | None = None
        self.expired = False

    def __getattr__(self, name):  # type: ignore[no-untyped-def]
        return getattr(self._sock, name)

    def recv(self, size, flags=0):  # type: ignore[no-untyped-def]
        prior = self._sock.gettimeout()
        if self.deadline is None or prior == 0.0:  # no request being read, or non-blocking
            return self._sock.recv(size, flags)
        remaining = self.deadline - time.monotonic()
        if remaining <= 0:
            self.expired = True
            return b""
        if prior is not None and prior < remaining:  # the caller's own, shorter timeout
            return self._sock.recv(size, flags)
        self._sock.settimeout(remaining)
        try:
            return self._sock.recv(size, flags)
        except TimeoutError:
            self.expired = True
            return b""
        finally:
            self._sock.settimeout(prior)


class SlowClientGuardWorker(gthread.ThreadWorker):
    """gthread, hardened against slow clients (slowloris).

    Stock gthread gives each connection a pool thread as soon as its first byte arrives
    and then blocks that thread reading the request, with no time limit: a few clients
    trickling headers one byte at a time hold every thread, and nobody else is served.

    * The request head of a new connection is collected without a thread: whatever bytes
      have arrived are read without blocking, and the connection is parked on the
      worker's poller (gthread's own deferral) until more come. Only a complete head
      (or one too big to be legitimate, which the parser then refuses) gets a thread.
    * Every request must be read completely within REQUEST_READ_TIMEOUT_S of its first
      byte (a new connection: of being accepted); past that the connection is closed.
      A body read by the application that far behind gets 400, never a 5xx.
    """

    def handle(self, conn):  # type: ignore[no-untyped-def]
        if self.cfg.is_ssl:  # TLS wraps the socket itself: stock behaviour
            return super().handle(conn)
        if not isinstance(conn.sock, _DeadlineSocket):
            conn.sock = _DeadlineSocket(conn.sock)
            conn.head_deadline = time.monotonic() + REQUEST_READ_TIMEOUT_S
            conn.head = bytearray()
        if not conn.initialized and self._can_buffer_head(conn):
            ready = self._buffer_head(conn)
            if ready is not True:
                return ready
        sock = conn.sock
        sock.deadline = time.monotonic() + REQUEST_READ_TIMEOUT_S
        try:
            keepalive = super().handle(conn)
        finally:
            sock.deadline = None
        if sock.expired:
            self.log.info("Closing slow client %s: request not read within %ss",
                          conn.client, REQUEST_READ_TIMEOUT_S)  # fmt: skip
            return False
        return keepalive

    def _can_buffer_head(self, conn):  # type: ignore[no-untyped-def]
        if _DEFER is None:  # a gunicorn without connection parking
            return False
        allowed = getattr(gthread.negotiation, "prior_knowledge_allowed", None)
        return not (allowed and allowed(self.cfg, conn.client))

    def _buffer_head(self, conn):  # type: ignore[no-untyped-def]
        """True once the whole head is buffered; _DEFER to wait for more; False to close."""
        raw = conn.sock._sock
        raw.setblocking(False)
        try:
            while len(conn.head) <= _HEAD_BUFFER_MAX:
                chunk = raw.recv(65536)
                if not chunk:
                    return False  # the client went away
                conn.head += chunk
        except BlockingIOError:
            pass
        except OSError:
            return False
        if b"\r\n\r\n" not in conn.head and len(conn.head) <= _HEAD_BUFFER_MAX:
            if time.monotonic() > conn.head_deadline:
                self.log.info("Closing slow client %s: no complete request head in %ss",
                              conn.client, REQUEST_READ_TIMEOUT_S)  # fmt: skip
                return False
            conn.data_ready = False
            return _DEFER
        raw.setblocking(True)
        conn.init()
        conn.parser.unreader.unread(bytes(conn.head))
        conn.head = bytearray()
        conn.data_ready = True
        return True

    def murder_pending(self):  # type: ignore[no-untyped-def]
        """Also close parked connections whose request head is overdue."""
        super().murder_pending()
        now = time.monotonic()
        for conn in [c for c in self.pending_conns if getattr(c, "head_deadline", now) < now]:
            if conn.initialized:
                continue
            self.pending_conns.remove(conn)
            with contextlib.suppress(OSError, KeyError, ValueError):
                self.poller.unregister(conn.sock)
            self.nr_conns -= 1
            conn.close()
