"""A reviewer on the review page through Flask's test client: log-in with the form's CSRF
token, pages parsed with BeautifulSoup."""

from __future__ import annotations

from typing import Any

from bs4 import BeautifulSoup
from flask import Flask
from flask.testing import FlaskClient

from tests.compliance.conftest import REVIEWER_PASSWORD


def add_reviewer(
    app: Flask, username: str = "alice", roles: tuple[str, ...] = ("reviewer",)
) -> None:
    app.extensions["wardround.reviewers"].add(username, REVIEWER_PASSWORD, list(roles))


def csrf_token(html: str) -> str:
    field = BeautifulSoup(html, "html.parser").find("input", {"name": "csrf_token"})
    assert field is not None, "no CSRF token on the page"
    return str(field["value"])


class Reviewer:
    def __init__(self, client: FlaskClient) -> None:
        self.client = client

    def login(
        self, username: str = "alice", password: str = REVIEWER_PASSWORD, next_: str = ""
    ) -> Any:
        form = self.client.get("/review/login" + (f"?next={next_}" if next_ else ""))
        assert form.status_code == 200
        token = csrf_token(form.get_data(as_text=True))
        return self.client.post(
            "/review/login" + (f"?next={next_}" if next_ else ""),
            data={"username": username, "password": password, "csrf_token": token},
        )

    def page(self, path: str, status: int = 200) -> BeautifulSoup:
        response = self.client.get(path)
        assert response.status_code == status, (path, response.status_code, response.location)
        assert response.mimetype == "text/html"
        return BeautifulSoup(response.get_data(as_text=True), "html.parser")

    def logout(self) -> Any:
        token = csrf_token(self.client.get("/review/").get_data(as_text=True))
        return self.client.post("/review/logout", data={"csrf_token": token})
