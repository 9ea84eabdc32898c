"""``cds population phenotypes …``: fit the patient phenotypes and assign patients to them.

=================================== =======================================================
command                             what
=================================== =======================================================
``fit [--data D] [--engine E]``     build the cohort, fit (k-means with k chosen by
                                    silhouette and stability, DBSCAN, HDBSCAN), write the
                                    artifact, the model card / report (MODEL_CARD.md, PNGs)
                                    and report.html
``assign [--data D] --out F``       each record's phenotype (JSON lines)
=================================== =======================================================

``--engine spark`` runs k-means in Spark MLlib on the same preprocessing (populations), the
cohort's vectors computed from the same records by the Spark feature executor (a folder of
Synthea bundles is converted to bulk NDJSON first); the scikit-learn fit still chooses k,
writes the artifact and the report, and the two engines' assignments are compared
(adjusted Rand index).
"""

from __future__ import annotations

import json
import tempfile
import time
from pathlib import Path
from typing import TYPE_CHECKING

import click

from cds.commands._progress import progress_bar, progress_option
from models.shared_data import shared_data

if TYPE_CHECKING:
    from fhir_adapters.bulk.ndjson import BulkFolder


def _data_option(function):  # type: ignore[no-untyped-def]
    return click.option(
        "--data",
        type=click.Path(exists=True, file_okay=False, path_type=Path),
        help="Folder of FHIR Bundles or bulk NDJSON [default: the shared synthea-r4].",
    )(function)


def _data(data: Path | None) -> Path:
    folder = data or shared_data() / "synthea-r4"
    if not folder.is_dir():
        raise click.ClickException(f"{folder}: no such folder (set --data)")
    return folder


@click.group()
def phenotypes() -> None:
    """Patient phenotypes: clusters over the phenotype feature set."""


@phenotypes.command("fit")
@_data_option
@click.option("--workers", default=1, show_default=True, help="Processes building the cohort.")
@click.option("--seed", default=None, type=int, help="Random seed [default: the model's].")
@click.option(
    "--engine",
    type=click.Choice(["sklearn", "spark"]),
    default="sklearn",
    show_default=True,
    help="spark: also k-means in Spark MLlib on the same preprocessing.",
)
@click.option("--master", default="local[2]", show_default=True, help="Spark master URL.")
@click.option(
    "--artifact",
    type=click.Path(file_okay=False, path_type=Path),
    help="Artifact folder [default: models/phenotypes/artifacts/patient-phenotypes].",
)
@click.option(
    "--card",
    type=click.Path(dir_okay=False, path_type=Path),
    help="Model card / report [default: models/phenotypes/MODEL_CARD.md].",
)
@click.option(
    "--html",
    "html_out",
    type=click.Path(dir_okay=False, path_type=Path),
    help="Standalone HTML report [default: report.html beside the card].",
)
@progress_option
def fit(
    data: Path | None,
    workers: int,
    seed: int | None,
    engine: str,
    master: str,
    artifact: Path | None,
    card: Path | None,
    html_out: Path | None,
    progress: bool,
) -> None:
    """Fit the phenotypes on the records in --data; write the artifact and the report."""
    from fhir_adapters.records import RecordsInvalid, expected_records, read_records
    from models.phenotypes.cohort import build_cohort
    from models.phenotypes.fit import SEED, fit_phenotypes, write_artifact
    from models.phenotypes.model import ARTIFACT
    from models.phenotypes.report import CARD, write_report

    folder = _data(data)
    started = time.perf_counter()
    try:
        total = expected_records(folder)

        def bar(items):  # type: ignore[no-untyped-def]
            return progress_bar(
                items, total=total, unit="patient", desc="phenotype vectors", enabled=progress
            )

        cohort = build_cohort(lambda: read_records(folder), workers=max(1, workers), progress=bar)
    except RecordsInvalid as exc:
        raise click.ClickException(str(exc)) from None
    built = time.perf_counter()
    result = fit_phenotypes(cohort, seed if seed is not None else SEED)
    fitted = time.perf_counter()
    written = write_artifact(result, artifact or ARTIFACT)
    card = card or CARD
    files = write_report(result, written, card, html_out or card.parent / "report.html")
    for method in result.methods:
        sil = "-" if method.silhouette is None else f"{method.silhouette:.3f}"
        click.echo(
            f"{method.method}\tclusters {method.clusters}\tnoise {method.noise}\t"
            f"silhouette {sil}\tstability {method.stability.mean:.3f}"
        )
    click.echo(f"k = {result.k_choice.k}: {result.k_choice.rule}")
    click.echo(f"artifact {written.id} {written.version} {written.sha256}")
    click.echo("report: " + ", ".join(str(f) for f in files))
    click.echo(
        f"{len(cohort.rows)} patients, {len(cohort.samples)} landmark samples: vectors "
        f"{built - started:.1f} s, fit {fitted - built:.1f} s"
    )
    if engine == "spark":
        from population.phenotypes_spark import compare_engines

        with tempfile.TemporaryDirectory(prefix="phenotypes-spark-") as scratch:
            comparison = compare_engines(result, _bulk_folder(folder, Path(scratch)), master)
        click.echo(
            f"spark MLlib k-means (k = {comparison.k}): {comparison.seconds:.1f} s, "
            f"ARI vs scikit-learn {comparison.ari:.3f}"
        )


def _bulk_folder(folder: Path, scratch: Path) -> BulkFolder:
    """``folder`` as bulk NDJSON for Spark: as it is, or its Synthea bundles converted."""
    from fhir_adapters.bulk.ndjson import scan_folder
    from fhir_adapters.bulk.synthea_ndjson import bundle_files, convert_bundles
    from fhir_adapters.records import ndjson_files

    if ndjson_files(folder):
        return scan_folder(folder)
    convert_bundles(bundle_files(folder), scratch / "bulk")
    return scan_folder(scratch / "bulk")


@phenotypes.command("assign")
@_data_option
@click.option(
    "--out", required=True, type=click.Path(dir_okay=False, path_type=Path), help="JSON lines."
)
@progress_option
def assign(data: Path | None, out: Path, progress: bool) -> None:
    """Each record's phenotype, from the shipped artifact (one JSON line per patient)."""
    from fhir_adapters.records import RecordsInvalid, expected_records, read_records
    from models import registry
    from models.phenotypes.assign import assign_records
    from models.phenotypes.model import MODEL_ID

    folder = _data(data)
    model = registry.get(MODEL_ID)
    counts: dict[int, int] = {}
    started = time.perf_counter()
    out.parent.mkdir(parents=True, exist_ok=True)
    try:
        records = progress_bar(
            read_records(folder),
            total=expected_records(folder),
            unit="patient",
            desc="assigning",
            enabled=progress,
        )
        with out.open("w", encoding="utf-8") as handle:
            for found in assign_records(model, records):
                handle.write(json.dumps(found.to_json()) + "\n")
                counts[found.phenotype] = counts.get(found.phenotype, 0) + 1
    except RecordsInvalid as exc:
        raise click.ClickException(str(exc)) from None
    for phenotype in sorted(counts):
        click.echo(f"{model.phenotype_name(phenotype)}\t{counts[phenotype]}")
    click.echo(f"{sum(counts.values())} patients in {time.perf_counter() - started:.1f} s: {out}")
