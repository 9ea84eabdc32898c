"""FHIR API clients for sites without an authorization server: self-signed bearer tokens.

A site that has an OAuth server lists it in the API issuers file (``WARDROUND_API_ISSUERS``,
trusted-issuers format: its ``jwks_url``) and its tokens work as they are. A small site
without one registers each client here instead: ``cds api client-add NAME`` creates an
ES384 key pair, keeps the private key with the client (a file, mode 0600) and adds the
public key to the API issuers file under the issuer ``urn:wardround:api-client:NAME``; the
client then signs its own short-lived tokens (``cds api token``, or any JWT library) with
``aud`` = the FHIR base URL and the ``scope`` / ``roles`` it was meant to have. Removing
the entry from the file revokes the client.
"""

from __future__ import annotations

import json
import time
import uuid
from dataclasses import dataclass
from pathlib import Path

import jwt
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec
from jwt.algorithms import ECAlgorithm

ISSUER_PREFIX = "urn:wardround:api-client:"


@dataclass(frozen=True)
class ApiClient:
    name: str
    iss: str
    kid: str
    private_key: Path


def _read_issuers(path: Path) -> dict:
    if not path.exists():
        return {"issuers": []}
    document = json.loads(path.read_text(encoding="utf-8"))
    if not isinstance(document, dict) or not isinstance(document.get("issuers"), list):
        raise ValueError(f"{path}: expected an object with an 'issuers' array")
    return document


def add_client(name: str, issuers_file: Path, key_folder: Path) -> ApiClient:
    """Create ``name``'s key pair and trust its public key; refuses an existing name."""
    iss, kid = ISSUER_PREFIX + name, f"{name}-es384-1"
    document = _read_issuers(issuers_file)
    if any(entry.get("iss") == iss for entry in document["issuers"]):
        raise ValueError(f"API client {name} exists in {issuers_file}")
    key = ec.generate_private_key(ec.SECP384R1())
    key_folder.mkdir(parents=True, exist_ok=True)
    private_path = key_folder / f"{name}-private-key.pem"
    private_path.touch(mode=0o600)
    private_path.write_bytes(
        key.private_bytes(
            serialization.Encoding.PEM,
            serialization.PrivateFormat.PKCS8,
            serialization.NoEncryption(),
        )
    )
    public = json.loads(ECAlgorithm.to_jwk(key.public_key())) | {"kid": kid, "alg": "ES384"}
    document["issuers"].append({"iss": iss, "jwks": {"keys": [public]}, "sub_allowlist": [name]})
    issuers_file.parent.mkdir(parents=True, exist_ok=True)
    issuers_file.write_text(json.dumps(document, indent=2) + "\n", encoding="utf-8")
    return ApiClient(name, iss, kid, private_path)


def mint_api_token(
    audience: str,
    private_key_pem: bytes,
    issuer: str,
    kid: str,
    subject: str,
    scopes: tuple[str, ...] = (),
    roles: tuple[str, ...] = (),
    lifetime_s: int = 300,
) -> str:
    now = int(time.time())
    claims: dict[str, object] = {
        "iss": issuer,
        "sub": subject,
        "aud": audience,
        "iat": now,
        "exp": now + lifetime_s,
        "jti": str(uuid.uuid4()),
    }
    if scopes:
        claims["scope"] = " ".join(scopes)
    if roles:
        claims["roles"] = list(roles)
    return jwt.encode(
        claims, private_key_pem, algorithm="ES384", headers={"kid": kid, "typ": "at+jwt"}
    )
