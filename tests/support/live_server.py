"""The one way the tests and benchmarks start a real server: :class:`GunicornServer`.

``gunicorn -c gunicorn.conf.py <app>`` on a free 127.0.0.1 port, configured only through
the environment, in its own process group (and SIGTERMed if the process that started it
dies); ready once every worker is forked and one of them answers HTTP; stopped with
SIGTERM, then SIGKILL for the whole group. Used by the reliability suite and
``benchmarks/soak.py`` (through ``tests/reliability/harness.py``), the schemathesis harness,
the audit log's multi-worker test and ``benchmarks/run.py``.

No pytest in here. A missing gunicorn raises :class:`HarnessUnavailable`.
"""

from __future__ import annotations

import contextlib
import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path
from typing import Any, Self

import requests

REPO = Path(__file__).resolve().parents[2]


class HarnessUnavailable(RuntimeError):
    """A binary or OS account the harness needs is not on this machine."""


def free_port() -> int:
    """A TCP port on 127.0.0.1 that nothing listens on right now."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def write_trusted_issuers(folder: Path, issuer: str, jwks: dict[str, Any]) -> Path:
    """``trusted-issuers.json`` naming ``issuer``, its keys in ``ehr-jwks.json`` beside it."""
    folder.mkdir(parents=True, exist_ok=True)
    (folder / "ehr-jwks.json").write_text(json.dumps(jwks))
    path = folder / "trusted-issuers.json"
    path.write_text(json.dumps({"issuers": [{"iss": issuer, "jwks_file": "ehr-jwks.json"}]}))
    return path


def gunicorn_binary() -> str:
    beside_python = Path(sys.executable).parent / "gunicorn"
    for candidate in (beside_python, REPO / ".venv" / "bin" / "gunicorn"):
        if candidate.is_file():
            return str(candidate)
    found = shutil.which("gunicorn")
    if found:
        return found
    raise HarnessUnavailable("gunicorn not found beside the Python interpreter or in .venv")


def children(pid: int) -> list[int]:
    """Direct children of ``pid`` (from /proc/<pid>/task/*/children)."""
    kids: list[int] = []
    for task in Path(f"/proc/{pid}/task").glob("*"):
        with contextlib.suppress(OSError):
            kids += [int(p) for p in (task / "children").read_text().split()]
    return sorted(set(kids))


def rss_kib(pid: int) -> int:
    """Resident set size of one process in KiB (0 when it is gone)."""
    try:
        for line in Path(f"/proc/{pid}/status").read_text().splitlines():
            if line.startswith("VmRSS:"):
                return int(line.split()[1])
    except OSError:
        pass
    return 0


def _die_with_parent() -> None:
    """In the child before exec: SIGTERM it if the process that started it dies (Linux)."""
    with contextlib.suppress(OSError, AttributeError):
        import ctypes

        ctypes.CDLL("libc.so.6", use_errno=True).prctl(1, signal.SIGTERM)  # PR_SET_PDEATHSIG


def spawn(
    command: list[str], cwd: Path, logfile: Path, env: dict[str, str] | None = None
) -> subprocess.Popen[bytes]:
    """A test server process: output appended to ``logfile``, its own process group (so
    teardown can kill it whole), SIGTERMed if the test process dies."""
    with logfile.open("ab") as log:
        return subprocess.Popen(
            command,
            cwd=cwd,
            env=env,
            stdin=subprocess.DEVNULL,
            stdout=log,
            stderr=subprocess.STDOUT,
            start_new_session=True,
            preexec_fn=_die_with_parent,
        )


#: The runner's own service settings, which ``clean_env`` keeps away from the server.
SERVICE_SETTINGS = ("WARDROUND_", "PROMETHEUS_", "DATABASE_URL")


def _inherited_env(clean: bool) -> dict[str, str]:
    """The runner's environment, less what would reconfigure the server behind our back."""
    dropped = ("GUNICORN_CMD_ARGS", *(SERVICE_SETTINGS if clean else ()))
    return {key: value for key, value in os.environ.items() if not key.startswith(dropped)}


class ServerProcess:
    """What the test servers share: a process started by :func:`spawn`, stopped whole."""

    proc: subprocess.Popen[bytes] | None
    logfile: Path
    #: What the process is called in error messages.
    name = "server"
    #: Seconds between readiness checks.
    poll_s = 0.1

    def start(self, timeout: float = 60) -> Self:
        raise NotImplementedError

    def ready(self) -> bool:
        """True once the server answers as it should (may raise if it answers wrongly)."""
        raise NotImplementedError

    def launch(
        self, command: list[str], cwd: Path, env: dict[str, str] | None, timeout: float
    ) -> Self:
        """Spawn ``command`` and wait until :meth:`ready`; stopped again if it never is."""
        self.proc = spawn(command, cwd, self.logfile, env)
        try:
            self.wait_ready(timeout)
        except BaseException:
            self.stop()
            raise
        return self

    def wait_ready(self, timeout: float = 60) -> None:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            assert self.proc is not None
            if self.proc.poll() is not None:
                raise RuntimeError(f"{self.name} exited {self.proc.returncode}:\n{self.log_tail()}")
            if self.ready():
                return
            time.sleep(self.poll_s)
        raise TimeoutError(f"{self.name} did not answer within {timeout} s:\n{self.log_tail()}")

    def stop(self, timeout: float = 15) -> int | None:
        """SIGTERM; SIGKILL the whole process group after ``timeout`` seconds. Children that
        outlived the process (they should not) go too."""
        if self.proc is None:
            return None
        pgid = self.proc.pid
        if self.proc.poll() is None:
            with contextlib.suppress(ProcessLookupError):
                self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(timeout)
            except subprocess.TimeoutExpired:
                with contextlib.suppress(ProcessLookupError):
                    os.killpg(pgid, signal.SIGKILL)
                self.proc.wait(10)
        with contextlib.suppress(ProcessLookupError, PermissionError):
            os.killpg(pgid, signal.SIGKILL)
        return self.proc.returncode

    def log_tail(self, chars: int = 6000) -> str:
        try:
            return self.logfile.read_text(errors="replace")[-chars:]
        except OSError:
            return ""

    def __enter__(self) -> Self:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()


class GunicornServer(ServerProcess):
    """``gunicorn -c gunicorn.conf.py <app>``, configured only through the environment.

    ``database_url`` and ``trusted_issuers`` may be None for an app that needs neither
    (``benchmarks.reference_app:app``). ``threads`` and ``log_level`` set
    ``GUNICORN_THREADS`` and ``WARDROUND_LOG_LEVEL`` when given. ``clean_env`` keeps the
    runner's own ``WARDROUND_*``, ``PROMETHEUS_*`` and ``DATABASE_URL`` out (a developer's
    ``WARDROUND_AUTH=off`` must not reach the server); ``extra_env`` is applied last.
    """

    def __init__(
        self,
        database_url: str | None,
        trusted_issuers: Path | None,
        workdir: Path,
        workers: int = 2,
        extra_env: dict[str, str] | None = None,
        *,
        app: str = "wsgi:app",
        threads: int | None = None,
        log_level: str | None = None,
        clean_env: bool = False,
        start_timeout: float = 60,
    ) -> None:
        self.app = app
        self.start_timeout = start_timeout
        self.port = free_port()
        self.base_url = f"http://127.0.0.1:{self.port}"
        self.workdir = workdir
        self.workdir.mkdir(parents=True, exist_ok=True)
        self.logfile = workdir / "gunicorn.log"
        self.workers = workers
        env = _inherited_env(clean_env)
        env.update(
            PORT=str(self.port),
            WARDROUND_PUBLIC_BASE_URL=self.base_url,
            WARDROUND_INSTANCE_PATH=str(workdir / "instance"),
            WEB_CONCURRENCY=str(workers),
            PYTHONUNBUFFERED="1",
            # Models load on first use: loading all of them in every worker of every test
            # server would add seconds to each start (extra_env may turn it back on).
            WARDROUND_WARM_MODELS="false",
        )
        if database_url is not None:
            env["DATABASE_URL"] = database_url
        if trusted_issuers is not None:
            env["WARDROUND_TRUSTED_ISSUERS"] = str(trusted_issuers)
        if threads is not None:
            env["GUNICORN_THREADS"] = str(threads)
        if log_level is not None:
            env["WARDROUND_LOG_LEVEL"] = log_level
        env.update(extra_env or {})
        self.env = env
        self.proc: subprocess.Popen[bytes] | None = None

    @property
    def master_pid(self) -> int:
        assert self.proc is not None
        return self.proc.pid

    name = "gunicorn"

    def start(self, timeout: float | None = None) -> GunicornServer:
        command = [gunicorn_binary(), "-c", "gunicorn.conf.py", self.app]
        return self.launch(command, REPO, self.env, timeout or self.start_timeout)

    def ready(self) -> bool:
        return len(self.worker_pids()) >= self.workers and self.answers()

    def answers(self) -> bool:
        """True when an HTTP answer comes back (a 401 without a token is an answer)."""
        try:
            requests.get(f"{self.base_url}/cds-services", timeout=2)
        except requests.RequestException:
            return False
        return True

    def worker_pids(self) -> list[int]:
        return children(self.master_pid) if self.proc and self.proc.poll() is None else []

    def rss_kib(self) -> dict[int, int]:
        """VmRSS of the master and of each worker, by pid."""
        return {pid: rss_kib(pid) for pid in [self.master_pid, *self.worker_pids()]}
