"""A FHIR Bulk Data ``$export`` client (Bulk Data Access IG 2.0), resumable.

1. **Kick-off**: ``GET [base]/$export`` (or ``Patient/$export``, ``Group/<id>/$export``)
   with ``Accept: application/fhir+json`` and ``Prefer: respond-async``; the server
   answers ``202 Accepted`` with the status URL in ``Content-Location``.
2. **Status**: polled until ``200`` with the manifest. ``202`` means running
   (``X-Progress`` is reported); the wait is the server's ``Retry-After`` (seconds or an
   HTTP date), else an exponential back-off. ``429`` is waited out the same way;
   ``502/503/504``, a 5xx whose OperationOutcome has a *transient* issue code, and lost
   connections are retried a bounded number of times. Any other 4xx/5xx ends the export
   with the server's OperationOutcome text (:class:`ExportFailed`).
3. **Download**: each ``output`` file (and each ``error`` file: OperationOutcomes, kept
   apart in ``_errors/``) is streamed to ``<name>.part`` with the bearer token when the
   manifest ``requiresAccessToken`` (and without it otherwise), counted and hashed,
   checked against the manifest's ``count``, then renamed. A broken download is retried.

**Resume.** Progress is kept in ``.export-state.json`` in the output folder (written
atomically after every step; never the token). Run again with the same request and
folder: an export already kicked off is polled at its status URL, not started again;
finished files are kept; a partial file is downloaded again from the start. A server
that no longer knows the export (404/410 on the status URL or a file) ends it with
:class:`ExportExpired`: start again with ``restart=True`` (files of two exports are never
mixed). :meth:`BulkExportClient.cancel` sends ``DELETE`` to the status URL.

Not covered: the SMART Backend Services token request (the caller supplies a bearer
token), ``POST`` kick-off with a Parameters body, and the ``deleted`` array of
``_since`` exports (listed in the summary, not downloaded).
"""

from __future__ import annotations

import email.utils
import hashlib
import json
import os
import time
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, Literal
from urllib.parse import urlencode, urljoin

import requests

FHIR_JSON = "application/fhir+json"
NDJSON = "application/fhir+ndjson"
STATE_FILE = ".export-state.json"
MANIFEST_FILE = "manifest.json"
ERRORS_FOLDER = "_errors"
TRANSIENT_STATUSES = frozenset({502, 503, 504})
#: IssueType codes that mean "try again later" (the transient branch of FHIR R4 issue-type,
#: less its catch-all ``exception``, which servers also use for a failed export).
TRANSIENT_ISSUES = frozenset(
    {"transient", "lock-error", "no-store", "timeout", "incomplete", "throttled"}
)
_CHUNK = 1 << 20

Level = Literal["system", "patient", "group"]


class ExportError(RuntimeError):
    """The export cannot go on. ``status`` is the last HTTP status (None: no answer)."""

    def __init__(self, message: str, status: int | None = None) -> None:
        super().__init__(message)
        self.status = status


class ExportFailed(ExportError):
    """The server refused the kick-off, or reported the export as failed."""


class ExportExpired(ExportError):
    """The server no longer has this export (or one of its files): start it again."""


class ExportTimedOut(ExportError):
    """Not complete within the time allowed; run again later to go on polling."""


class ExportStateMismatch(ExportError):
    """The output folder holds the state of a different export request."""


@dataclass(frozen=True)
class ExportRequest:
    base_url: str
    level: Level = "system"
    group_id: str | None = None
    types: tuple[str, ...] = ()
    since: str | None = None
    type_filters: tuple[str, ...] = ()
    #: ``_elements``: only these elements (servers may ignore it and say so in ``error``).
    elements: tuple[str, ...] = ()

    def __post_init__(self) -> None:
        if self.level == "group" and not self.group_id:
            raise ValueError("a group-level export needs group_id")
        if self.level != "group" and self.group_id:
            raise ValueError("group_id is only for a group-level export")

    @property
    def kickoff_url(self) -> str:
        base = self.base_url.rstrip("/")
        path = {"system": "$export", "patient": "Patient/$export"}.get(
            self.level, f"Group/{self.group_id}/$export"
        )
        params: list[tuple[str, str]] = [("_outputFormat", NDJSON)]
        if self.types:
            params.append(("_type", ",".join(self.types)))
        if self.since:
            params.append(("_since", self.since))
        params.extend(("_typeFilter", f) for f in self.type_filters)
        if self.elements:
            params.append(("_elements", ",".join(self.elements)))
        return f"{base}/{path}?{urlencode(params)}"


