"""The shipped pneumonia artifact: verified, registered, reproducing its own card's numbers."""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from models import registry
from models.artifacts import ArtifactInvalid, load_artifact, write_manifest
from models.imaging import ARTIFACT_DIR, MODEL_ID, MODEL_VERSION, load
from models.imaging.classifier import MODEL_JSON, PneumoniaClassifier
from models.imaging.dataset import PneumoniaMnist, model_inputs
from models.imaging.evaluation import point_metrics
from models.imaging.network import NetworkSpec
from models.imaging.training import TrainConfig, train, weights_bytes_identical
from tests.conftest import REPO

MODEL_CARD = ARTIFACT_DIR.parent.parent / "MODEL_CARD.md"


def test_the_registry_serves_the_verified_artifact(classifier: PneumoniaClassifier) -> None:
    artifact = load_artifact(ARTIFACT_DIR)
    assert registry.identity(MODEL_ID) == classifier.identity == artifact.identity
    assert (artifact.id, artifact.version) == (MODEL_ID, MODEL_VERSION)
    assert set(artifact.files) == {"model.safetensors", "model.json", "preprocess.json"}
    assert artifact.sha256 in MODEL_CARD.read_text()  # the card describes this artifact
    assert (MODEL_CARD.parent / "model_card" / "roc.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


def test_the_held_out_metrics_in_the_manifest_are_those_of_the_shipped_weights(
    pneumoniamnist: PneumoniaMnist, classifier: PneumoniaClassifier
) -> None:
    test = classifier.metadata["metrics"]["test"]
    inputs = model_inputs(pneumoniamnist.val_images, classifier.spec, first_index=10_000)
    probabilities = np.array(classifier.probabilities(list(inputs)))
    found = point_metrics(pneumoniamnist.val_labels, probabilities, classifier.threshold)
    for name, value in found.items():
        assert round(value, 4) == test["metrics"][name]["value"], name
    assert test["threshold"] == round(classifier.threshold, 6)
    assert test["n"] == len(pneumoniamnist.val_labels) == 270


@pytest.fixture
def artifact_copy(tmp_path: Path) -> Path:
    return Path(shutil.copytree(ARTIFACT_DIR, tmp_path / MODEL_ID))


@pytest.mark.parametrize("name", ["model.safetensors", "preprocess.json", "model.json"])
def test_a_changed_file_is_refused(artifact_copy: Path, name: str) -> None:
    path = artifact_copy / name
    data = bytearray(path.read_bytes())
    data[len(data) // 2] ^= 0x01
    path.write_bytes(bytes(data))
    with pytest.raises(ArtifactInvalid, match="does not match its manifest hash"):
        load(artifact_copy)


def test_a_consistent_but_unusable_artifact_is_refused(artifact_copy: Path) -> None:
    described = json.loads((artifact_copy / MODEL_JSON).read_text())
    described["network"]["width"] = 16  # the weights are for width 32
    (artifact_copy / MODEL_JSON).write_text(json.dumps(described))
    write_manifest(artifact_copy, MODEL_ID, MODEL_VERSION)
    with pytest.raises(ArtifactInvalid, match="unusable artifact"):
        load(artifact_copy)


def test_training_is_deterministic(pneumoniamnist: PneumoniaMnist) -> None:
    def run(seed: int):  # type: ignore[no-untyped-def]
        config = TrainConfig(
            seed=seed, limit=160, epochs=2, threads=1, network=NetworkSpec(width=8)
        )
        return train(pneumoniamnist, config, progress=False, evaluate_test=False, log=_quiet)

    first, second, other = run(7), run(7), run(8)
    assert weights_bytes_identical(first.network, second.network)
    assert first.calibration == second.calibration and first.spec == second.spec
    assert not weights_bytes_identical(first.network, other.network)


def _quiet(_: str) -> None:
    pass


def test_importing_the_service_does_not_import_torch() -> None:
    code = "import sys; import cds.services, cds.app, models.imaging; print('torch' in sys.modules)"
    run = subprocess.run(
        [sys.executable, "-c", code],
        capture_output=True,
        text=True,
        cwd=REPO,
        timeout=120,
        env={"PYTHONPATH": str(REPO), "PATH": "/usr/bin:/bin"},
    )
    assert run.returncode == 0, run.stderr[-2000:]
    assert run.stdout.strip() == "False"
