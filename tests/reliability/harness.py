"""Real processes for the reliability tests and the soak benchmark.

* :class:`PgCluster` — a private PostgreSQL cluster (``initdb`` + ``pg_ctl``) in a temporary
  folder, on its own 127.0.0.1 port, never the machine's shared server;
* :class:`GunicornServer` — the service exactly as deployed: ``gunicorn -c gunicorn.conf.py
  wsgi:app`` in its own process group (from ``tests/support/live_server.py``, with
  :func:`free_port`, :func:`children`, :func:`rss_kib` and :func:`write_trusted_issuers`);
* :class:`HookLoad` — client threads posting real patient-view requests, each with a fresh
  token and a unique ``hookInstance``, recording every outcome;
* :func:`audit_rows` and :func:`cds_audit_verify` — what the audit tables hold, and the
  operator's ``cds audit verify`` run as a subprocess.

No pytest in here: ``benchmarks/soak.py`` uses the same classes. A missing binary raises
:class:`HarnessUnavailable`; the pytest fixtures turn that into a skip (a failure under CI).
"""

from __future__ import annotations

import contextlib
import json
import os
import pwd
import re
import shutil
import socket
import subprocess
import sys
import tempfile
import threading
import time
import uuid
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import psycopg
import requests

from tests.support.live_server import REPO, HarnessUnavailable, free_port

# Re-exported: the reliability tests and benchmarks/soak.py take them from here.
from tests.support.live_server import GunicornServer as GunicornServer
from tests.support.live_server import children as children
from tests.support.live_server import rss_kib as rss_kib
from tests.support.live_server import write_trusted_issuers as write_trusted_issuers

PG_OS_USER = "postgres"


def port_open(port: int, host: str = "127.0.0.1") -> bool:
    with contextlib.suppress(OSError), socket.create_connection((host, port), timeout=0.5):
        return True
    return False


# --------------------------------------------------------------------------- PostgreSQL
def find_pg_bin() -> Path:
    """The folder holding ``initdb`` and ``pg_ctl`` (newest /usr/lib/postgresql/N/bin)."""
    candidates: list[Path] = []
    if os.environ.get("WARDROUND_PG_BIN"):
        candidates.append(Path(os.environ["WARDROUND_PG_BIN"]))

    def _version(path: Path) -> int:
        digits = re.sub(r"\D", "", path.parent.name)
        return int(digits) if digits else 0

    candidates += sorted(Path("/usr/lib/postgresql").glob("*/bin"), key=_version, reverse=True)
    on_path = shutil.which("pg_ctl")
    if on_path:
        candidates.append(Path(on_path).resolve().parent)
    for folder in candidates:
        if (folder / "initdb").is_file() and (folder / "pg_ctl").is_file():
            return folder
    raise HarnessUnavailable(
        "PostgreSQL server binaries (initdb, pg_ctl) not found under /usr/lib/postgresql/*/bin "
        "or on PATH (set WARDROUND_PG_BIN to their folder)"
    )


