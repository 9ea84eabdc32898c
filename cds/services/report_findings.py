"""``patient-view`` service "report findings": what the patient's recent reports and notes say.

Reads the texts of the patient's DiagnosticReports and DocumentReferences (prefetch
``reports`` and ``documents``, or fetched from ``fhirServer``) from the last
``WARDROUND_REPORT_LOOKBACK_DAYS`` days (undated texts are read too, and said to be
undated), runs the report reader (``models/nlp``) and raises a card only for what needs
action:

* **pneumothorax** stated as present → a *critical* card; hedged ("cannot exclude a small
  pneumothorax") or suggested only by the model → a *warning* worded as uncertain;
* **lung nodule or mass** → a *warning* with the Fleischner 2017 follow-up; when the report
  states a size, a suggestion to create the follow-up CT as a draft ``ServiceRequest``
  (timing from the guideline, assumptions listed). Calcified (benign) nodules raise nothing.

Negated or resolved findings never raise a card. For each finding the newest report that
mentions it decides: a newer "the pneumothorax has resolved" silences an older one. Each
card quotes the sentence that triggered it, links to the source report (an absolute URL
when the request names its ``fhirServer``) and to the model card (``/models/report-nlp/``),
and carries a ``CardResult`` observation
(SNOMED CT code, assertion, probability, evidence sentence, basis the report).
"""

from __future__ import annotations

from datetime import UTC, date, datetime, timedelta
from typing import Any

from cds.cards import Action, Card, Coding, Link, Source, Suggestion
from cds.config import Settings
from cds.model_pages import MODEL_CARD_LABEL, card_links
from cds.results import CardResult, Code
from cds.services.registry import CdsService, HookCall, ServiceResult
from fhir_adapters import PATIENT_CONTEXT_PREFETCH, PatientContext
from fhir_adapters.patient_context import SNOMED
from fhir_adapters.report_text import ReportText
from models import registry
from models.nlp import MODEL_ID
from models.nlp.fleischner import ASSUMPTIONS, SOURCE, SOURCE_URL, FollowUp, follow_up
from models.nlp.reader import FindingResult

PNEUMOTHORAX = "pneumothorax"
NODULE = "lung_nodule_mass"
ACTIONABLE = (PNEUMOTHORAX, NODULE)
DEFAULT_LOOKBACK_DAYS = 90
CT_CHEST = {"system": SNOMED, "code": "169069000", "display": "Computed tomography of chest"}
SOURCE_LABEL = "Wardround report NLP"
OVERRIDE_REASON_SYSTEM = "urn:wardround:cds:override-reason"
OVERRIDE_REASONS = (
    Coding(
        system=OVERRIDE_REASON_SYSTEM,
        code="already-managed",
        display="Already known and being managed",
    ),
    Coding(
        system=OVERRIDE_REASON_SYSTEM,
        code="report-misread",
        display="The report does not say this (misread) or is out of date",
    ),
)


def _lookback_days(settings: Settings | None) -> int:
    return settings.report_lookback_days if settings else DEFAULT_LOOKBACK_DAYS


def recent(reports: tuple[ReportText, ...], days: int, now: datetime) -> list[ReportText]:
    """Texts dated within ``days`` of ``now`` (and undated ones), newest first as given."""
    since = now - timedelta(days=days)
    return [r for r in reports if r.date is None or r.date >= since]


def _reference(report: ReportText) -> str:
    return f"{report.source}/{report.resource_id or 'unknown'}"


def _when(report: ReportText) -> str:
    return report.date.date().isoformat() if report.date else "undated"


def _name(report: ReportText) -> str:
    return (report.code_text or report.source)[:60]


def _add_months(day: date, months: int) -> date:
    month = day.month - 1 + months
    year, month = day.year + month // 12, month % 12 + 1
    last = [31, 29 if year % 4 == 0 and (year % 100 or year % 400 == 0) else 28, 31, 30, 31,
            30, 31, 31, 30, 31, 30, 31][month - 1]  # fmt: skip
    return date(year, month, min(day.day, last))


def _quote(text: str | None) -> str:
    if not text:
        return "_(no sentence could be quoted)_"
    return "> " + " ".join(text.split()).replace("*", "\\*").replace("_", "\\_")


