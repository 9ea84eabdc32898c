"""Verify the EHR's bearer JWT on every call, with PyJWT doing the cryptography.

Checks, in order: a bearer token is present; the header names an allowed asymmetric
``alg`` (never ``none`` or HMAC), a ``kid`` and ``typ`` JWT; the issuer is on the
allow-list (and so is the ``jku``, if the header names one); the key comes from that
issuer's static JWK Set (pinned keys win), or else from the ``jku`` or its JWKS URL
(fetched, cached); the signature verifies; ``aud`` is the URL of the endpoint called;
``exp``/``iat`` hold within a small leeway and the lifetime is bounded; ``jti`` has not
been seen before (the replay store is the database, shared by all workers).
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Callable, Mapping
from dataclasses import dataclass

import jwt
from jwt import PyJWK, PyJWKClient
from jwt.exceptions import PyJWTError

from cds.audit.jti import SeenToken
from cds.security.trusted_issuers import TrustedIssuer

log = logging.getLogger(__name__)

REQUIRED_CLAIMS = ("iss", "aud", "exp", "iat", "jti")


class AuthError(Exception):
    """The caller is not authenticated. ``reason`` is a short code safe to return."""

    def __init__(self, reason: str) -> None:
        super().__init__(reason)
        self.reason = reason


@dataclass(frozen=True)
class ClientIdentity:
    iss: str
    sub: str | None
    tenant: str | None
    jti: str
    #: What the replay store must remember for this token (until it expires).
    token: SeenToken


#: Records a (iss, jti) pair until ``expires_at``; returns False if it was already there.
ReplayStore = Callable[[str, str, int], bool]


class JwtVerifier:
    def __init__(
        self,
        issuers: Mapping[str, TrustedIssuer],
        replay_store: ReplayStore,
        algorithms: tuple[str, ...],
        leeway_s: int = 30,
        max_lifetime_s: int = 3600,
        jwks_cache_s: int = 300,
        required_claims: tuple[str, ...] = REQUIRED_CLAIMS,
        typ_values: tuple[str, ...] = ("JWT",),
    ) -> None:
        self._issuers = dict(issuers)
        self._required = required_claims
        self._typ_values = typ_values
        self._remember_jti = replay_store
        self._algorithms = tuple(algorithms)
        self._leeway = leeway_s
        self._max_lifetime = max_lifetime_s
        self._jwks_cache_s = jwks_cache_s
        self._clients: dict[str, PyJWKClient] = {}
        self._clients_lock = threading.Lock()

    def verify(
        self, authorization: str | None, audience: str, remember: bool = True
    ) -> ClientIdentity:
        """Verify the bearer token for ``audience`` (the URL of the endpoint called).

        With ``remember=False`` the jti is not recorded here: the caller must record
        ``identity.token`` in the same transaction as its own writes and refuse the call
        as a replay if it was already known (the audit log does this for service calls).
        """
        issuer, claims = self.decode(authorization, audience)
        jti = claims["jti"]
        if not isinstance(jti, str) or not jti or len(jti) > 256:
            raise AuthError("malformed_token")
        if remember and not self._remember_jti(issuer.iss, jti, int(claims["exp"])):
            raise AuthError("replayed")
        return ClientIdentity(
            iss=issuer.iss,
            sub=claims.get("sub"),
            tenant=claims.get("tenant"),
            jti=jti,
            token=SeenToken.of(issuer.iss, jti, int(claims["exp"]), self._leeway),
        )

    def decode(self, authorization: str | None, audience: str) -> tuple[TrustedIssuer, dict]:
        """Every check but the replay check: the trusted issuer and the verified claims."""
        token = _bearer(authorization)
        try:
            header = jwt.get_unverified_header(token)
            unverified = jwt.decode(token, options={"verify_signature": False})
        except jwt.InvalidTokenError:  # DecodeError, or a header PyJWT rejects (kid, crit)
            raise AuthError("malformed_token") from None
        alg = header.get("alg")
        if alg not in self._algorithms:
            raise AuthError("disallowed_algorithm")
        if (
            not isinstance(header.get("kid"), str)
            or not isinstance(header.get("jku", ""), str)
            or header.get("typ", "JWT") not in self._typ_values
        ):
            raise AuthError("malformed_token")
        iss = unverified.get("iss")
        issuer = self._issuers.get(iss) if isinstance(iss, str) else None
        if issuer is None:
            raise AuthError("untrusted_issuer")
        key = self._signing_key(issuer, header)
        try:
            claims = jwt.decode(
                token,
                key=key,
                algorithms=[alg],
                audience=audience,
                issuer=issuer.iss,
                leeway=self._leeway,
                options={"require": list(self._required), "strict_aud": False},
            )
        except jwt.ExpiredSignatureError:
            raise AuthError("expired") from None
        except jwt.ImmatureSignatureError:
            raise AuthError("issued_in_future") from None
        except jwt.InvalidAudienceError:
            raise AuthError("invalid_audience") from None
        except jwt.InvalidSignatureError:
            raise AuthError("invalid_signature") from None
        except jwt.MissingRequiredClaimError:
            raise AuthError("missing_claim") from None
        except jwt.InvalidTokenError:
            raise AuthError("malformed_token") from None
        exp, iat = claims["exp"], claims["iat"]
        if not isinstance(exp, int | float) or not isinstance(iat, int | float):
            raise AuthError("malformed_token")  # PyJWT accepts numeric strings; RFC 7519 does not
        if exp - iat > self._max_lifetime:
            raise AuthError("lifetime_too_long")
        if issuer.sub_allowlist is not None and claims.get("sub") not in issuer.sub_allowlist:
            raise AuthError("untrusted_subject")
        return issuer, claims

    def _signing_key(self, issuer: TrustedIssuer, header: dict) -> PyJWK:
        kid = header["kid"]
        jku = header.get("jku")
        if jku is not None and jku not in issuer.jku_allowlist:
            raise AuthError("untrusted_jku")
        if kid in issuer.static_keys:
            # A pinned key is already trusted for this issuer whatever the header says; the
            # (allow-listed) jku only says where to look for keys we do not hold, so no fetch.
            return issuer.static_keys[kid]
        if jku is not None:
            return self._remote_key(jku, kid)
        if issuer.jwks_url:
            return self._remote_key(issuer.jwks_url, kid)
        raise AuthError("unknown_key")

    def _remote_key(self, url: str, kid: str) -> PyJWK:
        with self._clients_lock:
            client = self._clients.get(url)
            if client is None:
                client = PyJWKClient(url, cache_keys=True, lifespan=self._jwks_cache_s, timeout=5)
                self._clients[url] = client
        try:
            return client.get_signing_key(kid)
        except (PyJWTError, ValueError) as exc:
            # Unknown kid after a refresh, or the JWKS could not be fetched or is not a usable
            # JWK Set (not JSON, no keys): either way the token cannot be verified. The URL is
            # configuration, not a secret.
            log.warning("jwks lookup failed", extra={"jwks_url": url, "error": type(exc).__name__})
            raise AuthError("unknown_key") from None


def _bearer(authorization: str | None) -> str:
    if not authorization:
        raise AuthError("missing_token")
    scheme, _, token = authorization.partition(" ")
    if scheme.lower() != "bearer" or not token.strip() or len(token) > 16384:
        raise AuthError("missing_token")
    return token.strip()
