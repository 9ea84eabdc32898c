"""Application factory."""

from __future__ import annotations

import logging
import time
from concurrent.futures import ThreadPoolExecutor
from datetime import timedelta
from typing import Any

from flask import Flask, Response, g, request
from flask_cors import CORS
from werkzeug.exceptions import HTTPException

from cds import metrics
from cds.audit import AuditLog
from cds.config import ConfigError, Settings
from cds.db import make_engine, make_sessionmaker, make_snapshot_sessionmaker
from cds.fhir_api import bp as fhir_bp
from cds.fhir_api.auth import ApiAuthenticator
from cds.fhir_api.outcome import http_error as fhir_http_error
from cds.hooks_api import bp as hooks_bp
from cds.http_json import error_response
from cds.logging_setup import configure_logging
from cds.metrics import bp as metrics_bp
from cds.model_pages import bp as model_pages_bp
from cds.openapi import bp as openapi_bp
from cds.review import bp as review_bp
from cds.review import csrf
from cds.review.accounts import ReviewerAccounts
from cds.review.chain_status import ChainMonitor
from cds.security import JwtVerifier, load_trusted_issuers
from cds.security.replay_store import DatabaseReplayStore
from cds.services import default_registry
from cds.services.registry import ServiceRegistry
from fhir_adapters import ClientSettings, PatientLoader, PrefetchFetcher, SessionPool

log = logging.getLogger("cds.app")


def create_app(settings: Settings | None = None, registry: ServiceRegistry | None = None) -> Flask:
    app = Flask("cds", instance_relative_config=True)
    settings = settings or Settings.from_env(instance_path=app.instance_path)
    configure_logging(settings.log_level)
    settings.instance_path.mkdir(parents=True, exist_ok=True)

    app.config.update(
        MAX_CONTENT_LENGTH=settings.max_body_bytes,
        JSON_SORT_KEYS=False,
        WARDROUND_SETTINGS=settings,
    )
    app.json.sort_keys = False  # type: ignore[attr-defined]
    app.json.compact = True  # type: ignore[attr-defined]

    engine = make_engine(settings.database_url, settings.db_connect_timeout_s)
    sessions = make_sessionmaker(engine)
    app.extensions["wardround.engine"] = engine
    app.extensions["wardround.sessions"] = sessions
    app.extensions["wardround.audit"] = AuditLog(sessions)
    app.extensions["wardround.registry"] = registry or default_registry()
    app.extensions["wardround.verifier"] = _verifier(settings, sessions)
    app.extensions["wardround.patient_loader"] = _patient_loader(settings)
    snapshots = make_snapshot_sessionmaker(engine)
    app.extensions["wardround.snapshot_sessions"] = snapshots
    app.extensions["wardround.api_auth"] = ApiAuthenticator.from_settings(settings)
    app.extensions["wardround.reviewers"] = ReviewerAccounts(sessions, snapshots)
    app.extensions["wardround.chain_monitor"] = ChainMonitor(
        snapshots, full_every_s=settings.chain_full_verify_s
    )
    _configure_review_sessions(app, settings)

    if settings.cors_origins:
        CORS(
            app,
            resources={r"/cds-services*": {"origins": list(settings.cors_origins)}},
            allow_headers=["Authorization", "Content-Type"],
            methods=["GET", "POST", "OPTIONS"],
            max_age=600,
        )
    app.register_blueprint(hooks_bp)
    app.register_blueprint(metrics_bp)
    app.register_blueprint(openapi_bp)
    app.register_blueprint(model_pages_bp)
    app.register_blueprint(fhir_bp)
    app.register_blueprint(review_bp)
    _install_error_handlers(app)
    _install_request_log(app, settings)
    return app


def _configure_review_sessions(app: Flask, settings: Settings) -> None:
    """Signed session cookies for the review page's log-in, and its CSRF protection.

    Without WARDROUND_SECRET_KEY there is no log-in (the page says how to enable it). The
    cookie is HttpOnly, SameSite=Lax and Secure with the ``__Host-`` prefix (browsers treat
    http://127.0.0.1 and localhost as secure, so the demo works over plain http);
    WARDROUND_SESSION_COOKIE_SECURE=false drops both, for plain http on another host.
    """
    secure = settings.session_cookie_secure
    if settings.secret_key:
        app.secret_key = settings.secret_key
    app.config.update(
        SESSION_COOKIE_NAME="__Host-wardround-review" if secure else "wardround-review",
        SESSION_COOKIE_SECURE=secure,
        SESSION_COOKIE_HTTPONLY=True,
        SESSION_COOKIE_SAMESITE="Lax",
        SESSION_COOKIE_PATH="/",
        PERMANENT_SESSION_LIFETIME=timedelta(minutes=settings.review_session_minutes),
        # CSRF is checked by the review page itself (csrf.protect()), not on every POST of
        # the app: the CDS Hooks endpoints are called by EHRs with bearer tokens.
        WTF_CSRF_CHECK_DEFAULT=False,
        WTF_CSRF_TIME_LIMIT=settings.review_session_minutes * 60,
    )
    csrf.init_app(app)


