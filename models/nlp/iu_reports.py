"""The IU chest X-ray reports (Open-i) as training and evaluation data: labels and the split.

Read at training and evaluation time from the shared data folder
(``$WARDROUND_SHARED_DATA``, default ``../shared/data`` beside the repository); no report
text is ever written into the product. Labels come from the curated ``Problems`` column
(MeSH-based terms, ``;``-separated), mapped to the finding set by :data:`PROBLEM_LABELS`:

=========================== ===========================================================
finding                     IU ``Problems`` terms
=========================== ===========================================================
cardiomegaly                Cardiomegaly
pleural_effusion            Pleural Effusion, Hydropneumothorax, Hemothorax
pneumothorax                Pneumothorax, Hydropneumothorax
consolidation_pneumonia     Pneumonia, Consolidation, Airspace Disease, Infiltrate
pulmonary_edema             Pulmonary Edema, Pulmonary Congestion, Heart Failure
atelectasis                 Pulmonary Atelectasis
lung_nodule_mass            Nodule, Mass
fracture                    Fractures, Bone
no_acute_finding            none of the above and none of :data:`OTHER_ACUTE`
=========================== ===========================================================

Reports labelled ``No Indexing`` (never curated) or with neither findings nor impression
text are left out. A label is report-level "mentioned as present"; the assertion of each
mention (absent / uncertain) comes from the text, not from these labels.
"""

from __future__ import annotations

import csv
import random
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

from models.nlp.findings import ACUTE_LABELS, LABELS, NO_ACUTE
from models.shared_data import shared_data

PROBLEM_LABELS: dict[str, tuple[str, ...]] = {
    "Cardiomegaly": ("cardiomegaly",),
    "Pleural Effusion": ("pleural_effusion",),
    "Hydropneumothorax": ("pleural_effusion", "pneumothorax"),
    "Hemothorax": ("pleural_effusion",),
    "Pneumothorax": ("pneumothorax",),
    "Pneumonia": ("consolidation_pneumonia",),
    "Consolidation": ("consolidation_pneumonia",),
    "Airspace Disease": ("consolidation_pneumonia",),
    "Infiltrate": ("consolidation_pneumonia",),
    "Pulmonary Edema": ("pulmonary_edema",),
    "Pulmonary Congestion": ("pulmonary_edema",),
    "Heart Failure": ("pulmonary_edema",),
    "Pulmonary Atelectasis": ("atelectasis",),
    "Nodule": ("lung_nodule_mass",),
    "Mass": ("lung_nodule_mass",),
    "Fractures, Bone": ("fracture",),
}
#: Acute findings outside the finding set: a report with one is not "no acute finding".
OTHER_ACUTE = frozenset(
    {
        "Opacity",
        "Density",
        "Cavitation",
        "Pneumoperitoneum",
        "Pericardial Effusion",
        "Subcutaneous Emphysema",
        "Shift",
        "Volume Loss",
    }
)
UNINDEXED = "No Indexing"
SPLIT_SEED = 20240601
TEST_FRACTION = 0.25


class DataMissing(FileNotFoundError):
    pass


@dataclass(frozen=True)
class IuReport:
    uid: str
    #: "FINDINGS: …\n\nIMPRESSION: …" (the two sections the labels were curated from).
    text: str
    labels: frozenset[str]


def reports_csv() -> Path:
    return shared_data() / "iu-xray-reports" / "reports.csv"


def report_text(findings: str, impression: str) -> str:
    """One report text from the two columns, with headers the section detector knows."""
    parts = []
    if findings.strip():
        parts.append(f"FINDINGS: {findings.strip()}")
    if impression.strip():
        parts.append(f"IMPRESSION: {impression.strip()}")
    return "\n\n".join(parts)


def labels_of(problems: str) -> frozenset[str]:
    terms = {p.strip() for p in problems.split(";") if p.strip()}
    labels = {label for term in terms for label in PROBLEM_LABELS.get(term, ())}
    if not labels & ACUTE_LABELS and not terms & OTHER_ACUTE:
        labels.add(NO_ACUTE)
    return frozenset(labels)


def load_reports(path: Path | None = None) -> list[IuReport]:
    path = path or reports_csv()
    if not path.is_file():
        raise DataMissing(f"IU X-ray reports not found at {path} (set WARDROUND_SHARED_DATA)")
    reports = []
    with path.open(newline="", encoding="utf-8") as handle:
        for row in csv.DictReader(handle):
            text = report_text(row.get("findings") or "", row.get("impression") or "")
            problems = row.get("Problems") or ""
            if not text or UNINDEXED in problems:
                continue
            reports.append(IuReport(row["uid"], text, labels_of(problems)))
    return reports


def split(reports: Sequence[IuReport], seed: int = SPLIT_SEED) -> tuple[list[str], list[str]]:
    """Train and test uids: a seeded split, stratified on each report's rarest label."""
    frequency = {label: sum(label in r.labels for r in reports) for label in LABELS}
    strata: dict[str, list[str]] = {}
    for report in reports:
        rarest = min(report.labels, key=lambda lb: (frequency[lb], lb), default="none")
        strata.setdefault(rarest, []).append(report.uid)
    rng = random.Random(seed)  # noqa: S311 (a reproducible split, not a secret)
    train, test = [], []
    carry = 0.0
    for stratum in sorted(strata):
        uids = sorted(strata[stratum])
        rng.shuffle(uids)
        carry += len(uids) * TEST_FRACTION
        take = round(carry)
        carry -= take
        test += uids[:take]
        train += uids[take:]
    return sorted(train, key=int), sorted(test, key=int)
