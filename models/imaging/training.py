"""Training the pneumonia CNN from one command, deterministically, on CPU in minutes.

Data split (PneumoniaMNIST development subset, balanced):

* the given ``train`` split is divided, stratified with a fixed seed, into *training*
  (80 %) and *validation* (20 %). Validation chooses the epoch (early stopping on AUROC),
  fits the temperature and sets the operating threshold;
* the given ``val`` split is the **held-out test set**: used once, for the reported
  metrics, never for training or any choice.

Every image goes DICOM → adapter decode → :mod:`~models.imaging.preprocess` (see
:mod:`~models.imaging.dataset`). Determinism: ``torch.manual_seed``, a seeded generator
for shuffling and augmentation, ``torch.use_deterministic_algorithms(True)`` and a fixed
thread count, so two runs on the same machine give bit-identical weights.
"""

from __future__ import annotations

import copy
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from safetensors.torch import save_file
from sklearn.metrics import roc_auc_score
from sklearn.model_selection import train_test_split
from tqdm import tqdm

from models.artifacts import Artifact, write_manifest
from models.imaging.classifier import (
    MODEL_JSON,
    PREPROCESS_JSON,
    WEIGHTS,
    Calibration,
    model_json,
)
from models.imaging.dataset import PneumoniaMnist, model_inputs
from models.imaging.evaluation import (
    Evaluation,
    evaluate,
    expected_calibration_error,
    fit_temperature,
    sigmoid,
    threshold_for_sensitivity,
)
from models.imaging.network import NetworkSpec, PneumoniaNet
from models.imaging.preprocess import PreprocessSpec

TRAINING_DATA = (
    "PneumoniaMNIST (MedMNIST v2; Kermany et al. 2018 paediatric chest radiographs, "
    "28x28), balanced development subset: train split 2,428 images (1,214 pneumonia) "
    "divided 80/20 into training and validation (stratified, seeded); val split 270 "
    "images (135 pneumonia) held out as the test set."
)


@dataclass(frozen=True)
class TrainConfig:
    seed: int = 7
    epochs: int = 40
    #: Stop after this many epochs without a better validation AUROC.
    patience: int = 10
    batch_size: int = 64
    learning_rate: float = 2e-3
    weight_decay: float = 1e-4
    validation_fraction: float = 0.2
    #: Operating threshold: the highest with at least this sensitivity on validation.
    sensitivity_target: float = 0.95
    #: Random translation of training images by up to this many pixels.
    max_shift: int = 2
    network: NetworkSpec = field(default_factory=NetworkSpec)
    threads: int = 2
    #: Use only a seeded, stratified sample of N training images (quick checks and tests).
    limit: int | None = None

    def to_json(self) -> dict[str, Any]:
        data = asdict(self)
        data.pop("limit")
        return data


@dataclass(frozen=True)
class TrainResult:
    network: PneumoniaNet
    spec: PreprocessSpec
    calibration: Calibration
    best_epoch: int
    epochs_run: int
    validation: dict[str, Any]
    test: Evaluation | None
    test_labels: np.ndarray
    test_probabilities: np.ndarray
    seconds: float


def set_deterministic(seed: int, threads: int) -> None:
    torch.manual_seed(seed)
    torch.use_deterministic_algorithms(True)
    torch.set_num_threads(threads)


def split(labels: np.ndarray, fraction: float, seed: int) -> tuple[np.ndarray, np.ndarray]:
    """Stratified, seeded (training indices, validation indices)."""
    indices = np.arange(labels.size)
    train, validation = train_test_split(
        indices, test_size=fraction, stratify=labels, random_state=seed
    )
    return np.sort(train), np.sort(validation)


def _shifted(batch: torch.Tensor, generator: torch.Generator, max_shift: int) -> torch.Tensor:
    """Each image translated by a random (dy, dx) in [-max_shift, max_shift], edge-padded."""
    if max_shift == 0:
        return batch
    size = batch.shape[-1]
    padded = F.pad(batch, (max_shift,) * 4, mode="replicate")
    offsets = torch.randint(0, 2 * max_shift + 1, (batch.shape[0], 2), generator=generator)
    return torch.stack(
        [
            padded[i, :, dy : dy + size, dx : dx + size]
            for i, (dy, dx) in enumerate(offsets.tolist())
        ]
    )


def predict_logits(network: PneumoniaNet, inputs: torch.Tensor, batch: int = 512) -> np.ndarray:
    network.eval()
    with torch.inference_mode():
        return torch.cat(
            [network(inputs[i : i + batch]) for i in range(0, len(inputs), batch)]
        ).numpy()


