"""``cds population …``: bulk FHIR in, population jobs on Spark, every run audited.

=========================== ==============================================================
command                     what
=========================== ==============================================================
``convert SOURCE OUT``      Synthea transaction bundles → bulk NDJSON (development, tests)
``clone SOURCE OUT -n N``   grow a bulk folder to N patients with synthetic clones
                            (throughput tests only: never for model metrics)
``export BASE_URL OUT``     a server's ``$export`` (Bulk Data Access IG), resumable
``cancel-export OUT``       ``DELETE`` the status URL of the export in OUT
``records INPUT --out OUT`` the record-rows job on Spark: one Parquet table per row type
``score INPUT --out OUT``   the learned risk models over every patient on Spark: a Parquet
                            score table and FHIR ``RiskAssessment`` NDJSON
``score … --post URL``      … and post the RiskAssessments to a FHIR server (transactions)
``post OUT --to URL``       post a score output's RiskAssessments to a FHIR server
``train INPUT --model ID``  train a learned risk model on Spark (xgboost.spark): the
  ``--out OUT``             artifact ``cds models train`` writes, from bulk NDJSON
``runs``                    the latest population runs in the audit log
=========================== ==============================================================

``export``, ``records``, ``score``, ``train`` and ``post`` are recorded in the audit log
(``cds.audit.population_runs``): who ran them, the input manifest with file hashes, counts,
the models used (id, version, artifact hash), what was posted to a FHIR server (posted and
not accepted) and how they ended. ``records`` and ``score``
publish their output folder only after its audit row is committed.
"""

from __future__ import annotations

import json
import math
import os
import shutil
import sys
import time
from collections import Counter
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from datetime import UTC, date, datetime
from pathlib import Path
from typing import TYPE_CHECKING, Any, TypeVar

import click
from rich.console import Console
from rich.progress import (
    BarColumn,
    MofNCompleteColumn,
    Progress,
    SpinnerColumn,
    TextColumn,
    TimeElapsedColumn,
)
from rich.table import Table

from cds.audit.population_runs import recent_runs, record_run
from cds.audit.store import AuditLog, AuditUnavailable
from cds.commands._settings import settings
from fhir_adapters.bulk.ndjson import BulkFolder, BulkInputError, digest_files, scan_folder
from population.run_record import (
    BAD_INPUT,
    COMPLETED,
    FAILED,
    Dataset,
    PopulationRun,
    operator_name,
)

if TYPE_CHECKING:  # pyspark is imported only by the commands that run Spark
    from fhir_adapters.bulk.post_back import PostSummary
    from population.spark_session import SparkSettings

errors = Console(stderr=True)
T = TypeVar("T")
console = Console()


def _types(value: str | None) -> frozenset[str] | None:
    return frozenset(t.strip() for t in value.split(",") if t.strip()) if value else None


def _progress() -> Progress:
    return Progress(
        SpinnerColumn(),
        TextColumn("{task.description}"),
        BarColumn(),
        MofNCompleteColumn(),
        TimeElapsedColumn(),
        console=errors,
        transient=False,
    )


RESOURCE_HEADERS = ("resource type", "resources")


def _counts_table(title: str, rows: list[tuple[str, Any]], headers: tuple[str, str]) -> Table:
    table = Table(title=title, title_justify="left")
    table.add_column(headers[0])
    table.add_column(headers[1], justify="right")
    for name, value in rows:
        table.add_row(name, f"{value:,}" if isinstance(value, int) else str(value))
    return table


# --------------------------------------------------------------------------- the audit log
@contextmanager
def _audit() -> Iterator[AuditLog]:
    """The audit log of DATABASE_URL; checked reachable and migrated before any work."""
    from sqlalchemy import select
    from sqlalchemy.exc import SQLAlchemyError

    from cds.audit.tables import ChainHead
    from cds.db import make_engine, make_sessionmaker

    engine = make_engine(settings().database_url)
    try:
        sessions = make_sessionmaker(engine)
        try:
            with sessions() as session:
                if session.execute(select(ChainHead.id)).first() is None:
                    raise click.ClickException("the audit log is not set up: run `cds db upgrade`")
        except SQLAlchemyError as exc:
            raise click.ClickException(
                f"audit log unavailable ({type(exc).__name__}): nothing was run"
            ) from None
        yield AuditLog(sessions)
    finally:
        engine.dispose()


def _record(audit: AuditLog, run: PopulationRun, started: float) -> int:
    run.duration_ms = (time.perf_counter() - started) * 1000
    try:
        return record_run(audit, run)
    except AuditUnavailable as exc:
        raise click.ClickException(
            f"audit log unavailable ({exc}): the run is not recorded"
        ) from None


# --------------------------------------------------------------------------- the group
@click.group()
def population() -> None:
    """Population jobs over FHIR Bulk Data (NDJSON), on Apache Spark."""


