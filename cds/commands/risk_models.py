"""``cds models train``: train the learned risk models from FHIR bundles or bulk NDJSON."""

from __future__ import annotations

import math
from pathlib import Path

import click

DEFAULT_OUT = Path(__file__).resolve().parents[2] / "models" / "risk" / "artifacts"
DEFAULT_CARD = DEFAULT_OUT.parent / "MODEL_CARD.md"


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
    default=DEFAULT_OUT,
    show_default=True,
    help="Artifacts folder: each model is written to <out>/<model-id>/.",
)
@click.option(
    "--card",
    type=click.Path(dir_okay=False, path_type=Path),
    default=DEFAULT_CARD,
    show_default=True,
    help="Model card to regenerate from the artifacts in --out.",
)
@click.option("--no-card", is_flag=True, help="Do not regenerate the model card.")
@click.option("--workers", default=1, show_default=True, help="Processes building the data set.")
def train(
    model_ids: tuple[str, ...], data: Path, out: Path, card: Path, no_card: bool, workers: int
) -> None:
    """Train MODEL_IDS (e.g. cvd-event-3y acute-care-1y) on the records in --data."""
    from tqdm import tqdm

    from fhir_adapters.records import RecordsInvalid, expected_records
    from models.risk.training.card import render
    from models.risk.training.train import TrainingError, train

    try:
        total = expected_records(data)

        def progress(items):  # type: ignore[no-untyped-def]
            return tqdm(items, total=total, unit="patient", desc="building index dates")

        reports = train(list(model_ids), data, out, workers=max(1, workers), progress=progress)
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