def _source_lines(report: ReportText, fhir_server: str | None) -> tuple[str, list[Link]]:
    reference = _reference(report)
    where = f"{report.part}, {_when(report)}" + (
        f", status {report.status}" if report.status else ""
    )
    if fhir_server and report.resource_id:
        url = f"{fhir_server.rstrip('/')}/{reference}"
        link = Link(label=f"Source report ({_name(report)})", url=url, type="absolute")
        return f"Source: [{reference}]({url}) ({where}).", [link]
    return f"Source: {reference} in the EHR ({where}).", []


def _wording(finding: FindingResult) -> str:
    if finding.basis == "model":
        return (
            "The report does not name this finding; the trained model suggests it "
            f"(probability {finding.probability:.2f}). Read the report to confirm."
        )
    if finding.assertion == "uncertain":
        return (
            "The report states this with uncertainty (hedged), not as a definite finding"
            + (f" ({finding.trigger})" if finding.trigger else "")
            + "."
        )
    return "The report states this finding as present."


def _result(finding: FindingResult, report: ReportText, facts: dict[str, Any]) -> CardResult:
    return CardResult(
        kind="observation",
        code=Code(system=finding.system, code=finding.code, display=finding.display),
        model=MODEL_ID,
        basis=(_reference(report),),
        text=finding.evidence,
        probability=min(1.0, max(0.0, finding.probability)),
        assertion=finding.assertion,
        facts={
            "part": report.part,
            "report_date": _when(report),
            "basis": finding.basis,
            **facts,
        },
    )


def _pneumothorax_card(
    finding: FindingResult, report: ReportText, fhir_server: str | None, model_links: list[Link]
) -> tuple[Card, CardResult]:
    certain = finding.assertion == "present" and finding.basis == "text"
    lead = "Pneumothorax" if certain else "Possible pneumothorax (uncertain)"
    source_line, links = _source_lines(report, fhir_server)
    card = Card(
        summary=f"{lead} in {_name(report)} ({_when(report)})"[:139],
        detail="\n\n".join(
            [
                _quote(finding.evidence),
                _wording(finding),
                "A pneumothorax may need urgent assessment (size, symptoms, tension).",
                source_line,
            ]
        ),
        indicator="critical" if certain else "warning",
        source=Source(label=SOURCE_LABEL),
        links=links + model_links,
        overrideReasons=list(OVERRIDE_REASONS) if certain else None,
    )
    return card, _result(finding, report, {})


def _service_request(
    patient: PatientContext, report: ReportText, plan: FollowUp, now: datetime
) -> dict[str, Any]:
    assert plan.ct_months is not None
    start_day = (report.date or now).date()
    earliest, latest = plan.ct_months
    resource: dict[str, Any] = {
        "resourceType": "ServiceRequest",
        "status": "draft",
        "intent": "proposal",
        "subject": {"reference": f"Patient/{patient.patient_id}"},
        "code": {"coding": [CT_CHEST], "text": "CT chest (pulmonary nodule follow-up)"},
        "occurrencePeriod": {
            "start": _add_months(start_day, earliest).isoformat(),
            "end": _add_months(start_day, max(latest, earliest)).isoformat(),
        },
        "reasonCode": [
            {"coding": [{"system": SNOMED, "code": "786838002", "display": "Pulmonary nodule"}]}
        ],
        "note": [{"text": f"{plan.summary} ({SOURCE})"}],
    }
    if report.resource_id and report.source == "DiagnosticReport":
        resource["reasonReference"] = [{"reference": _reference(report)}]
    return resource