@population.command("convert")
@click.argument("source", type=click.Path(exists=True, file_okay=False, path_type=Path))
@click.argument("out", type=click.Path(path_type=Path))
@click.option("--gzip", "compress", is_flag=True, help="Write .ndjson.gz files.")
@click.option("--max-lines", type=click.IntRange(min=1), help="Start a new file every N lines.")
@click.option("--types", help="Only these resource types (comma-separated).")
def convert(
    source: Path, out: Path, compress: bool, max_lines: int | None, types: str | None
) -> None:
    """Synthea transaction bundles in SOURCE → bulk NDJSON in OUT (one file per type)."""
    from fhir_adapters.bulk.synthea_ndjson import bundle_files, convert_bundles

    bundles = bundle_files(source)
    if not bundles:
        raise click.ClickException(f"{source}: no .json or .gz bundles")
    with _progress() as progress:
        task = progress.add_task("converting bundles", total=len(bundles))
        summary = convert_bundles(
            bundles,
            out,
            types=_types(types),
            compress=compress,
            max_lines=max_lines,
            on_bundle=lambda _: progress.advance(task),
        )
    title = f"{out}: {summary.patients:,} patients"
    console.print(_counts_table(title, sorted(summary.resources.items()), RESOURCE_HEADERS))
    console.print(
        f"{summary.bundles} bundles, {len(summary.files)} files; shared resources repeated "
        f"{summary.repeats:,} times ({summary.conflicts:,} with other content: first kept)"
    )
    for name, kind in summary.failed:
        errors.print(f"[red]unreadable bundle[/red] {name}: {kind}")
    if summary.failed:
        sys.exit(1)


@population.command("clone")
@click.argument("source", type=click.Path(exists=True, file_okay=False, path_type=Path))
@click.argument("out", type=click.Path(path_type=Path))
@click.option("--patients", "-n", type=click.IntRange(min=1), required=True)
@click.option("--gzip", "compress", is_flag=True, help="Write .ndjson.gz files.")
@click.option("--max-lines", type=click.IntRange(min=1), help="Start a new file every N lines.")
@click.option("--types", help="Only these resource types (comma-separated; Patient always).")
def clone(
    source: Path,
    out: Path,
    patients: int,
    compress: bool,
    max_lines: int | None,
    types: str | None,
) -> None:
    """Grow the bulk folder SOURCE to N patients in OUT with synthetic clones.

    FOR THROUGHPUT TESTS ONLY: clones repeat their sources' statistics; never train or
    measure a model on them. Every cloned resource is tagged urn:wardround:synthetic-data.
    """
    from fhir_adapters.bulk.synthetic_clones import clone_folder

    try:
        folder = scan_folder(source)
    except BulkInputError as exc:
        raise click.ClickException(str(exc)) from None
    errors.print("[yellow]synthetic clones: for throughput tests only, never for model metrics[/]")
    with _progress() as progress:
        task = progress.add_task("writing resources", total=None)
        summary = clone_folder(
            folder,
            out,
            patients,
            types=_types(types),
            compress=compress,
            max_lines=max_lines,
            on_resources=lambda n: progress.advance(task, n),
        )
    title = f"{out}: {summary.patients:,} patients from {summary.source_patients:,}"
    console.print(_counts_table(title, sorted(summary.resources.items()), RESOURCE_HEADERS))
    if summary.orphans or summary.read.problem_total:
        errors.print(
            f"[yellow]skipped[/]: {summary.orphans:,} resources of no source patient, "
            f"{summary.read.problem_total:,} unreadable lines {summary.read.problem_counts}"
        )


# --------------------------------------------------------------------------- export
EXPORT_STATUS = {
    "ExportFailed": 502,
    "ExportExpired": 410,
    "ExportTimedOut": 504,
    "ExportStateMismatch": 409,
}


