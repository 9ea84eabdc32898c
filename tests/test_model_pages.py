"""``/models/<id>/``: every registered model with a card has a page, served the same way
(without loading the model), and its figures beside it."""

from __future__ import annotations

import re
from collections.abc import Iterator

import pytest
from flask.testing import FlaskClient

from cds import create_app
from cds.config import Settings
from cds.migrate import upgrade
from models import registry
from tests.conftest import BASE_URL

WITH_CARDS = [entry.id for entry in registry.MODEL_ENTRIES if entry.card]


@pytest.fixture(scope="module")
def client(tmp_path_factory: pytest.TempPathFactory) -> Iterator[FlaskClient]:
    folder = tmp_path_factory.mktemp("model-pages")
    url = f"sqlite:///{folder / 'audit.db'}"
    upgrade(url)
    # No token is needed for these pages: auth off spares the issuers file.
    settings = Settings(
        database_url=url, instance_path=folder, public_base_url=BASE_URL, auth_mode="off"
    )
    app = create_app(settings)
    yield app.test_client()
    app.extensions["wardround.engine"].dispose()


def test_every_model_family_with_a_card_is_registered_with_it() -> None:
    assert {"report-nlp", "pneumonia-cxr", "cvd-event-3y", "ascvd-pce"} <= set(WITH_CARDS)
    for model_id in WITH_CARDS:
        card = registry.card(model_id)
        assert card is not None and card.is_file(), model_id
    assert registry.card("drug-safety") is None


@pytest.mark.parametrize("model_id", WITH_CARDS)
def test_each_card_is_a_page_with_its_figures(
    client: FlaskClient, model_id: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(registry, "_loaded", {})  # nothing loaded yet in this "process"
    page = client.get(f"/models/{model_id}/")
    assert page.status_code == 200 and page.mimetype == "text/html"
    html = page.get_data(as_text=True)
    card = registry.card(model_id)
    assert card is not None
    title = next(line.lstrip("# ") for line in card.read_text().splitlines() if line[:1] == "#")
    assert f"<title>{title}</title>" in html.replace("&amp;", "&")
    for src in re.findall(r'<img src="([^"]+)"', html):
        assert src.startswith(f"{registry.CARD_FIGURES}/"), src  # only the served folder
        figure = client.get(f"/models/{model_id}/{src}")
        assert figure.status_code == 200 and figure.data.startswith(b"\x89PNG"), src
    assert registry._loaded == {}, "serving the card must not load the model"


def test_the_imaging_card_shows_its_roc_plot(client: FlaskClient) -> None:
    html = client.get("/models/pneumonia-cxr/").get_data(as_text=True)
    assert 'src="model_card/roc.png"' in html
    assert client.get("/models/pneumonia-cxr/roc.png").status_code == 404  # not beside it


def test_figures_are_only_served_from_the_card_folder(client: FlaskClient) -> None:
    assert client.get("/models/report-nlp/model_card/MODEL_CARD.md").status_code == 404
    assert client.get("/models/report-nlp/MODEL_CARD.md").status_code == 404
    assert client.get("/models/pneumonia-cxr/model_card/..%2FMODEL_CARD.md").status_code == 404
