"""``cds models train``: train the learned risk models from FHIR bundles or bulk NDJSON."""

from __future__ import annotations

import math
from pathlib import Path

import click

from cds.commands._progress import progress_bar, progress_option


def _pct(value: float | None) -> str:
    return "-" if value is None or math.isnan(value) else f"{value:.3f}"


@click.command("train")
@click.argument("model_ids", nargs=-1, required=True)
@click.option(
    "--data",
    "data",
    required=True,
    type=click.Path(exists=True, file_okay=False, path_type=Path),
    help="Folder of FHIR Bundles (*.json[.gz], one patient each) or bulk NDJSON (*.ndjson[.gz]).",
)
@click.option(
    "--out",
    type=click.Path(file_okay=False, path_type=Path),
    help="Artifacts folder, each model in <out>/<model-id>/ [default: models/risk/artifacts].",
)
@click.option(
    "--card",
    type=click.Path(dir_okay=False, path_type=Path),
    help="Model card to regenerate from --out [default: models/risk/MODEL_CARD.md].",
)
@click.option("--no-card", is_flag=True, help="Do not regenerate the model card.")
@click.option("--workers", default=1, show_default=True, help="Processes building the data set.")
@progress_option
def train(
    model_ids: tuple[str, ...],
    data: Path,
    out: Path | None,
    card: Path | None,
    no_card: bool,
    workers: int,
    progress: bool,
) -> None:
    """Train MODEL_IDS (e.g. cvd-event-3y acute-care-1y) on the records in --data."""
    from fhir_adapters.records import RecordsInvalid, expected_records
    from models.risk.learned import ARTIFACTS, MODEL_CARD
    from models.risk.training.card import render
    from models.risk.training.train import TrainingError
    from models.risk.training.train import train as train_models

    out = out or ARTIFACTS
    card = card or MODEL_CARD
    try:
        total = expected_records(data)

        def bar(items):  # type: ignore[no-untyped-def]
            return progress_bar(
                items, total=total, unit="patient", desc="building index dates", enabled=progress
            )

        reports = train_models(list(model_ids), data, out, workers=max(1, workers), progress=bar)
    except (TrainingError, RecordsInvalid) as exc:
        raise click.ClickException(str(exc)) from None
    for report in reports:
        held = report.metrics["held_out"]
        click.echo(
            f"{report.model_id}\t{report.artifact.version}\t{report.artifact.sha256}\t"
            f"AUROC {_pct(held['auroc'])}  AUPRC {_pct(held['auprc'])}  "
            f"Brier {_pct(held['brier'])}  ({held['samples']} held-out visits, "
            f"{held['events']} events)"
        )
    if not no_card:
        click.echo(f"model card: {render(out, card)}")