@population.command("export")
@click.argument("base_url")
@click.argument("out", type=click.Path(file_okay=False, path_type=Path))
@click.option("--group", "group_id", help="Group/<id>/$export (default: the system level).")
@click.option("--patients", "patient_level", is_flag=True, help="Patient/$export.")
@click.option("--type", "types", help="_type: resource types (comma-separated).")
@click.option("--since", help="_since: only resources changed after this instant.")
@click.option("--type-filter", "type_filters", multiple=True, help="_typeFilter (repeatable).")
@click.option(
    "--token-env",
    default="WARDROUND_BULK_TOKEN",
    show_default=True,
    help="Environment variable holding the bearer token (never passed on the command line).",
)
@click.option("--restart", is_flag=True, help="Forget the export in OUT and start a new one.")
@click.option("--max-wait", type=float, default=24 * 3600.0, show_default=True, help="Seconds.")
@click.option("--operator", help="Who runs this (audit log); default WARDROUND_OPERATOR or login.")
def export(
    base_url: str,
    out: Path,
    group_id: str | None,
    patient_level: bool,
    types: str | None,
    since: str | None,
    type_filters: tuple[str, ...],
    token_env: str,
    restart: bool,
    max_wait: float,
    operator: str | None,
) -> None:
    """Bulk-export from the FHIR server BASE_URL into OUT (resumes an export left in OUT)."""
    from fhir_adapters.bulk.export_client import (
        BulkExportClient,
        ExportError,
        ExportEvent,
        ExportRequest,
        ExportSettings,
    )

    if group_id and patient_level:
        raise click.UsageError("--group and --patients exclude each other")
    level = "group" if group_id else "patient" if patient_level else "system"
    request = ExportRequest(
        base_url, level, group_id, tuple(sorted(_types(types) or ())), since, type_filters
    )
    run = PopulationRun(
        "export",
        operator_name(operator),
        {"kickoff_url": request.kickoff_url, "output": str(out.resolve())},
        fhir_server=base_url,
    )
    with _audit() as audit, _progress() as progress:
        task = progress.add_task("kick-off", total=None)

        def on_event(event: ExportEvent) -> None:
            if event.kind == "manifest":
                progress.update(task, description="downloading", total=event.files)
            elif event.kind in ("downloaded", "kept"):
                progress.update(task, description=f"{event.kind} {event.detail}", advance=1)
            elif event.kind == "waiting":
                progress.update(task, description=f"waiting {event.seconds:.0f} s: {event.detail}")
            elif event.kind in ("kicked-off", "resumed", "retry"):
                progress.update(task, description=f"{event.kind}: {event.detail}"[:80])

        client = BulkExportClient(
            os.environ.get(token_env), ExportSettings(max_wait_s=max_wait), on_event=on_event
        )
        started = time.perf_counter()
        try:
            result = client.run(request, out, restart=restart)
        except (ExportError, KeyboardInterrupt) as exc:
            # What was downloaded before the failure is recorded too: it left the server.
            run.inputs = _export_datasets(BulkExportClient.downloaded(out))
            if isinstance(exc, KeyboardInterrupt):
                run.fail(FAILED, "interrupted", "stopped before the end; run again to resume")
            else:
                status = EXPORT_STATUS.get(type(exc).__name__, 502)
                run.fail(status, type(exc).__name__, str(exc))
            _record(audit, run, started)
            raise click.ClickException(str(exc) or "interrupted") from None
        run.inputs = _export_datasets(result.files)
        if result.issues:
            issues = {f"{s}:{c}": n for (s, c), n in sorted(result.issues.items())}
            run.parameters["server_issues"] = issues
        seq = _record(audit, run, started)
    title = f"{out}: export complete"
    console.print(_counts_table(title, sorted(result.resources.items()), RESOURCE_HEADERS))
    console.print(
        f"{len(result.files)} files ({result.resumed_files} kept from before); audit seq {seq}"
    )
    for (severity, code), count in sorted(result.issues.items()):
        errors.print(
            f"[yellow]server reported[/] {count} issues {severity}/{code} (see {out}/_errors)"
        )


def _export_datasets(files: list[Any]) -> list[Dataset]:
    """Downloaded files as datasets per resource type (error files left out)."""
    by_type: dict[str, list[Any]] = {}
    for f in files:
        if not f.error_file:
            by_type.setdefault(f.resource_type, []).append(f)
    return [
        Dataset(
            kind,
            "bulk-export",
            sum(f.resources for f in group),
            tuple({"name": f.name, "bytes": f.bytes, "sha256": f.sha256} for f in group),
        )
        for kind, group in sorted(by_type.items())
    ]


@population.command("cancel-export")
@click.argument("out", type=click.Path(exists=True, file_okay=False, path_type=Path))
@click.option("--token-env", default="WARDROUND_BULK_TOKEN", show_default=True)
def cancel_export(out: Path, token_env: str) -> None:
    """Cancel the export whose state is in OUT (DELETE on its status URL)."""
    from fhir_adapters.bulk.export_client import BulkExportClient, ExportError

    try:
        status = BulkExportClient(os.environ.get(token_env)).cancel(out)
    except ExportError as exc:
        raise click.ClickException(str(exc)) from None
    console.print(f"export cancelled (HTTP {status})")


# --------------------------------------------------------------------------- records
def _spark_conf(values: tuple[str, ...]) -> dict[str, str]:
    conf = {}
    for value in values:
        key, sep, setting = value.partition("=")
        if not sep or not key.startswith("spark."):
            raise click.BadParameter(f"{value!r}: expected spark.KEY=VALUE", param_hint="--conf")
        conf[key] = setting
    return conf


def _job_settings(
    out_folder: Path,
    master: str,
    driver_memory: str,
    executor_memory: str,
    shuffle_partitions: int | None,
    conf: tuple[str, ...],
    ui: bool,
    progress: bool = False,
) -> tuple[Path, SparkSettings]:
    """A Spark job's output folder (resolved; it must not exist) and its Spark settings."""
    from population.spark_session import SparkSettings

    out_folder = out_folder.resolve()
    if out_folder.exists():
        raise click.UsageError(f"{out_folder} exists: choose a new folder")
    try:
        return out_folder, SparkSettings(
            master=master,
            driver_memory=driver_memory,
            executor_memory=executor_memory,
            shuffle_partitions=shuffle_partitions,
            progress=progress,
            ui=ui,
            extra=_spark_conf(conf),
        )
    except ValueError as exc:
        raise click.BadParameter(str(exc), param_hint="--master") from None


