"""Authentication of the calling EHR (CDS Hooks 2.0 §Security and Safety)."""

from cds.security.jwt_verifier import AuthError, ClientIdentity, JwtVerifier
from cds.security.trusted_issuers import TrustedIssuer, load_trusted_issuers

__all__ = ["AuthError", "ClientIdentity", "JwtVerifier", "TrustedIssuer", "load_trusted_issuers"]
