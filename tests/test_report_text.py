"""Report and note text from DiagnosticReport / DocumentReference, on real radiology reports.

The report text comes from the shared IU chest X-ray reports, read at test time (its
licence forbids shipping it in the repository). Resources are FHIR JSON parsed with
``parse_resource``; fetched binaries come from :class:`BinaryServerDouble`, a test double
that stands for the FHIR client (which is tested against a real FHIR server elsewhere).
"""

from __future__ import annotations

import base64
import csv
import json
import re
import warnings
from collections.abc import Iterator
from dataclasses import dataclass, field
from datetime import UTC, datetime
from functools import cache
from typing import Any

import pytest
from fhir.resources.R4B.attachment import Attachment
from fhir.resources.R4B.diagnosticreport import DiagnosticReport
from fhir.resources.R4B.documentreference import DocumentReference
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from fhir_adapters.parsing import ResourceInvalid, parse_resource
from fhir_adapters.report_text import (
    BinaryContent,
    BinaryUnavailable,
    ReportText,
    TextExtraction,
    TextLimits,
    collect_report_texts,
    texts_from_diagnostic_report,
    texts_from_document_reference,
)
from tests.support.missing import shared_file

IU_REPORTS = "iu-xray-reports/reports.csv"
CXR = {"coding": [{"system": "http://loinc.org", "code": "36643-5"}], "text": "XR Chest 2V"}


# --------------------------------------------------------------------------- real reports
@dataclass(frozen=True)
class IuReport:
    uid: str
    findings: str
    impression: str

    @property
    def plain(self) -> str:
        return f"FINDINGS: {self.findings}\n\nIMPRESSION: {self.impression}"

    @property
    def normalised(self) -> str:
        """What extraction should give for ``plain``: single spaces, the blank line kept."""
        return "\n\n".join(" ".join(p.split()) for p in self.plain.split("\n\n"))

    @property
    def words(self) -> list[str]:
        """Distinctive words of the text, to check warnings never quote it."""
        return [w for w in re.findall(r"[a-z]{7,}", self.plain.lower()) if w != "findings"]


@cache
def _iu_reports() -> tuple[IuReport, ...]:
    with shared_file(IU_REPORTS).open(newline="", encoding="utf-8") as f:
        rows = list(csv.DictReader(f))
    return tuple(
        IuReport(row["uid"], row["findings"].strip(), row["impression"].strip())
        for row in rows
        if row["findings"].strip() and row["impression"].strip()
    )


def iu_report(index: int = 0) -> IuReport:
    return _iu_reports()[index]


def longest_iu_report() -> IuReport:
    return max(_iu_reports(), key=lambda r: len(r.plain))


def b64(data: bytes) -> str:
    return base64.b64encode(data).decode("ascii")


def as_html(report: IuReport) -> str:
    return (
        "<!DOCTYPE html><html><head><title>Radiology report</title>"
        "<style>p { color: red } .SECRETSTYLE {}</style></head><body>"
        '<script>var SECRETSCRIPT = "<p>not text</p>";</script>'
        f"<h2>Findings</h2><p>{report.findings}</p>\n"
        f"<h2>Impression</h2>\n  <p>{report.impression}</p><!-- SECRETCOMMENT --></body></html>"
    )


# --------------------------------------------------------------------------- resources
def diagnostic_report(
    forms: list[dict[str, Any]] | None = None,
    *,
    id: str = "dr1",
    status: str = "final",
    conclusion: str | None = None,
    effective: str | None = "2024-03-01T09:30:00Z",
    **extra: Any,
) -> DiagnosticReport:
    data: dict[str, Any] = {
        "resourceType": "DiagnosticReport",
        "id": id,
        "status": status,
        "code": CXR,
        "subject": {"reference": "Patient/p1"},
    }
    if effective is not None:
        data["effectiveDateTime"] = effective
    if conclusion is not None:
        data["conclusion"] = conclusion
    if forms:
        data["presentedForm"] = forms
    return parse_resource(data | extra, "DiagnosticReport")


