"""Shared fixtures: real databases (SQLite and PostgreSQL), real keys, real Synthea data."""

from __future__ import annotations

import json
import os
import time
import uuid
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import jwt
import psycopg
import pytest
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec, rsa
from flask import Flask
from flask.testing import FlaskClient
from jwt.algorithms import ECAlgorithm, RSAAlgorithm
from sqlalchemy import text

from cds import create_app
from cds.config import Settings
from cds.db import make_engine
from cds.migrate import upgrade
from fhir_adapters.bulk.ndjson import BulkFolder, scan_folder
from fhir_adapters.bulk.synthea_ndjson import bundle_files, convert_bundles
from models.shared_data import shared_data
from tests.support.missing import shared_file, unavailable

# Real FHIR and DICOMweb servers, started per test session (see each module).
pytest_plugins = ["tests.support.fhir_server", "tests.support.dicomweb_server"]

REPO = Path(__file__).resolve().parent.parent
SHARED_DATA = shared_data()
SYNTHEA = SHARED_DATA / "synthea-r4"
PG_ADMIN_URL = os.environ.get("WARDROUND_TEST_PG", "postgresql://postgres@127.0.0.1:5432/test")
BASE_URL = "http://localhost"
ISSUER = "https://ehr.test"
CHAINED_AND_STATE = (
    "audit_feedback", "audit_card", "audit_invocation", "audit_access", "jwt_replay",
    "reviewer_account",
)  # fmt: skip


# --------------------------------------------------------------------------- keys and tokens
@dataclass(frozen=True)
class SigningKey:
    kid: str
    alg: str
    private_pem: bytes
    public_pem: bytes
    public_jwk: dict[str, Any]


def _ec_key(kid: str) -> SigningKey:
    key = ec.generate_private_key(ec.SECP384R1())
    jwk = json.loads(ECAlgorithm.to_jwk(key.public_key())) | {"kid": kid, "alg": "ES384"}
    return SigningKey(kid, "ES384", _pem(key), _public_pem(key), jwk)


def _rsa_key(kid: str) -> SigningKey:
    key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    jwk = json.loads(RSAAlgorithm.to_jwk(key.public_key())) | {"kid": kid, "alg": "RS384"}
    return SigningKey(kid, "RS384", _pem(key), _public_pem(key), jwk)


def _pem(key: Any) -> bytes:
    return key.private_bytes(
        serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
    )


def _public_pem(key: Any) -> bytes:
    return key.public_key().public_bytes(
        serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo
    )


@pytest.fixture(scope="session")
def es384_key() -> SigningKey:
    return _ec_key("ehr-es384")


@pytest.fixture(scope="session")
def rs384_key() -> SigningKey:
    return _rsa_key("ehr-rs384")


@pytest.fixture(scope="session")
def trusted_issuers_file(
    tmp_path_factory: pytest.TempPathFactory, es384_key: SigningKey, rs384_key: SigningKey
) -> Path:
    folder = tmp_path_factory.mktemp("issuers")
    jwks = {"keys": [es384_key.public_jwk, rs384_key.public_jwk]}
    (folder / "ehr-jwks.json").write_text(json.dumps(jwks))
    path = folder / "trusted-issuers.json"
    path.write_text(json.dumps({"issuers": [{"iss": ISSUER, "jwks_file": "ehr-jwks.json"}]}))
    return path


Mint = Callable[..., str]


def sign(
    key: SigningKey,
    claims: dict[str, Any],
    headers: dict[str, Any] | None = None,
) -> str:
    return jwt.encode(
        claims,
        key.private_pem,
        algorithm=key.alg,
        headers={"kid": key.kid, "typ": "JWT"} | (headers or {}),
    )


def claims_for(aud: str | list[str], **overrides: Any) -> dict[str, Any]:
    now = int(time.time())
    claims = {
        "iss": ISSUER,
        "sub": "ehr-client",
        "aud": aud,
        "iat": now,
        "exp": now + 300,
        "jti": str(uuid.uuid4()),
    }
    claims.update(overrides)
    return {k: v for k, v in claims.items() if v is not None}


@pytest.fixture
def mint(es384_key: SigningKey) -> Mint:
    """Mint a valid ES384 token for a path (e.g. "/cds-services"); claims may be overridden."""

    def _mint(path: str, key: SigningKey | None = None, **overrides: Any) -> str:
        return sign(key or es384_key, claims_for(BASE_URL + path, **overrides))

    return _mint


# --------------------------------------------------------------------------- databases
def _postgres_available() -> bool:
    try:
        with psycopg.connect(PG_ADMIN_URL, connect_timeout=3):
            return True
    except psycopg.OperationalError:
        return False


