"""A real Orthanc with its DICOMweb plugin, per test session, holding the DICOM fixtures.

:class:`OrthancServer` runs ``Orthanc <config.json>`` (Debian packages ``orthanc`` and
``orthanc-dicomweb``, see ``scripts/test-services/install-orthanc.sh``; never the system
service) with a generated configuration in a temporary folder: its own storage and index,
the HTTP API on a free port, no DICOM (DIMSE) server, HTTP basic authentication with a
generated user and password, and the DICOMweb plugin at ``/dicom-web/``.

Orthanc 1.10 has no option to choose the address it listens on: it binds all interfaces.
``RemoteAccessAllowed: false`` makes it refuse every client that is not on the loopback
interface (as well as the password), and the tests only ever use ``127.0.0.1``.

The session fixture :func:`dicomweb_server` starts it, loads every object of
:mod:`tests.support.dicom_fixtures` through ``POST /instances`` and yields a
:class:`DicomWebServer`. Orthanc missing: ``pytest.fail`` under ``CI``, else ``pytest.skip``.
Set ``WARDROUND_ORTHANC`` / ``WARDROUND_ORTHANC_DICOMWEB_PLUGIN`` to use other paths.
"""

from __future__ import annotations

import contextlib
import json
import os
import secrets
import shutil
import subprocess
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
import requests

from models.shared_data import shared_data
from tests.support.dicom_fixtures import DicomFixtureSet, build_fixture_set
from tests.support.live_server import ServerProcess, free_port
from tests.support.missing import shared_file, unavailable

ORTHANC_CANDIDATES = ("/usr/sbin/Orthanc", "/usr/bin/Orthanc", "/usr/local/bin/Orthanc")
PLUGIN_CANDIDATES = (
    "/usr/share/orthanc/plugins/libOrthancDicomWeb.so",
    "/usr/lib/orthanc/libOrthancDicomWeb.so",
    "/usr/local/share/orthanc/plugins/libOrthancDicomWeb.so",
)
INSTALL_HINT = "run `bash scripts/test-services/install-orthanc.sh` (or `make test-services`)"


class OrthancUnavailable(RuntimeError):
    """The Orthanc binary or its DICOMweb plugin is not on this machine."""


def orthanc_binary() -> str:
    configured = os.environ.get("WARDROUND_ORTHANC")
    if configured:
        if not os.access(configured, os.X_OK):
            raise OrthancUnavailable(f"WARDROUND_ORTHANC={configured} is not executable")
        return configured
    found = shutil.which("Orthanc")
    for candidate in (found, *ORTHANC_CANDIDATES):
        if candidate and os.access(candidate, os.X_OK):
            return candidate
    raise OrthancUnavailable(f"Orthanc not found; {INSTALL_HINT}")


def dicomweb_plugin() -> str:
    configured = os.environ.get("WARDROUND_ORTHANC_DICOMWEB_PLUGIN")
    for candidate in (configured,) if configured else PLUGIN_CANDIDATES:
        if Path(candidate).exists():
            return candidate
    raise OrthancUnavailable(f"Orthanc DICOMweb plugin not found; {INSTALL_HINT}")


