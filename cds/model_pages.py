"""``GET /models/<id>/``: the model card of a registered model, as HTML (the cards' link).

Every model whose registry entry names a card (``ModelEntry.card``) has a page: the learned
models' cards (data, method, held-out metrics with CIs, calibration or ROC plots), the
validated scores' description (equations, sources, worked examples). Cards from those
models link here (:func:`card_links`) so a clinician can see how a finding or number was
made. The pages hold no patient data, so they need no token (like ``/openapi.json``), and
serving one never loads the model; the link is absolute, built from
``WARDROUND_PUBLIC_BASE_URL``. Only ``.png`` figures in the card's own ``model_card/``
folder are served beside it.
"""

from __future__ import annotations

import html
from functools import cache
from pathlib import Path

from flask import Blueprint, Response, abort, send_from_directory
from markdown_it import MarkdownIt

from cds.cards import Link
from cds.config import Settings
from models import registry

bp = Blueprint("model_pages", __name__)
FIGURES = registry.CARD_FIGURES
#: The label of a card's link to its model's page (learned models).
MODEL_CARD_LABEL = "Model card: data, method, performance"
PAGE = """<!doctype html>
<html lang="en"><head><meta charset="utf-8"><title>{title}</title>
<meta name="viewport" content="width=device-width, initial-scale=1">
<style>body{{font-family:system-ui,sans-serif;max-width:62rem;margin:2rem auto;padding:0 1rem;
line-height:1.45}}table{{border-collapse:collapse}}
td,th{{border:1px solid #ccc;padding:.2rem .5rem}}
code{{background:#f4f4f4}}img{{max-width:100%}}</style></head>
<body>{body}</body></html>
"""


def card_links(settings: Settings | None, model_id: str, label: str) -> list[Link]:
    """A card's link to the model's page: none without a public base URL or a model card."""
    base = settings.public_base_url if settings else None
    if not base or registry.card(model_id) is None:
        return []
    return [Link(label=label, url=f"{base}/models/{model_id}/", type="absolute")]


def _card(model_id: str) -> Path:
    try:
        card = registry.card(model_id)
    except registry.UnknownModel:
        abort(404)
    if card is None or not card.is_file():
        abort(404)
    return card


@cache
def _render(path: Path, mtime: float) -> str:
    del mtime  # part of the cache key: a regenerated card is rendered again
    text = path.read_text(encoding="utf-8")
    body = MarkdownIt("commonmark", {"html": False}).enable("table").render(text)
    title = next((line.lstrip("# ") for line in text.splitlines() if line.startswith("#")), "")
    return PAGE.format(title=html.escape(title), body=body)


@bp.get("/models/<model_id>/")
def model_page(model_id: str) -> Response:
    card = _card(model_id)
    return Response(_render(card, card.stat().st_mtime), mimetype="text/html")


@bp.get(f"/models/<model_id>/{FIGURES}/<name>")
def model_figure(model_id: str, name: str) -> Response:
    folder = _card(model_id).parent / FIGURES
    if not name.endswith(".png") or not (folder / name).is_file():
        abort(404)
    return send_from_directory(folder, name, mimetype="image/png", max_age=300)
