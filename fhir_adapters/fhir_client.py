"""A FHIR R4 REST client for the EHR's ``fhirServer``: read, search with paging, Binary.

Built on ``requests`` with urllib3's :class:`~urllib3.util.retry.Retry` (no hand-written
retry loop): GETs are retried with exponential back-off on 429/502/503/504, honouring
``Retry-After`` up to :attr:`ClientSettings.max_retry_after` (a longer wait is not retried
early: the call fails); a 4xx other than 429 is never retried. Connections are pooled per
FHIR server origin and shared by all requests of the process; the bearer token is sent per
call (it belongs to one CDS Hooks request and is never stored or logged).

Paging follows ``Bundle.link[relation=next]`` up to :attr:`ClientSettings.max_pages`, and
only to the same origin as the FHIR server, so the token never leaves for another host.
"""

from __future__ import annotations

import json
import threading
from collections import OrderedDict
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any
from urllib.parse import urljoin, urlsplit

import requests
from requests.adapters import HTTPAdapter
from urllib3.util.retry import Retry

from fhir_adapters.report_text import BinaryContent

FHIR_JSON = "application/fhir+json"
RETRY_STATUSES = (429, 502, 503, 504)


@dataclass(frozen=True)
class ClientSettings:
    #: (connect, read) timeout of one HTTP call, seconds.
    timeout: tuple[float, float] = (2.0, 5.0)
    retries: int = 2
    backoff_factor: float = 0.1
    #: A Retry-After longer than this (seconds) is not waited for: the call fails instead.
    max_retry_after: float = 2.0
    max_pages: int = 20
    #: ``_count`` asked for when a search names none (servers may cap it lower).
    page_size: int = 200
    #: Largest response body read (bytes); a larger one fails the call.
    max_response_bytes: int = 32 * 1024 * 1024
    pool_connections: int = 16


class FhirError(RuntimeError):
    """A FHIR call failed. ``status`` is the HTTP status (None: no response)."""

    def __init__(self, code: str, message: str, status: int | None = None) -> None:
        super().__init__(message)
        self.code = code
        self.status = status

    @property
    def refused(self) -> bool:
        """The server refused our credentials (401/403)."""
        return self.status in (401, 403)


class RetryAfterTooLong(RuntimeError):
    def __init__(self, seconds: float) -> None:
        super().__init__(f"the FHIR server asked to retry after {seconds:.0f} s")
        self.seconds = seconds


def no_answer(exc: Exception) -> tuple[str, str, int | None]:
    """(code, message, status) of a request that got no usable answer: a ``requests``
    exception or :class:`RetryAfterTooLong`. One mapping for every FHIR caller here."""
    if isinstance(exc, RetryAfterTooLong):
        return "rate_limited", str(exc), 429
    if isinstance(exc, requests.Timeout):
        return "timeout", "the FHIR server did not answer in time", None
    if isinstance(exc, requests.ConnectionError):
        return "unreachable", "the FHIR server could not be reached", None
    return "http_error", type(exc).__name__, None


