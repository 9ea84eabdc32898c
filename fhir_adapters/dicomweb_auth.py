"""DICOMweb credentials per origin, and one pooled HTTP session per DICOMweb origin.

:class:`DicomWebAccess` maps a DICOMweb origin (``scheme://host:port``) to the credentials
sent there:

* :class:`BasicCredentials`: HTTP Basic (username and password);
* :class:`BearerCredentials`: a static bearer token;
* :data:`REUSE_FHIR_TOKEN`: the hook request's ``fhirAuthorization`` bearer token;
* :data:`NO_CREDENTIALS`: nothing (e.g. to keep the FHIR token from a same-origin PACS).

An origin that is not listed gets the FHIR token only when it is the origin of the
request's ``fhirServer`` (the token already goes there), and otherwise no credentials: a
token is never sent to a host nobody named.

The configuration is JSON (env ``WARDROUND_DICOMWEB_AUTH``) that names environment
variables, never the secrets themselves::

    {
      "https://pacs.example.org": {"basic": {"username": "cds", "password_env": "PACS_PW"}},
      "https://vna.example.org:8443": {"bearer": {"token_env": "VNA_TOKEN"}},
      "https://fhir.example.org": "fhir",
      "http://127.0.0.1:8042": "none"
    }

:func:`parse_dicomweb_access` reads it and resolves the variables at once (start-up), so a
bad document or a missing variable fails the service's start, not a hook call.

:class:`DicomWebSessions` keeps one pooled ``requests.Session`` per DICOMweb origin
(``trust_env`` off: no proxies or ``.netrc`` credentials from the environment) and hands out,
per call, a lightweight session that shares the pooled connections and carries that call's
credentials: the pooled session itself is never given credentials or changed.
"""

from __future__ import annotations

import json
import os
from collections import OrderedDict
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any, Final
from urllib.parse import urlsplit

import requests
from requests.adapters import HTTPAdapter
from requests.auth import AuthBase, HTTPBasicAuth

from fhir_adapters.fhir_client import OriginSessions, plain_session

ENV_VAR = "WARDROUND_DICOMWEB_AUTH"
_DEFAULT_PORTS = {"http": 80, "https": 443}


class DicomWebConfigError(ValueError):
    """The DICOMweb credentials configuration is unusable (the message names no secret)."""


# --------------------------------------------------------------------------- credentials
@dataclass(frozen=True)
class BasicCredentials:
    username: str
    password: str = field(repr=False)


@dataclass(frozen=True)
class BearerCredentials:
    token: str = field(repr=False)


@dataclass(frozen=True)
class ReuseFhirToken:
    """Send the hook request's FHIR bearer token (none if the request has none)."""


@dataclass(frozen=True)
class NoCredentials:
    """Send no credentials."""


REUSE_FHIR_TOKEN: Final = ReuseFhirToken()
NO_CREDENTIALS: Final = NoCredentials()

Credentials = BasicCredentials | BearerCredentials | ReuseFhirToken | NoCredentials


def origin_of(url: str) -> str | None:
    """``scheme://host:port`` of an http(s) URL, lower-case, port always written; else None."""
    try:
        parts = urlsplit(url.strip())
        port = parts.port
    except ValueError:
        return None
    scheme = parts.scheme.lower()
    if scheme not in _DEFAULT_PORTS or not parts.hostname:
        return None
    host = parts.hostname.lower()
    if ":" in host:  # IPv6 literal
        host = f"[{host}]"
    return f"{scheme}://{host}:{port or _DEFAULT_PORTS[scheme]}"