def _nodule_card(
    finding: FindingResult,
    report: ReportText,
    patient: PatientContext,
    fhir_server: str | None,
    now: datetime,
    model_links: list[Link],
) -> tuple[Card, CardResult] | None:
    plan = follow_up(finding.evidence or "", patient.age_years)
    if plan.benign:
        return None  # a calcified nodule: nothing to follow up
    uncertain = finding.assertion != "present" or finding.basis != "text"
    lead = "Possible lung nodule/mass (uncertain)" if uncertain else "Lung nodule/mass"
    size = f", {plan.size_mm:g} mm" if plan.size_mm is not None else ""
    source_line, links = _source_lines(report, fhir_server)
    suggestions = []
    if plan.ct_months is not None:
        label = (
            "Optional (high-risk patient): order CT chest at 12 months"
            if plan.optional
            else f"Order follow-up CT chest ({plan.summary.split(': ', 1)[-1][:80]})"
        )
        suggestions.append(
            Suggestion(
                label=label[:200],
                isRecommended=False if plan.optional else None,
                actions=[
                    Action(
                        type="create",
                        description="Draft a CT chest ServiceRequest for nodule follow-up",
                        resource=_service_request(patient, report, plan, now),
                    )
                ],
            )
        )
    assumptions = "\n".join(f"- {a}" for a in ASSUMPTIONS)
    card = Card(
        summary=f"{lead}{size} in {_name(report)} ({_when(report)}): follow-up needed"[:139],
        detail="\n\n".join(
            [
                _quote(finding.evidence),
                _wording(finding),
                f"**Follow-up ({SOURCE})**: {plan.summary}",
                f"Assumptions:\n{assumptions}",
                "Fleischner sizes refer to CT; a nodule seen on a radiograph is usually "
                "characterised with CT first.",
                source_line,
            ]
        ),
        indicator="info" if plan.optional else "warning",
        source=Source(label=SOURCE_LABEL, url=SOURCE_URL),
        links=links + model_links,
        suggestions=suggestions,
        selectionBehavior="at-most-one" if suggestions else None,
    )
    facts = {"size_mm": plan.size_mm, "fleischner": plan.category, "multiple": plan.multiple}
    return card, _result(finding, report, {k: v for k, v in facts.items() if v is not None})


def _newest_mentions(
    reports: list[ReportText], read: list[Any]
) -> dict[str, tuple[FindingResult, ReportText]]:
    """Per actionable finding, the newest report that mentions it (any assertion)."""
    newest: dict[str, tuple[FindingResult, ReportText]] = {}
    for report, findings in zip(reports, read, strict=True):  # newest first
        for label in ACTIONABLE:
            finding = findings.get(label)
            if finding is not None and label not in newest:
                newest[label] = (finding, report)
    return newest


def report_findings(call: HookCall) -> ServiceResult:
    return read_findings(call, _lookback_days(call.settings), datetime.now(UTC))


def read_findings(call: HookCall, lookback_days: int, now: datetime) -> ServiceResult:
    """The cards for the patient's texts of the last ``lookback_days`` before ``now``."""
    reports = recent(call.patient.reports, lookback_days, now)
    if not reports:
        return ServiceResult()
    reader = registry.get(MODEL_ID)
    read = reader.read([r.text for r in reports])
    fhir_server = call.request.fhirServer
    model_links = card_links(call.settings, MODEL_ID, MODEL_CARD_LABEL)
    cards: list[Card] = []
    results: dict[str, CardResult] = {}
    for label, (finding, report) in _newest_mentions(reports, read).items():
        if finding.assertion == "absent":
            continue  # negated or resolved in the newest report that mentions it
        if label == PNEUMOTHORAX:
            made: tuple[Card, CardResult] | None = _pneumothorax_card(
                finding, report, fhir_server, model_links
            )
        else:
            made = _nodule_card(finding, report, call.patient, fhir_server, now, model_links)
        if made is not None:
            cards.append(made[0])
            results[made[0].uuid] = made[1]
    order = {"critical": 0, "warning": 1, "info": 2}
    cards.sort(key=lambda c: order[c.indicator])
    return ServiceResult(cards=cards, models=[reader.identity], results=results)


SERVICE = CdsService(
    id="report-findings",
    hook="patient-view",
    title="Report findings",
    description=(
        "Reads the patient's recent radiology reports and notes: a critical card for a "
        "pneumothorax, a warning with Fleischner 2017 follow-up for a lung nodule or mass. "
        "Negated findings raise nothing; uncertain ones are worded as such."
    ),
    handler=report_findings,
    prefetch={key: PATIENT_CONTEXT_PREFETCH[key] for key in ("patient", "reports", "documents")},
    required_prefetch=frozenset({"patient"}),
    usage_requirements=(
        "Send the patient, reports (DiagnosticReport) and documents (DocumentReference) "
        "prefetch, or fhirServer with fhirAuthorization so the service fetches them."
    ),
)
