"""A real FHIR R4 server for the tests: sekmet-fhir, loaded with the shared Synthea bundles.

``make test-services`` installs sekmet-fhir into its own venv (``.venv-sekmet``). The
session fixture :func:`fhir_server` starts ``sekmet serve`` on a free 127.0.0.1 port with
generated settings: bearer-token auth with one random static token, the workflow simulator
off, no peers, no traffic log, strict inbound validation.

Loading the bundles (PUT ``Type/id`` transactions, so that every Synthea id is kept and a
CDS Hooks ``context.patientId`` is a Patient id the server knows) takes minutes, so the
loaded SQLite database is built once into ``instance/test-services/sekmet-<key>/`` and every
test session starts its own server on a private copy (tests may write to it).
"""

from __future__ import annotations

import contextlib
import fcntl
import gzip
import hashlib
import json
import os
import secrets
import shutil
import sqlite3
import subprocess
import tempfile
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest
import requests

from tests.support.live_server import REPO, ServerProcess, free_port, rss_kib
from tests.support.missing import unavailable

SEKMET_VENV = REPO / ".venv-sekmet"
SEKMET_BIN = SEKMET_VENV / "bin" / "sekmet"
CACHE_ROOT = REPO / "instance" / "test-services"
#: Part of the cache key: bump it whenever the loader or the generated settings change.
LOADER_VERSION = "3"
DB_NAME = "sekmet.db"
MANIFEST = "manifest.json"
FHIR_JSON = "application/fhir+json"


class FhirServerError(RuntimeError):
    """sekmet did not start, or a bundle did not load."""


# --------------------------------------------------------------------------- the server
def settings_yaml(base_url: str, port: int, workdir: Path, db_path: Path, token: str) -> str:
    """sekmet settings (YAML is a superset of JSON): only what the adapter tests need."""
    settings: dict[str, Any] = {
        "base_url": base_url,
        "host": "127.0.0.1",
        "port": port,
        "data_dir": str(workdir / "data"),
        "db_path": str(db_path),
        "own_private_key_path": str(workdir / "keys" / "sekmet_private.pem"),
        "server_auth": {"types": ["bearer"], "tokens": [token], "enforce_scopes": True},
        # Structural validation (fhir.resources models) of every write; no HL7 validator jar.
        "validation": {"inbound": "strict", "validator_jar": None, "tx_server": "n/a"},
        # The simulator would answer MedicationRequest, ServiceRequest, Claim... with new data.
        "simulator": {"enabled": False, "auto": [], "delay_seconds": 0},
        # Fixed, so sekmet does not generate and store one; no subscription is ever created.
        "subscriptions": {"hook_token": secrets.token_urlsafe(16), "retries": 0},
        "peers": {},
        # The traffic log would store every request body (megabytes per transaction).
        "log_inbound": False,
    }
    return json.dumps(settings, indent=2)