def document_reference(
    attachments: list[dict[str, Any]],
    *,
    id: str = "doc1",
    status: str = "current",
    date: str | None = "2024-02-01T12:00:00+01:00",
    **extra: Any,
) -> DocumentReference:
    data: dict[str, Any] = {
        "resourceType": "DocumentReference",
        "id": id,
        "status": status,
        "type": {
            "coding": [
                {
                    "system": "http://loinc.org",
                    "code": "18748-4",
                    "display": "Diagnostic imaging study",
                }
            ]
        },
        "subject": {"reference": "Patient/p1"},
        "content": [{"attachment": a} for a in attachments],
    }
    if date is not None:
        data["date"] = date
    return parse_resource(data | extra, "DocumentReference")


@dataclass
class BinaryServerDouble:
    """Test double for the FHIR client's ``fetch_binary``: serves bytes from a dict.

    A value that is a :class:`BinaryUnavailable` is raised, as the client raises it for a
    failed request. ``requested`` records every URL asked for.
    """

    served: dict[str, BinaryContent | BinaryUnavailable]
    requested: list[str] = field(default_factory=list)

    def __call__(self, url: str) -> BinaryContent:
        self.requested.append(url)
        result = self.served.get(url, BinaryUnavailable("HTTP 404"))
        if isinstance(result, BinaryUnavailable):
            raise result
        return result


def only_text(extraction: TextExtraction) -> ReportText:
    assert extraction.warnings == ()
    assert len(extraction.texts) == 1
    return extraction.texts[0]


def assert_warnings_quote_nothing(extraction: TextExtraction, report: IuReport) -> None:
    joined = " ".join(extraction.warnings).lower()
    assert not [word for word in report.words if word in joined]


@pytest.fixture
def no_python_warnings() -> Iterator[None]:
    """Fail on any Python warning (bs4 warns about markup it finds unusual)."""
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        yield


# --------------------------------------------------------------------------- text/plain
def test_inline_plain_text_is_decoded_and_normalised() -> None:
    report = iu_report(0)
    raw = report.plain.replace(". ", ".   ").replace("\n\n", "\r\n\r\n\r\n")
    dr = diagnostic_report([{"contentType": "text/plain", "data": b64(raw.encode())}])

    text = only_text(texts_from_diagnostic_report(dr, None, TextLimits()))

    assert text.text == report.normalised
    assert text.source == "DiagnosticReport"
    assert text.resource_id == "dr1"
    assert text.part == "presentedForm[0]"
    assert text.content_type == "text/plain"
    assert text.date == datetime(2024, 3, 1, 9, 30, tzinfo=UTC)
    assert text.code_text == "XR Chest 2V"
    assert text.status == "final"
    assert text.truncated is False


def test_markdown_is_kept_as_is() -> None:
    report = iu_report(1)
    markdown = f"## Findings\n\n{report.findings}\n\n**Impression:** {report.impression}"
    dr = diagnostic_report([{"contentType": "text/markdown", "data": b64(markdown.encode())}])

    text = only_text(texts_from_diagnostic_report(dr, None, TextLimits()))

    assert text.text == markdown
    assert text.content_type == "text/markdown"


def test_latin1_charset_parameter_is_honoured() -> None:
    report = iu_report(2)
    # A synthetic sign-off with characters that latin-1 and UTF-8 encode differently.
    latin1 = f"{report.plain}\n\nSigné: Dr Müller, Zürich - à revoir".encode("latin-1")
    with pytest.raises(UnicodeDecodeError):
        latin1.decode("utf-8")
    dr = diagnostic_report([{"contentType": "text/plain; charset=ISO-8859-1", "data": b64(latin1)}])

    text = only_text(texts_from_diagnostic_report(dr, None, TextLimits()))

    assert text.text.endswith("Signé: Dr Müller, Zürich - à revoir")
    assert text.text.startswith(report.normalised)