@dataclass(frozen=True)
class DicomWebAccess:
    """Which credentials go to which DICOMweb origin (see the module docstring)."""

    #: Normalised origin (:func:`origin_of`) → credentials.
    origins: Mapping[str, Credentials] = field(default_factory=dict)

    def __post_init__(self) -> None:
        normalised: dict[str, Credentials] = {}
        for origin, credentials in self.origins.items():
            key = _config_origin(origin)
            if key in normalised:
                raise DicomWebConfigError(f"DICOMweb origin {key} is listed twice")
            normalised[key] = credentials
        object.__setattr__(self, "origins", normalised)

    def credentials_for(self, address: str, fhir_server: str | None) -> Credentials:
        """The credentials for a DICOMweb root ``address`` in a request to ``fhir_server``."""
        origin = origin_of(address)
        if origin is None:
            return NO_CREDENTIALS
        configured = self.origins.get(origin)
        if configured is not None:
            return configured
        if fhir_server is not None and origin_of(fhir_server) == origin:
            return REUSE_FHIR_TOKEN
        return NO_CREDENTIALS

    def auth_for(
        self, address: str, fhir_server: str | None, fhir_token: str | None
    ) -> AuthBase | None:
        """A ``requests`` auth for one call to ``address``, or None (send nothing)."""
        credentials = self.credentials_for(address, fhir_server)
        if isinstance(credentials, BasicCredentials):
            return HTTPBasicAuth(credentials.username, credentials.password)
        if isinstance(credentials, BearerCredentials):
            return BearerAuth(credentials.token)
        if isinstance(credentials, ReuseFhirToken) and fhir_token:
            return BearerAuth(fhir_token)
        return None


class BearerAuth(AuthBase):
    """``Authorization: Bearer <token>`` (the token never shows in repr)."""

    def __init__(self, token: str) -> None:
        self._token = token

    def __call__(self, request: requests.PreparedRequest) -> requests.PreparedRequest:
        request.headers["Authorization"] = f"Bearer {self._token}"
        return request

    def __eq__(self, other: object) -> bool:
        return isinstance(other, BearerAuth) and other._token == self._token

    def __hash__(self) -> int:
        return hash(self._token)

    def __repr__(self) -> str:
        return "BearerAuth(***)"


# --------------------------------------------------------------------------- parsing
def _config_origin(key: object) -> str:
    if not isinstance(key, str):
        raise DicomWebConfigError("DICOMweb origins must be strings")
    origin = origin_of(key)
    parts = urlsplit(key.strip())
    if (
        origin is None
        or parts.path not in ("", "/")
        or parts.query
        or parts.fragment
        or parts.username is not None
        or parts.password is not None
    ):
        raise DicomWebConfigError(
            f"{key!r} is not a DICOMweb origin: write scheme://host[:port] (http or https), "
            "without path, query or user"
        )
    return origin


def _secret(spec: Mapping[str, Any], key: str, where: str, environ: Mapping[str, str]) -> str:
    name = spec.get(key)
    if not isinstance(name, str) or not name:
        raise DicomWebConfigError(f"{where}: {key} must name an environment variable")
    value = environ.get(name)
    if not value:
        raise DicomWebConfigError(f"{where}: environment variable {name} is not set or empty")
    return value


def _check_keys(spec: Mapping[str, Any], allowed: set[str], where: str) -> None:
    for key in spec:
        if key in ("password", "token"):
            raise DicomWebConfigError(
                f"{where}: secrets come from the environment: use {key}_env, not {key}"
            )
        if key not in allowed:
            raise DicomWebConfigError(
                f"{where}: unknown key {key!r} (expected {', '.join(sorted(allowed))})"
            )


def _credentials(value: Any, where: str, environ: Mapping[str, str]) -> Credentials:
    if value == "fhir":
        return REUSE_FHIR_TOKEN
    if value == "none":
        return NO_CREDENTIALS
    if not isinstance(value, dict) or len(value) != 1:
        raise DicomWebConfigError(
            f'{where}: expected "fhir", "none", {{"basic": {{...}}}} or {{"bearer": {{...}}}}'
        )
    ((kind, spec),) = value.items()
    if kind not in ("basic", "bearer") or not isinstance(spec, dict):
        raise DicomWebConfigError(
            f'{where}: expected {{"basic": {{...}}}} or {{"bearer": {{...}}}}, got {kind!r}'
        )
    where = f"{where} {kind}"
    if kind == "basic":
        _check_keys(spec, {"username", "password_env"}, where)
        username = spec.get("username")
        if not isinstance(username, str) or not username or ":" in username:
            raise DicomWebConfigError(f"{where}: username must be a non-empty string without ':'")
        return BasicCredentials(username, _secret(spec, "password_env", where, environ))
    _check_keys(spec, {"token_env"}, where)
    return BearerCredentials(_secret(spec, "token_env", where, environ))


