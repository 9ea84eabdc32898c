"""Bearer tokens for the FHIR API: JWT access tokens from a trusted API issuer.

Not the EHR's hook tokens. A token is accepted when it is signed by an issuer on the
API allow-list (``WARDROUND_API_ISSUERS``, the trusted-issuers file format), its ``aud``
is the FHIR base URL (``WARDROUND_PUBLIC_BASE_URL`` + ``/fhir``) and ``exp``/``iat`` hold;
a hook token (``aud`` = a ``/cds-services`` URL) is refused as ``invalid_audience``.
Access tokens are bearer tokens used many times until they expire: ``jti`` is not
required and not remembered. What the token grants comes from its ``scope`` (or ``scp``)
and ``roles`` claims (:mod:`cds.access`).
"""

from __future__ import annotations

import logging
from pathlib import Path

from cds.access import Principal, roles_from
from cds.config import Settings
from cds.security import AuthError, JwtVerifier, load_trusted_issuers

log = logging.getLogger(__name__)

API_CLAIMS = ("iss", "aud", "exp", "iat")
#: ``at+jwt`` is RFC 9068's type for JWT access tokens.
API_TOKEN_TYPES = ("JWT", "at+jwt", "application/at+jwt")
#: The principal when WARDROUND_AUTH=off (local development only; warned at start-up).
UNAUTHENTICATED = Principal(
    channel="fhir-api",
    system="urn:wardround:auth-off",
    id="unauthenticated",
    roles=frozenset({"auditor"}),
)


def _never_remembers(iss: str, jti: str, exp: int) -> bool:
    raise AssertionError("API tokens are not one-time tokens")  # decode() never calls it


class ApiAuthenticator:
    def __init__(self, verifier: JwtVerifier | None, audience: str) -> None:
        self._verifier = verifier
        self.audience = audience

    @classmethod
    def from_settings(cls, settings: Settings) -> ApiAuthenticator:
        audience = f"{settings.public_base_url or ''}/fhir"
        if settings.auth_mode == "off":
            return cls(None, audience)
        path: Path | None = settings.api_issuers_file
        issuers = load_trusted_issuers(path) if path is not None and path.exists() else {}
        if not issuers:
            log.warning(
                "FHIR API: no API token issuers configured (WARDROUND_API_ISSUERS); /fhir "
                "refuses every token"
            )
        verifier = JwtVerifier(
            issuers=issuers,
            replay_store=_never_remembers,
            algorithms=settings.jwt_algorithms,
            leeway_s=settings.jwt_leeway_s,
            max_lifetime_s=settings.jwt_max_lifetime_s,
            jwks_cache_s=settings.jwks_cache_s,
            required_claims=API_CLAIMS,
            typ_values=API_TOKEN_TYPES,
        )
        return cls(verifier, audience)

    def principal(self, authorization: str | None) -> Principal:
        """Who the bearer token names and what it grants; AuthError if it is refused."""
        if self._verifier is None:
            return UNAUTHENTICATED
        issuer, claims = self._verifier.decode(authorization, self.audience)
        subject = claims.get("sub") or claims.get("client_id") or claims.get("azp")
        if not isinstance(subject, str) or not subject or len(subject) > 256:
            raise AuthError("missing_claim")
        scope = claims.get("scope", claims.get("scp", ""))
        scopes = (
            scope.split() if isinstance(scope, str) else scope if isinstance(scope, list) else []
        )
        return Principal(
            channel="fhir-api",
            system=issuer.iss,
            id=subject,
            roles=roles_from(claims.get("roles")),
            scopes=frozenset(s for s in scopes if isinstance(s, str) and len(s) <= 200),
        )
