"""The model registry: every model the service can run, by id, loaded once per process.

A model family adds one :class:`ModelEntry` to :data:`MODEL_ENTRIES`. The entry names a
loader (``"package.module:function"``, imported only when the model is first needed, so
a process that never runs imaging never imports torch). The loader returns an object with
an ``identity`` attribute (:class:`~models.artifacts.ModelIdentity`: id, version, artifact
hash), which the service puts on every card's audit record.

An entry may name the model's card (``card``, a Markdown file under ``models/``): how it
was made and how well it does. ``/models/<id>/`` serves it without loading the model.

Loading is lazy, thread-safe and cached; :func:`warm` loads everything up front (gunicorn
workers do it after fork, ``gunicorn.conf.py``, so the first clinician does not pay for it).
"""

from __future__ import annotations

import importlib
import threading
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from models.artifacts import ModelIdentity


@dataclass(frozen=True)
class ModelEntry:
    id: str
    family: str
    description: str
    #: ``"package.module:function"``; the function takes no arguments.
    loader: str
    #: The model card, relative to the ``models`` package (figures in ``model_card/`` beside it).
    card: str | None = None


class UnknownModel(KeyError):
    pass


#: Every registered model. A new model: one package under ``models/`` and one line here.
MODEL_ENTRIES: tuple[ModelEntry, ...] = (
    ModelEntry(
        id="drug-safety",
        family="drug",
        description="Drug-safety rules over the knowledge files in models/drug/knowledge",
        loader="models.drug:load",
    ),
    ModelEntry(
        id="report-nlp",
        family="nlp",
        description="Report findings: ConText rules + all-MiniLM-L6-v2 heads (models/nlp)",
        loader="models.nlp:load",
        card="nlp/MODEL_CARD.md",
    ),
    ModelEntry(
        id="pneumonia-cxr",
        family="imaging",
        description="Pneumonia on frontal chest radiographs (CR/DX): torch CNN, calibrated",
        loader="models.imaging:load",
        card="imaging/MODEL_CARD.md",
    ),
    ModelEntry(
        id="ascvd-pce",
        family="risk",
        description="ACC/AHA Pooled Cohort Equations (10-year ASCVD) and 2018 statin rules",
        loader="models.risk.scores:load_pce",
        card="risk/SCORES.md",
    ),
    ModelEntry(
        id="cha2ds2-vasc",
        family="risk",
        description="CHA2DS2-VASc stroke risk in atrial fibrillation (Lip 2010)",
        loader="models.risk.scores:load_cha2ds2_vasc",
        card="risk/SCORES.md",
    ),
    ModelEntry(
        id="has-bled",
        family="risk",
        description="HAS-BLED bleeding risk in atrial fibrillation (Pisters 2010)",
        loader="models.risk.scores:load_has_bled",
        card="risk/SCORES.md",
    ),
    ModelEntry(
        id="cvd-event-3y",
        family="risk",
        description="xgboost: first cardiovascular event within 3 years (artifact)",
        loader="models.risk.learned:load_cvd_event_3y",
        card="risk/MODEL_CARD.md",
    ),
    ModelEntry(
        id="acute-care-1y",
        family="risk",
        description="xgboost: emergency visit or admission within 1 year (artifact)",
        loader="models.risk.learned:load_acute_care_1y",
        card="risk/MODEL_CARD.md",
    ),
    ModelEntry(
        id="patient-phenotypes",
        family="phenotypes",
        description="Patient phenotypes: k-means over the phenotype feature set (artifact)",
        loader="models.phenotypes:load",
        card="phenotypes/MODEL_CARD.md",
    ),
)

MODELS = Path(__file__).resolve().parent
#: The folder beside a model card that holds its figures (the only files served with it).
CARD_FIGURES = "model_card"
_lock = threading.Lock()
_loaded: dict[str, Any] = {}


def entry(model_id: str) -> ModelEntry:
    for candidate in MODEL_ENTRIES:
        if candidate.id == model_id:
            return candidate
    raise UnknownModel(model_id)


def card(model_id: str) -> Path | None:
    """The model card of ``model_id`` (None: the model has none); the model is not loaded."""
    found = entry(model_id)
    return MODELS / found.card if found.card else None


def get(model_id: str) -> Any:
    """The loaded model ``model_id`` (loaded on first use, then shared by all threads)."""
    model = _loaded.get(model_id)
    if model is not None:
        return model
    found = entry(model_id)
    with _lock:
        model = _loaded.get(model_id)
        if model is None:
            module_name, _, function = found.loader.partition(":")
            model = getattr(importlib.import_module(module_name), function)()
            if not isinstance(getattr(model, "identity", None), ModelIdentity):
                raise TypeError(f"{found.loader} must return an object with an identity")
            _loaded[model_id] = model
    return model


def identity(model_id: str) -> ModelIdentity:
    return get(model_id).identity


def warm() -> list[ModelIdentity]:
    """Load every registered model; returns their identities (raises on a broken artifact)."""
    return [identity(e.id) for e in MODEL_ENTRIES]