def test_utf8_is_the_default_and_bad_bytes_are_replaced() -> None:
    report = iu_report(3)
    data = report.plain.encode() + b"\n\nSign\xe9 \xff\xfe end"  # not UTF-8
    dr = diagnostic_report([{"contentType": "text/plain", "data": b64(data)}])

    text = only_text(texts_from_diagnostic_report(dr, None, TextLimits()))

    assert text.text.startswith(report.normalised)
    assert text.text.endswith("Sign\ufffd \ufffd\ufffd end")


def test_unknown_charset_is_read_as_utf8_with_a_warning() -> None:
    report = iu_report(4)
    form = {
        "contentType": "text/plain; charset=x-no-such-charset",
        "data": b64(report.plain.encode()),
    }
    dr = diagnostic_report([form])

    extraction = texts_from_diagnostic_report(dr, None, TextLimits())

    assert [t.text for t in extraction.texts] == [report.normalised]
    assert extraction.warnings == (
        "DiagnosticReport/dr1 presentedForm[0]: unknown charset, read as UTF-8",
    )


def test_utf16_with_byte_order_mark_needs_no_charset() -> None:
    report = iu_report(5)
    dr = diagnostic_report(
        [{"contentType": "text/plain", "data": b64(report.plain.encode("utf-16"))}]
    )

    assert only_text(texts_from_diagnostic_report(dr, None, TextLimits())).text == report.normalised


# --------------------------------------------------------------------------- HTML
def test_html_becomes_paragraphs_without_script_style_or_comments(no_python_warnings: None) -> None:
    report = iu_report(6)
    dr = diagnostic_report([{"contentType": "text/html", "data": b64(as_html(report).encode())}])

    text = only_text(texts_from_diagnostic_report(dr, None, TextLimits()))

    assert text.content_type == "text/html"
    assert text.text == (
        f"Radiology report\n\nFindings\n\n{' '.join(report.findings.split())}"
        f"\n\nImpression\n\n{' '.join(report.impression.split())}"
    )
    for hidden in ("SECRETSTYLE", "SECRETSCRIPT", "SECRETCOMMENT", "not text", "color"):
        assert hidden not in text.text


def test_html_line_breaks_lists_tables_and_entities(no_python_warnings: None) -> None:
    report = iu_report(7)
    sentences = [s.strip() for s in report.findings.split(".") if s.strip()][:2]
    markup = (
        f"<div>{sentences[0]}.<br>{sentences[-1]}.</div>"
        "<ul><li>Heart &amp; lungs</li><li>No&nbsp;effusion</li></ul>"
        "<table><tr><th>Side</th><th>Finding</th></tr><tr><td>Left</td><td>Clear</td></tr></table>"
        "<pre>Line one\n   Line two</pre>"
    )
    dr = diagnostic_report(
        [{"contentType": "text/html; charset=utf-8", "data": b64(markup.encode())}]
    )

    text = only_text(texts_from_diagnostic_report(dr, None, TextLimits())).text

    assert text == (
        f"{sentences[0]}.\n{sentences[-1]}.\n\nHeart & lungs\nNo effusion\n\n"
        "Side Finding\nLeft Clear\n\nLine one\nLine two"
    )


def test_xhtml_with_xml_declaration(no_python_warnings: None) -> None:
    report = iu_report(8)
    xhtml = (
        '<?xml version="1.0" encoding="UTF-8"?>\n'
        '<html xmlns="http://www.w3.org/1999/xhtml"><body>'
        f"<p>{report.findings}</p><p>{report.impression}</p></body></html>"
    )
    dr = diagnostic_report([{"contentType": "application/xhtml+xml", "data": b64(xhtml.encode())}])

    text = only_text(texts_from_diagnostic_report(dr, None, TextLimits()))

    assert text.text == report.normalised.removeprefix("FINDINGS: ").replace("IMPRESSION: ", "")
    assert text.content_type == "application/xhtml+xml"


