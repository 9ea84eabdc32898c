"""Plain text from DiagnosticReport and DocumentReference resources, for a language model.

Sources: ``DiagnosticReport.conclusion``, ``DiagnosticReport.presentedForm[]`` and
``DocumentReference.content[].attachment``. An attachment carries inline ``data`` (which
``fhir.resources`` has already base64-decoded) or a ``url`` that the caller's
``fetch_binary`` resolves (the FHIR client: ``Binary/123`` or an absolute URL, same token).

Text, Markdown and HTML/XHTML are read; anything else (PDF, images, DICOM, ...) is skipped.
Nothing here raises on bad content: every problem becomes a warning that names the
resource and the part, never the content, so warnings are safe to log.
"""

from __future__ import annotations

import base64
import binascii
import codecs
import html
import json
import re
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field, replace
from datetime import UTC, datetime
from email.message import Message
from typing import Any, Literal

from bs4 import BeautifulSoup, CData, NavigableString, Tag
from bs4.dammit import EncodingDetector
from bs4.exceptions import ParserRejectedMarkup
from fhir.resources.R4B.attachment import Attachment
from fhir.resources.R4B.codeableconcept import CodeableConcept
from fhir.resources.R4B.diagnosticreport import DiagnosticReport
from fhir.resources.R4B.documentreference import DocumentReference

from fhir_adapters.parsing import ResourceInvalid, fhir_datetime, parse_resource

Source = Literal["DiagnosticReport", "DocumentReference"]


@dataclass(frozen=True)
class ReportText:
    source: Source
    resource_id: str | None
    #: "conclusion", "presentedForm[0]", "content[1]", ...
    part: str
    #: The media type the text was read as, without parameters ("text/html").
    content_type: str
    #: Effective (else issued) time of a report; DocumentReference.date. Always aware:
    #: date-only and partial values are taken as midnight UTC on their first day.
    date: datetime | None
    #: What the document is (code/type text or display), for the model.
    code_text: str | None
    #: Plain text: runs of spaces collapsed, line and paragraph breaks kept.
    text: str
    #: Cut at a word boundary to ``TextLimits.max_chars``.
    truncated: bool
    #: DiagnosticReport.status, or DocumentReference.docStatus (preliminary, final, ...).
    status: str | None = None


@dataclass(frozen=True)
class TextLimits:
    max_chars: int = 32_000  #: per text
    max_bytes: int = 1_048_576  #: per attachment or fetched binary
    max_texts: int = 50  #: per call (per patient in ``collect_report_texts``)

    def __post_init__(self) -> None:
        if min(self.max_chars, self.max_bytes, self.max_texts) < 1:
            raise ValueError("text limits must be positive")


DEFAULT_LIMITS = TextLimits()


@dataclass(frozen=True)
class BinaryContent:
    """What ``fetch_binary`` returns: the served Content-Type and the body bytes."""

    content_type: str | None
    data: bytes


class BinaryUnavailable(Exception):
    """Raised by ``fetch_binary`` when it cannot fetch; ``reason`` must hold no patient data."""

    def __init__(self, reason: str) -> None:
        super().__init__(reason)
        self.reason = reason


FetchBinary = Callable[[str], BinaryContent]


@dataclass(frozen=True)
class TextExtraction:
    texts: tuple[ReportText, ...] = ()
    #: One line per skipped or degraded part: resource, part and why (no content).
    warnings: tuple[str, ...] = ()


# --------------------------------------------------------------------------- media types
_TEXT_TYPES = frozenset({"text/plain", "text/markdown"})
_HTML_TYPES = frozenset({"text/html", "application/xhtml+xml"})
SUPPORTED_CONTENT_TYPES = _TEXT_TYPES | _HTML_TYPES
_FHIR_JSON_TYPES = frozenset({"application/fhir+json", "application/json+fhir", "application/json"})
_GENERIC_TYPES = frozenset({"application/octet-stream"})
_MEDIA_TYPE_SYNTAX = re.compile(r"[a-z0-9][a-z0-9!#$&^_.+-]{0,62}/[a-z0-9][a-z0-9!#$&^_.+-]{0,62}")
#: A fetched FHIR Binary is base64 inside JSON: allow for that when capping its size.
_JSON_ENVELOPE_FACTOR = 2


@dataclass(frozen=True)
class _MediaType:
    type: str  #: lower case, no parameters; "" when unreadable
    charset: str | None