@dataclass(frozen=True)
class ExportSettings:
    #: (connect, read) timeout of one HTTP call, seconds.
    timeout: tuple[float, float] = (10.0, 300.0)
    #: Attempts per HTTP call for transient faults (429, 502-504, lost connections).
    attempts: int = 6
    #: First back-off when the server gives no Retry-After; doubled each time, up to max.
    backoff_s: float = 1.0
    max_backoff_s: float = 120.0
    #: Longest server-directed wait honoured; a longer Retry-After is shortened to this.
    max_retry_after_s: float = 3600.0
    #: Give up polling after this long (the state is kept: run again to go on).
    max_wait_s: float = 24 * 3600.0


@dataclass(frozen=True)
class ExportEvent:
    """Progress, for a progress display: ``kind`` and what goes with it (never the token)."""

    kind: str  # kicked-off | resumed | waiting | retry | manifest | downloaded | kept | done
    detail: str = ""
    seconds: float | None = None
    bytes: int | None = None
    #: With ``manifest``: how many files are to be downloaded.
    files: int | None = None


@dataclass(frozen=True)
class DownloadedFile:
    url: str
    name: str
    resource_type: str
    resources: int
    bytes: int
    sha256: str
    error_file: bool = False

    def to_json(self) -> dict[str, Any]:
        return self.__dict__.copy()


@dataclass
class ExportResult:
    folder: Path
    status_url: str
    manifest: dict[str, Any]
    files: list[DownloadedFile] = field(default_factory=list)
    #: Issues reported in the manifest's error files: (severity, code) → count.
    issues: Counter[tuple[str, str]] = field(default_factory=Counter)
    #: How many files were already complete from an earlier run.
    resumed_files: int = 0

    @property
    def resources(self) -> Counter[str]:
        counts: Counter[str] = Counter()
        for f in self.files:
            if not f.error_file:
                counts[f.resource_type] += f.resources
        return counts


# --------------------------------------------------------------------------- small parts
def retry_after_seconds(value: str | None, now: datetime | None = None) -> float | None:
    """``Retry-After`` as seconds: delta-seconds or an HTTP date (RFC 9110 §10.2.3)."""
    if value is None or not value.strip():
        return None
    text = value.strip()
    if text.isdigit():
        return float(text)
    try:
        when = email.utils.parsedate_to_datetime(text)
    except (TypeError, ValueError):
        return None
    if when.tzinfo is None:
        when = when.replace(tzinfo=UTC)
    return max(0.0, (when - (now or datetime.now(UTC))).total_seconds())


def outcome_text(response: requests.Response) -> tuple[str, frozenset[str]]:
    """An OperationOutcome body's diagnostics (capped) and its issue codes."""
    try:
        body = response.json()
    except ValueError:
        return f"HTTP {response.status_code}", frozenset()
    if not isinstance(body, dict) or body.get("resourceType") != "OperationOutcome":
        return f"HTTP {response.status_code}", frozenset()
    issues = [i for i in body.get("issue") or [] if isinstance(i, dict)]
    texts = [
        str(i.get("diagnostics") or (i.get("details") or {}).get("text") or i.get("code"))
        for i in issues
    ]
    codes = frozenset(str(i.get("code")) for i in issues if i.get("code"))
    return f"HTTP {response.status_code}: " + "; ".join(texts)[:500], codes


def _write_json_atomically(path: Path, value: Any) -> None:
    temporary = path.with_name(path.name + ".tmp")
    temporary.write_text(json.dumps(value, indent=2, sort_keys=True))
    os.replace(temporary, path)


class _Transient(Exception):
    """One HTTP call failed in a way worth another try."""

    def __init__(self, reason: str, wait: float | None) -> None:
        super().__init__(reason)
        self.wait = wait


