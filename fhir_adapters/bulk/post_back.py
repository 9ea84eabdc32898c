"""Post RiskAssessment NDJSON back to a FHIR server as ``transaction`` Bundles.

The population score job writes ``RiskAssessment.NNN.ndjson`` (bulk NDJSON). This module
streams those files, one line at a time, into FHIR R4 ``transaction`` Bundles of
``batch_size`` entries, each entry a ``PUT RiskAssessment/<id>`` (the ids are UUID 5 of
model, patient and day, so posting the same run again updates the same resources: a
re-run is idempotent), and POSTs each Bundle to the server's base URL with the bearer token.

* **Retries** are the project's urllib3 policy (:func:`fhir_adapters.fhir_client.
  budgeted_retry`, no hand-written loop): connection errors and 429/502/503/504 are
  retried with exponential back-off, ``Retry-After`` honoured up to
  :attr:`PostSettings.max_retry_after`. Retrying a POST is safe here because a transaction
  of PUTs by id is idempotent.
* **Results**: a ``transaction-response`` is checked entry by entry (``response.status``
  2xx counts as posted, anything else as failed with the entry's OperationOutcome text).
  A Bundle the server refuses as a whole (a transaction is all or nothing) fails all its
  entries, with the server's OperationOutcome text. A refused token (401/403) or a server
  that cannot be reached stops the run with :class:`PostError`: nothing after would fare
  better.
* **No PHI or token in logs**: nothing is logged here; the summary holds counts, resource
  ids (UUIDs) and the server's OperationOutcome text, never resource content. The token
  is sent on every request to the one base URL and never kept elsewhere.
"""

from __future__ import annotations

import json
from collections import Counter
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import requests
from requests.adapters import HTTPAdapter

from fhir_adapters.bulk.ndjson import (
    BulkFile,
    BulkInputError,
    ReadStats,
    read_resources,
    scan_folder,
)
from fhir_adapters.fhir_client import (
    FHIR_JSON,
    RetryAfterTooLong,
    budgeted_retry,
    no_answer,
    outcome_text,
    plain_session,
)

RESOURCE_TYPE = "RiskAssessment"
#: Failures kept in full in a summary (all are counted).
MAX_KEPT_FAILURES = 200


@dataclass(frozen=True)
class PostSettings:
    #: Entries per transaction Bundle.
    batch_size: int = 100
    #: (connect, read) timeout of one POST, seconds.
    timeout: tuple[float, float] = (10.0, 300.0)
    retries: int = 5
    backoff_factor: float = 0.5
    #: A Retry-After longer than this (seconds) is not waited for: the Bundle fails.
    max_retry_after: float = 120.0

    def __post_init__(self) -> None:
        if self.batch_size < 1:
            raise ValueError("batch_size must be at least 1")


class PostError(RuntimeError):
    """The post-back cannot go on (token refused, server unreachable, bad input).

    ``status`` is the HTTP status (None: no answer). The message never holds the token.
    """

    def __init__(self, code: str, message: str, status: int | None = None) -> None:
        super().__init__(message)
        self.code = code
        self.status = status


@dataclass(frozen=True)
class PostFailure:
    """One resource the server did not accept: its id, the status and the server's text."""

    resource_id: str
    status: str
    text: str

    def to_json(self) -> dict[str, str]:
        return {"id": self.resource_id, "status": self.status, "text": self.text}


@dataclass
class PostSummary:
    """What a post-back did: counts per outcome, and the first failures in full."""

    base_url: str
    files: list[str] = field(default_factory=list)
    bundles: int = 0
    posted: int = 0
    failed: int = 0
    #: Entry statuses of accepted resources ("201" created, "200" updated).
    statuses: Counter[str] = field(default_factory=Counter)
    failures: list[PostFailure] = field(default_factory=list)
    read: ReadStats = field(default_factory=ReadStats)

    @property
    def created(self) -> int:
        return self.statuses.get("201", 0)

    @property
    def updated(self) -> int:
        return self.statuses.get("200", 0)

    def add_failure(self, failure: PostFailure) -> None:
        self.failed += 1
        if len(self.failures) < MAX_KEPT_FAILURES:
            self.failures.append(failure)

    def to_json(self) -> dict[str, Any]:
        return {
            "base_url": self.base_url,
            "files": self.files,
            "bundles": self.bundles,
            "posted": self.posted,
            "created": self.created,
            "updated": self.updated,
            "failed": self.failed,
            "unreadable_lines": self.read.problem_total,
            "failures": [f.to_json() for f in self.failures],
        }


def risk_assessment_files(path: Path) -> list[BulkFile]:
    """The RiskAssessment NDJSON files of a score output folder (its ``fhir/``) or of a
    bulk folder holding them."""
    folder = path / "fhir" if (path / "fhir").is_dir() else path
    try:
        files = scan_folder(folder).files_of(RESOURCE_TYPE)
    except BulkInputError as exc:
        raise PostError("bad_input", str(exc)) from None
    if not files:
        raise PostError("bad_input", f"{folder}: no {RESOURCE_TYPE} NDJSON files")
    return list(files)


