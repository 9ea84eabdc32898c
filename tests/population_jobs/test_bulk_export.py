"""The ``$export`` client against a real Bulk Data server: sekmet-fhir's ``$export``.

sekmet implements the Bulk Data Access IG's async pattern (kick-off with ``Prefer:
respond-async``, 202 + ``Content-Location``, status polling, manifest, bearer-protected
NDJSON files, ``DELETE``). Faults it never produces on demand (429, 503, a transient
OperationOutcome, a download that breaks off, a manifest that lies) come from the named
fault injector ``tests/support/fault_proxy.py``; interruptions are real: the ``cds
population export`` process is SIGKILLed mid-export and run again.
"""

from __future__ import annotations

import email.utils
import hashlib
import json
import os
import signal
import subprocess
import sys
import time
from collections import Counter
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest
from click.testing import CliRunner

from cds.audit.population_runs import recent_runs
from cds.cli import main
from cds.db import make_engine, make_sessionmaker
from fhir_adapters.bulk.export_client import (
    STATE_FILE,
    BulkExportClient,
    ExportError,
    ExportEvent,
    ExportExpired,
    ExportFailed,
    ExportRequest,
    ExportSettings,
    retry_after_seconds,
)
from fhir_adapters.bulk.ndjson import read_folder, scan_folder
from tests.population_jobs.conftest import repo_env
from tests.support.fault_proxy import Fault, FaultProxy, fault_proxy

pytestmark = pytest.mark.fhir_server

TYPES = ("Condition", "Encounter", "MedicationRequest", "Observation", "Patient")
GROUP = "wardround-bulk-test"
FAST = ExportSettings(timeout=(2.0, 30.0), attempts=4, backoff_s=0.05, max_wait_s=120)
TRANSIENT = json.dumps(
    {"resourceType": "OperationOutcome", "issue": [{"severity": "error", "code": "transient"}]}
).encode()


@pytest.fixture(scope="module")
def group(fhir_server: Any) -> tuple[str, ...]:
    """A Group of three shared patients on the server (ids of its members)."""
    members = tuple(fhir_server.patient_ids[:3])
    group = {
        "resourceType": "Group",
        "id": GROUP,
        "type": "person",
        "actual": True,
        "member": [{"entity": {"reference": f"Patient/{m}"}} for m in members],
    }
    assert fhir_server.request("PUT", f"Group/{GROUP}", group).status_code in (200, 201)
    return members


@pytest.fixture(scope="module")
def expected(fhir_server: Any, group: tuple[str, ...]) -> dict[str, set[str]]:
    """The ids the server's own searches give for the group's patients, per type."""
    ids: dict[str, set[str]] = {"Patient": set(group)}
    for kind in TYPES[:-1]:
        ids[kind] = set()
        for patient in group:
            bundle = fhir_server.request("GET", f"{kind}?patient={patient}&_count=2000").json()
            assert not any(link["relation"] == "next" for link in bundle.get("link", []))
            ids[kind] |= {e["resource"]["id"] for e in bundle.get("entry", [])}
    return ids


@pytest.fixture
def proxy(fhir_server: Any) -> Iterator[FaultProxy]:
    with fault_proxy(fhir_server.base_url) as running:
        yield running


class Clock:
    """Real waits, remembered (so a test can see what the client waited for)."""

    def __init__(self) -> None:
        self.waits: list[float] = []

    def sleep(self, seconds: float) -> None:
        self.waits.append(seconds)
        time.sleep(seconds)


def _request(base_url: str, **changes: Any) -> ExportRequest:
    return ExportRequest(base_url, "group", GROUP, TYPES, **changes)


def _ids(folder: Path) -> dict[str, set[str]]:
    ids: dict[str, set[str]] = {}
    for resource in read_folder(scan_folder(folder)):
        ids.setdefault(resource["resourceType"], set()).add(resource["id"])
    return ids