def _needs_patients(run: PopulationRun, folder: BulkFolder) -> tuple[str, str] | None:
    if "Patient" not in {d.key for d in run.inputs}:
        return "no_patients", "no Patient files in INPUT"
    return None


def _audited_job(
    run: PopulationRun,
    input_folder: Path,
    out_folder: Path,
    refusal: Callable[[PopulationRun, BulkFolder], tuple[str, str] | None],
    job: Callable[[BulkFolder, Path], T],
    finish: Callable[[T, Path], dict[str, Any]] | None = None,
) -> tuple[T, int]:
    """Run a Spark job on the bulk folder INPUT into OUT, recorded in the audit log.

    The input files are hashed into ``run.inputs``; ``refusal`` may then refuse the input
    ((code, detail): a BAD_INPUT run). ``job`` writes into a staging folder beside OUT;
    ``finish`` (after the job, before the audit row) returns more of run.json. OUT appears
    only once the run's audit row is committed; a failed job leaves no folder, and the
    audit keeps its exception's type only (the text may quote input data).
    """
    from population.records_job import input_files, planned_inputs

    with _audit() as audit:
        started = time.perf_counter()
        try:
            folder = scan_folder(input_folder)
        except BulkInputError as exc:
            run.fail(BAD_INPUT, "bulk_input_invalid", str(exc))
            _record(audit, run, started)
            raise click.ClickException(str(exc)) from None
        with errors.status("hashing input files"):
            run.inputs = planned_inputs(digest_files(input_files(folder)))
        refused = refusal(run, folder)
        if refused is not None:
            run.fail(BAD_INPUT, *refused)
            _record(audit, run, started)
            raise click.ClickException(f"{input_folder}: {run.error_detail}")
        staging = out_folder.with_name(f".{out_folder.name}.staging-{run.run_id}")
        try:
            result = job(folder, staging)
        except (Exception, KeyboardInterrupt) as exc:
            shutil.rmtree(staging, ignore_errors=True)
            code = "interrupted" if isinstance(exc, KeyboardInterrupt) else type(exc).__name__
            run.fail(FAILED, code, "the Spark job did not complete; see its log")
            _record(audit, run, started)
            raise click.ClickException(f"{run.job} job failed: {code}") from exc
        extra = finish(result, staging) if finish is not None else {}
        try:
            seq = _record(audit, run, started)
        except click.ClickException:
            shutil.rmtree(staging, ignore_errors=True)
            raise
        summary = {"audit_seq": seq} | extra
        (staging / "run.json").write_text(json.dumps(run.to_json() | summary, indent=2) + "\n")
        staging.rename(out_folder)
    return result, seq


#: The Spark session and audit options every Spark job command takes (``_job_settings``
#: reads them), in the order ``--help`` lists them.
_SPARK_JOB_OPTIONS = (
    click.option("--driver-memory", default="2g", show_default=True),
    click.option("--executor-memory", default="2g", show_default=True),
    click.option("--shuffle-partitions", type=click.IntRange(min=1)),
    click.option("--conf", "conf", multiple=True, help="Extra spark.KEY=VALUE (repeatable)."),
    click.option("--ui", is_flag=True, help="Spark's web UI (127.0.0.1 on one machine)."),
    click.option(
        "--operator", help="Who runs this (audit log); default WARDROUND_OPERATOR or login."
    ),
)


def spark_job_options(command: Any) -> Any:
    for option in reversed(_SPARK_JOB_OPTIONS):
        command = option(command)
    return command