def _fit(
    x: torch.Tensor,
    y: torch.Tensor,
    x_val: torch.Tensor,
    y_val: np.ndarray,
    config: TrainConfig,
    progress: bool,
) -> tuple[PneumoniaNet, int, int]:
    generator = torch.Generator().manual_seed(config.seed)
    network = PneumoniaNet(config.network)
    optimiser = torch.optim.AdamW(
        network.parameters(), lr=config.learning_rate, weight_decay=config.weight_decay
    )
    schedule = torch.optim.lr_scheduler.CosineAnnealingLR(optimiser, T_max=config.epochs)
    best_auroc, best_epoch, best_state = -1.0, 0, copy.deepcopy(network.state_dict())
    epochs = tqdm(range(1, config.epochs + 1), desc="training", unit="epoch", disable=not progress)
    epoch = 0
    for epoch in epochs:
        network.train()
        order = torch.randperm(len(x), generator=generator)
        total = 0.0
        for start in range(0, len(x), config.batch_size):
            index = order[start : start + config.batch_size]
            inputs = _shifted(x[index], generator, config.max_shift)
            loss = F.binary_cross_entropy_with_logits(network(inputs), y[index])
            optimiser.zero_grad(set_to_none=True)
            loss.backward()
            optimiser.step()
            total += float(loss.detach()) * len(index)
        schedule.step()
        auroc = float(roc_auc_score(y_val, predict_logits(network, x_val)))
        if auroc > best_auroc:
            best_auroc, best_epoch = auroc, epoch
            best_state = copy.deepcopy(network.state_dict())
        epochs.set_postfix(loss=f"{total / len(x):.4f}", val_auroc=f"{auroc:.4f}", best=best_epoch)
        if epoch - best_epoch >= config.patience:
            break
    network.load_state_dict(best_state)
    return network.eval(), best_epoch, epoch


def train(
    data: PneumoniaMnist,
    config: TrainConfig | None = None,
    *,
    progress: bool = True,
    evaluate_test: bool = True,
    log: Callable[[str], None] = print,
) -> TrainResult:
    """Train, calibrate and (unless told not to) evaluate on the held-out test set."""
    config = config or TrainConfig()
    began = time.monotonic()
    set_deterministic(config.seed, config.threads)
    images, labels = data.train_images, data.train_labels
    if config.limit is not None:
        chosen, _ = train_test_split(
            np.arange(labels.size),
            train_size=config.limit,
            stratify=labels,
            random_state=config.seed,
        )
        chosen = np.sort(chosen)
        images, labels = images[chosen], labels[chosen]
    train_idx, val_idx = split(labels, config.validation_fraction, config.seed)

    # Standardisation constants from the training part, through the one preprocessing path.
    unscaled = model_inputs(images[train_idx], PreprocessSpec())
    spec = PreprocessSpec(mean=float(unscaled.mean()), std=float(unscaled.std()))
    log(f"preprocessing: mean {spec.mean:.4f}, std {spec.std:.4f}")
    inputs = model_inputs(images, spec)
    x, y = inputs[train_idx], torch.from_numpy(labels[train_idx]).float()
    x_val, y_val = inputs[val_idx], labels[val_idx]

    network, best_epoch, epochs_run = _fit(x, y, x_val, y_val, config, progress)

    val_logits = predict_logits(network, x_val)
    temperature = fit_temperature(val_logits, y_val)
    val_probs = sigmoid(val_logits / temperature)
    threshold = threshold_for_sensitivity(y_val, val_probs, config.sensitivity_target)
    calibration = Calibration(
        temperature=temperature,
        threshold=threshold,
        rule=(
            f"highest threshold with sensitivity >= {config.sensitivity_target:.2f} on the "
            "validation split (calibrated probabilities)"
        ),
    )
    validation = {
        "n": int(y_val.size),
        "auroc": round(float(roc_auc_score(y_val, val_probs)), 4),
        "ece_before_calibration": round(expected_calibration_error(y_val, sigmoid(val_logits)), 4),
        "ece_after_calibration": round(expected_calibration_error(y_val, val_probs), 4),
    }
    test_eval, test_labels, test_probs = None, np.array([]), np.array([])
    if evaluate_test:
        test_inputs = model_inputs(data.val_images, spec, first_index=len(data.train_images))
        test_labels = data.val_labels
        test_probs = sigmoid(predict_logits(network, test_inputs) / temperature)
        test_eval = evaluate(test_labels, test_probs, threshold)
    return TrainResult(
        network=network,
        spec=spec,
        calibration=calibration,
        best_epoch=best_epoch,
        epochs_run=epochs_run,
        validation=validation,
        test=test_eval,
        test_labels=test_labels,
        test_probabilities=test_probs,
        seconds=time.monotonic() - began,
    )


def weights_bytes_identical(a: PneumoniaNet, b: PneumoniaNet) -> bool:
    sa, sb = a.state_dict(), b.state_dict()
    return sa.keys() == sb.keys() and all(torch.equal(sa[k], sb[k]) for k in sa)


def write_artifact(
    result: TrainResult, folder: Path, model_id: str, version: str, config: TrainConfig
) -> Artifact:
    """Weights (safetensors), preprocess.json, model.json and the hashed manifest."""
    import json

    folder.mkdir(parents=True, exist_ok=True)
    for stale in folder.iterdir():
        if stale.is_file():
            stale.unlink()
    state = {k: v.contiguous() for k, v in result.network.state_dict().items()}
    save_file(state, str(folder / WEIGHTS))  # no metadata: its key order is not stable
    (folder / PREPROCESS_JSON).write_text(result.spec.dumps())
    described = model_json(config.network, result.calibration)
    (folder / MODEL_JSON).write_text(json.dumps(described, indent=2, sort_keys=True) + "\n")
    metadata = {
        "training_data": TRAINING_DATA,
        "spec": {"preprocess": result.spec.to_json(), "model": described},
        "training": config.to_json()
        | {"best_epoch": result.best_epoch, "epochs_run": result.epochs_run},
        "metrics": {
            "validation": result.validation,
            "test": result.test.to_json() if result.test else None,
        },
        "intended_use": (
            "Decision support only: flags frontal chest radiographs (CR/DX, PA/AP) whose "
            "appearance suggests pneumonia, for radiologist review. Not a diagnostic device."
        ),
    }
    return write_manifest(folder, model_id, version, metadata)