def test_a_group_export_downloads_every_resource_of_the_group(
    fhir_server: Any, expected: dict[str, set[str]], tmp_path: Path
) -> None:
    events: list[ExportEvent] = []
    client = BulkExportClient(fhir_server.token, FAST, on_event=events.append)
    out = tmp_path / "export"

    result = client.run(_request(fhir_server.base_url), out)

    assert _ids(out) == expected
    manifest = json.loads((out / "manifest.json").read_text())
    assert manifest == result.manifest and manifest["requiresAccessToken"] is True
    counts = Counter({e["type"]: e["count"] for e in manifest["output"]})
    assert result.resources == counts == Counter({k: len(v) for k, v in expected.items()})
    for file in result.files:
        assert hashlib.sha256((out / file.name).read_bytes()).hexdigest() == file.sha256
    assert [e.kind for e in events][:1] == ["kicked-off"] and events[-1].kind == "done"
    state = json.loads((out / STATE_FILE).read_text())
    assert state["completed_at"] and fhir_server.token not in (out / STATE_FILE).read_text()


def test_throttling_and_transient_faults_are_waited_out(
    fhir_server: Any, proxy: FaultProxy, expected: dict[str, set[str]], tmp_path: Path
) -> None:
    soon = email.utils.format_datetime(datetime.now(UTC) + timedelta(seconds=4), usegmt=True)
    proxy.script_path("$export", Fault(429, (("Retry-After", "1"),)))
    proxy.script_path(
        "bulk-status",
        Fault(202, (("Retry-After", "1"), ("X-Progress", "half way"))),
        Fault(429, (("Retry-After", soon),)),
        Fault(503),
        Fault(500, (("Content-Type", "application/fhir+json"),), body=TRANSIENT),
    )
    proxy.script_path("bulk-files", Fault(cut_after=100), Fault(502))
    clock = Clock()
    client = BulkExportClient(fhir_server.token, FAST, sleep=clock.sleep)
    out = tmp_path / "export"

    result = client.run(_request(proxy.base_url), out)

    assert _ids(out) == expected
    assert clock.waits[:2] == [1.0, 1.0]  # the kick-off's 429 and the status's 202
    assert 0 < clock.waits[2] <= 4.0  # Retry-After as an HTTP date, about 2 s ahead
    downloads = [r for r in proxy.requests if "bulk-files" in r]
    assert len(downloads) == len(result.files) + 2  # the cut one and the 502 were retried
    assert not list(out.glob("*.part"))


def test_retry_after_is_read_as_seconds_or_an_http_date() -> None:
    now = datetime(2030, 1, 1, tzinfo=UTC)
    assert retry_after_seconds("120", now) == 120.0
    assert retry_after_seconds("Tue, 01 Jan 2030 00:00:30 GMT", now) == 30.0
    assert retry_after_seconds("Mon, 31 Dec 2029 00:00:00 GMT", now) == 0.0
    assert retry_after_seconds("soon", now) is None and retry_after_seconds(None) is None


def test_a_refused_kick_off_and_a_failed_export_give_the_servers_reason(
    fhir_server: Any, proxy: FaultProxy, tmp_path: Path
) -> None:
    client = BulkExportClient(fhir_server.token, FAST)
    missing = ExportRequest(fhir_server.base_url, "group", "no-such-group", TYPES)
    with pytest.raises(ExportFailed, match=r"kick-off refused: HTTP 404.*not found") as refused:
        client.run(missing, tmp_path / "a")
    assert refused.value.status == 404

    issue = {"severity": "error", "code": "exception", "diagnostics": "disk full"}
    failure = {"resourceType": "OperationOutcome", "issue": [issue]}
    proxy.script_path("bulk-status", Fault(500, body=json.dumps(failure).encode()))
    with pytest.raises(ExportFailed, match="export failed: HTTP 500: disk full"):
        client.run(_request(proxy.base_url), tmp_path / "b")

    unauthorised = BulkExportClient("not-the-token", FAST)
    with pytest.raises(ExportFailed, match="HTTP 401"):
        unauthorised.run(_request(fhir_server.base_url), tmp_path / "c")


def test_error_files_are_kept_apart_and_summarised(
    fhir_server: Any, expected: dict[str, set[str]], tmp_path: Path
) -> None:
    """sekmet ignores ``_elements`` and says so in an OperationOutcome error file."""
    client = BulkExportClient(fhir_server.token, FAST)
    out = tmp_path / "export"
    result = client.run(_request(fhir_server.base_url, elements=("id",)), out)
    assert result.issues == Counter({("warning", "not-supported"): 1})
    assert [f.name for f in result.files if f.error_file] == ["_errors/OperationOutcome.001.ndjson"]
    assert _ids(out) == expected  # the error file is not read as data


