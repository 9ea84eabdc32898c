"""Runtime settings, read once from the environment (secrets never live in code or files in git)."""

from __future__ import annotations

import json
import os
from collections.abc import Mapping
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import TYPE_CHECKING, Literal

if TYPE_CHECKING:
    from fhir_adapters.dicomweb_auth import DicomWebAccess

AuthMode = Literal["jwt", "off"]

#: Asymmetric algorithms only: HMAC and "none" can never be switched on.
ALLOWED_ALGORITHMS = frozenset(
    {"ES256", "ES384", "ES512", "RS256", "RS384", "RS512", "PS256", "PS384", "PS512"}
)
DEFAULT_ALGORITHMS = ("ES384", "RS384")


class ConfigError(ValueError):
    """A setting is missing or has a value the service refuses to run with."""


def _split(value: str | None) -> tuple[str, ...]:
    return tuple(part.strip() for part in (value or "").split(",") if part.strip())


def _flag(value: str | None) -> bool:
    return (value or "").strip().lower() in {"1", "true", "yes", "on"}


@dataclass(frozen=True)
class Settings:
    """Everything the service can be told. Built from the environment by :meth:`from_env`."""

    database_url: str
    instance_path: Path
    #: Public base URL of this service as the EHR sees it (``aud`` is checked against it).
    public_base_url: str | None = None
    auth_mode: AuthMode = "jwt"
    #: JSON allow-list of EHR issuers and their keys (default: instance/trusted-issuers.json).
    trusted_issuers_file: Path | None = None
    jwt_algorithms: tuple[str, ...] = DEFAULT_ALGORITHMS
    jwt_leeway_s: int = 30
    jwt_max_lifetime_s: int = 3600
    jwks_cache_s: int = 300
    max_body_bytes: int = 5 * 1024 * 1024
    cors_origins: tuple[str, ...] = ()
    log_level: str = "INFO"
    #: Only when true do log lines carry patient/encounter ids (never names or dates).
    log_patient_ids: bool = False
    db_connect_timeout_s: int = 3
    #: One deadline for all FHIR fetches of a hook call (missing prefetch keys).
    prefetch_deadline_s: float = 2.0
    #: Connect / read timeout of one FHIR or DICOMweb HTTP call.
    fhir_connect_timeout_s: float = 1.0
    fhir_read_timeout_s: float = 2.0
    fhir_max_pages: int = 20
    #: Threads fetching prefetch keys, shared by all requests of a process.
    fetch_workers: int = 32
    #: JSON: DICOMweb origin → credentials (fhir_adapters.dicomweb_auth); it names the
    #: environment variables that hold the secrets (password_env / token_env), never a secret.
    dicomweb_auth_json: str | None = None
    #: ``dicomweb_auth_json`` parsed, its secrets resolved (by __post_init__ from os.environ
    #: unless given; by from_env from its environ). None: no JSON. Never in repr.
    dicomweb_access: DicomWebAccess | None = field(default=None, repr=False, compare=False)
    #: How far back the report-findings service reads reports and notes (days).
    report_lookback_days: int = 90
    #: Imaging services read the X-ray studies started within this many days.
    imaging_lookback_days: float = 14.0
    #: Image viewer URL with ``{study_uid}`` (e.g. an OHIF viewer); cards link to it.
    imaging_viewer_url: str | None = None
    #: Risk cards' action thresholds (model id → probability 0-1), overriding each model's
    #: default (``WARDROUND_RISK_THRESHOLDS``, JSON: {"cvd-event-3y": 0.15, "ascvd-pce": 0.075}).
    risk_thresholds: Mapping[str, float] = field(default_factory=dict)
    #: JSON allow-list of the issuers of FHIR API bearer tokens (same format as the EHR
    #: file; default instance/api-issuers.json). Missing file: /fhir accepts no token.
    api_issuers_file: Path | None = None
    #: Signs the review page's session cookies (WARDROUND_SECRET_KEY). None: no log-in.
    secret_key: str | None = field(default=None, repr=False)
    #: Secure flag (and the __Host- name) of the session cookie; only for plain-http demos.
    session_cookie_secure: bool = True
    #: A reviewer's session ends this long after log-in, or after 30 idle minutes.
    review_session_minutes: int = 480
    #: Seconds between full walks of the hash chain behind the review page's chain status.
    chain_full_verify_s: int = 900
    #: Load every model in each gunicorn worker before it serves (gunicorn.conf.py); false:
    #: on first use (quicker starts, for tests).
    warm_models: bool = True
    extra: Mapping[str, str] = field(default_factory=dict)

    def __post_init__(self) -> None:
        if self.auth_mode not in ("jwt", "off"):
            raise ConfigError("WARDROUND_AUTH must be 'jwt' or 'off'")
        bad = [alg for alg in self.jwt_algorithms if alg not in ALLOWED_ALGORITHMS]
        if bad or not self.jwt_algorithms:
            raise ConfigError(
                f"WARDROUND_JWT_ALGORITHMS may only name {sorted(ALLOWED_ALGORITHMS)}; got {bad}"
            )
        if self.max_body_bytes <= 0:
            raise ConfigError("WARDROUND_MAX_BODY_BYTES must be positive")
        if self.prefetch_deadline_s <= 0 or self.fetch_workers <= 0 or self.fhir_max_pages <= 0:
            raise ConfigError(
                "WARDROUND_PREFETCH_DEADLINE_S, WARDROUND_FETCH_WORKERS and "
                "WARDROUND_FHIR_MAX_PAGES must be positive"
            )
        if self.report_lookback_days <= 0:
            raise ConfigError("WARDROUND_REPORT_LOOKBACK_DAYS must be positive")
        if not 0 < self.imaging_lookback_days <= 36_500:
            raise ConfigError("WARDROUND_IMAGING_LOOKBACK_DAYS must be between 0 and 36500")
        if self.imaging_viewer_url is not None:
            _check_viewer_url(self.imaging_viewer_url)
        bad_thresholds = [
            key for key, value in self.risk_thresholds.items()
            if isinstance(value, bool) or not isinstance(value, int | float) or not 0 < value < 1
        ]  # fmt: skip
        if bad_thresholds:
            raise ConfigError(
                f"WARDROUND_RISK_THRESHOLDS: {bad_thresholds} must be probabilities between 0 and 1"
            )
        if self.secret_key is not None and len(self.secret_key) < 32:
            raise ConfigError("WARDROUND_SECRET_KEY must be at least 32 characters")
        if self.review_session_minutes <= 0 or self.chain_full_verify_s <= 0:
            raise ConfigError(
                "WARDROUND_REVIEW_SESSION_MINUTES and WARDROUND_CHAIN_FULL_VERIFY_S must be "
                "positive"
            )
        if self.dicomweb_access is None and self.dicomweb_auth_json is not None:
            object.__setattr__(self, "dicomweb_access", _dicomweb_access(self.dicomweb_auth_json))

    @classmethod
    def from_env(
        cls, environ: Mapping[str, str] | None = None, instance_path: Path | None = None
    ) -> Settings:
        env = os.environ if environ is None else environ
        instance = Path(env.get("WARDROUND_INSTANCE_PATH") or instance_path or "instance")
        database_url = env.get("DATABASE_URL") or f"sqlite:///{(instance / 'audit.db').resolve()}"
        issuers = env.get("WARDROUND_TRUSTED_ISSUERS")
        api_issuers = env.get("WARDROUND_API_ISSUERS")
        cookie_secure = env.get("WARDROUND_SESSION_COOKIE_SECURE")
        warm_models = env.get("WARDROUND_WARM_MODELS")
        dicomweb_auth_json = env.get("WARDROUND_DICOMWEB_AUTH") or None
        return cls(
            database_url=database_url,
            instance_path=instance,
            public_base_url=(env.get("WARDROUND_PUBLIC_BASE_URL") or "").rstrip("/") or None,
            auth_mode=(env.get("WARDROUND_AUTH") or "jwt").strip().lower(),  # type: ignore[arg-type]
            trusted_issuers_file=Path(issuers) if issuers else instance / "trusted-issuers.json",
            jwt_algorithms=_split(env.get("WARDROUND_JWT_ALGORITHMS")) or DEFAULT_ALGORITHMS,
            jwt_leeway_s=int(env.get("WARDROUND_JWT_LEEWAY_S", "30")),
            jwt_max_lifetime_s=int(env.get("WARDROUND_JWT_MAX_LIFETIME_S", "3600")),
            jwks_cache_s=int(env.get("WARDROUND_JWKS_CACHE_S", "300")),
            max_body_bytes=int(env.get("WARDROUND_MAX_BODY_BYTES", str(5 * 1024 * 1024))),
            cors_origins=_split(env.get("WARDROUND_CORS_ORIGINS")),
            log_level=env.get("WARDROUND_LOG_LEVEL", "INFO").upper(),
            log_patient_ids=_flag(env.get("WARDROUND_LOG_PATIENT_IDS")),
            db_connect_timeout_s=int(env.get("WARDROUND_DB_CONNECT_TIMEOUT_S", "3")),
            prefetch_deadline_s=float(env.get("WARDROUND_PREFETCH_DEADLINE_S", "2.0")),
            fhir_connect_timeout_s=float(env.get("WARDROUND_FHIR_CONNECT_TIMEOUT_S", "1.0")),
            fhir_read_timeout_s=float(env.get("WARDROUND_FHIR_READ_TIMEOUT_S", "2.0")),
            fhir_max_pages=int(env.get("WARDROUND_FHIR_MAX_PAGES", "20")),
            fetch_workers=int(env.get("WARDROUND_FETCH_WORKERS", "32")),
            dicomweb_auth_json=dicomweb_auth_json,
            dicomweb_access=_dicomweb_access(dicomweb_auth_json, env),
            report_lookback_days=int(env.get("WARDROUND_REPORT_LOOKBACK_DAYS", "90")),
            imaging_lookback_days=float(env.get("WARDROUND_IMAGING_LOOKBACK_DAYS", "14")),
            imaging_viewer_url=env.get("WARDROUND_IMAGING_VIEWER_URL") or None,
            risk_thresholds=_risk_thresholds(env.get("WARDROUND_RISK_THRESHOLDS")),
            api_issuers_file=Path(api_issuers) if api_issuers else instance / "api-issuers.json",
            secret_key=env.get("WARDROUND_SECRET_KEY") or None,
            session_cookie_secure=True if cookie_secure is None else _flag(cookie_secure),
            review_session_minutes=int(env.get("WARDROUND_REVIEW_SESSION_MINUTES", "480")),
            chain_full_verify_s=int(env.get("WARDROUND_CHAIN_FULL_VERIFY_S", "900")),
            warm_models=True if warm_models is None else _flag(warm_models),
        )

    def with_overrides(self, **changes: object) -> Settings:
        if "dicomweb_auth_json" in changes:
            changes.setdefault("dicomweb_access", None)  # parsed again from the new JSON
        return replace(self, **changes)  # type: ignore[arg-type]


