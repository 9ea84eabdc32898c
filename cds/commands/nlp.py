"""``cds nlp``: the report reader from the command line (batch labelling, training, evaluation).

``cds nlp label INPUT`` reads a CSV (a text column, or the IU ``findings``/``impression``
columns) or JSON Lines file and writes one JSON line per document::

    {"id": "…", "findings": [{"label", "assertion", "probability", "evidence"}]}

Every input row gives exactly one output line, in order: a row that cannot be read (bad
JSON, no text) gives ``{"id", "findings": [], "error": "…"}`` instead of being dropped.
"""

from __future__ import annotations

import csv
import json
import sys
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import IO, Any

import click

from cds.commands._progress import progress_bar, progress_option

BATCH = 64


@dataclass(frozen=True)
class Document:
    id: str
    text: str | None
    error: str | None = None


def _csv_documents(handle: IO[str], text_column: str | None, id_column: str | None):  # type: ignore[no-untyped-def]
    from models.nlp.iu_reports import report_text

    csv.field_size_limit(1 << 24)
    reader = csv.DictReader(handle)
    columns = reader.fieldnames or []
    iu = text_column is None and {"findings", "impression"} <= set(columns)
    text_column = text_column or ("text" if "text" in columns else None)
    if not iu and text_column not in columns:
        raise click.UsageError(
            f"INPUT has no text column {text_column or 'text'!r} and no findings/impression "
            f"columns; its columns are {columns}. Name one with --text-column."
        )
    if id_column is not None and id_column not in columns:
        raise click.UsageError(f"INPUT has no id column {id_column!r}; its columns are {columns}")
    id_column = id_column or next((c for c in ("id", "uid") if c in columns), None)

    def documents() -> Iterator[Document]:
        for number, row in enumerate(reader, start=1):
            doc_id = (row.get(id_column) or "") if id_column else str(number)
            if iu:
                text = report_text(row.get("findings") or "", row.get("impression") or "")
            else:
                text = row.get(text_column) or ""  # type: ignore[arg-type]
            doc_id = doc_id or f"row {number}"
            yield Document(doc_id, text) if text.strip() else Document(doc_id, None, "no text")

    return documents()


def _jsonl_documents(
    handle: IO[str], text_column: str | None, id_column: str | None
) -> Iterator[Document]:
    text_key, id_key = text_column or "text", id_column or "id"
    for number, line in enumerate(handle, start=1):
        if not line.strip():
            continue
        fallback = f"line {number}"
        try:
            record = json.loads(line)
        except ValueError:
            yield Document(fallback, None, f"line {number}: not valid JSON")
            continue
        if not isinstance(record, dict):
            yield Document(fallback, None, f"line {number}: not a JSON object")
            continue
        raw_id = record.get(id_key)
        doc_id = str(raw_id) if raw_id not in (None, "") else fallback
        text = record.get(text_key)
        if not isinstance(text, str) or not text.strip():
            yield Document(doc_id, None, f"line {number}: no text in {text_key!r}")
        else:
            yield Document(doc_id, text)


def _batches(documents: Iterator[Document]) -> Iterator[list[Document]]:
    batch: list[Document] = []
    for document in documents:
        batch.append(document)
        if len(batch) == BATCH:
            yield batch
            batch = []
    if batch:
        yield batch


def _count_rows(path: Path, kind: str) -> int | None:
    try:
        with path.open(encoding="utf-8-sig", errors="replace", newline="") as handle:
            if kind == "csv":
                return max(0, sum(1 for _ in csv.reader(handle)) - 1)
            return sum(1 for line in handle if line.strip())
    except (OSError, csv.Error):
        return None


@click.group("nlp")
def nlp() -> None:
    """Report NLP: findings (with negation and uncertainty) from reports and notes."""