def test_a_file_short_of_its_manifest_count_is_not_accepted(
    fhir_server: Any, proxy: FaultProxy, tmp_path: Path
) -> None:
    def inflate_counts(path: str, body: bytes) -> bytes:
        if "bulk-status" not in path:
            return body
        manifest = json.loads(body)
        for entry in manifest["output"]:
            entry["count"] += 1
        return json.dumps(manifest).encode()

    proxy.transform = inflate_counts
    client = BulkExportClient(fhir_server.token, FAST)
    with pytest.raises(ExportError, match=r"manifest says \d+ resources, got \d+"):
        client.run(_request(proxy.base_url), tmp_path / "export")
    assert not list((tmp_path / "export").glob("*.ndjson"))


def test_files_are_fetched_without_the_token_when_the_manifest_says_so(
    fhir_server: Any, proxy: FaultProxy, tmp_path: Path
) -> None:
    """sekmet's files do need the token: a 401 proves the client did not send it."""

    def no_token_needed(path: str, body: bytes) -> bytes:
        return body.replace(b'"requiresAccessToken":true', b'"requiresAccessToken":false')

    proxy.transform = no_token_needed
    client = BulkExportClient(fhir_server.token, FAST)
    with pytest.raises(ExportFailed, match="download refused: HTTP 401"):
        client.run(_request(proxy.base_url), tmp_path / "export")


def _export_args(base_url: str, out: Path) -> list[str]:
    """``cds population export`` of the test group."""
    return ["population", "export", base_url, str(out), "--group", GROUP,
            "--type", ",".join(TYPES), "--operator", "ci"]  # fmt: skip


def _start_export_process(base_url: str, out: Path, token: str, database_url: str) -> Any:
    command = [sys.executable, "-m", "cds.cli", *_export_args(base_url, out)]
    env = repo_env(DATABASE_URL=database_url, WARDROUND_BULK_TOKEN=token)
    return subprocess.Popen(
        command, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, start_new_session=True
    )


def _wait_for(condition: Any, process: Any, timeout: float = 60.0) -> None:
    deadline = time.monotonic() + timeout
    while not condition():
        if process.poll() is not None:
            raise AssertionError(f"export exited early: {process.stderr.read().decode()[-2000:]}")
        if time.monotonic() > deadline:
            process.kill()
            raise TimeoutError(f"never got there: {process.stderr.read().decode()[-2000:]}")
        time.sleep(0.1)


def _kill(process: Any) -> None:
    os.killpg(process.pid, signal.SIGKILL)
    process.wait(10)
    process.stderr.close()


def _state(out: Path) -> dict[str, Any]:
    try:
        return json.loads((out / STATE_FILE).read_text())
    except (OSError, ValueError):
        return {}


@pytest.fixture
def audit_url(tmp_path: Path) -> str:
    url = f"sqlite:///{tmp_path / 'audit.db'}"
    assert CliRunner().invoke(main, ["db", "upgrade"], env={"DATABASE_URL": url}).exit_code == 0
    return url