# --------------------------------------------------------------------------- the client
class BulkExportClient:
    """Runs one export into a folder; see the module docstring.

    ``token`` is the bearer token (kick-off, status and, when the manifest asks, file
    downloads); it is used, never stored or logged. ``sleep`` and ``on_event`` are for
    the caller's clock and progress display.
    """

    def __init__(
        self,
        token: str | None,
        settings: ExportSettings | None = None,
        *,
        session: requests.Session | None = None,
        sleep: Callable[[float], None] = time.sleep,
        on_event: Callable[[ExportEvent], None] | None = None,
    ) -> None:
        self.token = token
        self.settings = settings or ExportSettings()
        self.session = session or requests.Session()
        self.sleep = sleep
        self.on_event = on_event or (lambda event: None)

    # ----------------------------------------------------------------- HTTP
    def _headers(self, accept: str, with_token: bool = True) -> dict[str, str]:
        headers = {"Accept": accept}
        if with_token and self.token:
            headers["Authorization"] = f"Bearer {self.token}"
        return headers

    def _wait(self, seconds: float, why: str) -> None:
        seconds = min(seconds, self.settings.max_retry_after_s)
        self.on_event(ExportEvent("waiting", why, seconds=seconds))
        self.sleep(seconds)

    def _call(
        self, method: str, url: str, headers: dict[str, str], *, stream: bool = False
    ) -> requests.Response:
        """One HTTP call, retried on transient faults; any other answer is returned."""
        backoff = self.settings.backoff_s
        for attempt in range(1, self.settings.attempts + 1):
            try:
                response = self.session.request(
                    method, url, headers=headers, timeout=self.settings.timeout, stream=stream
                )
                self._raise_if_transient(response)
                return response
            except (
                requests.ConnectionError,
                requests.Timeout,
                requests.exceptions.ChunkedEncodingError,
            ) as exc:
                failure = _Transient(type(exc).__name__, None)
            except _Transient as exc:
                failure = exc
            if attempt == self.settings.attempts:
                raise ExportError(f"{method} gave up after {attempt} attempts: {failure}")
            wait = failure.wait if failure.wait is not None else backoff
            self.on_event(ExportEvent("retry", str(failure), seconds=wait))
            self._wait(wait, str(failure))
            backoff = min(backoff * 2, self.settings.max_backoff_s)
        raise AssertionError("unreachable")

    def _raise_if_transient(self, response: requests.Response) -> None:
        status = response.status_code
        wait = retry_after_seconds(response.headers.get("Retry-After"))
        if status == 429 or status in TRANSIENT_STATUSES:
            response.close()
            raise _Transient(f"HTTP {status}", wait)
        if status >= 500:
            text, codes = outcome_text(response)
            if codes and codes <= TRANSIENT_ISSUES:
                raise _Transient(text, wait)

    # ----------------------------------------------------------------- the steps
    def run(self, request: ExportRequest, folder: Path, *, restart: bool = False) -> ExportResult:
        """Kick off (or resume) ``request``, wait for it and download it into ``folder``."""
        state = self.start(request, folder, restart=restart)
        state_path = folder / STATE_FILE
        if state.get("manifest") is None:
            state["manifest"] = self.wait_for_manifest(state["status_url"])
            _write_json_atomically(state_path, state)
            _write_json_atomically(folder / MANIFEST_FILE, state["manifest"])
        result = self._download_all(state, state_path, folder)
        state["completed_at"] = datetime.now(UTC).isoformat()
        _write_json_atomically(state_path, state)
        self.on_event(ExportEvent("done", f"{len(result.files)} files", files=len(result.files)))
        return result

    def start(
        self, request: ExportRequest, folder: Path, *, restart: bool = False
    ) -> dict[str, Any]:
        """Kick ``request`` off, its status URL kept in ``folder`` (or find it kept there)."""
        folder.mkdir(parents=True, exist_ok=True)
        state_path = folder / STATE_FILE
        if restart:
            self._clear(folder)
        state = self._load_state(state_path, request)
        if state.get("status_url"):
            self.on_event(ExportEvent("resumed", "export already kicked off"))
        else:
            state["status_url"] = self.kick_off(request)
            state["kicked_off_at"] = datetime.now(UTC).isoformat()
            _write_json_atomically(state_path, state)
        return state

    def kick_off(self, request: ExportRequest) -> str:
        headers = self._headers(FHIR_JSON) | {"Prefer": "respond-async"}
        response = self._call("GET", request.kickoff_url, headers)
        if response.status_code != 202:
            text, _ = outcome_text(response)
            raise ExportFailed(f"kick-off refused: {text}", response.status_code)
        location = response.headers.get("Content-Location")
        if not location:
            raise ExportFailed("kick-off answered 202 without Content-Location", 202)
        status_url = urljoin(request.kickoff_url, location)
        self.on_event(ExportEvent("kicked-off", status_url))
        return status_url

    def wait_for_manifest(self, status_url: str) -> dict[str, Any]:
        started = time.monotonic()
        backoff = self.settings.backoff_s
        while True:
            response = self._call("GET", status_url, self._headers(FHIR_JSON))
            if response.status_code == 200:
                return self._manifest(response)
            if response.status_code in (404, 410):
                raise ExportExpired(
                    "the server no longer knows this export (status URL "
                    f"answered {response.status_code}): start it again with restart",
                    response.status_code,
                )
            if response.status_code != 202:
                text, _ = outcome_text(response)
                raise ExportFailed(f"export failed: {text}", response.status_code)
            waited = time.monotonic() - started
            if waited > self.settings.max_wait_s:
                raise ExportTimedOut(
                    f"not complete after {waited:.0f} s; run again to go on polling", 202
                )
            wait = retry_after_seconds(response.headers.get("Retry-After"))
            if wait is None:
                wait, backoff = backoff, min(backoff * 2, self.settings.max_backoff_s)
            self._wait(wait, response.headers.get("X-Progress", "in progress"))

    @staticmethod
    def _manifest(response: requests.Response) -> dict[str, Any]:
        try:
            manifest = response.json()
        except ValueError:
            raise ExportFailed("the completed export's manifest is not JSON", 200) from None
        entries = manifest.get("output") if isinstance(manifest, dict) else None
        if not isinstance(entries, list):
            raise ExportFailed("the manifest has no output array", 200)
        for entry in [*entries, *(manifest.get("error") or [])]:
            if not isinstance(entry, dict) or not entry.get("url") or not entry.get("type"):
                raise ExportFailed("a manifest entry lacks its url or type", 200)
        return manifest

    # ----------------------------------------------------------------- downloads
    def _download_all(self, state: dict[str, Any], state_path: Path, folder: Path) -> ExportResult:
        manifest = state["manifest"]
        result = ExportResult(folder, state["status_url"], manifest)
        done: dict[str, dict[str, Any]] = state.setdefault("files", {})
        with_token = bool(manifest.get("requiresAccessToken", True))
        numbers: Counter[tuple[str, bool]] = Counter()
        planned = [(e, False) for e in manifest["output"]]
        planned += [(e, True) for e in manifest.get("error") or []]
        self.on_event(ExportEvent("manifest", f"{len(planned)} files", files=len(planned)))
        for entry, is_error in planned:
            kind = str(entry["type"])
            numbers[(kind, is_error)] += 1
            name = f"{kind}.{numbers[(kind, is_error)]:03d}.ndjson"
            name = f"{ERRORS_FOLDER}/{name}" if is_error else name
            url = urljoin(state["status_url"], str(entry["url"]))
            previous = done.get(url)
            if previous is not None and _intact(folder / previous["name"], previous["bytes"]):
                result.files.append(DownloadedFile(**previous))
                result.resumed_files += 1
                self.on_event(ExportEvent("kept", previous["name"], bytes=previous["bytes"]))
                continue
            downloaded = self._download(
                url, folder / name, name, kind, entry.get("count"), with_token, is_error
            )
            done[url] = downloaded.to_json()
            _write_json_atomically(state_path, state)
            result.files.append(downloaded)
            self.on_event(ExportEvent("downloaded", name, bytes=downloaded.bytes))
        for f in result.files:
            if f.error_file:
                result.issues.update(_issues(folder / f.name))
        return result

    def _download(
        self,
        url: str,
        target: Path,
        name: str,
        kind: str,
        expected: Any,
        with_token: bool,
        is_error: bool,
    ) -> DownloadedFile:
        target.parent.mkdir(parents=True, exist_ok=True)
        part = target.with_name(target.name + ".part")
        backoff = self.settings.backoff_s
        for attempt in range(1, self.settings.attempts + 1):
            part.unlink(missing_ok=True)  # a partial file is never continued
            response = self._call("GET", url, self._headers(NDJSON, with_token), stream=True)
            if response.status_code in (404, 410):
                raise ExportExpired(
                    f"{name}: the server no longer has this file (HTTP {response.status_code}); "
                    "start the export again with restart",
                    response.status_code,
                )
            if response.status_code != 200:
                text, _ = outcome_text(response)
                raise ExportFailed(f"{name}: download refused: {text}", response.status_code)
            try:
                size, digest, resources = _stream_to(response, part)
            except (requests.ConnectionError, requests.exceptions.ChunkedEncodingError) as exc:
                reason = f"{name}: download broke off ({type(exc).__name__})"
            else:
                if isinstance(expected, int) and expected != resources:
                    reason = f"{name}: manifest says {expected} resources, got {resources}"
                else:
                    os.replace(part, target)
                    return DownloadedFile(url, name, kind, resources, size, digest, is_error)
            if attempt == self.settings.attempts:
                raise ExportError(reason)
            self.on_event(ExportEvent("retry", reason, seconds=backoff))
            self._wait(backoff, reason)
            backoff = min(backoff * 2, self.settings.max_backoff_s)
        raise AssertionError("unreachable")

    # ----------------------------------------------------------------- state
    def _load_state(self, path: Path, request: ExportRequest) -> dict[str, Any]:
        fresh = {"version": 1, "kickoff_url": request.kickoff_url, "manifest": None}
        if not path.is_file():
            return fresh
        try:
            state = json.loads(path.read_text())
        except ValueError:
            raise ExportStateMismatch(f"{path} is not readable JSON; use restart") from None
        if state.get("kickoff_url") != request.kickoff_url:
            raise ExportStateMismatch(
                f"{path.parent} holds a different export ({state.get('kickoff_url')}); "
                "use another folder, or restart"
            )
        return state

    def _clear(self, folder: Path) -> None:
        state_path = folder / STATE_FILE
        if state_path.is_file():
            try:
                state = json.loads(state_path.read_text())
            except ValueError:
                state = {}
            for entry in (state.get("files") or {}).values():
                (folder / entry["name"]).unlink(missing_ok=True)
            state_path.unlink()
        (folder / MANIFEST_FILE).unlink(missing_ok=True)
        for leftover in [*folder.glob("*.part"), *folder.glob(f"{ERRORS_FOLDER}/*.part")]:
            leftover.unlink()

    @staticmethod
    def downloaded(folder: Path) -> list[DownloadedFile]:
        """The files of the export in ``folder`` downloaded so far (complete ones only)."""
        try:
            state = json.loads((folder / STATE_FILE).read_text())
        except (OSError, ValueError):
            return []
        return [
            DownloadedFile(**entry)
            for entry in (state.get("files") or {}).values()
            if _intact(folder / entry["name"], entry["bytes"])
        ]

    def cancel(self, folder: Path) -> int:
        """``DELETE`` the status URL of the export in ``folder``; the server's status code."""
        state_path = folder / STATE_FILE
        if not state_path.is_file():
            raise ExportError(f"{folder} holds no export to cancel")
        state = json.loads(state_path.read_text())
        response = self._call("DELETE", state["status_url"], self._headers(FHIR_JSON))
        if response.status_code not in (200, 202, 204):
            text, _ = outcome_text(response)
            raise ExportFailed(f"cancel refused: {text}", response.status_code)
        state["cancelled_at"] = datetime.now(UTC).isoformat()
        _write_json_atomically(state_path, state)
        return response.status_code