def test_html_meta_charset_is_used_without_a_charset_parameter() -> None:
    report = iu_report(9)
    markup = (
        '<html><head><meta charset="iso-8859-1"></head>'
        f"<body><p>{report.findings}</p><p>Signé</p></body></html>"
    )
    dr = diagnostic_report([{"contentType": "text/html", "data": b64(markup.encode("latin-1"))}])

    text = only_text(texts_from_diagnostic_report(dr, None, TextLimits())).text

    assert text.endswith("\n\nSigné")


def test_html_without_tags_is_unescaped(no_python_warnings: None) -> None:
    dr = diagnostic_report([{"contentType": "text/html", "data": b64(b"report.txt &amp; more")}])

    assert only_text(texts_from_diagnostic_report(dr, None, TextLimits())).text == (
        "report.txt & more"
    )


def test_html_the_parser_rejects_is_a_warning() -> None:
    report = iu_report(19)
    markup = f"<p>{report.findings}</p><![ bad [ section ]]>"
    dr = diagnostic_report([{"contentType": "text/html", "data": b64(markup.encode())}])

    extraction = texts_from_diagnostic_report(dr, None, TextLimits())

    assert extraction.texts == ()
    assert extraction.warnings == (
        "DiagnosticReport/dr1 presentedForm[0]: HTML could not be parsed",
    )


def test_deeply_nested_html_does_not_recurse() -> None:
    report = iu_report(10)
    markup = "<div>" * 20_000 + report.impression + "</div>" * 20_000
    dr = diagnostic_report([{"contentType": "text/html", "data": b64(markup.encode())}])

    text = only_text(texts_from_diagnostic_report(dr, None, TextLimits()))

    assert text.text == " ".join(report.impression.split())


# --------------------------------------------------------------------------- conclusion
def test_conclusion_only() -> None:
    report = iu_report(11)
    dr = diagnostic_report(conclusion=report.impression, effective="2023-11-05")

    text = only_text(texts_from_diagnostic_report(dr, None, TextLimits()))

    assert text.part == "conclusion"
    assert text.content_type == "text/plain"
    assert text.text == " ".join(report.impression.split())
    assert text.date == datetime(2023, 11, 5, tzinfo=UTC)


def test_conclusion_comes_before_presented_forms() -> None:
    report = iu_report(12)
    form = {"contentType": "text/plain", "data": b64(report.plain.encode())}
    dr = diagnostic_report([form], conclusion=report.impression)

    extraction = texts_from_diagnostic_report(dr, None, TextLimits())

    assert [t.part for t in extraction.texts] == ["conclusion", "presentedForm[0]"]


# --------------------------------------------------------------------------- via url
def test_url_served_as_raw_bytes() -> None:
    report = iu_report(13)
    server = BinaryServerDouble(
        {"Binary/b1": BinaryContent("text/plain; charset=utf-8", report.plain.encode())}
    )
    doc = document_reference([{"contentType": "text/plain", "url": "Binary/b1"}])

    text = only_text(texts_from_document_reference(doc, server, TextLimits()))

    assert server.requested == ["Binary/b1"]
    assert text.text == report.normalised
    assert text.source == "DocumentReference"
    assert text.part == "content[0]"
    assert text.code_text == "Diagnostic imaging study"
    assert text.date == datetime.fromisoformat("2024-02-01T12:00:00+01:00")


def test_url_served_as_fhir_binary_resource() -> None:
    report = iu_report(14)
    binary = {
        "resourceType": "Binary",
        "contentType": "text/html",
        "data": b64(as_html(report).encode()),
    }
    url = "https://fhir.example.org/r4/Binary/b2"
    server = BinaryServerDouble(
        {url: BinaryContent("application/fhir+json", json.dumps(binary).encode())}
    )
    doc = document_reference([{"contentType": "text/html", "url": url}])

    text = only_text(texts_from_document_reference(doc, server, TextLimits()))

    assert text.content_type == "text/html"
    assert "SECRETSCRIPT" not in text.text
    assert text.text.endswith(" ".join(report.impression.split()))


