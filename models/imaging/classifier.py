"""The served pneumonia model: artifact → network + preprocessing spec + calibration.

:func:`load_classifier` verifies the artifact against its manifest (every file's SHA-256)
and rebuilds the network from ``model.safetensors`` and ``model.json``; the
preprocessing spec comes from ``preprocess.json``, the same file training wrote, so
serving cannot drift from training. Inference is thread-safe (eval mode, no grad).
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
from safetensors.torch import load_file

from fhir_adapters.imaging import DicomImage
from models.artifacts import Artifact, ArtifactInvalid, ModelIdentity, load_artifact
from models.imaging.network import NetworkSpec, PneumoniaNet
from models.imaging.preprocess import PreprocessSpec, preprocess

WEIGHTS = "model.safetensors"
MODEL_JSON = "model.json"
PREPROCESS_JSON = "preprocess.json"
ARTIFACT_FILES = (WEIGHTS, MODEL_JSON, PREPROCESS_JSON)


@dataclass(frozen=True)
class Calibration:
    #: Calibrated probability = sigmoid(logit / temperature) (temperature scaling).
    temperature: float
    #: Operating threshold on the calibrated probability.
    threshold: float
    #: How the threshold was chosen, in words.
    rule: str

    def __post_init__(self) -> None:
        if not (np.isfinite(self.temperature) and self.temperature > 0):
            raise ValueError("temperature must be positive")
        if not 0 < self.threshold < 1:
            raise ValueError("threshold must be in (0, 1)")


def model_json(network: NetworkSpec, calibration: Calibration) -> dict[str, Any]:
    return {
        "network": network.to_json(),
        "calibration": {
            "method": "temperature",
            "temperature": calibration.temperature,
            "threshold": calibration.threshold,
            "rule": calibration.rule,
        },
        "output": "probability of pneumonia (PneumoniaMNIST label 1)",
    }


class PneumoniaClassifier:
    """Pixels in, calibrated probability of pneumonia out."""

    def __init__(
        self,
        network: PneumoniaNet,
        spec: PreprocessSpec,
        calibration: Calibration,
        identity: ModelIdentity,
        metadata: dict[str, Any] | None = None,
    ) -> None:
        self.network = network.eval()
        self.spec = spec
        self.calibration = calibration
        self.identity = identity
        self.metadata = metadata or {}

    @property
    def threshold(self) -> float:
        return self.calibration.threshold

    def logits(self, inputs: torch.Tensor) -> torch.Tensor:
        """Model inputs (N, 1, S, S) → raw logits (N,)."""
        with torch.inference_mode():
            return self.network(inputs)

    def probabilities(self, inputs: Sequence[torch.Tensor]) -> list[float]:
        """Preprocessed inputs, each (1, S, S) → calibrated probabilities."""
        if not inputs:
            return []
        logits = self.logits(torch.stack(list(inputs)))
        calibrated = torch.sigmoid(logits / self.calibration.temperature)
        return [float(p) for p in calibrated]

    def prepare(self, image: DicomImage) -> torch.Tensor:
        """One decoded image → model input (raises NotPreprocessable)."""
        return preprocess(image, self.spec)

    def predict(self, image: DicomImage) -> float:
        """One decoded image → calibrated probability (raises NotPreprocessable)."""
        return self.probabilities([self.prepare(image)])[0]


def load_classifier(folder: Path) -> PneumoniaClassifier:
    artifact: Artifact = load_artifact(folder)
    missing = [name for name in ARTIFACT_FILES if name not in artifact.files]
    if missing:
        raise ArtifactInvalid(f"{artifact.id}: artifact lacks {', '.join(missing)}")
    try:
        described = json.loads(artifact.file(MODEL_JSON).read_text())
        spec = PreprocessSpec.from_json(json.loads(artifact.file(PREPROCESS_JSON).read_text()))
        network_spec = NetworkSpec(**described["network"])
        calib = described["calibration"]
        calibration = Calibration(
            temperature=float(calib["temperature"]),
            threshold=float(calib["threshold"]),
            rule=str(calib["rule"]),
        )
        network = PneumoniaNet(network_spec)
        network.load_state_dict(load_file(artifact.file(WEIGHTS)), strict=True)
    except (OSError, ValueError, KeyError, TypeError, RuntimeError) as exc:
        raise ArtifactInvalid(f"{artifact.id}: unusable artifact ({type(exc).__name__})") from exc
    return PneumoniaClassifier(
        network, spec, calibration, artifact.identity, dict(artifact.metadata)
    )