def transaction(resources: Iterable[dict[str, Any]]) -> dict[str, Any]:
    """A ``transaction`` Bundle of ``PUT <type>/<id>`` entries."""
    entries = []
    for resource in resources:
        url = f"{resource['resourceType']}/{resource['id']}"
        entries.append(
            {
                "fullUrl": url,
                "resource": resource,
                "request": {"method": "PUT", "url": url},
            }
        )
    return {"resourceType": "Bundle", "type": "transaction", "entry": entries}


def _batches(
    files: list[BulkFile], size: int, stats: ReadStats, on_bad: Callable[[str], None]
) -> Iterator[list[dict[str, Any]]]:
    batch: list[dict[str, Any]] = []
    for file in files:
        for resource in read_resources(file, stats):
            if not isinstance(resource.get("id"), str) or not resource["id"]:
                on_bad(f"{file.name}: a {RESOURCE_TYPE} without an id")
                continue
            batch.append(resource)
            if len(batch) >= size:
                yield batch
                batch = []
    if batch:
        yield batch


def _status_code(status: Any) -> str:
    """``"201 Created"`` → ``"201"``."""
    return str(status).strip().split(" ", 1)[0] if status else "?"


class PostBackClient:
    """Posts RiskAssessment NDJSON to one FHIR server base URL with one bearer token."""

    def __init__(
        self,
        base_url: str,
        token: str | None,
        settings: PostSettings | None = None,
        on_bundle: Callable[[PostSummary], None] | None = None,
    ) -> None:
        self.base_url = base_url.rstrip("/")
        self._token = token
        self.settings = settings or PostSettings()
        self._on_bundle = on_bundle
        retry = budgeted_retry(
            self.settings.retries,
            self.settings.backoff_factor,
            self.settings.max_retry_after,
            methods=frozenset({"POST"}),
        )
        self._session = plain_session(HTTPAdapter(max_retries=retry, pool_connections=1))

    def __repr__(self) -> str:  # never show the token
        return f"PostBackClient({self.base_url!r})"

    def close(self) -> None:
        self._session.close()

    def __enter__(self) -> PostBackClient:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    # ------------------------------------------------------------------ the run
    def post_files(self, files: list[BulkFile]) -> PostSummary:
        summary = PostSummary(self.base_url, files=[f.name for f in files])

        def bad(text: str) -> None:
            summary.add_failure(PostFailure("?", "invalid", text))

        for batch in _batches(files, self.settings.batch_size, summary.read, bad):
            self._post_bundle(batch, summary)
            summary.bundles += 1
            if self._on_bundle is not None:
                self._on_bundle(summary)
        return summary

    def post_folder(self, path: Path) -> PostSummary:
        return self.post_files(risk_assessment_files(path))

    # ------------------------------------------------------------------ one Bundle
    def _post(self, bundle: dict[str, Any]) -> requests.Response:
        headers = {"Content-Type": FHIR_JSON, "Accept": FHIR_JSON}
        if self._token:
            headers["Authorization"] = f"Bearer {self._token}"
        data = json.dumps(bundle, separators=(",", ":")).encode()
        try:
            return self._session.post(
                self.base_url, data=data, headers=headers, timeout=self.settings.timeout
            )
        except (RetryAfterTooLong, requests.RequestException) as exc:
            raise PostError(*no_answer(exc)) from None

    def _post_bundle(self, batch: list[dict[str, Any]], summary: PostSummary) -> None:
        response = self._post(transaction(batch))
        try:
            body = response.json()
        except ValueError:
            body = None
        status = response.status_code
        if status in (401, 403):
            text = outcome_text(body) or response.reason or "refused"
            raise PostError(
                "token_refused",
                f"the FHIR server refused the token (HTTP {status}: {text})",
                status,
            )
        if status >= 300:
            text = outcome_text(body) or response.reason or "error"
            for resource in batch:
                summary.add_failure(PostFailure(resource["id"], str(status), text))
            return
        entries = body.get("entry") if isinstance(body, dict) else None
        if (
            not isinstance(body, dict)
            or body.get("type") != "transaction-response"
            or not isinstance(entries, list)
            or len(entries) != len(batch)
        ):
            for resource in batch:
                summary.add_failure(
                    PostFailure(resource["id"], str(status), "not a transaction-response")
                )
            return
        for resource, entry in zip(batch, entries, strict=True):
            answer = entry.get("response") if isinstance(entry, dict) else None
            answer = answer if isinstance(answer, dict) else {}
            code = _status_code(answer.get("status"))
            if code.startswith("2"):
                summary.posted += 1
                summary.statuses[code] += 1
            else:
                text = outcome_text(answer.get("outcome")) or "not accepted"
                summary.add_failure(PostFailure(resource["id"], code, text))


def post_back(
    path: Path,
    base_url: str,
    token: str | None,
    settings: PostSettings | None = None,
    on_bundle: Callable[[PostSummary], None] | None = None,
) -> PostSummary:
    """Post the RiskAssessments under ``path`` (a score output or an NDJSON folder)."""
    with PostBackClient(base_url, token, settings, on_bundle) as client:
        return client.post_folder(path)