def test_served_charset_and_generic_type_defer_to_the_attachment() -> None:
    report = iu_report(15)
    data = f"{report.plain}\n\nSigné".encode("latin-1")
    server = BinaryServerDouble({"Binary/b3": BinaryContent("application/octet-stream", data)})
    doc = document_reference([{"contentType": "text/plain; charset=latin-1", "url": "Binary/b3"}])

    text = only_text(texts_from_document_reference(doc, server, TextLimits()))

    assert text.text.endswith("Signé")


def test_fetch_failure_is_a_warning() -> None:
    report = iu_report(16)
    server = BinaryServerDouble({"Binary/gone": BinaryUnavailable("HTTP 410")})
    doc = document_reference(
        [
            {"contentType": "text/plain", "url": "Binary/gone"},
            {"contentType": "text/plain", "data": b64(report.plain.encode())},
        ]
    )

    extraction = texts_from_document_reference(doc, server, TextLimits())

    assert [t.part for t in extraction.texts] == ["content[1]"]
    assert extraction.warnings == (
        "DocumentReference/doc1 content[0]: binary unavailable: HTTP 410",
    )


def test_url_without_a_fetcher_is_a_warning() -> None:
    doc = document_reference([{"contentType": "text/plain", "url": "Binary/b4"}])

    extraction = texts_from_document_reference(doc, None, TextLimits())

    assert extraction.texts == ()
    assert extraction.warnings == (
        "DocumentReference/doc1 content[0]: attachment has a url and no fetcher was given",
    )


def test_fetched_binary_with_bad_base64_is_a_warning() -> None:
    binary = {"resourceType": "Binary", "contentType": "text/plain", "data": "bm90IHZhbGl"}
    server = BinaryServerDouble(
        {
            "Binary/b5": BinaryContent(
                "application/fhir+json;charset=utf-8", json.dumps(binary).encode()
            )
        }
    )
    doc = document_reference([{"contentType": "text/plain", "url": "Binary/b5"}])

    extraction = texts_from_document_reference(doc, server, TextLimits())

    assert extraction.texts == ()
    assert extraction.warnings == (
        "DocumentReference/doc1 content[0]: fetched Binary is invalid (bad base64 or structure)",
    )


@pytest.mark.parametrize(
    ("body", "reason"),
    [
        (b"{not json", "fetched FHIR JSON is not valid JSON"),
        (b"[" * 100_000, "fetched FHIR JSON is not valid JSON"),
        (b'{"resourceType": "Patient", "id": "p1"}', "fetched FHIR JSON is not a Binary"),
        (b'{"resourceType": "Binary", "contentType": "text/plain"}', "fetched Binary has no data"),
    ],
)
def test_fetched_fhir_json_that_is_not_a_usable_binary(body: bytes, reason: str) -> None:
    server = BinaryServerDouble({"Binary/b6": BinaryContent("application/fhir+json", body)})
    doc = document_reference([{"contentType": "text/plain", "url": "Binary/b6"}])

    extraction = texts_from_document_reference(doc, server, TextLimits())

    assert extraction.warnings == (f"DocumentReference/doc1 content[0]: {reason}",)


# --------------------------------------------------------------------------- skipped parts
def test_unsupported_content_types_are_skipped_without_fetching() -> None:
    report = iu_report(17)
    server = BinaryServerDouble({})
    pdf = b"%PDF-1.4\n" + report.plain.encode() + b"\n%%EOF"
    doc = document_reference(
        [
            {"contentType": "application/pdf", "data": b64(pdf)},
            {"contentType": "application/dicom", "url": "Binary/dicom1"},
            {"contentType": "image/png", "url": "Binary/png1"},
            {"data": b64(report.plain.encode())},
            {"contentType": "text/plain", "data": b64(report.plain.encode())},
        ]
    )

    extraction = texts_from_document_reference(doc, server, TextLimits())

    assert server.requested == []
    assert [t.part for t in extraction.texts] == ["content[4]"]
    assert extraction.warnings == (
        "DocumentReference/doc1 content[0]: unsupported content type application/pdf",
        "DocumentReference/doc1 content[1]: unsupported content type application/dicom",
        "DocumentReference/doc1 content[2]: unsupported content type image/png",
        "DocumentReference/doc1 content[3]: no content type",
    )
    assert_warnings_quote_nothing(extraction, report)