def test_a_killed_download_resumes_without_fetching_finished_files_again(
    fhir_server: Any,
    proxy: FaultProxy,
    expected: dict[str, set[str]],
    tmp_path: Path,
    audit_url: str,
) -> None:
    out = tmp_path / "export"
    # the third file breaks off after 200 bytes and hangs there (the client has its .part)
    proxy.script_path("bulk-files", Fault(), Fault(), Fault(cut_after=200, stall_s=60))
    process = _start_export_process(proxy.base_url, out, fhir_server.token, audit_url)
    _wait_for(
        lambda: len(_state(out).get("files", {})) == 2 and any(out.glob("*.part")),
        process,
    )
    _kill(process)
    finished = {entry["url"] for entry in _state(out)["files"].values()}
    proxy.requests.clear()

    result = CliRunner().invoke(
        main,
        _export_args(proxy.base_url, out),
        env={"DATABASE_URL": audit_url, "WARDROUND_BULK_TOKEN": fhir_server.token},
    )

    assert result.exit_code == 0, result.output
    assert "(2 kept from before)" in result.output
    assert not [r for r in proxy.requests if "$export" in r or "bulk-status" in r]
    fetched = {r for r in proxy.requests if "bulk-files" in r}
    assert len(fetched) == len(expected) - 2
    assert not {url.split("/fhir", 1)[1] for url in finished} & {r.split("?")[0] for r in fetched}
    assert _ids(out) == expected and not list(out.glob("*.part"))
    engine = make_engine(audit_url)
    with make_sessionmaker(engine)() as session:
        (run,) = recent_runs(session)
    engine.dispose()
    assert (run.service_id, run.status_code, run.user_id) == ("population:export", 200, "ci")
    assert run.fhir_server == proxy.base_url
    assert {d["key"]: d["entries"] for d in run.prefetch_fetched} == {
        k: len(v) for k, v in expected.items()
    }


def test_an_export_killed_while_waiting_resumes_at_its_status_url(
    fhir_server: Any,
    proxy: FaultProxy,
    expected: dict[str, set[str]],
    tmp_path: Path,
    audit_url: str,
) -> None:
    out = tmp_path / "export"
    proxy.script_path("bulk-status", Fault(202, (("Retry-After", "60"),)))
    process = _start_export_process(proxy.base_url, out, fhir_server.token, audit_url)
    _wait_for(lambda: "bulk-status" in " ".join(proxy.requests), process)
    status_url = _state(out)["status_url"]
    _kill(process)
    proxy.requests.clear()

    result = BulkExportClient(fhir_server.token, FAST).run(_request(proxy.base_url), out)

    assert result.status_url == status_url
    assert not [r for r in proxy.requests if "$export" in r]  # not kicked off again
    assert proxy.requests[0].startswith("/fhir/bulk-status/")
    assert _ids(out) == expected


def test_a_cancelled_export_is_gone_and_can_be_started_again(
    fhir_server: Any, expected: dict[str, set[str]], tmp_path: Path
) -> None:
    client = BulkExportClient(fhir_server.token, FAST)
    out = tmp_path / "export"
    client.start(_request(fhir_server.base_url), out)

    assert client.cancel(out) == 202

    with pytest.raises(ExportExpired, match="no longer knows this export"):
        client.run(_request(fhir_server.base_url), out)
    client.run(_request(fhir_server.base_url), out, restart=True)
    assert _ids(out) == expected


def test_a_folder_holding_another_export_is_refused(fhir_server: Any, tmp_path: Path) -> None:
    client = BulkExportClient(fhir_server.token, FAST)
    client.start(_request(fhir_server.base_url), tmp_path)
    other = ExportRequest(fhir_server.base_url, "group", GROUP, ("Patient",))
    with pytest.raises(ExportError, match="holds a different export"):
        client.run(other, tmp_path)
    client.cancel(tmp_path)


def test_a_failed_export_is_audited_with_what_it_downloaded(
    fhir_server: Any, proxy: FaultProxy, tmp_path: Path, audit_url: str
) -> None:
    """The server loses the export after two files: both are in the audit row."""
    out = tmp_path / "export"
    gone = Fault(404, body=b'{"resourceType": "OperationOutcome", "issue": []}')
    proxy.script_path("bulk-files", Fault(), Fault(), gone)
    result = CliRunner().invoke(
        main,
        _export_args(proxy.base_url, out),
        env={"DATABASE_URL": audit_url, "WARDROUND_BULK_TOKEN": fhir_server.token},
    )
    assert result.exit_code == 1
    assert "no longer has this file" in result.output and "restart" in result.output
    engine = make_engine(audit_url)
    with make_sessionmaker(engine)() as session:
        (run,) = recent_runs(session)
    engine.dispose()
    assert (run.status_code, run.error_code) == (410, "ExportExpired")
    files = [f for d in run.prefetch_fetched for f in d["files"]]
    assert len(files) == 2
    for file in files:
        assert hashlib.sha256((out / file["name"]).read_bytes()).hexdigest() == file["sha256"]
