"""``cds imaging``: train the pneumonia model, and read DICOM files with it from the shell."""

from __future__ import annotations

import json
from pathlib import Path

import click

from cds.commands._progress import progress_bar, progress_option

TRAIN_COMMAND = "cds imaging train   (or: make models-imaging)"


@click.group()
def imaging() -> None:
    """Pneumonia on chest radiographs (models/imaging)."""


@imaging.command("predict")
@click.argument("paths", nargs=-1, required=True, type=click.Path(exists=True, path_type=Path))
@progress_option
def predict(paths: tuple[Path, ...], progress: bool) -> None:
    """Read DICOM files (folders: recursively); one JSON line per file on stdout.

    Each line: {"sop_instance_uid", "file", "status", "probability", "label", "reason"};
    status "analysed" (probability calibrated, label "pneumonia" or "no-pneumonia" at the
    model's operating threshold) or "skipped" with the reason. Exit status 0 when every
    file was handled, skipped ones included.
    """
    from models import registry
    from models.artifacts import ArtifactInvalid
    from models.imaging import MODEL_ID
    from models.imaging.batch import dicom_paths, predict_file

    try:
        classifier = registry.get(MODEL_ID)
    except ArtifactInvalid as exc:
        raise click.ClickException(f"the model artifact is unusable: {exc}") from None
    files = list(dicom_paths(paths))
    for path in progress_bar(files, desc="images", unit="image", enabled=progress):
        click.echo(json.dumps(predict_file(path, classifier)))


@imaging.command("train")
@click.option("--epochs", default=40, show_default=True)
@click.option("--seed", default=7, show_default=True)
@click.option("--threads", default=2, show_default=True, help="Fixed torch thread count.")
@click.option(
    "--data",
    type=click.Path(exists=True, dir_okay=False, path_type=Path),
    help="PneumoniaMNIST .npz (default: $WARDROUND_SHARED_DATA or ../shared/data).",
)
@click.option(
    "--output",
    type=click.Path(file_okay=False, path_type=Path),
    help="Artifact folder (default: the shipped one, models/imaging/artifacts/pneumonia-cxr).",
)
@progress_option
def train(
    epochs: int, seed: int, threads: int, data: Path | None, output: Path | None, progress: bool
) -> None:
    """Train, calibrate and evaluate the CNN; write the artifact, MODEL_CARD.md and its ROC
    plot (model_card/roc.png)."""
    from models.imaging import ARTIFACT_DIR, MODEL_ID, MODEL_VERSION, model_card
    from models.imaging.dataset import load_pneumoniamnist
    from models.imaging.evaluation import roc_plot
    from models.imaging.network import NetworkSpec
    from models.imaging.training import TrainConfig, write_artifact
    from models.imaging.training import train as run_training
    from models.registry import CARD_FIGURES

    config = TrainConfig(epochs=epochs, seed=seed, threads=threads, network=NetworkSpec())
    try:
        dataset = load_pneumoniamnist(data)
    except FileNotFoundError as exc:
        raise click.ClickException(str(exc)) from None
    result = run_training(dataset, config, progress=progress, log=click.echo)
    folder = output or ARTIFACT_DIR
    artifact = write_artifact(result, folder, MODEL_ID, MODEL_VERSION, config)
    card_dir = folder.parent.parent if output is None else folder
    assert result.test is not None
    roc = f"{CARD_FIGURES}/roc.png"
    (card_dir / CARD_FIGURES).mkdir(parents=True, exist_ok=True)
    roc_plot(result.test_labels, result.test_probabilities, result.test.threshold, card_dir / roc)
    card = model_card.write(artifact, card_dir, roc, result.seconds, TRAIN_COMMAND)
    metrics = result.test.metrics
    click.echo(
        f"{artifact.id} {artifact.version} {artifact.sha256}\n"
        f"held-out AUROC {metrics['auroc']['value']:.4f}, sensitivity "
        f"{metrics['sensitivity']['value']:.4f}, specificity {metrics['specificity']['value']:.4f} "
        f"at p >= {result.calibration.threshold:.4f}\n"
        f"wrote {folder} and {card} in {result.seconds:.0f} s"
    )
