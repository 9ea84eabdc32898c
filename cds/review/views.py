"""``/review``: the compliance review page (server-rendered, no JavaScript).

What did the service tell whom, about which patient, from which model, and what did
the clinician do: a filterable, paged list of CDS calls; a detail view per call (request
digest, prefetch used vs fetched, each card as the clinician saw it, models with
versions and artefact hashes, latency, feedback with override reasons); summary panels
with SVG charts; the hash chain's status on every page; CSV / NDJSON / Bundle exports of
the current filter. Reviewers log in (``cds reviewers add``); every page view and export
is recorded in the access log before it is shown.
"""

from __future__ import annotations

import contextlib
import logging
import re
from collections.abc import Callable, Iterator
from datetime import UTC, datetime, timedelta
from typing import Any
from urllib.parse import urlencode

from flask import (
    Blueprint,
    Response,
    current_app,
    g,
    redirect,
    render_template,
    request,
    session,
    stream_with_context,
    url_for,
)
from flask_wtf import FlaskForm
from flask_wtf.csrf import CSRFError, CSRFProtect
from markdown_it import MarkdownIt
from markupsafe import Markup
from sqlalchemy.exc import SQLAlchemyError
from wtforms import PasswordField, StringField
from wtforms.validators import DataRequired, Length

from cds.access import REVIEWER_SYSTEM, Principal
from cds.app_state import (
    public_base_url,
    record_access,
    service_registry,
    settings,
    snapshot_session,
)
from cds.audit import AuditUnavailable
from cds.fhir_api.audit_events import result_reference
from cds.review import charts, exports, queries
from cds.review.accounts import USERNAME, AccountError, ReviewerAccounts
from cds.review.chain_status import ChainMonitor
from cds.review.filters import OUTCOMES, CallFilter, FilterForm, filter_form

log = logging.getLogger("cds.review")
bp = Blueprint("review", __name__, url_prefix="/review")
csrf = CSRFProtect()
IDLE = timedelta(minutes=30)
_MARKDOWN = MarkdownIt("commonmark", {"html": False}).enable(["table", "strikethrough"])
_UUID = re.compile(r"^[0-9a-fA-F-]{36}$")
SECURITY_HEADERS = {
    "Content-Security-Policy": (
        "default-src 'none'; style-src 'self'; img-src 'self'; form-action 'self'; "
        "frame-ancestors 'none'; base-uri 'none'"
    ),
    "X-Frame-Options": "DENY",
    "X-Content-Type-Options": "nosniff",
    "Referrer-Policy": "no-referrer",
    "Cache-Control": "no-store",
}


class LoginForm(FlaskForm):
    username = StringField("User name", validators=[DataRequired(), Length(max=128)])
    password = PasswordField("Password", validators=[DataRequired(), Length(max=256)])


class PageError(Exception):
    def __init__(self, status: int, message: str) -> None:
        super().__init__(message)
        self.status, self.message = status, message


# --------------------------------------------------------------------------- plumbing
def _accounts() -> ReviewerAccounts:
    return current_app.extensions["wardround.reviewers"]


def _monitor() -> ChainMonitor:
    return current_app.extensions["wardround.chain_monitor"]


def _services() -> list[str]:
    return sorted(service.id for service in service_registry())


def _lifetime() -> timedelta:
    return timedelta(minutes=settings().review_session_minutes)


def _now() -> datetime:
    return datetime.now(UTC)


def _session_principal() -> Principal | None:
    """The logged-in reviewer, if the session is valid (not expired, idle or revoked)."""
    username, epoch = session.get("u"), session.get("e")
    started, active = session.get("t0"), session.get("ta")
    if not isinstance(username, str) or not isinstance(epoch, int):
        return None
    now = _now().timestamp()
    if not isinstance(started, float | int) or not isinstance(active, float | int):
        return None
    if now - started > _lifetime().total_seconds() or now - active > IDLE.total_seconds():
        session.clear()
        return None
    principal = _accounts().session_principal(username, epoch)
    if principal is None:
        session.clear()
        return None
    if now - active > 60:
        session["ta"] = now
    return principal


def _record(
    action: str, status: int = 200, principal: Principal | None = None, **fields: Any
) -> None:
    try:
        record_access(principal or g.reviewer, action, status, **fields)
    except AuditUnavailable:
        log.error("access log write failed; answering 503")
        raise PageError(503, "The audit log is unavailable, so no audit data is shown.") from None


def _page(template: str, status: int = 200, **context: Any) -> Response:
    response = Response(render_template(template, **context), status=status, mimetype="text/html")
    return response