@population.command("records")
@click.argument("input_folder", metavar="INPUT", type=click.Path(path_type=Path))
@click.option("--out", "out_folder", type=click.Path(path_type=Path), required=True)
@click.option("--master", default="local[*]", show_default=True, help="Spark master URL.")
@spark_job_options
@click.option("--progress/--no-progress", default=True, help="Spark's stage progress bar.")
def records(
    input_folder: Path,
    out_folder: Path,
    master: str,
    driver_memory: str,
    executor_memory: str,
    shuffle_partitions: int | None,
    conf: tuple[str, ...],
    progress: bool,
    ui: bool,
    operator: str | None,
) -> None:
    """Record rows of every patient in the bulk folder INPUT → Parquet tables in OUT.

    OUT (which must not exist) gets patients/, conditions/, observations/, medications/,
    encounters/ and run.json; it appears only once the run is in the audit log.
    """
    out_folder, settings = _job_settings(
        out_folder, master, driver_memory, executor_memory, shuffle_partitions, conf, ui, progress
    )
    run = PopulationRun(
        "records",
        operator_name(operator),
        {
            "input": str(input_folder.resolve()),
            "output": str(out_folder),
            "master": master,
        },
    )

    def refusal(run: PopulationRun, folder: BulkFolder) -> tuple[str, str] | None:
        run.parameters["ignored_types"] = [
            t for t in folder.resource_types if t not in {d.key for d in run.inputs}
        ]
        if not run.inputs:
            return "no_record_types", "none of the record resource types in INPUT"
        return None

    _, seq = _audited_job(
        run,
        input_folder,
        out_folder,
        refusal,
        lambda folder, staging: _run_records(run, folder, staging, settings),
    )
    rows = [(d.key, d.entries) for d in run.outputs]
    console.print(_counts_table(str(out_folder), rows, ("table", "rows")))
    skipped = {k: v for d in run.inputs for k, v in d.problems.items() if v}
    read = sum(d.entries for d in run.inputs)
    console.print(
        f"{read:,} resources read in {run.duration_ms / 1000:.1f} s; "
        f"run {run.run_id}, audit seq {seq}"
    )
    if skipped:
        errors.print(f"[yellow]lines not used[/]: {skipped}")


def _run_records(
    run: PopulationRun, folder: BulkFolder, staging: Path, settings: SparkSettings
) -> None:
    from population.records_job import TableWritten, write_record_tables
    from population.spark_session import spark_session

    with errors.status(f"starting Spark ({settings.master})"):
        spark = spark_session(settings)
    run.parameters["spark_version"] = spark.version
    try:

        def on_table(done: TableWritten) -> None:
            errors.print(f"  {done.table}: {done.rows:,} rows")

        run.inputs, run.outputs = write_record_tables(spark, folder, staging, run.inputs, on_table)
    finally:
        spark.stop()


# --------------------------------------------------------------------------- score
POST_TOKEN_ENV = "WARDROUND_POST_TOKEN"  # noqa: S105 (a variable name)
#: Audit status of a run whose post-back the FHIR server did not (fully) accept.
POST_FAILED = 502


def post_options(command: Any) -> Any:
    command = click.option(
        "--batch",
        type=click.IntRange(min=1, max=10_000),
        default=100,
        show_default=True,
        help="RiskAssessments per transaction Bundle.",
    )(command)
    return click.option(
        "--token-env",
        default=POST_TOKEN_ENV,
        show_default=True,
        help="Environment variable holding the FHIR server's bearer token (never on the "
        "command line).",
    )(command)


#: The models ``score`` runs by default: every registered learned risk model.
LEARNED_LOADER = "models.risk.learned:"


def _learned_models(model_ids: tuple[str, ...]) -> list[Any]:
    from models import registry
    from models.artifacts import ArtifactInvalid

    learned = [e.id for e in registry.MODEL_ENTRIES if e.loader.startswith(LEARNED_LOADER)]
    chosen = list(dict.fromkeys(model_ids)) or learned
    unknown = [m for m in chosen if m not in learned]
    if unknown:
        raise click.BadParameter(
            f"{', '.join(unknown)}: not a learned risk model (choose from {', '.join(learned)})",
            param_hint="--model",
        )
    try:
        return [registry.get(m) for m in chosen]
    except ArtifactInvalid as exc:
        raise click.ClickException(f"model artifact unusable: {exc}") from None


def _as_of(value: str | None) -> date:
    if value is None:
        return datetime.now(UTC).date()
    try:
        return date.fromisoformat(value)
    except ValueError:
        raise click.BadParameter(f"{value!r}: expected YYYY-MM-DD", param_hint="--as-of") from None