def test_served_type_that_is_unsupported_is_skipped() -> None:
    server = BinaryServerDouble({"Binary/b7": BinaryContent("application/pdf", b"%PDF-1.7")})
    doc = document_reference([{"url": "Binary/b7"}])

    extraction = texts_from_document_reference(doc, server, TextLimits())

    assert extraction.warnings == (
        "DocumentReference/doc1 content[0]: unsupported content type application/pdf",
    )


def test_oversize_attachments_are_skipped() -> None:
    report = longest_iu_report()
    data = report.plain.encode()
    limits = TextLimits(max_bytes=len(data) - 1)
    server = BinaryServerDouble({"Binary/big": BinaryContent("text/plain", data)})
    dr = diagnostic_report(
        [
            {"contentType": "text/plain", "url": "Binary/declared", "size": 5 * 1024 * 1024},
            {"contentType": "text/plain", "data": b64(data)},
            {"contentType": "text/plain", "url": "Binary/big"},
            {"contentType": "text/plain", "data": b64(data[: limits.max_bytes])},
        ]
    )

    extraction = texts_from_diagnostic_report(dr, server, limits)

    assert server.requested == ["Binary/big"]  # the declared size was enough to skip
    assert [t.part for t in extraction.texts] == ["presentedForm[3]"]
    over = f"over {limits.max_bytes} bytes"
    assert extraction.warnings == (
        f"DiagnosticReport/dr1 presentedForm[0]: attachment declares {over}",
        f"DiagnosticReport/dr1 presentedForm[1]: attachment {over}",
        f"DiagnosticReport/dr1 presentedForm[2]: attachment {over}",
    )


def test_inline_bad_base64_is_refused_by_the_parser() -> None:
    with pytest.raises(ResourceInvalid, match=r"presentedForm\.0\.data"):
        diagnostic_report([{"contentType": "text/plain", "data": "bm90IHZhbGl"}])


def test_inline_bad_base64_in_an_unvalidated_attachment_is_a_warning() -> None:
    # A model built without validation keeps base64 as text; it must still not raise.
    unvalidated = Attachment.model_construct(contentType="text/plain", data="bm90IHZhbGl")
    dr = diagnostic_report([unvalidated])  # type: ignore[list-item]

    extraction = texts_from_diagnostic_report(dr, None, TextLimits())

    assert extraction.texts == ()
    assert extraction.warnings == (
        "DiagnosticReport/dr1 presentedForm[0]: attachment data is not valid base64",
    )


def test_empty_text_and_missing_content_are_warnings() -> None:
    script_only = b"<html><script>var x = 1;</script></html>"
    dr = diagnostic_report(
        [{"contentType": "text/html", "data": b64(script_only)}, {"contentType": "text/plain"}]
    )

    extraction = texts_from_diagnostic_report(dr, None, TextLimits())

    assert extraction.texts == ()
    assert extraction.warnings == (
        "DiagnosticReport/dr1 presentedForm[0]: no text",
        "DiagnosticReport/dr1 presentedForm[1]: attachment has neither data nor url",
    )


