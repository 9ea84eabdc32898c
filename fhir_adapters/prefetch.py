"""Prefetch: render a service's templates, use what the EHR sent, fetch what it did not.

CDS Hooks 2.0 §Prefetch: a key that is *absent* means the client did not (or could not)
prefetch it, so the service fetches it from ``fhirServer`` itself; a key present with
``null`` means the client looked and there is no data, so it is not fetched again.
Missing keys are fetched in parallel under one deadline for the whole request.
"""

from __future__ import annotations

import dataclasses
import re
import time
from collections.abc import Mapping
from concurrent.futures import Future, ThreadPoolExecutor, wait
from dataclasses import dataclass
from typing import Any
from urllib.parse import quote

from fhir_adapters.fhir_client import FhirClient, FhirError

TOKEN = re.compile(r"\{\{\s*([A-Za-z][A-Za-z0-9_.]*)\s*\}\}")
#: User tokens (2.0) and the FHIR resource type of ``context.userId`` each one needs.
USER_TOKENS = {
    "userPractitionerId": "Practitioner",
    "userPractitionerRoleId": "PractitionerRole",
    "userPatientId": "Patient",
    "userRelatedPersonId": "RelatedPerson",
}
#: Sources of a prefetch key, as recorded in the audit log.
SUPPLIED, SUPPLIED_NULL, FETCHED, FAILED, TIMED_OUT, NOT_FETCHABLE = (
    "prefetch", "prefetch-null", "fetched", "failed", "timeout", "not-fetchable"
)  # fmt: skip


class TemplateError(ValueError):
    """A token of the template has no value in this request's context."""


def render_template(template: str, context: Mapping[str, Any]) -> str:
    """Fill ``{{context.x}}`` and the user tokens; values are URL-encoded."""

    def value(match: re.Match[str]) -> str:
        name = match.group(1)
        if name.startswith("context."):
            field = name.removeprefix("context.")
            item = context.get(field)
            # Only root-level primitive context fields are prefetch tokens.
            if isinstance(item, bool) or not isinstance(item, str | int | float):
                raise TemplateError(f"{{{{{name}}}}} has no primitive value in the context")
            return quote(str(item), safe="")
        if name in USER_TOKENS:
            kind, _, user_id = str(context.get("userId") or "").partition("/")
            if kind != USER_TOKENS[name] or not user_id:
                raise TemplateError(f"{{{{{name}}}}}: context.userId is not a {USER_TOKENS[name]}")
            return quote(user_id, safe="")
        raise TemplateError(f"unknown prefetch token {{{{{name}}}}}")

    return TOKEN.sub(value, template)


def template_type(template: str) -> str:
    """The resource type a template reads or searches: its first path segment."""
    return template.split("?", 1)[0].split("/", 1)[0]


def is_read(url: str) -> bool:
    """``Type/id`` (an instance read) rather than a search."""
    return "?" not in url and url.count("/") == 1


@dataclass(frozen=True)
class KeyOutcome:
    """How one prefetch key was obtained: recorded in the audit log (no data, no token)."""

    key: str
    source: str
    #: The FHIR resource type the template asks for (``Patient``, ``Observation``, …).
    resource_type: str | None = None
    ms: float | None = None
    pages: int | None = None
    entries: int | None = None
    status: int | None = None
    error: str | None = None
    truncated: bool = False

    def to_json(self) -> dict[str, Any]:
        return {k: v for k, v in self.__dict__.items() if v is not None and v is not False}


@dataclass(frozen=True)
class ResolvedPrefetch:
    #: key → FHIR JSON, or None where there is no data. Keys that could not be had are absent.
    data: Mapping[str, dict[str, Any] | None]
    outcomes: tuple[KeyOutcome, ...]

    @property
    def supplied(self) -> tuple[str, ...]:
        return tuple(o.key for o in self.outcomes if o.source in (SUPPLIED, SUPPLIED_NULL))

    @property
    def unavailable(self) -> dict[str, str]:
        """Keys that could not be had, and why (an error code)."""
        return {o.key: o.error or o.source for o in self.outcomes if o.key not in self.data}

    def refused(self, keys: set[str]) -> bool:
        """The FHIR server refused our token (401/403) for one of ``keys``."""
        return any(o.key in keys and o.status in (401, 403) for o in self.outcomes)