@population.command("score")
@click.argument("input_folder", metavar="INPUT", type=click.Path(path_type=Path))
@click.option("--out", "out_folder", type=click.Path(path_type=Path), required=True)
@click.option("--master", default="local[*]", show_default=True, help="Spark master URL.")
@click.option("--as-of", "as_of", help="The day scored (YYYY-MM-DD, UTC); default today.")
@click.option(
    "--model", "model_ids", multiple=True, help="A learned risk model id (repeatable); default all."
)
@spark_job_options
@click.option("--progress/--no-progress", default=True, help="Progress of the job's steps.")
@click.option(
    "--post",
    "post_to",
    metavar="URL",
    help="Post the RiskAssessments to this FHIR server base URL.",
)
@post_options
def score(
    input_folder: Path,
    out_folder: Path,
    master: str,
    as_of: str | None,
    model_ids: tuple[str, ...],
    driver_memory: str,
    executor_memory: str,
    shuffle_partitions: int | None,
    conf: tuple[str, ...],
    progress: bool,
    ui: bool,
    operator: str | None,
    post_to: str | None,
    token_env: str,
    batch: int,
) -> None:
    """Score every patient in the bulk folder INPUT with the learned risk models → OUT.

    OUT (which must not exist) gets records/ (the record-row tables), scores/ (Parquet:
    one row per patient and model: probability, band, top factors, model id, version and
    artifact hash), fhir/RiskAssessment.NNN.ndjson (eligible patients) and run.json; it
    appears only once the run is in the audit log. With --post, the RiskAssessments are
    then posted to that FHIR server (transaction Bundles of --batch PUTs), the counts kept
    with the run; a failed post exits non-zero (the scores are still written).
    """
    from population.scoring import ScoringModel

    out_folder, settings = _job_settings(
        out_folder, master, driver_memory, executor_memory, shuffle_partitions, conf, ui
    )
    day = _as_of(as_of)
    models = _learned_models(model_ids)
    run = PopulationRun(
        "score",
        operator_name(operator),
        {
            "input": str(input_folder.resolve()),
            "output": str(out_folder),
            "master": master,
            "as_of": day.isoformat(),
            "models": [m.id for m in models],
        },
    )
    token = _post_token(post_to, token_env, batch, run)
    run.models = [ScoringModel.of(m).describe() for m in models]
    posted: PostSummary | None = None

    def post_and_summarise(result: Any, staging: Path) -> dict[str, Any]:
        nonlocal posted
        if post_to and result.resources:
            from population.score_job import FHIR

            posted = _post_back(run, staging / FHIR, post_to, token, batch)
        summary: dict[str, Any] = {"scores": result.per_model}
        if posted is not None:
            summary["post"] = posted.to_json()
        return summary

    result, seq = _audited_job(
        run,
        input_folder,
        out_folder,
        _needs_patients,
        lambda folder, staging: _run_score(run, folder, staging, settings, models, day, progress),
        post_and_summarise,
    )
    console.print(_score_table(f"{out_folder}: scores on {day.isoformat()}", result, models))
    console.print(
        f"{result.rows:,} patient-model rows, {result.eligible:,} eligible; "
        f"{result.resources:,} RiskAssessments in {len(result.files)} files; "
        f"{run.duration_ms / 1000:.1f} s; run {run.run_id}, audit seq {seq}"
    )
    _end_post(run, posted)


def _score_table(title: str, result: Any, models: list[Any]) -> Table:
    table = Table(title=title, title_justify="left")
    for column in ("model", "version", "eligible", "elevated", "high"):
        table.add_column(column, justify="left" if column in ("model", "version") else "right")
    for model in models:
        counts = result.per_model[model.id]
        table.add_row(
            model.id,
            model.identity.version,
            f"{counts['eligible']:,}",
            f"{counts['elevated']:,}",
            f"{counts['high']:,}",
        )
    return table


def _run_score(
    run: PopulationRun,
    folder: BulkFolder,
    staging: Path,
    settings: SparkSettings,
    models: list[Any],
    day: date,
    show_progress: bool,
) -> Any:
    from population.features import parquet_tables
    from population.records_job import TableWritten, write_record_tables
    from population.score_job import FHIR, SCORES, run_score_job
    from population.spark_session import spark_session

    with errors.status(f"starting Spark ({settings.master})"):
        spark = spark_session(settings)
    run.parameters["spark_version"] = spark.version
    steps = len(run.inputs) + 2
    try:
        with _progress() as bar:
            task = bar.add_task("record rows", total=steps, visible=show_progress)

            def on_table(done: TableWritten) -> None:
                bar.update(task, advance=1, description=f"record rows: {done.table}")

            def on_step(name: str) -> None:
                if name != "features and scores":
                    bar.update(task, advance=1, description=name)
                else:
                    bar.update(task, description=name)

            records = staging / "records"
            run.inputs, tables_written = write_record_tables(
                spark, folder, records, run.inputs, on_table
            )
            tables = parquet_tables(spark, records)
            result = run_score_job(spark, tables, models, day, staging, on_step)
            bar.update(task, advance=1, description="done")
    finally:
        spark.stop()
    run.outputs = [
        *(Dataset(f"records/{d.key}", d.source, d.entries, location=f"records/{d.location}")
          for d in tables_written),
        Dataset(SCORES, "parquet", result.rows, location=SCORES),
        Dataset("RiskAssessment", "ndjson", result.resources, location=FHIR),
        # per model: its RiskAssessments (one per eligible patient)
        *(Dataset(f"RiskAssessment/{model_id}", "ndjson", counts["eligible"], location=FHIR)
          for model_id, counts in result.per_model.items()),
    ]  # fmt: skip
    return result


# --------------------------------------------------------------------------- post
def _post_token(post_to: str | None, token_env: str, batch: int, run: PopulationRun) -> str | None:
    """The bearer token for posting (read once; never logged), and the ask in the manifest."""
    if not post_to:
        return None
    if not post_to.startswith(("http://", "https://")):
        raise click.BadParameter(f"{post_to!r}: expected an http(s) FHIR base URL")
    run.parameters["post"] = {"to": post_to, "batch": batch, "token_env": token_env}
    token = os.environ.get(token_env) or None
    if token is None:
        errors.print(f"[yellow]{token_env} is not set: posting without a bearer token[/]")
    return token