def _media_type(value: str | None) -> _MediaType | None:
    if value is None or not value.strip():
        return None
    essence = value.split(";", 1)[0].strip().lower()
    header = Message()
    header["Content-Type"] = value
    charset = header.get_content_charset()
    return _MediaType(essence if _MEDIA_TYPE_SYNTAX.fullmatch(essence) else "", charset)


def _served_or_declared(
    declared: _MediaType | None, served: _MediaType | None
) -> _MediaType | None:
    """The server's type describes the bytes; a bare or generic one defers to the attachment's."""
    if served is None or served.type in _GENERIC_TYPES or not served.type:
        return declared
    if served.charset is None and declared is not None and declared.type == served.type:
        return declared
    return served


def _describe(media: _MediaType | None) -> str:
    if media is None:
        return "no content type"
    return f"unsupported content type {media.type or '(unreadable)'}"


# --------------------------------------------------------------------------- skipping
class _Skip(Exception):
    """This part yields no text; ``reason`` is safe to log."""

    def __init__(self, reason: str) -> None:
        super().__init__(reason)
        self.reason = reason


def _safe_reason(reason: str) -> str:
    printable = "".join(c if c.isprintable() else " " for c in reason)
    return printable[:200]


# --------------------------------------------------------------------------- reading bytes
def _inline_bytes(data: bytes | str, limits: TextLimits) -> bytes:
    if isinstance(data, bytes):  # validated models: fhir.resources decoded the base64
        return data
    compact = "".join(data.split())  # a model built without validation keeps the text
    if len(compact) // 4 * 3 > limits.max_bytes:
        raise _Skip(f"attachment over {limits.max_bytes} bytes")
    try:
        return base64.b64decode(compact, validate=True)
    except binascii.Error:
        raise _Skip("attachment data is not valid base64") from None


def _fetch(url: str, fetch_binary: FetchBinary | None) -> BinaryContent:
    if fetch_binary is None:
        raise _Skip("attachment has a url and no fetcher was given")
    try:
        return fetch_binary(url)
    except BinaryUnavailable as exc:
        raise _Skip(f"binary unavailable: {_safe_reason(exc.reason)}") from None


def _binary_resource(body: bytes, limits: TextLimits) -> tuple[_MediaType | None, bytes]:
    """The content of a FHIR Binary served as JSON."""
    if len(body) > limits.max_bytes * _JSON_ENVELOPE_FACTOR:
        raise _Skip(f"fetched Binary over {limits.max_bytes} bytes")
    try:
        resource = json.loads(body)
    except (ValueError, RecursionError):
        raise _Skip("fetched FHIR JSON is not valid JSON") from None
    if not isinstance(resource, dict) or resource.get("resourceType") != "Binary":
        raise _Skip("fetched FHIR JSON is not a Binary")
    try:
        binary = parse_resource(resource, "Binary")
    except ResourceInvalid:
        raise _Skip("fetched Binary is invalid (bad base64 or structure)") from None
    if binary.data is None:
        raise _Skip("fetched Binary has no data")
    return _media_type(binary.contentType), binary.data


def _attachment_bytes(
    attachment: Attachment, fetch_binary: FetchBinary | None, limits: TextLimits
) -> tuple[_MediaType, bytes]:
    declared = _media_type(attachment.contentType)
    if declared is not None and declared.type not in SUPPORTED_CONTENT_TYPES:
        raise _Skip(_describe(declared))  # before fetching what we could not read
    if attachment.size is not None and attachment.size > limits.max_bytes:
        raise _Skip(f"attachment declares over {limits.max_bytes} bytes")
    if attachment.data is not None:
        media, data = declared, _inline_bytes(attachment.data, limits)
    elif attachment.url:
        media, data = _fetched(attachment.url, declared, fetch_binary, limits)
    else:
        raise _Skip("attachment has neither data nor url")
    if media is None or media.type not in SUPPORTED_CONTENT_TYPES:
        raise _Skip(_describe(media))
    if len(data) > limits.max_bytes:
        raise _Skip(f"attachment over {limits.max_bytes} bytes")
    return media, data


def _fetched(
    url: str, declared: _MediaType | None, fetch_binary: FetchBinary | None, limits: TextLimits
) -> tuple[_MediaType | None, bytes]:
    content = _fetch(url, fetch_binary)
    served = _media_type(content.content_type)
    if served is not None and served.type in _FHIR_JSON_TYPES:
        served, data = _binary_resource(content.data, limits)
    else:
        data = content.data
    return _served_or_declared(declared, served), data