# --------------------------------------------------------------------------- truncation
def test_truncation_cuts_at_a_word_boundary() -> None:
    report = longest_iu_report()
    full = report.normalised
    limits = TextLimits(max_chars=len(full) // 2)
    assert not full[limits.max_chars].isspace()  # the limit falls inside a word
    dr = diagnostic_report([{"contentType": "text/plain", "data": b64(report.plain.encode())}])

    text = only_text(texts_from_diagnostic_report(dr, None, limits))

    assert text.truncated is True
    assert len(text.text) <= limits.max_chars
    assert full.startswith(text.text)
    assert full[len(text.text)].isspace()
    assert len(text.text) > limits.max_chars - 20  # only the partial word was dropped


def test_text_at_the_limit_is_not_truncated() -> None:
    report = iu_report(18)
    limits = TextLimits(max_chars=len(report.normalised))
    dr = diagnostic_report([{"contentType": "text/plain", "data": b64(report.plain.encode())}])

    text = only_text(texts_from_diagnostic_report(dr, None, limits))

    assert (text.text, text.truncated) == (report.normalised, False)


def test_limits_must_be_positive() -> None:
    with pytest.raises(ValueError, match="positive"):
        TextLimits(max_texts=0)


# --------------------------------------------------------------------------- many resources
def test_collect_orders_newest_first_across_resource_types() -> None:
    reports = [iu_report(i) for i in range(20, 25)]
    server = BinaryServerDouble(
        {"Binary/n1": BinaryContent("text/plain", reports[3].plain.encode())}
    )
    drs = [
        diagnostic_report(conclusion=reports[0].impression, id="old", effective="2019-05-01"),
        diagnostic_report(conclusion=reports[1].impression, id="undated", effective=None),
        diagnostic_report(
            conclusion=reports[2].impression,
            id="issued",
            effective=None,
            issued="2024-06-01T08:00:00Z",
        ),
    ]
    docs = [
        document_reference(
            [{"contentType": "text/plain", "url": "Binary/n1"}],
            id="month",
            date=None,
            context={"period": {"start": "2022-07"}},
        ),
        document_reference(
            [{"contentType": "text/markdown", "data": b64(reports[4].plain.encode())}],
            id="newest",
            date="2025-01-01T00:00:00Z",
        ),
    ]

    extraction = collect_report_texts(drs, docs, server, TextLimits())

    assert [t.resource_id for t in extraction.texts] == [
        "newest",
        "issued",
        "month",
        "old",
        "undated",
    ]
    assert extraction.texts[2].date == datetime(2022, 7, 1, tzinfo=UTC)
    assert extraction.texts[4].date is None
    assert extraction.warnings == ()


def test_collect_honours_max_texts_and_reads_nothing_older() -> None:
    reports = [iu_report(i) for i in range(30, 36)]
    server = BinaryServerDouble(
        {
            f"Binary/{i}": BinaryContent("text/plain", r.plain.encode())
            for i, r in enumerate(reports)
        }
    )
    docs = [
        document_reference(
            [{"contentType": "text/plain", "url": f"Binary/{i}"}],
            id=f"d{i}",
            date=f"202{i}-01-01T00:00:00Z",
        )
        for i in range(len(reports))
    ]

    extraction = collect_report_texts([], docs, server, TextLimits(max_texts=3))

    assert [t.resource_id for t in extraction.texts] == ["d5", "d4", "d3"]
    assert server.requested == ["Binary/5", "Binary/4", "Binary/3"]
    assert extraction.warnings == ("max_texts 3 reached: 3 older resource(s) not read",)


def test_max_texts_applies_within_one_resource() -> None:
    report = iu_report(40)
    form = {"contentType": "text/plain", "data": b64(report.plain.encode())}
    dr = diagnostic_report([form, form, form], conclusion=report.impression)

    extraction = texts_from_diagnostic_report(dr, None, TextLimits(max_texts=2))

    assert [t.part for t in extraction.texts] == ["conclusion", "presentedForm[0]"]
    assert extraction.warnings == (
        "DiagnosticReport/dr1 presentedForm[1]: max_texts reached, 2 part(s) not read",
    )


def test_entered_in_error_and_cancelled_are_skipped() -> None:
    report = iu_report(41)
    plain = {"contentType": "text/plain", "data": b64(report.plain.encode())}
    drs = [
        diagnostic_report(
            [plain], id="err", status="entered-in-error", conclusion=report.impression
        ),
        diagnostic_report([plain], id="cancelled", status="cancelled"),
        diagnostic_report([plain], id="prelim", status="preliminary"),
    ]
    docs = [
        document_reference([plain], id="docerr", status="entered-in-error"),
        document_reference([plain], id="docstatuserr", docStatus="entered-in-error"),
        document_reference([plain], id="draft", docStatus="preliminary"),
        document_reference([plain], id="old", status="superseded", docStatus="final"),
    ]

    extraction = collect_report_texts(drs, docs, None, TextLimits())

    assert [(t.resource_id, t.status) for t in extraction.texts] == [
        ("prelim", "preliminary"),
        ("draft", "preliminary"),
        ("old", "final"),
    ]
    assert sorted(extraction.warnings) == [
        "DiagnosticReport/cancelled: skipped, status cancelled",
        "DiagnosticReport/err: skipped, status entered-in-error",
        "DocumentReference/docerr: skipped, status entered-in-error",
        "DocumentReference/docstatuserr: skipped, status entered-in-error",
    ]


def test_code_text_falls_back_to_a_coding_display() -> None:
    report = iu_report(42)
    dr = diagnostic_report(
        conclusion=report.impression,
        code={
            "coding": [
                {"system": "http://loinc.org", "code": "36643-5"},
                {"display": "Chest X-ray"},
            ]
        },
    )

    assert only_text(texts_from_diagnostic_report(dr, None, TextLimits())).code_text == (
        "Chest X-ray"
    )


# --------------------------------------------------------------------------- never raises
CHARSETS = [
    "",
    "; charset=utf-8",
    "; charset=latin-1",
    "; charset=utf-16",
    "; charset=utf-7",
    "; charset=idna",
    "; charset=rot13",
    "; charset=zlib",
    "; charset=nonsense",
]


#: Pieces of markup that parsers treat specially, so random documents reach odd paths.
MARKUP_TOKENS = [
    *"<>/&;=\"' \n\tabcdehilmprstxyz?!-[]#",
    *["<p>", "</p>", "<br>", "<pre>", "</pre>", "<td>", "<li>", "<script>", "</script>"],
    *["<style>", "<!--", "-->", "<![CDATA[", "]]>", "<![", "<!DOCTYPE html>", "<?xml ", "?>"],
    *["&amp;", "&#", "&#x", "\x00", "\u2028", "\x85", "\ufeff", "é"],
]
markup_bytes = st.lists(st.sampled_from(MARKUP_TOKENS), max_size=200).map(
    lambda tokens: "".join(tokens).encode("utf-8")
)


def assert_well_formed(extraction: TextExtraction, limits: TextLimits) -> None:
    for text in extraction.texts:
        assert text.text
        assert len(text.text) <= limits.max_chars
        assert "\x00" not in text.text
        text.text.encode("utf-8")  # no lone surrogates
        assert text.text == text.text.strip()
        assert "\n\n\n" not in text.text


@settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(
    data=st.binary(max_size=3000) | markup_bytes,
    media=st.sampled_from(["text/html", "text/plain", "application/xhtml+xml", "text/markdown"]),
    charset=st.sampled_from(CHARSETS),
    max_chars=st.integers(1, 400),
)
def test_arbitrary_inline_bytes_never_raise(
    data: bytes, media: str, charset: str, max_chars: int
) -> None:
    limits = TextLimits(max_chars=max_chars)
    dr = diagnostic_report([{"contentType": media + charset, "data": b64(data)}])

    with warnings.catch_warnings():
        warnings.simplefilter("error")
        assert_well_formed(texts_from_diagnostic_report(dr, None, limits), limits)


@settings(max_examples=200, deadline=None)
@given(
    data=st.binary(max_size=2000) | markup_bytes,
    served_type=st.none()
    | st.text(max_size=60)
    | st.sampled_from(["application/fhir+json", "text/html; charset=utf-16"]),
    declared_type=st.sampled_from(["text/html", "text/plain; charset=latin-1", "text/markdown"]),
)
def test_arbitrary_fetched_bytes_never_raise(
    data: bytes, served_type: str | None, declared_type: str
) -> None:
    limits = TextLimits(max_chars=200)
    server = BinaryServerDouble({"Binary/x": BinaryContent(served_type, data)})
    doc = document_reference([{"contentType": declared_type, "url": "Binary/x"}])

    assert_well_formed(texts_from_document_reference(doc, server, limits), limits)
