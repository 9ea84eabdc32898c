"""Training by command on a slice of the shared patients: artifacts, card, determinism, NDJSON.

The full training (all 299 patients, both models) runs offline (``make models-risk``); here
30 patients keep it to seconds while going through every step.
"""

from __future__ import annotations

import json
import shutil
import subprocess
from pathlib import Path

import pytest

from models.artifacts import file_sha256, load_artifact
from models.risk.training.train import TrainingError, train
from tests.conftest import synthea_bundles
from tests.risk.test_records import _as_ndjson
from tests.test_audit_log import CDS_CLI, cli_env

SLICE = 30


@pytest.fixture(scope="module")
def slice_folder(tmp_path_factory: pytest.TempPathFactory) -> Path:
    folder = tmp_path_factory.mktemp("slice") / "synthea-slice"
    folder.mkdir()
    for bundle in synthea_bundles()[:SLICE]:
        shutil.copy(bundle, folder / bundle.name)
    return folder


def test_cds_models_train_writes_a_verified_artifact_and_its_card(
    slice_folder: Path, tmp_path: Path
):
    out, card = tmp_path / "artifacts", tmp_path / "card" / "MODEL_CARD.md"
    completed = subprocess.run(
        [
            str(CDS_CLI),
            "models",
            "train",
            "acute-care-1y",
            "--data",
            str(slice_folder),
            "--out",
            str(out),
            "--card",
            str(card),
        ],
        env=cli_env(f"sqlite:///{tmp_path / 'a.db'}", tmp_path),
        capture_output=True,
        text=True,
        timeout=600,
        check=False,
    )
    assert completed.returncode == 0, completed.stderr[-3000:]
    assert "building index dates" in completed.stderr and f"{SLICE}/{SLICE}" in completed.stderr
    artifact = load_artifact(out / "acute-care-1y")
    assert set(artifact.files) == {
        "model.json",
        "feature_spec.json",
        "calibration.json",
        "metrics.json",
        "training_data.json",
    }
    line = next(x for x in completed.stdout.splitlines() if x.startswith("acute-care-1y"))
    assert artifact.sha256 in line and "AUROC" in line
    metrics = json.loads((out / "acute-care-1y" / "metrics.json").read_text())
    held = metrics["held_out"]
    assert (
        held["patients"] + metrics["train"]["patients"]
        == artifact.metadata["training_data"]["patients"]
    )
    assert set(held["ci95"]) == {"auroc", "auprc", "brier"} and held["calibration"]
    text = card.read_text()
    assert artifact.sha256 in text and "## `cvd-event-3y`\n\nNot trained yet." in text
    assert (card.parent / "model_card" / "acute-care-1y-calibration.png").read_bytes()[
        :4
    ] == b"\x89PNG"
    survey = {row["id"]: row for row in artifact.metadata["training_data"]["outcome_survey"]}
    assert {"t2d-onset-3y", "hypertension-onset-3y", "cvd-event-1y", "cvd-event-3y"} <= set(survey)


def test_training_is_deterministic_and_reads_bulk_ndjson_alike(slice_folder: Path, tmp_path: Path):
    """The same patients as bundles and as a bulk NDJSON export give the same booster."""
    ndjson = _as_ndjson(slice_folder, tmp_path / "ndjson")
    from_bundles = train(["acute-care-1y"], slice_folder, tmp_path / "a")[0]
    from_ndjson = train(["acute-care-1y"], ndjson, tmp_path / "b")[0]
    for name in ("model.json", "calibration.json", "feature_spec.json"):
        assert file_sha256(from_bundles.artifact.file(name)) == file_sha256(
            from_ndjson.artifact.file(name)
        )
    assert from_bundles.metrics["held_out"] == from_ndjson.metrics["held_out"]


def test_training_errors_are_clear(slice_folder: Path, tmp_path: Path):
    with pytest.raises(
        TrainingError, match=r"unknown model id.*trainable: cvd-event-3y, acute-care-1y"
    ):
        train(["t2d-onset-3y"], slice_folder, tmp_path)
    completed = subprocess.run(
        [str(CDS_CLI), "models", "train", "acute-care-1y", "--data", str(tmp_path)],
        env=cli_env(f"sqlite:///{tmp_path / 'a.db'}", tmp_path),
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    assert completed.returncode == 1
    assert "no FHIR Bundles (*.json[.gz]) or NDJSON" in completed.stderr
    assert "Traceback" not in completed.stderr