@dataclass(frozen=True)
class _Fetched:
    data: dict[str, Any] | None = None
    ms: float = 0.0
    pages: int | None = None
    entries: int | None = None
    truncated: bool = False
    error: FhirError | None = None


def _fetch(client: FhirClient, url: str) -> _Fetched:
    """Run in a pool thread. Never raises: a FhirError comes back in ``error``."""
    started = time.perf_counter()

    def ms() -> float:
        return round((time.perf_counter() - started) * 1000, 1)

    try:
        if is_read(url):
            return _Fetched(client.get(url), ms(), pages=1)
        result = client.search(url)
        count = len(result.bundle["entry"])
        return _Fetched(result.bundle, ms(), result.pages, count, result.truncated)
    except FhirError as exc:
        if is_read(url) and exc.status in (404, 410):  # no such resource: no data, as null
            return _Fetched(None, ms(), pages=1)
        return _Fetched(ms=ms(), error=exc)


def _outcome(key: str, fetched: _Fetched) -> KeyOutcome:
    if fetched.error is not None:
        error = fetched.error
        return KeyOutcome(key, FAILED, ms=fetched.ms, status=error.status, error=error.code)
    return KeyOutcome(
        key,
        FETCHED,
        ms=fetched.ms,
        pages=fetched.pages,
        entries=fetched.entries,
        truncated=fetched.truncated,
    )


class PrefetchFetcher:
    """Fetches missing prefetch keys on a shared, bounded thread pool, under one deadline.

    The deadline counts from the hook call's arrival, and fetching stops ``reserve_s``
    before it: the time the service, the audit write and the answer still need, so the
    call is answered by the deadline (with a frozen FHIR server and 8 calls at once on 2
    cores, the last answers reached the client up to ~180 ms after the fetch gave up, up to
    ~280 ms during a full CI run: ``tests/reliability/test_fhir_server_frozen.py``).
    """

    def __init__(
        self, executor: ThreadPoolExecutor, deadline_s: float = 2.0, reserve_s: float = 0.2
    ) -> None:
        self.executor = executor
        self.deadline_s = deadline_s
        self.reserve_s = min(reserve_s, deadline_s / 2)

    def resolve(
        self,
        templates: Mapping[str, str],
        supplied: Mapping[str, dict[str, Any] | None] | None,
        context: Mapping[str, Any],
        client: FhirClient | None,
        started: float | None = None,
    ) -> ResolvedPrefetch:
        """``started``: ``time.perf_counter()`` when the hook call arrived; the deadline
        counts from then (default: from now)."""
        supplied = supplied or {}
        started = time.perf_counter() if started is None else started
        data: dict[str, dict[str, Any] | None] = {}
        outcomes: dict[str, KeyOutcome] = {}
        jobs: dict[str, Future[_Fetched]] = {}
        for key, template in templates.items():
            if key in supplied:
                data[key] = supplied[key]
                source = SUPPLIED if supplied[key] is not None else SUPPLIED_NULL
                outcomes[key] = KeyOutcome(key, source)
            elif client is None:
                outcomes[key] = KeyOutcome(key, NOT_FETCHABLE, error="no_fhir_server")
            else:
                try:
                    url = render_template(template, context)
                except TemplateError:
                    outcomes[key] = KeyOutcome(key, NOT_FETCHABLE, error="template_token")
                    continue
                jobs[key] = self.executor.submit(_fetch, client, url)
        remaining = max(0.0, started + self.deadline_s - self.reserve_s - time.perf_counter())
        fetch_started = time.perf_counter()
        wait(jobs.values(), timeout=remaining)
        elapsed_ms = round((time.perf_counter() - fetch_started) * 1000, 1)
        for key, job in jobs.items():
            if job.done():
                fetched = job.result()
                outcomes[key] = _outcome(key, fetched)
                if fetched.error is None:
                    data[key] = fetched.data
            else:
                job.cancel()  # not started yet: never runs; running: finishes on its timeout
                outcomes[key] = KeyOutcome(key, TIMED_OUT, ms=elapsed_ms, error="deadline")
        return ResolvedPrefetch(
            data=data,
            outcomes=tuple(
                dataclasses.replace(outcomes[key], resource_type=template_type(templates[key]))
                for key in templates
            ),
        )