@bp.before_request
def guard() -> Response | None:
    g.reviewer = None
    if not current_app.secret_key:
        return _page(
            "review/error.html",
            503,
            title="Review page not configured",
            message="Set WARDROUND_SECRET_KEY (32+ characters) to enable reviewer log-in.",
        )
    if request.method == "POST":
        csrf.protect()  # raises CSRFError → 400
    if request.endpoint == "review.login":
        return None
    principal = _session_principal()
    if principal is None:
        target = request.full_path if request.method == "GET" else url_for("review.calls")
        return redirect(url_for("review.login", next=target.rstrip("?")))
    if not principal.may_review:
        return _page("review/error.html", 403, title="Forbidden", message="No reviewer role.")
    g.reviewer = principal
    return None


@bp.after_request
def security_headers(response: Response) -> Response:
    response.headers.update(SECURITY_HEADERS)
    return response


@bp.errorhandler(CSRFError)
def _csrf_error(exc: CSRFError) -> Response:
    return _page("review/error.html", 400, title="Form expired", message=str(exc.description))


@bp.errorhandler(PageError)
def _page_error(exc: PageError) -> Response:
    response = _page("review/error.html", exc.status, title="Error", message=exc.message)
    if exc.status == 503:
        response.headers["Retry-After"] = "5"
    return response


@bp.errorhandler(SQLAlchemyError)
def _db_error(exc: SQLAlchemyError) -> Response:
    log.error("review page database error", extra={"error": type(exc).__name__})
    response = _page(
        "review/error.html", 503, title="Unavailable", message="The audit database is unavailable."
    )
    response.headers["Retry-After"] = "5"
    return response


@bp.app_template_filter("markdown")
def markdown(text: str | None) -> Markup:
    """A card's detail as the clinician saw it (raw HTML is escaped, unsafe links dropped)."""
    return Markup(_MARKDOWN.render(text or ""))  # noqa: S704 - markdown-it escapes HTML


@bp.app_template_filter("web_url")
def web_url(value: object) -> str | None:
    """An http(s) URL from the audit data, or None: nothing else becomes a link."""
    if isinstance(value, str) and value.lower().startswith(("https://", "http://")):
        return value
    return None


@bp.app_template_filter("utc")
def utc(value: datetime | None) -> str:
    if value is None:
        return ""
    aware = value if value.tzinfo else value.replace(tzinfo=UTC)
    return aware.astimezone(UTC).strftime("%Y-%m-%d %H:%M:%S UTC")


@bp.context_processor
def _context() -> dict[str, Any]:
    return {
        "reviewer": g.get("reviewer"),
        "chain": _monitor().status() if g.get("reviewer") else None,
        "result_reference": result_reference,
        "outcome_labels": OUTCOMES,
    }


# --------------------------------------------------------------------------- log-in
def _safe_next(value: str | None) -> str:
    if value and value.startswith("/review") and not value.startswith("//"):
        return value
    return url_for("review.calls")


@bp.route("/login", methods=["GET", "POST"])
def login() -> Response:
    form = LoginForm()
    error = None
    if form.validate_on_submit():
        username = form.username.data or ""
        outcome = _accounts().authenticate(username, form.password.data or "")
        if outcome is not None:
            principal, epoch = outcome
            _record("login", 200, principal)
            session.clear()
            session.permanent = True
            now = _now().timestamp()
            session.update({"u": principal.id, "e": epoch, "t0": now, "ta": now})
            return redirect(_safe_next(request.args.get("next")))  # type: ignore[return-value]
        who = username if USERNAME.match(username) else "(invalid user name)"
        _record("login-failed", 401, Principal("review", REVIEWER_SYSTEM, who))
        error = "Wrong user name or password, or the account is locked or disabled."
    return _page("review/login.html", 200, form=form, error=error)


@bp.post("/logout")
def logout() -> Response:
    _record("logout", 200)
    with contextlib.suppress(AccountError):  # the account was removed meanwhile
        _accounts().end_sessions(g.reviewer.id)
    session.clear()
    return redirect(url_for("review.login"))  # type: ignore[return-value]


# --------------------------------------------------------------------------- pages
def _filter() -> tuple[FilterForm, CallFilter]:
    form = filter_form(request.args, _services())
    if not form.validate():
        errors = "; ".join(
            f"{form[name].label.text}: {', '.join(e)}" for name, e in form.errors.items()
        )
        raise PageError(400, f"Bad filter: {errors}")
    return form, CallFilter.from_form(form)


def _link(endpoint: str, where: CallFilter, **extra: Any) -> str:
    params = [(k, v) for k, values in where.as_query().items() for v in values]
    params += [(k, str(v)) for k, v in extra.items() if v is not None]
    return url_for(endpoint) + ("?" + urlencode(params) if params else "")