@pytest.fixture(scope="session")
def postgres_url() -> Iterator[str]:
    """A fresh database on the shared PostgreSQL server, migrated, dropped at the end."""
    if not _postgres_available():
        unavailable(f"PostgreSQL unreachable at {PG_ADMIN_URL}")
    name = f"wardround_test_{uuid.uuid4().hex[:12]}"
    with psycopg.connect(PG_ADMIN_URL, autocommit=True) as conn:
        conn.execute(f'CREATE DATABASE "{name}"')
    url = PG_ADMIN_URL.rsplit("/", 1)[0] + f"/{name}"
    upgrade(url)
    yield url
    with psycopg.connect(PG_ADMIN_URL, autocommit=True) as conn:
        conn.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')


def reset_database(url: str) -> None:
    engine = make_engine(url)
    with engine.begin() as conn:
        for table in CHAINED_AND_STATE:
            conn.execute(text(f"DELETE FROM {table}"))
        conn.execute(
            text("UPDATE audit_chain_head SET last_seq = 0, last_hash = :h"), {"h": "0" * 64}
        )
    engine.dispose()


@pytest.fixture(params=["sqlite", pytest.param("postgresql", marks=pytest.mark.postgres)])
def database_url(request: pytest.FixtureRequest, tmp_path: Path) -> str:
    """Every test that uses this runs twice: on SQLite and on PostgreSQL."""
    if request.param == "sqlite":
        url = f"sqlite:///{tmp_path / 'audit.db'}"
        upgrade(url)
        return url
    url = request.getfixturevalue("postgres_url")
    reset_database(url)
    return url


# --------------------------------------------------------------------------- the app
AppFactory = Callable[..., Flask]


@pytest.fixture
def make_app(database_url: str, trusted_issuers_file: Path, tmp_path: Path) -> AppFactory:
    created: list[Flask] = []

    def _make(**overrides: Any) -> Flask:
        settings = Settings(
            database_url=database_url,
            instance_path=tmp_path / "instance",
            public_base_url=BASE_URL,
            trusted_issuers_file=trusted_issuers_file,
        ).with_overrides(**overrides)
        app = create_app(settings)
        app.testing = True
        created.append(app)
        return app

    yield _make
    for app in created:
        app.extensions["wardround.engine"].dispose()


@pytest.fixture
def app(make_app: AppFactory) -> Flask:
    return make_app()


@pytest.fixture
def client(app: Flask) -> FlaskClient:
    return app.test_client()


# --------------------------------------------------------------------------- Synthea data
def synthea_bundles() -> list[Path]:
    """The shared Synthea *patient* bundles (the folder also holds one hospital bundle).

    Globbed as ``*.gz``: 15 of the shared files are named ``<uuid>.json".gz``.
    """
    bundles = sorted(p for p in SYNTHEA.glob("*.gz") if not p.name.startswith("hospital"))
    if not bundles:
        unavailable(f"shared Synthea data missing at {SYNTHEA}")
    return bundles


@pytest.fixture(scope="session")
def synthea_ndjson(tmp_path_factory: pytest.TempPathFactory) -> BulkFolder:
    """Every shared Synthea bundle converted to bulk NDJSON (one plain file per type):
    the population and phenotype tests' Spark input."""
    synthea_bundles()  # skips (fails under CI) without the shared data
    out = tmp_path_factory.mktemp("synthea-ndjson") / "bulk"
    convert_bundles(bundle_files(SYNTHEA), out)
    return scan_folder(out)


@pytest.fixture(scope="session")
def source_images() -> Any:
    """PneumoniaMNIST ``train_images`` (what the DICOM fixtures wrap), read independently."""
    import numpy as np

    with np.load(shared_file("pneumoniamnist/pneumoniamnist_28_dev.npz")) as data:
        return data["train_images"]


@pytest.fixture
def patient_view_request() -> dict[str, Any]:
    """A real patient-view request: prefetch from the first shared Synthea patient."""
    from cds.demo import patient_view_request as build

    return build(synthea_bundles()[0])


class HookClient:
    """Posts CDS Hooks requests with a fresh, valid token each time."""

    def __init__(self, client: FlaskClient, mint: Mint) -> None:
        self.client, self.mint = client, mint

    def call(self, service_id: str, body: Any, **kwargs: Any):  # type: ignore[no-untyped-def]
        path = f"/cds-services/{service_id}"
        return self.client.post(
            path, json=body, headers={"Authorization": f"Bearer {self.mint(path)}"}, **kwargs
        )

    def feedback(self, service_id: str, body: Any):  # type: ignore[no-untyped-def]
        path = f"/cds-services/{service_id}/feedback"
        return self.client.post(
            path, json=body, headers={"Authorization": f"Bearer {self.mint(path)}"}
        )


@pytest.fixture
def hooks(client: FlaskClient, mint: Mint) -> HookClient:
    return HookClient(client, mint)
