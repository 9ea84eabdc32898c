"""A real Spark standalone cluster for the tests: one master and two workers on 127.0.0.1.

Started from pyspark's own launcher (``pyspark/bin/spark-class`` with
``org.apache.spark.deploy.master.Master`` / ``...worker.Worker``), each daemon a
:class:`~tests.support.live_server.ServerProcess` on free ports, bound to 127.0.0.1
(``SPARK_LOCAL_IP`` also binds the web UIs there). Ready once the master's JSON status
page lists both workers ALIVE; stopped whole (process groups) afterwards. Jobs reach it at
:attr:`StandaloneCluster.master_url`.

The workers get no ``PYTHONPATH``: the project's code reaches the executors only as the
driver ships it (``population.code_shipping``), as on a real cluster.
"""

from __future__ import annotations

import contextlib
import os
import shutil
import subprocess
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import requests

from tests.support.live_server import ServerProcess, free_port


class SparkUnavailable(RuntimeError):
    """pyspark or a Java runtime is missing."""


def spark_class() -> Path:
    try:
        import pyspark
    except ImportError as exc:
        raise SparkUnavailable("pyspark is not installed") from exc
    launcher = Path(pyspark.__file__).parent / "bin" / "spark-class"
    if not launcher.is_file():
        raise SparkUnavailable(f"{launcher} missing")
    if shutil.which("java") is None and not os.environ.get("JAVA_HOME"):
        raise SparkUnavailable("no Java runtime (java on PATH or JAVA_HOME)")
    return launcher


def daemon_env(workdir: Path) -> dict[str, str]:
    """The runner's environment for a daemon, without the runner's Python or Spark settings."""
    dropped = ("PYTHONPATH", "PYSPARK_", "SPARK_", "WARDROUND_")
    env = {k: v for k, v in os.environ.items() if not k.startswith(dropped)}
    env.update(
        SPARK_LOCAL_IP="127.0.0.1",
        SPARK_LOG_DIR=str(workdir / "logs"),
        SPARK_PID_DIR=str(workdir),
    )
    return env


class SparkDaemon(ServerProcess):
    """One master or worker JVM; ``ready`` is decided by its cluster."""

    poll_s = 0.25

    def __init__(self, name: str, workdir: Path, arguments: list[str], webui_port: int) -> None:
        self.name = name
        self.workdir = workdir
        self.workdir.mkdir(parents=True, exist_ok=True)
        self.logfile = workdir / f"{name}.log"
        self.arguments = arguments
        self.webui_port = webui_port
        self.proc: subprocess.Popen[bytes] | None = None

    def start(self, timeout: float = 60) -> SparkDaemon:
        command = [str(spark_class()), *self.arguments]
        return self.launch(command, self.workdir, daemon_env(self.workdir), timeout)

    def ready(self) -> bool:
        try:
            return requests.get(f"http://127.0.0.1:{self.webui_port}/", timeout=2).ok
        except requests.RequestException:
            return False


class StandaloneCluster:
    """Master + ``workers`` workers, each with ``cores`` cores and ``memory`` for executors."""

    def __init__(
        self, workdir: Path, workers: int = 2, cores: int = 1, memory: str = "1536m"
    ) -> None:
        self.workdir = workdir
        self.port = free_port()
        self.master_url = f"spark://127.0.0.1:{self.port}"
        self.webui_port = free_port()
        self.master = SparkDaemon(
            "master",
            workdir / "master",
            [
                "org.apache.spark.deploy.master.Master",
                "--host", "127.0.0.1",
                "--port", str(self.port),
                "--webui-port", str(self.webui_port),
            ],
            self.webui_port,
        )  # fmt: skip
        self.workers = []
        for n in range(workers):
            folder = workdir / f"worker-{n}"
            webui = free_port()
            self.workers.append(
                SparkDaemon(
                    f"worker-{n}",
                    folder,
                    [
                        "org.apache.spark.deploy.worker.Worker",
                        self.master_url,
                        "--host", "127.0.0.1",
                        "--webui-port", str(webui),
                        "--cores", str(cores),
                        "--memory", memory,
                        "--work-dir", str(folder / "work"),
                    ],
                    webui,
                )
            )  # fmt: skip

    def status(self) -> dict[str, Any]:
        """The master's JSON status page (workers, applications)."""
        answer = requests.get(f"http://127.0.0.1:{self.webui_port}/json/", timeout=5)
        answer.raise_for_status()
        return answer.json()

    def alive_workers(self) -> int:
        try:
            workers = self.status().get("workers", [])
        except (requests.RequestException, ValueError):
            return 0
        return sum(1 for w in workers if w.get("state") == "ALIVE")

    def start(self, timeout: float = 90) -> StandaloneCluster:
        try:
            self.master.start(timeout)
            for worker in self.workers:
                worker.start(timeout)
            deadline = time.monotonic() + timeout
            while self.alive_workers() < len(self.workers):
                if time.monotonic() > deadline:
                    raise TimeoutError(f"workers did not register:\n{self.master.log_tail()}")
                time.sleep(0.25)
        except BaseException:
            self.stop()
            raise
        return self

    def stop(self) -> None:
        for daemon in [*self.workers, self.master]:
            with contextlib.suppress(Exception):
                daemon.stop()

    def __enter__(self) -> StandaloneCluster:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()


@pytest.fixture(scope="session")
def spark_cluster(tmp_path_factory: pytest.TempPathFactory) -> Iterator[StandaloneCluster]:
    """A standalone master and two one-core workers on 127.0.0.1, for the whole session."""
    try:
        spark_class()
    except SparkUnavailable as exc:
        if os.environ.get("CI"):
            pytest.fail(f"{exc} (required under CI)")
        pytest.skip(str(exc))
    with StandaloneCluster(tmp_path_factory.mktemp("spark-cluster")) as cluster:
        yield cluster