@bp.get("/", strict_slashes=False)
def calls() -> Response:
    form, where = _filter()
    size = int(form.size.data or 50)
    with snapshot_session() as db:
        page = queries.page_of_calls(db, where, size, form.before.data)
        query = where.as_query() | ({"before": [str(form.before.data)]} if form.before.data else {})
        _record(
            "page", target="calls", query=query, patient_id=where.patient, count=len(page.calls)
        )
        body = render_template(
            "review/calls.html",
            form=form,
            page=page,
            where=where,
            size=size,
            next_link=_link("review.calls", where, size=size, before=page.next_before)
            if page.next_before
            else None,
            first_link=_link("review.calls", where, size=size) if form.before.data else None,
            exports={
                "CSV": _link("review.export_csv", where),
                "NDJSON (AuditEvents)": _link("review.export_ndjson", where),
                "FHIR Bundle (AuditEvents)": _link("review.export_bundle", where),
            },
            summary_link=_link("review.summary", where),
        )
    return Response(body, mimetype="text/html")


@bp.get("/calls/<int:seq>")
def call_detail(seq: int) -> Response:
    with snapshot_session() as db:
        call = queries.one_call(db, seq)
        if call is None:
            raise PageError(404, "No call with this number.")
        _record(
            "detail",
            target=f"GuidanceResponse/inv-{seq}",
            patient_id=call.invocation.patient_id,
            count=1,
        )
        body = render_template("review/call.html", call=call)
    return Response(body, mimetype="text/html")


@bp.get("/cards/<card_uuid>")
def card(card_uuid: str) -> Response:
    """Where a card is: its call's detail view, at the card."""
    if not _UUID.match(card_uuid):
        raise PageError(404, "No card with this id.")
    with snapshot_session() as db:
        seq = queries.call_of_card(db, card_uuid)
    if seq is None:
        raise PageError(404, "No card with this id.")
    target = url_for("review.call_detail", seq=seq) + f"#card-{card_uuid}"
    return redirect(target)  # type: ignore[return-value]


@bp.get("/summary")
def summary() -> Response:
    form, where = _filter()
    with snapshot_session() as db:
        figures = queries.summarise(db, where)
    _record("summary", target="summary", query=where.as_query(), patient_id=where.patient,
            count=figures.calls)  # fmt: skip
    services = figures.services
    per_day = charts.stacked_days(figures.days, services, figures.per_day)
    service_rates = charts.rate_bars(
        [(s, r.override_rate, _caption(r)) for s, r in figures.per_service.items()], "per-service"
    )
    type_rates = charts.rate_bars(
        [(f"{s}: {t}", r.override_rate, _caption(r)) for (s, t), r in figures.per_type.items()],
        "per-card-type",
    )
    return _page(
        "review/summary.html",
        form=form,
        figures=figures,
        per_day=per_day,
        service_rates=service_rates,
        type_rates=type_rates,
        calls_link=_link("review.calls", where),
    )


def _caption(rate: queries.Rate) -> str:
    if rate.override_rate is None:
        return f"no feedback ({rate.cards} cards)"
    return (
        f"{rate.override_rate:.0%} overridden · {rate.overridden} of {rate.with_feedback} "
        f"with feedback · {rate.cards} cards"
    )


@bp.get("/access")
def access_log() -> Response:
    if "auditor" not in g.reviewer.roles:
        raise PageError(403, "The access log is for auditors.")
    before = request.args.get("before", type=int)
    with snapshot_session() as db:
        rows, next_before = queries.page_of_access(db, 100, before)
    _record("access-log", target="access-log", count=len(rows))
    return _page(
        "review/access.html",
        rows=rows,
        next_link=url_for("review.access_log", before=next_before) if next_before else None,
    )


# --------------------------------------------------------------------------- exports
def _export(kind: str, stream: Callable[[Iterator[Any]], Iterator[str]], mimetype: str,
            extension: str) -> Response:  # fmt: skip
    _, where = _filter()
    db = snapshot_session()
    try:
        up_to = queries.head_seq(db)
        count = queries.count_calls(db, where, up_to)
        query = where.as_query() | {"up_to_seq": [str(up_to)]}
        _record(
            f"export-{kind}", target="calls", query=query, patient_id=where.patient, count=count
        )
    except BaseException:
        db.close()
        raise

    def generate() -> Iterator[str]:
        try:
            yield from stream(queries.stream_calls(db, where, up_to))
        finally:
            db.close()

    response = Response(stream_with_context(generate()), mimetype=mimetype)
    response.headers["Content-Disposition"] = (
        f'attachment; filename="wardround-calls-to-{up_to}.{extension}"'
    )
    return response


@bp.get("/export.csv")
def export_csv() -> Response:
    return _export("csv", exports.csv_stream, "text/csv", "csv")


@bp.get("/export.ndjson")
def export_ndjson() -> Response:
    base = public_base_url()
    return _export(
        "ndjson", lambda calls: exports.ndjson_stream(calls, base), "application/fhir+ndjson",
        "ndjson",
    )  # fmt: skip


@bp.get("/export.json")
def export_bundle() -> Response:
    base = public_base_url()
    return _export(
        "bundle", lambda calls: exports.bundle_stream(calls, base), "application/fhir+json", "json"
    )