def _check_viewer_url(template: str) -> None:
    from urllib.parse import urlparse

    parsed = urlparse(template)
    if parsed.scheme not in ("http", "https") or not parsed.netloc or "{study_uid}" not in template:
        raise ConfigError(
            "WARDROUND_IMAGING_VIEWER_URL must be an absolute http(s) URL containing {study_uid}"
        )
    try:
        template.format(study_uid="1.2.3")
    except (IndexError, KeyError, ValueError):
        raise ConfigError(
            "WARDROUND_IMAGING_VIEWER_URL may hold no placeholder other than {study_uid}"
        ) from None


def _dicomweb_access(
    text: str | None, environ: Mapping[str, str] | None = None
) -> DicomWebAccess | None:
    """WARDROUND_DICOMWEB_AUTH parsed (secrets from ``environ``, default os.environ)."""
    if text is None:
        return None
    from fhir_adapters.dicomweb_auth import DicomWebConfigError, parse_dicomweb_access

    try:
        return parse_dicomweb_access(text, environ)
    except DicomWebConfigError as exc:
        raise ConfigError(f"WARDROUND_DICOMWEB_AUTH: {exc}") from None


def _risk_thresholds(text: str | None) -> dict[str, float]:
    """WARDROUND_RISK_THRESHOLDS parsed: a JSON object of model id → probability."""
    if not text:
        return {}
    try:
        value = json.loads(text)
    except ValueError:
        raise ConfigError("WARDROUND_RISK_THRESHOLDS must be a JSON object") from None
    if not isinstance(value, dict):
        raise ConfigError("WARDROUND_RISK_THRESHOLDS must be a JSON object")
    return value
