"""The one way population code gets a SparkSession: :func:`spark_session`.

``local[*]`` by default; any cluster through ``master`` (``spark://host:7077``, ``yarn``,
``k8s://…``). Settings are bounded for a small machine (driver and executor memory,
shuffle partitions sized to the cores, not Spark's 200). Spark's own logging is quiet
(``population/log4j2.properties``: warnings and errors only; py4j's Python logger too),
the console progress bar is off unless asked for, and so is the web UI.

On a single machine (a ``local`` master, or a ``spark://`` master on the loopback
interface) nothing listens beyond 127.0.0.1: ``SPARK_LOCAL_IP``, ``spark.driver.host``
and ``spark.driver.bindAddress`` are set to it (``SPARK_LOCAL_IP`` also binds the UIs).
Elsewhere the driver's address is the cluster's business (set ``SPARK_LOCAL_IP``).

The session's time zone is UTC: FHIR times without an offset are read as UTC, as
``fhir_adapters.parsing.fhir_datetime`` reads them, so both paths give the same instants.
On a cluster, the project's own packages are shipped to the executors
(:mod:`population.code_shipping`); third-party packages must be installed there.
"""

from __future__ import annotations

import logging
import os
import re
import sys
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from urllib.parse import urlsplit

from pyspark.sql import SparkSession

LOG4J_CONFIG = Path(__file__).with_name("log4j2.properties")
LOOPBACK_HOSTS = frozenset({"127.0.0.1", "localhost", "::1", "[::1]"})
_LOCAL_MASTER = re.compile(r"^local(\[(\*|[1-9]\d*)(,[1-9]\d*)?\])?$")


@dataclass(frozen=True)
class SparkSettings:
    master: str = "local[*]"
    app_name: str = "wardround-population"
    driver_memory: str = "2g"
    executor_memory: str = "2g"
    #: None: twice the cores a local master uses (at least 4); on a cluster, 16.
    shuffle_partitions: int | None = None
    #: Spark's scratch space (shuffle files, spills); None: the system temp folder.
    local_dir: Path | None = None
    #: Spark's console progress bar (stages) on stderr.
    progress: bool = False
    #: The driver's web UI (on 127.0.0.1 on a single machine).
    ui: bool = False
    #: Any further ``spark.*`` settings, applied last.
    extra: Mapping[str, str] = field(default_factory=dict)

    def __post_init__(self) -> None:
        if self.master.startswith("local") and not _LOCAL_MASTER.match(self.master):
            raise ValueError(f"{self.master!r}: expected local, local[N], local[*] or local[N,F]")

    @property
    def is_local(self) -> bool:
        return self.master.startswith("local")

    @property
    def on_this_machine(self) -> bool:
        """A local master, or a standalone master on the loopback interface."""
        if self.is_local:
            return True
        if self.master.startswith("spark://"):
            host = urlsplit(self.master).hostname or ""
            return host in LOOPBACK_HOSTS
        return False


def local_cores(master: str) -> int:
    """Worker threads of a ``local``, ``local[N]`` or ``local[*]`` master."""
    inside = master.partition("[")[2].partition("]")[0].split(",")[0]
    if not inside:
        return 1
    if inside == "*":
        return os.cpu_count() or 1
    return max(1, int(inside))


def spark_conf(settings: SparkSettings) -> dict[str, str]:
    """Every ``spark.*`` setting the session is built with."""
    partitions = settings.shuffle_partitions
    if partitions is None:
        partitions = max(4, 2 * local_cores(settings.master)) if settings.is_local else 16
    log_option = f"-Dlog4j2.configurationFile={LOG4J_CONFIG.as_uri()}"
    conf = {
        "spark.app.name": settings.app_name,
        "spark.driver.memory": settings.driver_memory,
        "spark.executor.memory": settings.executor_memory,
        "spark.sql.shuffle.partitions": str(partitions),
        "spark.sql.session.timeZone": "UTC",
        "spark.ui.enabled": str(settings.ui).lower(),
        "spark.ui.showConsoleProgress": str(settings.progress).lower(),
        "spark.driver.extraJavaOptions": log_option,
        # Parquet timestamps as instants, the same in every reader.
        "spark.sql.parquet.outputTimestampType": "TIMESTAMP_MICROS",
    }
    if settings.local_dir is not None:
        conf["spark.local.dir"] = str(settings.local_dir)
    if settings.on_this_machine:
        conf["spark.driver.host"] = "127.0.0.1"
        conf["spark.driver.bindAddress"] = "127.0.0.1"
        # The logging file exists here; executors elsewhere keep their cluster's logging.
        conf["spark.executor.extraJavaOptions"] = log_option
    conf.update(settings.extra)
    return conf


def spark_session(settings: SparkSettings | None = None) -> SparkSession:
    """A SparkSession for ``settings`` (stop it with ``.stop()`` when done).

    PySpark allows one active SparkContext per process: a session with different
    settings needs the previous one stopped first.
    """
    settings = settings or SparkSettings()
    # py4j logs every connection it closes at INFO, some of them at interpreter exit.
    logging.getLogger("py4j").setLevel(logging.WARNING)
    if settings.on_this_machine:
        os.environ.setdefault("SPARK_LOCAL_IP", "127.0.0.1")
        # Python workers on this machine run this very interpreter (and its packages);
        # PySpark reads it from the environment, for local and cluster executors alike.
        os.environ.setdefault("PYSPARK_PYTHON", sys.executable)
    builder = SparkSession.builder.master(settings.master)
    for key, value in spark_conf(settings).items():
        builder = builder.config(key, value)
    session = builder.getOrCreate()
    session.sparkContext.setLogLevel("WARN")
    if not settings.is_local:
        from population.code_shipping import ship_project_code

        ship_project_code(session)
    return session