def _patient_loader(settings: Settings) -> PatientLoader:
    client_settings = ClientSettings(
        timeout=(settings.fhir_connect_timeout_s, settings.fhir_read_timeout_s),
        max_retry_after=settings.prefetch_deadline_s,
        max_pages=settings.fhir_max_pages,
        pool_connections=settings.fetch_workers,
    )
    executor = ThreadPoolExecutor(settings.fetch_workers, thread_name_prefix="fhir-fetch")
    return PatientLoader(
        SessionPool(client_settings),
        PrefetchFetcher(executor, deadline_s=settings.prefetch_deadline_s),
        dicomweb_access=settings.dicomweb_access,
    )


def _verifier(settings: Settings, sessions: Any) -> JwtVerifier | None:
    if settings.auth_mode == "off":
        log.warning(
            "CDS Hooks JWT authentication is OFF (WARDROUND_AUTH=off): any caller is trusted. "
            "Never run like this outside local development."
        )
        return None
    if not settings.public_base_url:
        raise ConfigError(
            "WARDROUND_PUBLIC_BASE_URL is required with JWT auth: aud is checked against it"
        )
    if settings.trusted_issuers_file is None:
        raise ConfigError("WARDROUND_TRUSTED_ISSUERS must name the trusted-issuers JSON file")
    issuers = load_trusted_issuers(settings.trusted_issuers_file)
    return JwtVerifier(
        issuers=issuers,
        replay_store=DatabaseReplayStore(sessions, settings.jwt_leeway_s),
        algorithms=settings.jwt_algorithms,
        leeway_s=settings.jwt_leeway_s,
        max_lifetime_s=settings.jwt_max_lifetime_s,
        jwks_cache_s=settings.jwks_cache_s,
    )


def _install_error_handlers(app: Flask) -> None:
    @app.errorhandler(HTTPException)
    def _http_error(exc: HTTPException) -> Response:
        if _is_fhir(request.path):  # the FHIR API answers every error with an OperationOutcome
            kept = {k: v for k, v in exc.get_headers() if k.lower() != "content-type"}
            return fhir_http_error(exc.code or 500, exc.name or "error", kept)
        code = (exc.name or "error").lower().replace(" ", "_")
        return error_response(exc.code or 500, code, exc.description or exc.name)

    @app.errorhandler(Exception)
    def _unexpected(exc: Exception) -> Response:
        log.error("unhandled error", extra={"error": type(exc).__name__, "path": request.path})
        if _is_fhir(request.path):
            return fhir_http_error(500, "internal server error")
        return error_response(500, "internal_error", "internal server error")


def _is_fhir(path: str) -> bool:
    return path == "/fhir" or path.startswith("/fhir/")


def _install_request_log(app: Flask, settings: Settings) -> None:
    registry: ServiceRegistry = app.extensions["wardround.registry"]

    @app.before_request
    def _start_timer() -> None:
        g.started = time.perf_counter()

    @app.after_request
    def _log(response: Response) -> Response:
        elapsed = time.perf_counter() - g.get("started", time.perf_counter())
        service_id = (request.view_args or {}).get("service_id")
        known_service = service_id if service_id and registry.get(service_id) else "-"
        endpoint = request.endpoint.rsplit(".", 1)[-1] if request.endpoint else "unmatched"
        metrics.HTTP_REQUEST_SECONDS.labels(endpoint, known_service, response.status_code).observe(
            elapsed
        )
        if endpoint == "metrics":
            return response
        fields: dict[str, Any] = {
            "method": request.method,
            "path": request.path,
            "status": response.status_code,
            "duration_ms": round(elapsed * 1000, 2),
        }
        if g.get("hook_instance"):
            fields["hook_instance"] = g.hook_instance
        client = g.get("client")
        if client is not None:
            fields["client_iss"] = client.iss
        if settings.log_patient_ids and g.get("patient_id"):
            fields["patient_id"] = g.patient_id
        log.info("request", extra=fields)
        return response
