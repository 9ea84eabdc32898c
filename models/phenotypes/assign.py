"""Assign patient records to the shipped phenotypes (``cds population phenotypes assign``).

Each record is read as it stands on its last recorded day (the same context a hook builds)
and given the phenotype of its nearest centroid, in batches (one matrix product per
batch, not one call per patient)."""

from __future__ import annotations

from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from itertools import islice

import numpy as np

from fhir_adapters.parsing import ParseCache
from fhir_adapters.records import PatientRecord
from models.phenotypes.model import PhenotypeModel
from models.risk.features.evaluate import evaluate
from models.risk.training.dataset import full_context

BATCH = 512


@dataclass(frozen=True)
class PhenotypeAssignment:
    patient_id: str
    phenotype: int
    name: str
    distance: float
    as_of: str

    def to_json(self) -> dict[str, object]:
        return {
            "patient_id": self.patient_id,
            "phenotype": self.phenotype + 1,
            "name": self.name,
            "distance": round(self.distance, 4),
            "as_of": self.as_of,
        }


def assign_records(
    model: PhenotypeModel, records: Iterable[PatientRecord]
) -> Iterator[PhenotypeAssignment]:
    iterator = iter(records)
    while batch := list(islice(iterator, BATCH)):
        ids, dates, rows = [], [], []
        for record in batch:
            resources = {kind: list(items) for kind, items in record.resources.items()}
            context = full_context(resources, record.patient_id, ParseCache())
            vector = evaluate(model.features, context)
            ids.append(record.patient_id)
            dates.append(vector.as_of.isoformat())
            rows.append(vector.values)
        labels, distances = model.assign_vectors(np.array(rows, dtype=float))
        for pid, day, label, distance in zip(ids, dates, labels, distances, strict=True):
            yield PhenotypeAssignment(
                pid, int(label), model.phenotype_name(int(label)), float(distance), day
            )