class PgCluster:
    """A throw-away PostgreSQL cluster: trust auth, 127.0.0.1 only, socket in its own folder.

    PostgreSQL refuses to run as root; as root the cluster runs as the ``postgres`` OS user
    (``runuser``), which owns the temporary folder.
    """

    def __init__(self, bin_dir: Path | None = None) -> None:
        self.bin_dir = bin_dir or find_pg_bin()
        self._as_user: list[str] = []
        self._owner: tuple[int, int] | None = None
        if os.geteuid() == 0:
            runuser = shutil.which("runuser")
            try:
                account = pwd.getpwnam(PG_OS_USER)
            except KeyError:
                account = None
            if runuser is None or account is None:
                raise HarnessUnavailable(
                    "running as root, PostgreSQL needs the 'postgres' OS user and runuser"
                )
            self._as_user = [runuser, "-u", PG_OS_USER, "--"]
            self._owner = (account.pw_uid, account.pw_gid)
        # The postgres user must reach the folder: as root, avoid a TMPDIR under /root.
        parent = "/tmp" if self._owner and Path("/tmp").is_dir() else None  # noqa: S108
        self.root = Path(tempfile.mkdtemp(prefix="wardround-pg-", dir=parent))
        self.data = self.root / "data"
        self.sockets = self.root / "sockets"
        self.logfile = self.root / "postgres.log"
        self.port = free_port()
        self.sockets.mkdir()
        if self._owner:
            for path in (self.root, self.sockets):
                os.chown(path, *self._owner)
        self._initialised = False

    # -- process control
    def _run(self, *args: str, timeout: float = 60) -> str:
        command = [*self._as_user, *args]
        env = {
            "PATH": os.environ.get("PATH", "/usr/bin:/bin"),
            "LC_ALL": "C",
            "LANG": "C",
            "HOME": str(self.root),
        }
        done = subprocess.run(
            command,
            cwd=self.root,
            env=env,
            capture_output=True,
            text=True,
            timeout=timeout,
            check=False,
            stdin=subprocess.DEVNULL,
        )
        if done.returncode != 0:
            raise RuntimeError(
                f"{' '.join(command)} exited {done.returncode}\n{done.stdout}\n{done.stderr}\n"
                f"--- postgres log ---\n{self.log_tail()}"
            )
        return done.stdout

    def init(self) -> None:
        self._run(
            str(self.bin_dir / "initdb"),
            "-D", str(self.data), "-U", "postgres", "--auth=trust",
            "-E", "UTF8", "--locale=C", "--no-sync",
        )  # fmt: skip
        self._initialised = True

    def start(self) -> None:
        if not self._initialised:
            self.init()
        options = (
            f"-k {self.sockets} -p {self.port} -c listen_addresses=127.0.0.1 "
            "-c fsync=off -c full_page_writes=off -c max_connections=200"
        )
        self._run(
            str(self.bin_dir / "pg_ctl"),
            "-D", str(self.data), "-l", str(self.logfile), "-o", options, "-w", "-t", "60",
            "start",
        )  # fmt: skip

    def stop(self, mode: str = "fast") -> None:
        """``pg_ctl stop -m immediate`` is a crash: no checkpoint, clients cut off."""
        self._run(str(self.bin_dir / "pg_ctl"), "-D", str(self.data), "-m", mode, "-w", "stop")

    def is_running(self) -> bool:
        if not self._initialised:
            return False
        try:
            self._run(str(self.bin_dir / "pg_ctl"), "-D", str(self.data), "status", timeout=10)
        except RuntimeError:
            return False
        return True

    def destroy(self) -> None:
        try:
            if self.is_running():
                self.stop("immediate")
        finally:
            shutil.rmtree(self.root, ignore_errors=True)

    def log_tail(self, chars: int = 4000) -> str:
        try:
            return self.logfile.read_text(errors="replace")[-chars:]
        except OSError:
            return ""

    # -- databases
    def url(self, database: str = "postgres") -> str:
        return f"postgresql://postgres@127.0.0.1:{self.port}/{database}"

    def create_database(self, name: str | None = None, migrate: bool = True) -> str:
        """Create a database (and run the service's migrations in it); return its URL."""
        name = name or f"wardround_{uuid.uuid4().hex[:12]}"
        with psycopg.connect(self.url(), autocommit=True, connect_timeout=10) as conn:
            conn.execute(f'CREATE DATABASE "{name}"')
        url = self.url(name)
        if migrate:
            from cds.migrate import upgrade

            upgrade(url)
        return url

    def __enter__(self) -> PgCluster:
        try:
            self.start()
        except BaseException:
            self.destroy()
            raise
        return self

    def __exit__(self, *exc: object) -> None:
        self.destroy()


# --------------------------------------------------------------------------- load
@dataclass
class Outcome:
    """One request as the client saw it (monotonic times)."""

    client: int
    hook_instance: str
    started: float
    finished: float
    status: int | None = None
    body: Any = None
    error: str | None = None  # exception class name when no HTTP answer came back
    headers: dict[str, str] = field(default_factory=dict)

    @property
    def seconds(self) -> float:
        return self.finished - self.started

    @property
    def card_uuids(self) -> list[str]:
        if isinstance(self.body, dict):
            return [c.get("uuid") for c in self.body.get("cards", []) if isinstance(c, dict)]
        return []


def with_hook_instance(body: dict[str, Any], hook_instance: str) -> bytes:
    return json.dumps(dict(body, hookInstance=hook_instance)).encode()