def _intact(path: Path, size: int) -> bool:
    return path.is_file() and path.stat().st_size == size


class _LineCounter:
    """Counts non-blank lines of a stream fed in chunks that may split lines."""

    def __init__(self) -> None:
        self.lines = 0
        self._open_line_has_text = False

    def feed(self, chunk: bytes) -> None:
        *complete, rest = chunk.split(b"\n")
        for segment in complete:
            if self._open_line_has_text or segment.strip():
                self.lines += 1
            self._open_line_has_text = False
        if rest.strip():
            self._open_line_has_text = True

    def finish(self) -> int:
        return self.lines + self._open_line_has_text


def _stream_to(response: requests.Response, part: Path) -> tuple[int, str, int]:
    """Write the body to ``part``; (bytes, SHA-256, resources = non-blank lines)."""
    digest = hashlib.sha256()
    counter = _LineCounter()
    size = 0
    with response, part.open("wb") as handle:
        for chunk in response.iter_content(_CHUNK):
            handle.write(chunk)
            digest.update(chunk)
            counter.feed(chunk)
            size += len(chunk)
        handle.flush()
        os.fsync(handle.fileno())
    return size, digest.hexdigest(), counter.finish()


def _issues(path: Path) -> Counter[tuple[str, str]]:
    """(severity, code) of every issue in an error file of OperationOutcomes."""
    counts: Counter[tuple[str, str]] = Counter()
    with path.open("rb") as handle:
        for raw in handle:
            try:
                outcome = json.loads(raw)
            except ValueError:
                counts[("error", "unreadable-error-line")] += 1
                continue
            for issue in (outcome.get("issue") or []) if isinstance(outcome, dict) else []:
                counts[(str(issue.get("severity")), str(issue.get("code")))] += 1
    return counts