class _BudgetedRetry(Retry):
    """urllib3 Retry that gives up, rather than retry early, on a Retry-After it can't wait."""

    def __init__(self, *args: Any, max_wait: float = 2.0, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.max_wait = max_wait

    def new(self, **kwargs: Any) -> _BudgetedRetry:
        kwargs.setdefault("max_wait", self.max_wait)
        return super().new(**kwargs)  # type: ignore[return-value]

    def sleep_for_retry(self, response: Any) -> bool:
        retry_after = self.get_retry_after(response)
        if retry_after is not None and retry_after > self.max_wait:
            raise RetryAfterTooLong(retry_after)
        return super().sleep_for_retry(response)


def _origin(url: str) -> str:
    parts = urlsplit(url)
    return f"{parts.scheme}://{parts.netloc}".lower()


class OriginSessions:
    """One pooled ``requests.Session`` per origin (LRU-bounded), thread-safe."""

    def __init__(self, new_session: Callable[[], requests.Session], max_origins: int) -> None:
        self._new_session = new_session
        self._max_origins = max_origins
        self._sessions: OrderedDict[str, requests.Session] = OrderedDict()
        self._lock = threading.Lock()

    def session_for(self, url: str) -> requests.Session:
        origin = _origin(url)
        with self._lock:
            session = self._sessions.get(origin)
            if session is None:
                session = self._new_session()
                self._sessions[origin] = session
                if len(self._sessions) > self._max_origins:
                    _, evicted = self._sessions.popitem(last=False)
                    evicted.close()
            else:
                self._sessions.move_to_end(origin)
            return session

    def close(self) -> None:
        with self._lock:
            for session in self._sessions.values():
                session.close()
            self._sessions.clear()


def plain_session(adapter: HTTPAdapter) -> requests.Session:
    """A session using ``adapter`` for http and https, blind to proxy and .netrc settings."""
    session = requests.Session()
    session.trust_env = False
    session.mount("http://", adapter)
    session.mount("https://", adapter)
    return session


def budgeted_retry(
    retries: int,
    backoff_factor: float,
    max_retry_after: float,
    methods: frozenset[str] = frozenset({"GET"}),
) -> Retry:
    """The project's retry policy (urllib3 ``Retry``): ``retries`` tries on connection errors
    and on 429/502/503/504 for ``methods``, exponential back-off, ``Retry-After`` honoured up
    to ``max_retry_after`` seconds (a longer one fails the call: :class:`RetryAfterTooLong`).
    No read retries: a read timeout has already used the call's budget (and for a write the
    server may have acted on it)."""
    return _BudgetedRetry(
        total=retries,
        connect=retries,
        read=0,
        status=retries,
        allowed_methods=methods,
        status_forcelist=RETRY_STATUSES,
        backoff_factor=backoff_factor,
        respect_retry_after_header=True,
        raise_on_status=False,
        max_wait=max_retry_after,
    )


class SessionPool(OriginSessions):
    """The FHIR servers' sessions: retrying adapters, one pool per FHIR server origin."""

    def __init__(self, settings: ClientSettings, max_origins: int = 64) -> None:
        super().__init__(self._fhir_session, max_origins)
        self.settings = settings

    def _fhir_session(self) -> requests.Session:
        retry = budgeted_retry(
            self.settings.retries, self.settings.backoff_factor, self.settings.max_retry_after
        )
        return plain_session(
            HTTPAdapter(
                max_retries=retry,
                pool_connections=1,
                pool_maxsize=self.settings.pool_connections,
            )
        )


def outcome_text(body: Any) -> str | None:
    """The human-readable text of an OperationOutcome (diagnostics or details.text)."""
    if not isinstance(body, dict) or body.get("resourceType") != "OperationOutcome":
        return None
    texts = []
    for issue in body.get("issue") or []:
        if not isinstance(issue, dict):
            continue
        details = issue.get("details") if isinstance(issue.get("details"), dict) else {}
        text = issue.get("diagnostics") or details.get("text")
        if isinstance(text, str) and text:
            texts.append(text)
    return "; ".join(texts)[:500] or None


@dataclass(frozen=True)
class SearchResult:
    """A search followed across its pages, as one ``searchset`` Bundle."""

    bundle: dict[str, Any]
    pages: int
    #: True when ``max_pages`` stopped the paging before the last page.
    truncated: bool


class FhirClient:
    """Calls to one FHIR server with one request's bearer token."""

    def __init__(
        self,
        base_url: str,
        access_token: str | None,
        pool: SessionPool,
        timeout: tuple[float, float] | None = None,
    ) -> None:
        self.base_url = base_url.rstrip("/") + "/"
        self._token = access_token
        self._pool = pool
        self._settings = pool.settings
        self._timeout = timeout or self._settings.timeout

    def __repr__(self) -> str:  # never show the token
        return f"FhirClient({self.base_url!r})"

    # ------------------------------------------------------------------ HTTP
    def _url(self, relative_or_absolute: str) -> str:
        url = urljoin(self.base_url, relative_or_absolute)
        if _origin(url) != _origin(self.base_url):
            raise FhirError("foreign_url", "refusing to send the token to another origin")
        return url

    def _get(self, url: str, accept: str = FHIR_JSON) -> requests.Response:
        headers = {"Accept": accept}
        if self._token:
            headers["Authorization"] = f"Bearer {self._token}"
        session = self._pool.session_for(url)
        try:
            response = session.get(url, headers=headers, timeout=self._timeout, stream=True)
        except (RetryAfterTooLong, requests.RequestException) as exc:
            raise FhirError(*no_answer(exc)) from None
        return response

    def _body(self, response: requests.Response) -> bytes:
        limit = self._settings.max_response_bytes
        declared = response.headers.get("Content-Length")
        if declared and declared.isdigit() and int(declared) > limit:
            response.close()
            raise FhirError("too_large", f"response over {limit} bytes", response.status_code)
        chunks, size = [], 0
        try:
            for chunk in response.iter_content(64 * 1024):
                size += len(chunk)
                if size > limit:
                    raise FhirError(
                        "too_large", f"response over {limit} bytes", response.status_code
                    )
                chunks.append(chunk)
        except requests.RequestException:
            raise FhirError("timeout", "the FHIR server stopped sending the response") from None
        finally:
            response.close()
        return b"".join(chunks)

    def _json(self, url: str) -> dict[str, Any]:
        response = self._get(url)
        raw = self._body(response)
        try:
            body = json.loads(raw) if raw else None
        except (ValueError, RecursionError):
            body = None
        if response.status_code >= 400:
            text = outcome_text(body) or response.reason or "error"
            raise FhirError(
                "http_status", f"HTTP {response.status_code}: {text}", response.status_code
            )
        if not isinstance(body, dict) or not isinstance(body.get("resourceType"), str):
            raise FhirError("not_fhir", "the response is not a FHIR JSON resource", 200)
        return body

    # ------------------------------------------------------------------ FHIR interactions
    def read(self, resource_type: str, resource_id: str) -> dict[str, Any]:
        return self._json(self._url(f"{resource_type}/{resource_id}"))

    def get(self, relative_url: str) -> dict[str, Any]:
        """One GET of a relative FHIR URL (a read, or one page of a search)."""
        return self._json(self._url(relative_url))

    def search(self, relative_url: str) -> SearchResult:
        """Run a search and follow its ``next`` links; every page's entries in one Bundle.

        Without a ``_count`` of its own, the search asks for ``page_size`` entries a page.
        """
        if "_count=" not in relative_url:
            joiner = "&" if "?" in relative_url else "?"
            relative_url = f"{relative_url}{joiner}_count={self._settings.page_size}"
        first = self.get(relative_url)
        if first.get("resourceType") != "Bundle":
            raise FhirError("not_fhir", "a search did not return a Bundle", 200)
        entries = list(first.get("entry") or [])
        pages, bundle = 1, first
        while (next_url := _next_link(bundle)) is not None:
            if pages >= self._settings.max_pages:
                return SearchResult(_searchset(first, entries), pages, truncated=True)
            bundle = self.get(next_url)
            entries.extend(bundle.get("entry") or [])
            pages += 1
        return SearchResult(_searchset(first, entries), pages, truncated=False)

    def binary(self, url: str) -> BinaryContent:
        """A Binary as served, with its Content-Type (raw bytes, or a Binary resource's JSON
        when the server only speaks FHIR JSON: :mod:`fhir_adapters.report_text` reads both)."""
        response = self._get(self._url(url), accept="*/*")
        raw = self._body(response)
        if response.status_code >= 400:
            raise FhirError("http_status", f"HTTP {response.status_code}", response.status_code)
        return BinaryContent(response.headers.get("Content-Type"), raw)


def _next_link(bundle: Mapping[str, Any]) -> str | None:
    for link in bundle.get("link") or []:
        if isinstance(link, dict) and link.get("relation") == "next" and link.get("url"):
            return str(link["url"])
    return None


def _searchset(first: Mapping[str, Any], entries: list[Any]) -> dict[str, Any]:
    bundle = {"resourceType": "Bundle", "type": "searchset", "entry": entries}
    if isinstance(first.get("total"), int):
        bundle["total"] = first["total"]
    return bundle