class OrthancServer(ServerProcess):
    """``Orthanc config.json`` in ``workdir`` on a free 127.0.0.1 port. No pytest in here."""

    name = "Orthanc"
    poll_s = 0.05

    def __init__(self, workdir: Path, binary: str | None = None, plugin: str | None = None):
        self.binary = binary or orthanc_binary()
        self.plugin = plugin or dicomweb_plugin()
        self.workdir = workdir
        self.workdir.mkdir(parents=True, exist_ok=True)
        self.port = free_port()
        self.username = "wardround-test"
        self.password = secrets.token_urlsafe(24)
        self.orthanc_url = f"http://127.0.0.1:{self.port}"
        self.dicomweb_url = f"{self.orthanc_url}/dicom-web"
        self.logfile = workdir / "orthanc.log"
        self.config_path = workdir / "orthanc.json"
        self.proc: subprocess.Popen[bytes] | None = None

    def config(self) -> dict[str, Any]:
        return {
            "Name": "wardround-test",
            "StorageDirectory": str(self.workdir / "storage"),
            "IndexDirectory": str(self.workdir / "index"),
            "StorageCompression": False,
            "HttpServerEnabled": True,
            "HttpPort": self.port,
            # No bind-address option in Orthanc 1.10 (it listens on all interfaces):
            # refuse non-loopback clients, and ask everyone for the password.
            "RemoteAccessAllowed": False,
            "AuthenticationEnabled": True,
            "RegisteredUsers": {self.username: self.password},
            "SslEnabled": False,
            "HttpThreadsCount": 4,
            "HttpDescribeErrors": True,
            "DicomServerEnabled": False,
            "DicomPort": free_port(),
            "OrthancExplorerEnabled": False,
            "WebDavEnabled": False,
            "ExecuteLuaEnabled": False,
            "RestApiWriteToFileSystemEnabled": False,
            "ConcurrentJobs": 1,
            "SaveJobs": False,
            "DeidentifyLogs": True,
            "Plugins": [self.plugin],
            "DicomWeb": {"Enable": True, "Root": "/dicom-web/", "EnableWado": False},
        }

    def session(self) -> requests.Session:
        session = requests.Session()
        session.auth = (self.username, self.password)
        return session

    def start(self, timeout: float = 60) -> OrthancServer:
        self.config_path.write_text(json.dumps(self.config(), indent=2))
        self.config_path.chmod(0o600)  # it holds the password
        return self.launch([self.binary, str(self.config_path)], self.workdir, None, timeout)

    def ready(self) -> bool:
        with self.session() as session, contextlib.suppress(requests.RequestException):
            if session.get(f"{self.orthanc_url}/system", timeout=2).ok:
                plugins = session.get(f"{self.orthanc_url}/plugins", timeout=5).json()
                if "dicom-web" not in plugins:
                    raise RuntimeError(
                        f"Orthanc runs without its DICOMweb plugin:\n{self.log_tail()}"
                    )
                return True
        return False

    def store(self, session: requests.Session, data: bytes) -> dict[str, Any]:
        """``POST /instances``: Orthanc's own upload (it answers 200 with the instance ids)."""
        response = session.post(
            f"{self.orthanc_url}/instances",
            data=data,
            headers={"Content-Type": "application/dicom"},
            timeout=30,
        )
        if response.status_code != 200:
            raise RuntimeError(f"Orthanc refused an object: HTTP {response.status_code}")
        answer: dict[str, Any] = response.json()
        return answer


@dataclass(frozen=True)
class DicomWebServer:
    """What the ``dicomweb_server`` fixture yields."""

    #: DICOMweb root, e.g. ``http://127.0.0.1:PORT/dicom-web`` (QIDO/WADO/STOW-RS below it).
    base_url: str
    username: str
    password: str
    #: Orthanc's own REST API root.
    orthanc_url: str
    #: Everything loaded: Synthea studies, the variant study, the bad study.
    fixtures: DicomFixtureSet
    #: Seconds to start Orthanc (until it answered) and to build + load the fixtures.
    start_s: float
    load_s: float

    @property
    def auth(self) -> tuple[str, str]:
        return self.username, self.password

    def session(self) -> requests.Session:
        """A requests session that authenticates to this server."""
        session = requests.Session()
        session.auth = self.auth
        return session


@pytest.fixture(scope="session")
def dicomweb_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[DicomWebServer]:
    """Orthanc + DICOMweb on a free port, loaded with every DICOM fixture, for the session."""
    try:
        binary, plugin = orthanc_binary(), dicomweb_plugin()
    except OrthancUnavailable as exc:
        unavailable(str(exc))
    for needed in ("pneumoniamnist/pneumoniamnist_28_dev.npz", "synthea-r4"):
        shared_file(needed)
    folder = tmp_path_factory.mktemp("orthanc")
    began = time.monotonic()
    server = OrthancServer(folder / "server", binary, plugin).start()
    started = time.monotonic()
    try:
        fixtures = build_fixture_set(shared_data(), folder / "dicom")
        with server.session() as session:
            for instance in fixtures.instances():
                server.store(session, instance.data)
        loaded = time.monotonic()
        yield DicomWebServer(
            base_url=server.dicomweb_url,
            username=server.username,
            password=server.password,
            orthanc_url=server.orthanc_url,
            fixtures=fixtures,
            start_s=started - began,
            load_s=loaded - started,
        )
    finally:
        server.stop()