# --------------------------------------------------------------------------- bytes to text
#: The WHATWG Encoding Standard reads these labels as windows-1252, as browsers do.
_WINDOWS_1252_ALIASES = frozenset({"iso8859-1", "ascii"})


def _decode(data: bytes, media: _MediaType) -> tuple[str, bool]:
    """Text and whether the charset was unknown (then read as UTF-8). Never raises."""
    data, bom_encoding = EncodingDetector.strip_byte_order_mark(data)
    charset = bom_encoding or media.charset
    if charset is None and media.type in _HTML_TYPES:
        charset = EncodingDetector.find_declared_encoding(data, is_html=True)
    if charset is None:
        return data.decode("utf-8", errors="replace"), False
    try:
        name = codecs.lookup(charset).name
        name = "cp1252" if name in _WINDOWS_1252_ALIASES else name
        return data.decode(name, errors="replace"), False
    except (LookupError, ValueError):  # unknown, not a text codec, or one that ignores errors=
        return data.decode("utf-8", errors="replace"), True


_DROPPED_TAGS = frozenset({"script", "style", "template"})
_PARAGRAPH_TAGS = frozenset(
    {"p", "h1", "h2", "h3", "h4", "h5", "h6", "ul", "ol", "dl", "table", "blockquote", "pre"}
    | {"section", "article", "header", "footer", "aside", "nav", "main", "figure", "hr"}
    | {"address", "details", "fieldset", "form"}
)
_LINE_TAGS = frozenset({"div", "li", "tr", "dt", "dd", "caption", "summary", "legend", "title"})
_CELL_TAGS = frozenset({"td", "th"})
_HTML_SPACE = re.compile(r"[ \t\n\r\f]+")
_XML_DECLARATION = re.compile(r"<\?xml [^>]*>", re.IGNORECASE)


def _html_to_text(markup: str) -> str:
    """Text of an HTML or XHTML document: block elements break lines, script/style dropped."""
    if "<" not in markup:  # no tags (and bs4 would warn that short text looks like a path)
        return _HTML_SPACE.sub(" ", html.unescape(markup))
    # An XML declaration holds no text, and left in it makes bs4 warn about XML documents.
    try:
        soup = BeautifulSoup(_XML_DECLARATION.sub("", markup), "html.parser")
    except ParserRejectedMarkup:  # e.g. a malformed "<![" marked section
        raise _Skip("HTML could not be parsed") from None
    return _render(soup)


class _TextWriter:
    """Joins text and line breaks; a break only adds the newlines that are not there yet."""

    def __init__(self) -> None:
        self.parts: list[str] = []
        self.trailing_newlines = 0

    def text(self, value: str) -> None:
        self.parts.append(value)
        if value.strip():
            self.trailing_newlines = 0

    def line_break(self) -> None:  # <br>: always a new line, so <br><br> leaves a blank one
        self.parts.append("\n")
        self.trailing_newlines += 1

    def block_break(self, newlines: int) -> None:
        self.parts.append("\n" * max(0, newlines - self.trailing_newlines))
        self.trailing_newlines = max(newlines, self.trailing_newlines)


def _block_newlines(name: str) -> int:
    if name in _PARAGRAPH_TAGS:
        return 2
    return 1 if name in _LINE_TAGS else 0


def _render(soup: BeautifulSoup) -> str:
    """Depth-first walk with an explicit stack: any nesting depth, linear time."""
    out = _TextWriter()
    todo: list[tuple[Any, bool] | int] = [(soup, False)]
    while todo:
        item = todo.pop()
        if isinstance(item, int):  # the break that follows an element's children
            out.block_break(item)
            continue
        node, in_pre = item
        if isinstance(node, Tag):
            if node.name in _DROPPED_TAGS:
                continue
            _open(node, out)
            todo.append(_block_newlines(node.name))
            in_pre = in_pre or node.name in ("pre", "textarea")
            todo.extend((child, in_pre) for child in reversed(node.contents))
        elif type(node) in (NavigableString, CData):  # not comments, doctypes or PIs
            out.text(str(node) if in_pre else _HTML_SPACE.sub(" ", node))
    return "".join(out.parts)