@nlp.command("label")
@click.argument(
    "input_path", metavar="INPUT", type=click.Path(exists=True, dir_okay=False, path_type=Path)
)
@click.option(
    "--text-column",
    help="CSV column / JSON key holding the text (default: text, or IU findings+impression).",
)
@click.option(
    "--id-column",
    help="CSV column / JSON key holding the document id (default: id or uid, else the row number).",
)
@click.option(
    "--format",
    "kind",
    type=click.Choice(["csv", "jsonl"]),
    help="Default: from the file extension.",
)
@click.option(
    "--out",
    "out_path",
    type=click.Path(dir_okay=False, path_type=Path),
    help="Output JSON Lines file (default: standard output).",
)
@progress_option
def label(
    input_path: Path,
    text_column: str | None,
    id_column: str | None,
    kind: str | None,
    out_path: Path | None,
    progress: bool,
) -> None:
    """Label every document of INPUT (CSV or JSON Lines): one JSON line per document."""
    from models import registry
    from models.artifacts import ArtifactInvalid
    from models.nlp import MODEL_ID
    from models.nlp.encoder import EncoderUnavailable

    kind = kind or (
        "jsonl" if input_path.suffix.lower() in (".jsonl", ".ndjson", ".json") else "csv"
    )
    try:
        reader = registry.get(MODEL_ID)
    except (ArtifactInvalid, EncoderUnavailable) as exc:
        raise click.ClickException(f"the report model cannot be loaded: {exc}") from None
    total = _count_rows(input_path, kind)
    out: IO[str] = out_path.open("w", encoding="utf-8") if out_path else sys.stdout
    counts = {"documents": 0, "errors": 0, "findings": 0}
    try:
        with input_path.open(encoding="utf-8-sig", newline="") as handle:
            if kind == "csv":
                documents = _csv_documents(handle, text_column, id_column)
            else:
                documents = _jsonl_documents(handle, text_column, id_column)
            with progress_bar(total=total, unit="doc", desc="labelling", enabled=progress) as bar:
                for batch in _batches(documents):
                    readable = [d for d in batch if d.text is not None]
                    results = iter(reader.read([d.text for d in readable]))  # type: ignore[misc]
                    for document in batch:
                        record: dict[str, Any] = {"id": document.id, "findings": []}
                        if document.text is None:
                            record["error"] = document.error
                            counts["errors"] += 1
                        else:
                            record["findings"] = [f.to_json() for f in next(results).findings]
                            counts["findings"] += len(record["findings"])
                        out.write(json.dumps(record, ensure_ascii=False) + "\n")
                        counts["documents"] += 1
                    bar.update(len(batch))
    except UnicodeDecodeError:
        raise click.ClickException(
            f"INPUT is not UTF-8 text (stopped after {counts['documents']} documents)"
        ) from None
    except csv.Error as exc:
        raise click.ClickException(
            f"INPUT is not readable CSV after {counts['documents']} documents: {exc}"
        ) from None
    finally:
        if out_path:
            out.close()
    click.echo(
        f"{counts['documents']} documents, {counts['findings']} findings, "
        f"{counts['errors']} without readable text",
        err=True,
    )


@nlp.command("train")
@click.option(
    "--data",
    type=click.Path(exists=True, dir_okay=False, path_type=Path),
    help="IU reports.csv (default: $WARDROUND_SHARED_DATA/iu-xray-reports/reports.csv).",
)
def train(data: Path | None) -> None:
    """Train and evaluate on the IU reports; write the artifact and MODEL_CARD.md."""
    from models.nlp.iu_reports import DataMissing
    from models.nlp.training import train as run

    try:
        artifact = run(data, progress=lambda line: click.echo(line, err=True))
    except DataMissing as exc:
        raise click.ClickException(str(exc)) from None
    click.echo(f"{artifact.id} {artifact.version} {artifact.sha256}")


@nlp.command("evaluate")
@click.option(
    "--data",
    type=click.Path(exists=True, dir_okay=False, path_type=Path),
    help="IU reports.csv (default: from the shared data).",
)
def evaluate(data: Path | None) -> None:
    """Measure the shipped artifact on its recorded test split; exit 1 if the numbers differ."""
    from models.artifacts import load_artifact
    from models.nlp import ARTIFACT_DIR
    from models.nlp.iu_reports import DataMissing
    from models.nlp.training import evaluate as run

    artifact = load_artifact(ARTIFACT_DIR)
    try:
        measured = run(artifact, data)
    except (DataMissing, ValueError) as exc:
        raise click.ClickException(str(exc)) from None
    variant = artifact.metadata["variant"]
    recorded = artifact.metadata["metrics"]["held_out_test"][variant]
    for name, values in measured["per_finding"].items():
        click.echo(
            f"{name:26s} P {values['precision']:.3f}  R {values['recall']:.3f}  "
            f"F1 {values['f1']:.3f}  n={values['support']}"
        )
    click.echo(
        f"macro-F1 {measured['macro_f1']:.4f} "
        f"(recorded {recorded['macro_f1']:.4f}, variant {variant})"
    )
    sys.exit(0 if abs(measured["macro_f1"] - recorded["macro_f1"]) < 1e-4 else 1)
