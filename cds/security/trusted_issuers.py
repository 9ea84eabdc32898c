"""The allow-list of EHRs (JWT issuers) and where each one's public keys come from.

File format (JSON)::

    {"issuers": [
      {"iss": "https://ehr.example.org",
       "jwks": {"keys": [...]}            # inline JWK Set, or
       "jwks_file": "ehr-jwks.json",     # a JWK Set on disk (relative to this file), or
       "jwks_url": "https://ehr.example.org/jwks.json",   # fetched and cached
       "jku_allowlist": ["https://ehr.example.org/jwks.json"],  # jku header values accepted
       "sub_allowlist": ["client-id"]}   # optional
    ]}
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from jwt import PyJWK, PyJWKSet
from jwt.exceptions import PyJWKError, PyJWKSetError


class TrustedIssuersError(ValueError):
    """The trusted-issuers file is missing or malformed."""


@dataclass(frozen=True)
class TrustedIssuer:
    iss: str
    static_keys: dict[str, PyJWK]
    jwks_url: str | None
    jku_allowlist: frozenset[str]
    sub_allowlist: frozenset[str] | None


def _static_keys(jwks: dict[str, Any], where: str) -> dict[str, PyJWK]:
    try:
        key_set = PyJWKSet.from_dict(jwks)
    except (PyJWKError, PyJWKSetError, KeyError, TypeError) as exc:
        raise TrustedIssuersError(f"{where}: not a usable JWK Set ({exc})") from exc
    keys = {}
    for key in key_set.keys:
        if not key.key_id:
            raise TrustedIssuersError(f"{where}: every key needs a kid")
        keys[key.key_id] = key
    return keys


def load_trusted_issuers(path: Path) -> dict[str, TrustedIssuer]:
    try:
        document = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError) as exc:
        raise TrustedIssuersError(f"cannot read trusted issuers from {path}: {exc}") from exc
    entries = document.get("issuers") if isinstance(document, dict) else None
    if not isinstance(entries, list):
        raise TrustedIssuersError(f"{path}: expected an object with an 'issuers' array")
    issuers: dict[str, TrustedIssuer] = {}
    for i, entry in enumerate(entries):
        where = f"{path}: issuers[{i}]"
        iss = entry.get("iss") if isinstance(entry, dict) else None
        if not isinstance(iss, str) or not iss:
            raise TrustedIssuersError(f"{where}: 'iss' is required")
        jwks = entry.get("jwks")
        if entry.get("jwks_file"):
            jwks_path = (path.parent / entry["jwks_file"]).resolve()
            try:
                jwks = json.loads(jwks_path.read_text(encoding="utf-8"))
            except (OSError, ValueError) as exc:
                raise TrustedIssuersError(f"{where}: cannot read {jwks_path}: {exc}") from exc
        static = _static_keys(jwks, where) if jwks is not None else {}
        jku_allowlist = frozenset(entry.get("jku_allowlist") or ())
        jwks_url = entry.get("jwks_url")
        if not static and not jwks_url and not jku_allowlist:
            raise TrustedIssuersError(f"{where}: give jwks, jwks_file, jwks_url or jku_allowlist")
        subs = entry.get("sub_allowlist")
        issuers[iss] = TrustedIssuer(
            iss=iss,
            static_keys=static,
            jwks_url=jwks_url,
            jku_allowlist=jku_allowlist,
            sub_allowlist=frozenset(subs) if subs else None,
        )
    return issuers