class HookLoad:
    """Client threads that post patient-view requests back to back.

    ``token_for(audience)`` returns a fresh JWT for each call; every request carries a new
    ``hookInstance``. Each client keeps one keep-alive session, as an EHR's pool does.
    """

    def __init__(
        self,
        base_url: str,
        bodies: Sequence[dict[str, Any]],
        token_for: Callable[[str], str],
        service_id: str = "patient-summary",
        timeout: float = 10.0,
        pause: float = 0.0,
    ) -> None:
        self.url = f"{base_url}/cds-services/{service_id}"
        self.bodies = list(bodies)
        self.token_for = token_for
        self.timeout = timeout
        self.pause = pause
        self.outcomes: list[Outcome] = []
        self._lock = threading.Lock()
        self._stop = threading.Event()
        self._threads: list[threading.Thread] = []

    def post(self, session: requests.Session, client: int, index: int) -> Outcome:
        hook_instance = str(uuid.uuid4())
        data = with_hook_instance(self.bodies[index % len(self.bodies)], hook_instance)
        headers = {
            "Authorization": f"Bearer {self.token_for(self.url)}",
            "Content-Type": "application/json",
        }
        started = time.monotonic()
        outcome = Outcome(client, hook_instance, started, started)
        try:
            response = session.post(self.url, data=data, headers=headers, timeout=self.timeout)
            outcome.status = response.status_code
            outcome.headers = dict(response.headers)
            with contextlib.suppress(ValueError):
                outcome.body = response.json()
        except requests.RequestException as exc:
            outcome.error = type(exc).__name__ + (
                f": {exc.__context__.__class__.__name__}" if exc.__context__ else ""
            )
            if isinstance(exc, requests.Timeout):
                outcome.error = "Timeout"
        outcome.finished = time.monotonic()
        return outcome

    def _client(self, client: int) -> None:
        with requests.Session() as session:
            index = client
            while not self._stop.is_set():
                outcome = self.post(session, client, index)
                with self._lock:
                    self.outcomes.append(outcome)
                index += 1
                if self.pause:
                    self._stop.wait(self.pause)

    def start(self, clients: int) -> HookLoad:
        self._stop.clear()
        for client in range(clients):
            thread = threading.Thread(target=self._client, args=(client,), daemon=True)
            thread.start()
            self._threads.append(thread)
        return self

    def stop(self) -> list[Outcome]:
        self._stop.set()
        for thread in self._threads:
            thread.join(self.timeout + 5)
        self._threads = []
        with self._lock:
            return list(self.outcomes)

    @contextlib.contextmanager
    def running(self, clients: int) -> Iterator[HookLoad]:
        self.start(clients)
        try:
            yield self
        finally:
            self.stop()

    def since(self, moment: float) -> list[Outcome]:
        with self._lock:
            return [o for o in self.outcomes if o.started >= moment]


# --------------------------------------------------------------------------- the audit tables
def audit_rows(url: str) -> dict[str, Any]:
    """What the audit log holds, read straight from PostgreSQL."""
    with psycopg.connect(url, connect_timeout=10) as conn:
        invocations = conn.execute(
            "SELECT seq, hook_instance, status_code, service_id FROM audit_invocation"
        ).fetchall()
        cards = conn.execute("SELECT uuid, invocation_seq FROM audit_card").fetchall()
        orphans = conn.execute(
            "SELECT c.uuid FROM audit_card c "
            "LEFT JOIN audit_invocation i ON i.seq = c.invocation_seq WHERE i.seq IS NULL"
        ).fetchall()
        card_counts = conn.execute(
            "SELECT i.seq, count(c.seq) FROM audit_invocation i "
            "LEFT JOIN audit_card c ON c.invocation_seq = i.seq "
            "WHERE i.status_code = 200 GROUP BY i.seq"
        ).fetchall()
    by_instance = {hook_instance: (seq, status) for seq, hook_instance, status, _ in invocations}
    return {
        "invocations": invocations,
        "by_instance": by_instance,
        "card_invocation": {uuid: seq for uuid, seq in cards},
        "orphan_cards": [row[0] for row in orphans],
        "cards_per_200": dict(card_counts),
    }


def cds_audit_verify(url: str) -> subprocess.CompletedProcess[str]:
    """``cds audit verify`` as an operator runs it, against ``url``."""
    cds = Path(sys.executable).parent / "cds"
    command = [str(cds)] if cds.exists() else [sys.executable, "-m", "cds.cli"]
    env = dict(os.environ, DATABASE_URL=url)
    return subprocess.run(
        [*command, "audit", "verify"],
        cwd=REPO,
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