def parse_dicomweb_access(
    text: str | None, environ: Mapping[str, str] | None = None
) -> DicomWebAccess:
    """The JSON configuration (module docstring) with its secrets read from ``environ``.

    ``None`` or blank text: no origin configured (the defaults apply). Raises
    :class:`DicomWebConfigError` for invalid JSON, an unknown form, an origin that is not
    ``scheme://host[:port]``, or a named environment variable that is unset or empty.
    """
    env = os.environ if environ is None else environ
    if text is None or not text.strip():
        return DicomWebAccess()
    try:
        document = json.loads(text)
    except ValueError as exc:
        raise DicomWebConfigError(
            f"not valid JSON (line {getattr(exc, 'lineno', '?')}, "
            f"column {getattr(exc, 'colno', '?')})"
        ) from None
    if not isinstance(document, dict):
        raise DicomWebConfigError("must be a JSON object: DICOMweb origin → credentials")
    origins: dict[str, Credentials] = {}
    for key, value in document.items():
        origin = _config_origin(key)
        if origin in origins:
            raise DicomWebConfigError(f"origin {origin} is listed twice")
        origins[origin] = _credentials(value, f"origin {origin}", env)
    return DicomWebAccess(origins)


# --------------------------------------------------------------------------- sessions
class _CallSession(requests.Session):
    """One call's session: the origin's pooled adapters, this call's auth.

    ``close()`` leaves the shared adapters (and their pooled connections) open.
    """

    def __init__(self, pooled: requests.Session, auth: AuthBase | None) -> None:
        super().__init__()
        for adapter in self.adapters.values():  # the fresh ones: never used
            adapter.close()
        self.adapters = OrderedDict(pooled.adapters)
        self.trust_env = False
        self.auth = auth

    def close(self) -> None:
        pass


class DicomWebSessions:
    """One pooled ``requests.Session`` per DICOMweb origin (LRU-bounded), thread-safe."""

    def __init__(
        self,
        access: DicomWebAccess | None = None,
        pool_maxsize: int = 8,
        max_origins: int = 32,
    ) -> None:
        self.access = access or DicomWebAccess()
        self._sessions = OriginSessions(
            lambda: plain_session(HTTPAdapter(pool_connections=1, pool_maxsize=pool_maxsize)),
            max_origins,
        )

    def pooled(self, address: str) -> requests.Session:
        """The shared session of ``address``'s origin (no credentials on it: do not add any)."""
        return self._sessions.session_for(address)

    def session_for(
        self, address: str, fhir_server: str | None, fhir_token: str | None
    ) -> requests.Session:
        """A session for one call to the DICOMweb root ``address``: pooled connections,
        the credentials :class:`DicomWebAccess` gives that origin for this request."""
        auth = self.access.auth_for(address, fhir_server, fhir_token)
        return _CallSession(self.pooled(address), auth)

    def close(self) -> None:
        self._sessions.close()


__all__ = [
    "ENV_VAR",
    "NO_CREDENTIALS",
    "REUSE_FHIR_TOKEN",
    "BasicCredentials",
    "BearerAuth",
    "BearerCredentials",
    "Credentials",
    "DicomWebAccess",
    "DicomWebConfigError",
    "DicomWebSessions",
    "NoCredentials",
    "ReuseFhirToken",
    "origin_of",
    "parse_dicomweb_access",
]