def _sekmet_env(config: Path) -> dict[str, str]:
    """The runner's environment, less any SEKMET_* override, pointing at our settings."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("SEKMET_")}
    env.update(SEKMET_CONFIG=str(config), PYTHONUNBUFFERED="1")
    return env


class FhirTestServer(ServerProcess):
    """``sekmet serve`` on a free 127.0.0.1 port, in ``workdir``, serving ``db_path``."""

    name = "sekmet"
    poll_s = 0.2

    def __init__(
        self, workdir: Path, db_path: Path, token: str | None = None, port: int | None = None
    ) -> None:
        self.workdir = workdir
        self.workdir.mkdir(parents=True, exist_ok=True)
        self.db_path = db_path
        self.token = token or secrets.token_urlsafe(32)
        self.port = port or free_port()
        self.root_url = f"http://127.0.0.1:{self.port}"
        self.base_url = f"{self.root_url}/fhir"
        self.config = workdir / "settings.yaml"
        self.logfile = workdir / "sekmet.log"
        self.proc: subprocess.Popen[bytes] | None = None

    @property
    def headers(self) -> dict[str, str]:
        return {"Authorization": f"Bearer {self.token}", "Accept": FHIR_JSON}

    def start(self, timeout: float = 60) -> FhirTestServer:
        self.config.write_text(
            settings_yaml(self.base_url, self.port, self.workdir, self.db_path, self.token)
        )
        command = [str(SEKMET_BIN), "serve", "--config", str(self.config)]
        command += ["--host", "127.0.0.1", "--port", str(self.port)]
        return self.launch(command, self.workdir, _sekmet_env(self.config), timeout)

    def ready(self) -> bool:
        try:
            return requests.get(f"{self.base_url}/metadata", timeout=2).status_code == 200
        except requests.RequestException:
            return False

    def restart(self, timeout: float = 60) -> FhirTestServer:
        """Stop and start again on the same port, database and token."""
        self.stop()
        return self.start(timeout)

    def rss_kib(self) -> int:
        return rss_kib(self.proc.pid) if self.proc and self.proc.poll() is None else 0


# --------------------------------------------------------------------------- the loader
INFORMATION_BUNDLES = ("hospitalInformation", "practitionerInformation")


def bundle_files(folder: Path) -> list[Path]:
    """Every bundle in ``folder``, gzip or not (a few shared names end in ``.json".gz``).

    Bundles without a Patient (Synthea's hospital and practitioner information) come first,
    so that conditional references to their resources resolve in the patient bundles.
    """
    files = [p for p in folder.iterdir() if p.is_file() and p.name.endswith((".json", ".gz"))]
    return sorted(files, key=lambda p: (not p.name.startswith(INFORMATION_BUNDLES), p.name))


def read_bundle(path: Path) -> dict[str, Any]:
    opener = gzip.open if path.suffix == ".gz" else open
    with opener(path, "rt", encoding="utf-8") as handle:
        return json.load(handle)


def _put_entry(entry: dict[str, Any]) -> dict[str, Any]:
    resource = entry["resource"]
    url = f"{resource['resourceType']}/{resource['id']}"
    return {
        "fullUrl": entry["fullUrl"],
        "resource": resource,
        "request": {"method": "PUT", "url": url},
    }


def put_transaction(bundle: dict[str, Any]) -> dict[str, Any]:
    """The bundle as a transaction of ``PUT Type/id``, so that the server keeps Synthea's ids.

    Each entry keeps its ``fullUrl``: the server rewrites the ``urn:uuid:`` references to
    ``Type/id`` (FHIR transaction rules). Conditional references
    (``Practitioner?identifier=...``) are resolved by the server as well.
    """
    entries = [_put_entry(entry) for entry in bundle.get("entry", [])]
    return {"resourceType": "Bundle", "type": "transaction", "entry": entries}


def patient_ids_of(bundle: dict[str, Any]) -> list[str]:
    resources = [entry["resource"] for entry in bundle.get("entry", [])]
    return [r["id"] for r in resources if r["resourceType"] == "Patient"]


def post_transaction(session: requests.Session, base_url: str, bundle: dict[str, Any]) -> None:
    response = session.post(
        base_url,
        data=json.dumps(bundle, separators=(",", ":")),
        headers={"Content-Type": FHIR_JSON},
        timeout=600,
    )
    if response.status_code != 200:
        raise FhirServerError(f"HTTP {response.status_code}: {response.text[:4000]}")


def load_bundles(server: FhirTestServer, files: list[Path]) -> tuple[str, ...]:
    """Load every bundle, one transaction each; the sorted Patient ids loaded."""
    patient_ids: list[str] = []
    with requests.Session() as session:
        session.headers.update(server.headers)
        for path in files:
            bundle = read_bundle(path)
            try:
                post_transaction(session, server.base_url, put_transaction(bundle))
            except FhirServerError as error:
                raise FhirServerError(f"{path.name} did not load: {error}") from error
            patient_ids += patient_ids_of(bundle)
    return tuple(sorted(patient_ids))


# --------------------------------------------------------------------------- the cache
def sekmet_version() -> str:
    dists = SEKMET_VENV.glob("lib/python*/site-packages/sekmet_fhir-*.dist-info")
    names = sorted(d.name for d in dists)
    return names[-1].removeprefix("sekmet_fhir-").removesuffix(".dist-info") if names else "?"


def cache_key(files: list[Path]) -> str:
    listing = [(p.name, p.stat().st_size) for p in sorted(files)]
    text = json.dumps([sekmet_version(), listing, LOADER_VERSION])
    return hashlib.sha256(text.encode()).hexdigest()[:16]


@dataclass(frozen=True)
class LoadedDatabase:
    """A sekmet database holding every bundle of a folder (read-only: start on a copy)."""

    path: Path
    patient_ids: tuple[str, ...]
    load_seconds: float
    built_now: bool


def _finish(db_path: Path) -> None:
    """Fold the WAL into the database file, so that the file alone is the whole database,
    and gather planner statistics: without them SQLite sorts ``_sort=date`` searches and
    compartment searches through the wrong index (seconds for one patient, not milliseconds).
    """
    with contextlib.closing(sqlite3.connect(db_path)) as conn:
        conn.execute("ANALYZE")
        conn.commit()
        conn.execute("PRAGMA wal_checkpoint(TRUNCATE)")


def _build(folder: Path, files: list[Path]) -> dict[str, Any]:
    """Load ``files`` into a fresh database in ``folder``; what the manifest records."""
    started = time.monotonic()
    with FhirTestServer(folder / "work", folder / DB_NAME) as server:
        patient_ids = load_bundles(server, files)
    _finish(folder / DB_NAME)
    shutil.rmtree(folder / "work", ignore_errors=True)
    return {
        "patient_ids": list(patient_ids),
        "bundles": len(files),
        "load_seconds": round(time.monotonic() - started, 1),
        "sekmet_version": sekmet_version(),
        "loader_version": LOADER_VERSION,
    }


def _read(folder: Path, built_now: bool) -> LoadedDatabase:
    manifest = json.loads((folder / MANIFEST).read_text())
    return LoadedDatabase(
        folder / DB_NAME, tuple(manifest["patient_ids"]), manifest["load_seconds"], built_now
    )


@contextlib.contextmanager
def _locked(path: Path) -> Iterator[None]:
    """An exclusive lock between test sessions (released when the process dies)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    with path.open("a") as handle:
        fcntl.flock(handle, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(handle, fcntl.LOCK_UN)


def loaded_database(data_dir: Path) -> LoadedDatabase:
    """The cached database for these bundles, built first (into a temp dir, renamed) if need be."""
    files = bundle_files(data_dir)
    final = CACHE_ROOT / f"sekmet-{cache_key(files)}"
    with _locked(CACHE_ROOT / f"{final.name}.lock"):
        if (final / MANIFEST).is_file():
            return _read(final, built_now=False)
        for leftover in CACHE_ROOT.glob(f"{final.name}.building-*"):  # from a killed build
            shutil.rmtree(leftover, ignore_errors=True)
        building = Path(tempfile.mkdtemp(prefix=f"{final.name}.building-", dir=CACHE_ROOT))
        try:
            manifest = _build(building, files)
            (building / MANIFEST).write_text(json.dumps(manifest, indent=2))
            os.rename(building, final)
        finally:
            shutil.rmtree(building, ignore_errors=True)
    return _read(final, built_now=True)


def fhir_authorization(
    token: str, subject: str = "wardround", expires_in: int = 300
) -> dict[str, Any]:
    """A hook request's ``fhirAuthorization`` member: ``token`` as a bearer access token
    scoped ``patient/*.read`` (what the service then sends to ``fhirServer``)."""
    return {
        "access_token": token,
        "token_type": "Bearer",
        "expires_in": expires_in,
        "scope": "patient/*.read",
        "subject": subject,
    }


# --------------------------------------------------------------------------- the fixture
@dataclass(frozen=True)
class FhirServer:
    """What a test needs to talk to the session's sekmet server."""

    base_url: str  # http://127.0.0.1:PORT/fhir
    token: str  # the one static bearer token the server accepts
    patient_ids: tuple[str, ...]  # every loaded Synthea Patient.id, sorted
    server: FhirTestServer = field(repr=False, compare=False)

    @property
    def headers(self) -> dict[str, str]:
        """``Authorization: Bearer <token>`` and ``Accept: application/fhir+json``."""
        return self.server.headers

    def request(self, method: str, path: str, body: Any = None) -> requests.Response:
        """One authorised call, e.g. ``request("PUT", "Endpoint/x", resource)`` (tests that
        write use ids of their own: the server is a per-session copy)."""
        headers = dict(self.headers)
        if body is not None:
            headers["Content-Type"] = FHIR_JSON
        data = None if body is None else json.dumps(body)
        url = f"{self.base_url}/{path}"
        return requests.request(method, url, headers=headers, data=data, timeout=60)


def _prune_dead_sessions() -> None:
    """Database copies left behind by test sessions that were killed (their pid is gone)."""
    for folder in CACHE_ROOT.glob("session-*-*"):
        pid = folder.name.split("-")[1]
        if pid.isdigit() and not Path(f"/proc/{pid}").exists():
            shutil.rmtree(folder, ignore_errors=True)


@contextlib.contextmanager
def running_copy(database: LoadedDatabase, port: int | None = None) -> Iterator[FhirTestServer]:
    """A server on a private copy of ``database``: writes never reach the cache."""
    prefix = f"session-{os.getpid()}-"
    with tempfile.TemporaryDirectory(prefix=prefix, dir=CACHE_ROOT) as workdir:
        db_copy = Path(workdir) / DB_NAME
        shutil.copyfile(database.path, db_copy)
        with FhirTestServer(Path(workdir), db_copy, port=port) as server:
            yield server


def _synthea_folder() -> Path:
    from tests.conftest import SYNTHEA

    return SYNTHEA


@pytest.fixture(scope="session")
def fhir_server() -> Iterator[FhirServer]:
    """sekmet-fhir with every shared Synthea bundle loaded, on a private copy of the cache."""
    if not SEKMET_BIN.is_file():
        unavailable("sekmet-fhir not installed: run make test-services")
    folder = _synthea_folder()
    if not folder.is_dir() or not bundle_files(folder):
        unavailable(f"shared Synthea data missing at {folder}")
    database = loaded_database(folder)
    _prune_dead_sessions()
    with running_copy(database) as server:
        yield FhirServer(server.base_url, server.token, database.patient_ids, server)
