"""The benchmarks' EHR: an ES384 key pair that the server under test trusts, tokens signed
with it (``cds.demo.mint_token``, as ``cds token mint`` does), and a keep-alive client that
times hook calls against a real gunicorn with its audit on SQLite."""

from __future__ import annotations

import json
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import requests
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec
from jwt.algorithms import ECAlgorithm

from cds.demo import mint_token
from cds.migrate import upgrade
from tests.support.live_server import GunicornServer, write_trusted_issuers

ISSUER, KID = "https://bench-ehr.wardround.example", "bench-es384"


def trusted_key(folder: Path, issuer: str = ISSUER, kid: str = KID) -> tuple[bytes, Path]:
    """A fresh ES384 key pair: its private key (PEM) and a trusted-issuers file in
    ``folder`` that names ``issuer`` with the public key."""
    key = ec.generate_private_key(ec.SECP384R1())
    pem = key.private_bytes(
        serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
    )
    jwk = json.loads(ECAlgorithm.to_jwk(key.public_key())) | {"kid": kid, "alg": "ES384"}
    return pem, write_trusted_issuers(folder, issuer, {"keys": [jwk]})


class HookBench:
    """A gunicorn (1 worker, SQLite audit in ``work``) trusting a fresh bench EHR key."""

    def __init__(self, work: Path) -> None:
        self.pem, issuers = trusted_key(work)
        database_url = f"sqlite:///{work / 'audit.db'}"
        upgrade(database_url)
        self.server = GunicornServer(
            database_url, issuers, work / "server", workers=1, clean_env=True
        )

    def __enter__(self) -> HookBench:
        self.server.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.server.stop()

    def timed_calls(
        self, service: str, bodies: Sequence[dict[str, Any]], warm_up: int = 20
    ) -> tuple[list[float], list[dict[str, Any]]]:
        """Post every body to ``service`` once, one at a time on one keep-alive connection,
        after ``warm_up`` untimed calls (imports, model loading, caches); each call has its
        own token, signed beforehand. Returns the client-side ms per call and the answers."""
        url = f"{self.server.base_url}/cds-services/{service}"
        tokens = [
            mint_token(url, self.pem, ISSUER, KID, lifetime_s=3600)
            for _ in range(len(bodies) + warm_up)
        ]
        payloads = [json.dumps(body) for body in bodies]
        samples, answers = [], []
        with requests.Session() as session:
            for payload, token in zip(payloads[:warm_up], tokens[len(bodies) :], strict=False):
                session.post(url, data=payload, headers=_headers(token))
            for payload, token in zip(payloads, tokens, strict=False):
                started = time.perf_counter()
                response = session.post(url, data=payload, headers=_headers(token))
                samples.append((time.perf_counter() - started) * 1000)
                if response.status_code != 200:
                    raise SystemExit(f"{service} answered {response.status_code}: {response.text}")
                answers.append(response.json())
        return samples, answers


def _headers(token: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {token}", "Content-Type": "application/json"}