def _open(tag: Tag, out: _TextWriter) -> None:
    if tag.name == "br":
        out.line_break()
    elif tag.name in _CELL_TAGS:
        out.text(" ")
    else:
        out.block_break(_block_newlines(tag.name))


_SURROGATE = re.compile(r"[\ud800-\udfff]")
_CONTROL = re.compile(r"[\x00-\x08\x0e-\x1f\x7f-\x84\x86-\x9f]")
_BLANK_LINES = re.compile(r"\n{3,}")


def _normalise_whitespace(text: str) -> str:
    """Collapse spaces within lines, keep line breaks and at most one blank line between."""
    text = _CONTROL.sub(" ", _SURROGATE.sub("\ufffd", text))
    lines = (" ".join(line.split()) for line in text.splitlines())
    return _BLANK_LINES.sub("\n\n", "\n".join(lines)).strip()


def _truncate_at_word(text: str, max_chars: int) -> tuple[str, bool]:
    """At most ``max_chars``, cut at the last whitespace before the limit where there is one."""
    if len(text) <= max_chars:
        return text, False
    cut = text[:max_chars]
    if not text[max_chars].isspace():
        boundary = max(cut.rfind(" "), cut.rfind("\n"))
        if boundary > 0:
            cut = cut[:boundary]
    return cut.rstrip(), True


def _attachment_text(
    attachment: Attachment, fetch_binary: FetchBinary | None, limits: TextLimits
) -> tuple[_MediaType, str, bool]:
    media, data = _attachment_bytes(attachment, fetch_binary, limits)
    text, unknown_charset = _decode(data, media)
    if media.type in _HTML_TYPES:
        text = _html_to_text(text)
    return media, text, unknown_charset


# --------------------------------------------------------------------------- resources
@dataclass(frozen=True)
class _Resource:
    source: Source
    resource_id: str | None
    date: datetime | None
    code_text: str | None
    status: str | None

    @property
    def label(self) -> str:
        return f"{self.source}/{self.resource_id or '(no id)'}"


@dataclass
class _Collector:
    limits: TextLimits
    texts: list[ReportText] = field(default_factory=list)
    warnings: list[str] = field(default_factory=list)

    @property
    def full(self) -> bool:
        return len(self.texts) >= self.limits.max_texts

    def warn(self, resource: _Resource, part: str, reason: str) -> None:
        self.warnings.append(f"{resource.label} {part}: {reason}")

    def add(self, resource: _Resource, part: str, content_type: str, raw: str) -> None:
        text, truncated = _truncate_at_word(_normalise_whitespace(raw), self.limits.max_chars)
        if not text:
            self.warn(resource, part, "no text")
            return
        self.texts.append(
            ReportText(
                source=resource.source,
                resource_id=resource.resource_id,
                part=part,
                content_type=content_type,
                date=resource.date,
                code_text=resource.code_text,
                text=text,
                truncated=truncated,
                status=resource.status,
            )
        )

    def result(self) -> TextExtraction:
        return TextExtraction(texts=tuple(self.texts), warnings=tuple(self.warnings))


def _concept_text(concept: CodeableConcept | None) -> str | None:
    if concept is None:
        return None
    if concept.text:
        return concept.text
    return next((c.display for c in concept.coding or () if c.display), None)


def _report_date(report: DiagnosticReport) -> datetime | None:
    if report.effectiveDateTime is not None:
        return fhir_datetime(report.effectiveDateTime)
    if report.effectivePeriod is not None and report.effectivePeriod.start is not None:
        return fhir_datetime(report.effectivePeriod.start)
    return fhir_datetime(report.issued)


def _document_date(doc: DocumentReference) -> datetime | None:
    if doc.date is not None:
        return fhir_datetime(doc.date)
    period = doc.context.period if doc.context is not None else None
    return fhir_datetime(period.start) if period is not None else None


def _describe_report(report: DiagnosticReport) -> _Resource:
    return _Resource(
        "DiagnosticReport",
        report.id,
        _report_date(report),
        _concept_text(report.code),
        report.status,
    )


def _describe_document(doc: DocumentReference) -> _Resource:
    return _Resource(
        "DocumentReference", doc.id, _document_date(doc), _concept_text(doc.type), doc.docStatus
    )


_SKIPPED_REPORT_STATUSES = frozenset({"entered-in-error", "cancelled"})


