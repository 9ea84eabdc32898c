"""MODEL_CARD.md for the pneumonia model, written from the artifact's own manifest."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from models.artifacts import Artifact

REFERENCE = (
    "MedMNIST v2 (Yang et al., Scientific Data 2023) reports ResNet-18 (28) AUC 0.944 and "
    "ACC 0.854 on the *official* PneumoniaMNIST test split (624 images, 62 % pneumonia). "
    "The figures here are on the held-out part of the balanced development subset (270 "
    "images, 50 %), a different split: they are not comparable one-to-one, and the "
    "official test split is kept back for independent evaluation."
)


def _ci(metric: dict[str, float]) -> str:
    return f"{metric['value']:.3f} ({metric['ci_low']:.3f}-{metric['ci_high']:.3f})"


def render(artifact: Artifact, roc_png: str, seconds: float, command: str) -> str:
    meta: dict[str, Any] = dict(artifact.metadata)
    test = meta["metrics"]["test"]
    validation = meta["metrics"]["validation"]
    spec = meta["spec"]["preprocess"]
    model = meta["spec"]["model"]
    training = meta["training"]
    calibration = model["calibration"]
    metrics = test["metrics"]
    network = model["network"]
    return f"""# Model card: `{artifact.id}` {artifact.version}

Artifact `models/imaging/artifacts/{artifact.id}/`, SHA-256 of the manifest
`{artifact.sha256}` (recorded in the audit log with every card it produced).
Regenerate the artifact, this card and the ROC plot with one command:
`{command}` (deterministic: same machine and thread count → identical weights).

## Intended use

Decision support for clinicians: flags a frontal chest radiograph (CR/DX, PA or AP view)
whose appearance suggests pneumonia, **for radiologist review**. The card says "findings
suggestive of pneumonia" with the calibrated probability; it never diagnoses, and a
negative result is not shown (it is not evidence that there is no pneumonia).
**Not a diagnostic device**; not cleared or approved for clinical use.

Out of scope (images are skipped with the reason recorded, never guessed at): any other
modality, body part or view (lateral, unrecorded), DX For Processing objects, images the
adapter cannot decode, blank images.

## Data

{meta["training_data"]}

Source: PneumoniaMNIST (MedMNIST v2, CC BY 4.0), derived from Kermany et al., Cell 2018:
paediatric (1-5 years) chest radiographs from Guangzhou Women and Children's Medical
Center, labels from the original study (normal vs pneumonia, bacterial and viral
together), centre-cropped and down-sampled to 28 x 28 by MedMNIST.

Every image is wrapped as a DICOM object (DX, MONOCHROME2, 8 bits) and goes through the
same decoder (`fhir_adapters.imaging.decode_dataset`) and pre-processing
(`models.imaging.preprocess`) as a served image; a test checks that a training sample and
its twin served from Orthanc give identical tensors and probabilities.

## Pre-processing (`preprocess.json`)

Adapter: Modality LUT (rescale), VOI LUT / window, MONOCHROME1 inversion. Model: centred
square crop (`{spec["fit"]}`), resize to {spec["input_size"]} x {spec["input_size"]}
(`{spec["resample"]}`), per-image min-max to [0, 1], standardised with mean
{spec["mean"]:.4f} and std {spec["std"]:.4f} (training part).

## Model and training

`{network["architecture"]}`: 3 stages of 2 x (3x3 conv, batch norm, ReLU), width
{network["width"]}/{2 * network["width"]}/{4 * network["width"]}, max-pooling, global average
pooling, dropout {network["dropout"]}, one logit. AdamW (lr {training["learning_rate"]}, weight
decay {training["weight_decay"]}), cosine schedule, batch {training["batch_size"]}, random
shifts of ±{training["max_shift"]} px, seed {training["seed"]}, {training["threads"]} threads,
deterministic algorithms. Early stopping on validation AUROC (patience
{training["patience"]}): best epoch {training["best_epoch"]} of {training["epochs_run"]} run
(at most {training["epochs"]}). This run took {seconds:.0f} s wall clock on the 2-core
development machine (shared with other jobs: about 30-40 s when it is idle).

## Calibration and operating point

Temperature scaling on the validation split: T = {calibration["temperature"]:.3f};
expected calibration error (10 bins) on validation {validation["ece_before_calibration"]:.3f}
before and {validation["ece_after_calibration"]:.3f} after.
Operating threshold: **p ≥ {calibration["threshold"]:.3f}**, the {calibration["rule"]}.

## Held-out test set (never used for training or any choice)

n = {test["n"]} ({test["positives"]} pneumonia). 95 % CIs: stratified bootstrap, 2,000
resamples.

| metric | value (95 % CI) |
| --- | --- |
| AUROC | {_ci(metrics["auroc"])} |
| accuracy at the threshold | {_ci(metrics["accuracy"])} |
| sensitivity at the threshold | {_ci(metrics["sensitivity"])} |
| specificity at the threshold | {_ci(metrics["specificity"])} |
| Brier score | {test["brier"]:.4f} |
| expected calibration error | {test["ece"]:.4f} |

![ROC curve on the held-out test set]({roc_png})

Reference: {REFERENCE}

## Limitations

- **The held-out figures are probably optimistic.** MedMNIST split Kermany's training
  images at random into its train and val splits, and Kermany's data holds several images
  of some children: the same child can appear in training and in the held-out set here.
  Kermany's own test set (other children, MedMNIST's official test split) is where
  ResNet-18 reaches AUROC 0.944; expect this model to be nearer that on new patients.
- Paediatric radiographs from one centre: performance on adults, other populations,
  scanners and clinical settings is unknown and likely lower.
- 28 x 28 pixels: fine findings are invisible to the model; it reads overall opacity
  patterns, and a 4,000-pixel film is reduced to 28 x 28 before it is read.
- The development subset is balanced (50 % pneumonia); in practice prevalence differs,
  so the positive predictive value at this threshold will differ from what 50 % implies.
- The labels are the source dataset's, not re-read by radiologists here; pneumonia
  types are not distinguished.
- The DICOM test fixtures (Orthanc) wrap training images, so end-to-end tests check the
  pipeline, not accuracy. Accuracy is only the held-out figure above.
- Determinism holds for the same CPU type and thread count; other machines may give
  slightly different weights.
"""


def write(artifact: Artifact, folder: Path, roc_png: str, seconds: float, command: str) -> Path:
    path = folder / "MODEL_CARD.md"
    path.write_text(render(artifact, roc_png, seconds, command))
    return path