def _post_back(
    run: PopulationRun, folder: Path, base_url: str, token: str | None, batch: int
) -> PostSummary | None:
    """Post ``folder``'s RiskAssessments; the counts go into the run's outputs.

    Returns None when the post could not go on (the run is marked failed with the reason).
    """
    from fhir_adapters.bulk.post_back import PostError, PostSettings, post_back

    with _progress() as bar:
        task = bar.add_task("posting RiskAssessments", total=None)

        def on_bundle(summary: PostSummary) -> None:
            bar.update(task, completed=summary.posted + summary.failed)

        try:
            summary = post_back(folder, base_url, token, PostSettings(batch_size=batch), on_bundle)
        except PostError as exc:
            run.fail(POST_FAILED, exc.code, str(exc))
            return None
    problems = {"not_accepted": summary.failed, "unreadable_lines": summary.read.problem_total}
    run.outputs.append(
        Dataset(
            "posted/RiskAssessment",
            "fhir-transaction",
            summary.posted,
            ({"bundles": summary.bundles, "created": summary.created, "updated": summary.updated},),
            problems,
            location=base_url,
        )
    )
    if summary.failed or summary.read.problem_total:
        total = summary.posted + summary.failed
        run.fail(
            POST_FAILED,
            "post_incomplete",
            f"{summary.failed} of {total} RiskAssessments not accepted by the FHIR server",
        )
    return summary


def _end_post(run: PopulationRun, posted: PostSummary | None) -> None:
    """Print the post's counts and failures (the server's text); a failed post exits 1."""
    if "post" not in run.parameters:
        return
    if posted is not None:
        console.print(
            f"posted {posted.posted:,} RiskAssessments to {posted.base_url} in "
            f"{posted.bundles} transaction Bundles ({posted.created:,} created, "
            f"{posted.updated:,} updated); {posted.failed:,} not accepted"
        )
        texts = Counter(f"{f.status}: {f.text}" for f in posted.failures)
        for text, count in texts.most_common(10):
            errors.print(f"[red]not accepted[/] {count} x {text}")
    if run.status != COMPLETED:
        raise click.ClickException(f"post to the FHIR server failed: {run.error_detail}")


@population.command("post")
@click.argument("path", type=click.Path(exists=True, file_okay=False, path_type=Path))
@click.option("--to", "post_to", metavar="URL", required=True, help="The FHIR server's base URL.")
@post_options
@click.option("--operator", help="Who runs this (audit log); default WARDROUND_OPERATOR or login.")
def post(path: Path, post_to: str, token_env: str, batch: int, operator: str | None) -> None:
    """Post the RiskAssessments of PATH (a `score` output, or a folder of RiskAssessment
    NDJSON) to the FHIR server URL, as transaction Bundles of --batch PUTs (re-posting
    updates the same resources)."""
    from fhir_adapters.bulk.post_back import PostError, risk_assessment_files

    run = PopulationRun("post", operator_name(operator), {}, fhir_server=post_to)
    token = _post_token(post_to, token_env, batch, run)
    run.parameters["input"] = str(path.resolve())
    with _audit() as audit:
        started = time.perf_counter()
        try:
            files = risk_assessment_files(path)
        except PostError as exc:
            run.fail(BAD_INPUT, exc.code, str(exc))
            _record(audit, run, started)
            raise click.ClickException(str(exc)) from None
        digests = digest_files(files)
        run.inputs = [
            Dataset(
                "RiskAssessment",
                "bulk-ndjson",
                0,
                tuple(d.to_json() for d in digests),
            )
        ]
        posted = _post_back(run, files[0].path.parent, post_to, token, batch)
        if posted is not None:
            run.inputs = [
                Dataset(
                    "RiskAssessment",
                    "bulk-ndjson",
                    posted.read.resources,
                    run.inputs[0].files,
                    {"unreadable_lines": posted.read.problem_total},
                )
            ]
        seq = _record(audit, run, started)
    console.print(f"run {run.run_id}, audit seq {seq}")
    _end_post(run, posted)