def _skip_reason(resource: DiagnosticReport | DocumentReference) -> str | None:
    if isinstance(resource, DiagnosticReport):
        statuses = {resource.status}
    else:
        statuses = {resource.status, resource.docStatus}
    skipped = sorted(s for s in statuses if s in _SKIPPED_REPORT_STATUSES)
    return f"skipped, status {skipped[0]}" if skipped else None


def _read_attachments(
    resource: _Resource,
    parts: Sequence[tuple[str, Attachment | None]],
    fetch_binary: FetchBinary | None,
    out: _Collector,
) -> None:
    for index, (part, attachment) in enumerate(parts):
        if out.full:
            left = len(parts) - index
            out.warn(resource, part, f"max_texts reached, {left} part(s) not read")
            return
        if attachment is None:
            out.warn(resource, part, "no attachment")
            continue
        try:
            media, text, unknown_charset = _attachment_text(attachment, fetch_binary, out.limits)
        except _Skip as skip:
            out.warn(resource, part, skip.reason)
            continue
        if unknown_charset:
            out.warn(resource, part, "unknown charset, read as UTF-8")
        out.add(resource, part, media.type, text)


def texts_from_diagnostic_report(
    report: DiagnosticReport,
    fetch_binary: FetchBinary | None = None,
    limits: TextLimits = DEFAULT_LIMITS,
) -> TextExtraction:
    """The conclusion, then each readable presentedForm attachment, in order."""
    resource = _describe_report(report)
    out = _Collector(limits)
    skip = _skip_reason(report)
    if skip is not None:
        out.warnings.append(f"{resource.label}: {skip}")
        return out.result()
    if report.conclusion and report.conclusion.strip():
        out.add(resource, "conclusion", "text/plain", report.conclusion)
    forms = [(f"presentedForm[{i}]", a) for i, a in enumerate(report.presentedForm or ())]
    _read_attachments(resource, forms, fetch_binary, out)
    return out.result()


def texts_from_document_reference(
    doc: DocumentReference,
    fetch_binary: FetchBinary | None = None,
    limits: TextLimits = DEFAULT_LIMITS,
) -> TextExtraction:
    """Each readable content[].attachment, in order."""
    resource = _describe_document(doc)
    out = _Collector(limits)
    skip = _skip_reason(doc)
    if skip is not None:
        out.warnings.append(f"{resource.label}: {skip}")
        return out.result()
    contents = [(f"content[{i}]", c.attachment) for i, c in enumerate(doc.content or ())]
    _read_attachments(resource, contents, fetch_binary, out)
    return out.result()


_OLDEST = datetime.min.replace(tzinfo=UTC)


def _newest_first(
    diagnostic_reports: Iterable[DiagnosticReport], document_references: Iterable[DocumentReference]
) -> list[DiagnosticReport | DocumentReference]:
    dated = [(r, _report_date(r)) for r in diagnostic_reports]
    dated += [(d, _document_date(d)) for d in document_references]
    dated.sort(key=lambda pair: pair[1] or _OLDEST, reverse=True)  # stable; undated last
    return [resource for resource, _ in dated]


def collect_report_texts(
    diagnostic_reports: Iterable[DiagnosticReport],
    document_references: Iterable[DocumentReference],
    fetch_binary: FetchBinary | None = None,
    limits: TextLimits = DEFAULT_LIMITS,
) -> TextExtraction:
    """Texts of many resources, newest first, at most ``limits.max_texts`` in all.

    Entered-in-error and cancelled resources are skipped; once the limit is reached, older
    resources are not read at all (nothing is fetched for them).
    """
    resources = _newest_first(diagnostic_reports, document_references)
    texts: list[ReportText] = []
    warnings: list[str] = []
    for index, resource in enumerate(resources):
        remaining = limits.max_texts - len(texts)
        if remaining == 0:
            left = len(resources) - index
            warnings.append(
                f"max_texts {limits.max_texts} reached: {left} older resource(s) not read"
            )
            break
        extraction = _texts_from(resource, fetch_binary, replace(limits, max_texts=remaining))
        texts += extraction.texts
        warnings += extraction.warnings
    return TextExtraction(texts=tuple(texts), warnings=tuple(warnings))


def _texts_from(
    resource: DiagnosticReport | DocumentReference,
    fetch_binary: FetchBinary | None,
    limits: TextLimits,
) -> TextExtraction:
    if isinstance(resource, DiagnosticReport):
        return texts_from_diagnostic_report(resource, fetch_binary, limits)
    return texts_from_document_reference(resource, fetch_binary, limits)
