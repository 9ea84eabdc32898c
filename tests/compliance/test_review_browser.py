"""The review page in a real headless browser (Debian's chromium, driven by playwright)
against a real gunicorn server: log in, filter, open a call, find the card, export.

The reviewer account is made with the ``cds reviewers`` command, the calls come from
Synthea patients replayed over HTTP with real EHR tokens. ``WARDROUND_SCREENSHOTS=<dir>``
saves screenshots of the list and the detail (the README's come from here).
"""

from __future__ import annotations

import csv
import io
import json
import os
import shutil
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import requests

from cds.demo import mint_token
from cds.replay import replay
from tests.conftest import ISSUER, SigningKey, synthea_bundles
from tests.support.live_server import REPO, GunicornServer, write_trusted_issuers
from tests.support.missing import unavailable

CHROMIUM = os.environ.get("WARDROUND_CHROMIUM", "/usr/bin/chromium")
CHROMIUM_ARGS = [
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--no-first-run",
]
PASSWORD = "a long reviewer password"
CDS = Path(sys.executable).parent / "cds"


def _need(condition: bool, what: str) -> None:
    if not condition:
        unavailable(f"{what} missing (make test-services installs it)")


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory, es384_key: SigningKey) -> Iterator[Any]:
    _need(Path(CHROMIUM).exists(), f"chromium ({CHROMIUM})")
    workdir = tmp_path_factory.mktemp("review-browser")
    issuers = write_trusted_issuers(workdir / "issuers", ISSUER, {"keys": [es384_key.public_jwk]})
    live = GunicornServer(
        f"sqlite:///{workdir / 'audit.db'}",
        issuers,
        workdir,
        workers=1,
        threads=4,
        log_level="WARNING",
        clean_env=True,
        extra_env={"WARDROUND_SECRET_KEY": "k" * 64},
    )
    cli = {**live.env, "PYTHONPATH": str(REPO)}
    subprocess.run([str(CDS), "db", "upgrade"], cwd=REPO, env=cli, check=True, capture_output=True)
    added = subprocess.run(
        [str(CDS), "reviewers", "add", "rita", "--role", "reviewer", "--password-stdin"],
        cwd=REPO, env=cli, input=PASSWORD + "\n", text=True, capture_output=True, check=False,
    )  # fmt: skip
    assert added.returncode == 0, added.stderr
    with live:
        session = requests.Session()

        def post(path: str, body: dict[str, Any]) -> tuple[int, Any]:
            token = mint_token(live.base_url + path, es384_key.private_pem, ISSUER, es384_key.kid)
            answer = session.post(
                live.base_url + path, json=body, timeout=60,
                headers={"Authorization": f"Bearer {token}"},
            )  # fmt: skip
            return answer.status_code, answer.json()

        stats = replay(synthea_bundles()[:4], post)
        assert set(stats.statuses) == {200}
        yield live, stats


@pytest.fixture(scope="module")
def browser() -> Iterator[Any]:
    try:
        from playwright.sync_api import sync_playwright
    except ImportError:
        _need(False, "playwright (pip, the dev extra)")
    _need(Path(CHROMIUM).exists(), f"chromium ({CHROMIUM})")
    with sync_playwright() as playwright:
        chromium = playwright.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_ARGS)
        yield chromium
        chromium.close()


def _screenshot(page: Any, name: str) -> None:
    folder = os.environ.get("WARDROUND_SCREENSHOTS")
    if folder:
        Path(folder).mkdir(parents=True, exist_ok=True)
        page.screenshot(path=str(Path(folder) / name), full_page=False)


def test_log_in_filter_open_a_call_and_export(server: Any, browser: Any, tmp_path: Path):
    live, stats = server
    context = browser.new_context(accept_downloads=True, viewport={"width": 1400, "height": 900})
    page = context.new_page()
    page.set_default_timeout(15_000)

    page.goto(live.base_url + "/review")  # not logged in: the log-in form
    assert "/review/login" in page.url
    page.fill("input[name=username]", "rita")
    page.fill("input[name=password]", "not the password")
    page.click("button[type=submit]")
    assert "Wrong user name or password" in page.inner_text("main")
    page.fill("input[name=password]", PASSWORD)
    page.click("button[type=submit]")
    page.wait_for_selector("table.calls")
    cookie = next(c for c in context.cookies() if c["name"] == "__Host-wardround-review")
    assert cookie["httpOnly"] and cookie["secure"] and cookie["sameSite"] == "Lax"
    assert page.locator("tr.call").count() == stats.calls
    assert "verified up to row" in page.inner_text("#chain-status")
    _screenshot(page, "review-calls.png")

    # the summary: charts drawn on the server, as SVG
    page.click("header nav >> text=Summary")
    page.wait_for_selector("svg[data-chart='cards-per-day']")
    drawn = page.locator("svg[data-chart='cards-per-day'] rect[data-count]")
    assert sum(int(drawn.nth(i).get_attribute("data-count")) for i in range(drawn.count())) == (
        stats.cards
    )
    _screenshot(page, "review-summary.png")
    page.click("header nav >> text=Calls")
    page.wait_for_selector("table.calls")

    # filter: one patient's drug-safety calls with an overridden card
    overridden = next(uuid for uuid, outcome in stats.outcomes.items() if outcome == "overridden")
    first_link = page.locator(f"a.card-link[data-card='{overridden}']")
    patient = first_link.locator("xpath=ancestor::tr").locator("td.patient").inner_text()
    page.fill("input[name=patient]", patient)
    page.select_option("select[name=service]", "drug-safety-sign")
    page.select_option("select[name=outcome]", "overridden")
    page.click("#apply-filter")
    page.wait_for_selector("table.calls")
    assert page.locator("tr.call").count() == 1
    assert page.locator("td.patient").inner_text() == patient

    # open the call at the card, as the clinician saw it, with what they did
    page.click(f"a.card-link[data-card='{overridden}']")
    card = page.locator(f"article#card-{overridden}")
    card.wait_for()
    assert card.is_visible()
    assert "overridden" in card.locator(".feedback-entry").inner_text()
    assert "replayed: reviewed with the patient" in card.inner_text()
    assert page.locator("tr.model[data-model='drug-safety']").count() == 1
    _screenshot(page, "review-call.png")

    # export the filter as CSV and as a FHIR Bundle
    page.go_back()
    page.wait_for_selector("table.calls")
    with page.expect_download() as download:
        page.click("a.export >> text=CSV")
    target = tmp_path / "export.csv"
    download.value.save_as(target)
    rows = list(csv.DictReader(io.StringIO(target.read_text())))
    assert overridden in {row["card_uuid"] for row in rows}
    assert {row["patient"] for row in rows} == {patient}
    with page.expect_download() as download:
        page.click("a.export >> text=FHIR Bundle (AuditEvents)")
    bundle = json.loads(Path(download.value.path()).read_text())
    assert bundle["resourceType"] == "Bundle" and bundle["entry"]

    # log out: the page is closed again
    page.click("header .logout button")
    page.wait_for_selector("form.login")
    page.goto(live.base_url + "/review/summary")
    assert "/review/login" in page.url
    context.close()
    shutil.rmtree(tmp_path, ignore_errors=True)