# --------------------------------------------------------------------------- train
@population.command("train")
@click.argument("input_folder", metavar="INPUT", type=click.Path(path_type=Path))
@click.option("--model", "model_id", required=True, help="The learned risk model id to train.")
@click.option("--out", "out_folder", type=click.Path(path_type=Path), required=True)
@click.option("--master", default="local[*]", show_default=True, help="Spark master URL.")
@click.option(
    "--workers",
    "num_workers",
    type=click.IntRange(min=1),
    default=1,
    show_default=True,
    help="xgboost.spark training tasks (one per executor core used).",
)
@spark_job_options
def train(
    input_folder: Path,
    model_id: str,
    out_folder: Path,
    master: str,
    num_workers: int,
    driver_memory: str,
    executor_memory: str,
    shuffle_partitions: int | None,
    conf: tuple[str, ...],
    ui: bool,
    operator: str | None,
) -> None:
    """Train a learned risk model on Spark from the bulk folder INPUT → OUT/<model id>/.

    The training data set (index dates, eligibility, outcome, features as of each index
    date) and the trees (xgboost.spark) run on Spark; the Platt calibration, held-out
    metrics and the artifact are the single-machine trainer's (``cds models train``).
    OUT/<model id>/ is the artifact ``models.risk.learned.load`` reads; OUT/run.json the
    run. OUT must not exist; it appears only once the run is in the audit log.
    """
    from models.risk.catalog import LEARNED_MODELS, SURVEYED_OUTCOMES

    if model_id not in LEARNED_MODELS:
        raise click.BadParameter(
            f"{model_id}: not a learned risk model (choose from {', '.join(LEARNED_MODELS)})",
            param_hint="--model",
        )
    spec = LEARNED_MODELS[model_id]
    # The single-machine run's index dates: the landmarks of every model it surveys.
    index_specs = [*SURVEYED_OUTCOMES, *(s for s in LEARNED_MODELS.values() if s is not spec)]
    out_folder, spark_settings = _job_settings(
        out_folder, master, driver_memory, executor_memory, shuffle_partitions, conf, ui
    )
    run = PopulationRun(
        "train",
        operator_name(operator),
        {
            "input": str(input_folder.resolve()),
            "output": str(out_folder),
            "master": master,
            "model": model_id,
            "workers": num_workers,
        },
    )

    def summarise(report: Any, staging: Path) -> dict[str, Any]:
        held = report.metrics["held_out"]
        return {
            "rows": report.rows,
            "seconds": report.seconds,
            "held_out": {k: held[k] for k in ("auroc", "auprc", "brier", "ci95", "samples")},
            "rounds": report.metrics["rounds"],
        }

    report, seq = _audited_job(
        run,
        input_folder,
        out_folder,
        _needs_patients,
        lambda folder, staging: _run_train(
            run, folder, staging, spark_settings, spec, index_specs, num_workers
        ),
        summarise,
    )
    held = report.metrics["held_out"]
    low, high = held["ci95"].get("auroc", (math.nan, math.nan))
    console.print(
        f"{model_id} {report.artifact.version}: {report.rows:,} index dates, "
        f"{report.metrics['rounds']} rounds; held-out AUROC {held['auroc']:.3f} "
        f"({low:.3f}-{high:.3f}), AUPRC {held['auprc']:.3f}, Brier {held['brier']:.3f} "
        f"on {held['samples']:,} visits"
    )
    console.print(
        f"artifact {out_folder / model_id} (sha256 {report.artifact.sha256[:12]}…); "
        f"{run.duration_ms / 1000:.1f} s; run {run.run_id}, audit seq {seq}"
    )


def _run_train(
    run: PopulationRun,
    folder: BulkFolder,
    staging: Path,
    spark_settings: SparkSettings,
    spec: Any,
    index_specs: list[Any],
    num_workers: int,
) -> Any:
    from population.features import record_tables
    from population.spark_session import spark_session
    from population.train_job import train_on_spark

    with errors.status(f"starting Spark ({spark_settings.master})"):
        spark = spark_session(spark_settings)
    run.parameters["spark_version"] = spark.version
    try:
        tables = record_tables(spark, folder)
        with errors.status("training") as status:

            def on_step(name: str) -> None:
                status.update(f"training {spec.id}: {name}")

            report = train_on_spark(
                tables,
                folder,
                spec,
                index_specs,
                staging,
                folder.root.name,
                num_workers,
                on_step,
            )
    finally:
        spark.stop()
    artifact = report.artifact
    run.models = [{"id": artifact.id, "version": artifact.version, "hash": artifact.sha256}]
    run.outputs = [
        Dataset(f"artifact/{artifact.id}", "artifact", report.rows, location=artifact.id)
    ]
    return report


@population.command("runs")
@click.option("--limit", type=click.IntRange(min=1), default=20, show_default=True)
def runs(limit: int) -> None:
    """The latest population runs recorded in the audit log."""
    from cds.db import make_engine, make_sessionmaker

    engine = make_engine(settings().database_url)
    try:
        with make_sessionmaker(engine)() as session:
            rows = recent_runs(session, limit)
    finally:
        engine.dispose()
    table = Table(title="population runs (newest first)", title_justify="left")
    for column in ("seq", "started", "job", "operator", "status", "seconds", "run id"):
        table.add_column(column)
    for row in rows:
        table.add_row(
            str(row.seq),
            row.received_at.strftime("%Y-%m-%d %H:%M:%S"),
            row.service_id.removeprefix("population:"),
            row.user_id or "",
            str(row.status_code) + (f" {row.error_code}" if row.error_code else ""),
            f"{row.latency_ms / 1000:.1f}",
            row.hook_instance or "",
        )
    console.print(table)
