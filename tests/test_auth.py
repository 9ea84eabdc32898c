"""Bearer-JWT authentication (CDS Hooks 2.0 §Trusting CDS Clients), end to end.

Every test drives the real Flask app (or the real ``JwtVerifier``) with real keys, a real
replay store on SQLite and PostgreSQL, and, for ``jku``, a real HTTP server on 127.0.0.1.
A refusal is always HTTP 401 with ``WWW-Authenticate: Bearer error="invalid_token"`` and a
body that says nothing beyond a short reason code.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import json
import logging
import threading
import time
import uuid
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import jwt
import pytest
from flask.testing import FlaskClient
from werkzeug.test import TestResponse

from cds.config import ConfigError, Settings
from cds.db import make_engine, make_sessionmaker
from cds.security import AuthError, JwtVerifier, load_trusted_issuers
from cds.security.replay_store import DatabaseReplayStore
from cds.services import BUILT_IN_SERVICES
from tests.conftest import (
    BASE_URL,
    ISSUER,
    AppFactory,
    Mint,
    SigningKey,
    _ec_key,
    claims_for,
    sign,
)

DISCOVERY = "/cds-services"
SERVICE = "/cds-services/patient-summary"
FEEDBACK = "/cds-services/patient-summary/feedback"
OTHER_ISSUER = "https://second-ehr.test"
SPEC_VECTOR = Path(__file__).parent / "fixtures" / "cds_hooks_spec_jwt_example.json"


# --------------------------------------------------------------------------- helpers
def bearer(token: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {token}"}


def discover(client: FlaskClient, token: str) -> TestResponse:
    return client.get(DISCOVERY, headers=bearer(token))


def assert_refused(response: TestResponse, reason: str) -> None:
    """401, the Bearer challenge, and a body that is the reason code and nothing more."""
    assert response.status_code == 401, response.get_data(as_text=True)
    assert response.headers["WWW-Authenticate"] == 'Bearer error="invalid_token"'
    assert response.get_json() == {
        "error": "unauthorized",
        "message": "authentication failed",
        "reason": reason,
    }


def b64url(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode("ascii")


def b64url_json(value: Any) -> str:
    return b64url(json.dumps(value, separators=(",", ":")).encode())


def sign_raw(key: SigningKey, payload: Any, headers: dict[str, Any] | None = None) -> str:
    """Sign any JSON payload, even claims ``jwt.encode`` refuses to write (a list ``iss``)."""
    return jwt.PyJWS().encode(
        json.dumps(payload).encode(),
        key.private_pem,
        algorithm=key.alg,
        headers={"kid": key.kid, "typ": "JWT"} | (headers or {}),
    )


def unsigned_token(header: dict[str, Any], payload: dict[str, Any]) -> str:
    return f"{b64url_json(header)}.{b64url_json(payload)}."


def hs256_token(secret: bytes, kid: str, payload: dict[str, Any]) -> str:
    signing_input = (
        f"{b64url_json({'alg': 'HS256', 'kid': kid, 'typ': 'JWT'})}.{b64url_json(payload)}"
    )
    signature = hmac.new(secret, signing_input.encode("ascii"), hashlib.sha256).digest()
    return f"{signing_input}.{b64url(signature)}"


def _segment(segment: str) -> Any:
    return json.loads(base64.urlsafe_b64decode(segment + "=" * (-len(segment) % 4)))


def with_payload_claim(token: str, **changes: Any) -> str:
    """Change claims in the payload segment and keep the original header and signature."""
    header, payload, signature = token.split(".")
    return f"{header}.{b64url_json(_segment(payload) | changes)}.{signature}"


def with_header(token: str, **changes: Any) -> str:
    """Change header parameters (even to values PyJWT refuses to write), keep the rest."""
    header, payload, signature = token.split(".")
    return f"{b64url_json(_segment(header) | changes)}.{payload}.{signature}"


def write_issuers(path: Path, *issuers: dict[str, Any]) -> Path:
    path.write_text(json.dumps({"issuers": list(issuers)}))
    return path


# --------------------------------------------------------------------------- a real JWKS host
@dataclass
class JwksHost:
    """Documents served over HTTP on 127.0.0.1, and the paths that were requested."""

    base_url: str
    documents: dict[str, tuple[int, bytes]] = field(default_factory=dict)
    hits: list[str] = field(default_factory=list)

    def serve(self, path: str, body: Any, status: int = 200) -> str:
        raw = body if isinstance(body, bytes) else json.dumps(body).encode()
        self.documents[path] = (status, raw)
        return self.base_url + path


@pytest.fixture
def jwks_host(monkeypatch: pytest.MonkeyPatch) -> Iterator[JwksHost]:
    # urllib honours *_proxy variables; a local server must be reached directly.
    monkeypatch.setenv("no_proxy", "127.0.0.1")
    monkeypatch.setenv("NO_PROXY", "127.0.0.1")
    host: JwksHost

    class Handler(BaseHTTPRequestHandler):
        def do_GET(self) -> None:
            host.hits.append(self.path)
            status, body = host.documents.get(self.path, (404, b'{"error":"not found"}'))
            self.send_response(status)
            self.send_header("Content-Type", "application/json")
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)

        def log_message(self, format: str, *args: Any) -> None:
            pass

    server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    host = JwksHost(base_url=f"http://127.0.0.1:{server.server_address[1]}")
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield host
    server.shutdown()
    server.server_close()
    thread.join(timeout=5)


@pytest.fixture(scope="module")
def second_ehr_key() -> SigningKey:
    return _ec_key("second-ehr-es384")


def second_ehr_token(key: SigningKey, jku: str) -> str:
    return sign(key, claims_for(BASE_URL + DISCOVERY, iss=OTHER_ISSUER), headers={"jku": jku})


# =========================================================================== no usable token
@pytest.mark.parametrize(
    ("method", "path"), [("GET", DISCOVERY), ("POST", SERVICE), ("POST", FEEDBACK)]
)
def test_every_endpoint_refuses_a_request_without_authorization(
    client: FlaskClient, method: str, path: str
) -> None:
    response = client.open(path, method=method, json={})
    assert_refused(response, "missing_token")


@pytest.mark.parametrize(
    "authorization",
    ["Basic ZWhyOnNlY3JldA==", "Token abc.def.ghi", "Bearer", "Bearer   ", "Bearerabc.def.ghi"],
)
def test_a_non_bearer_authorization_is_refused(client: FlaskClient, authorization: str) -> None:
    response = client.get(DISCOVERY, headers={"Authorization": authorization})
    assert_refused(response, "missing_token")


def test_the_bearer_scheme_name_is_case_insensitive(client: FlaskClient, mint: Mint) -> None:
    response = client.get(DISCOVERY, headers={"Authorization": f"bearer {mint(DISCOVERY)}"})
    assert response.status_code == 200


@pytest.mark.parametrize(
    "token",
    [
        "garbage",
        "a.b.c",
        "not.a.jwt.at.all",
        "eyJhbGciOiJFUzM4NCJ9.eyJpc3MiOiJ4In0",  # two segments
        "!!!!.@@@@.####",
        b64url_json(["alg", "ES384"]) + "." + b64url_json({}) + ".",  # header not an object
    ],
)
def test_garbage_is_refused_as_malformed(client: FlaskClient, token: str) -> None:
    assert_refused(discover(client, token), "malformed_token")


# =========================================================================== algorithm attacks
def test_alg_none_is_refused(client: FlaskClient, es384_key: SigningKey) -> None:
    token = unsigned_token(
        {"alg": "none", "kid": es384_key.kid, "typ": "JWT"}, claims_for(BASE_URL + DISCOVERY)
    )
    assert_refused(discover(client, token), "disallowed_algorithm")


@pytest.mark.parametrize("key_fixture", ["es384_key", "rs384_key"])
def test_hs256_keyed_with_the_trusted_public_key_pem_is_refused(
    client: FlaskClient, request: pytest.FixtureRequest, key_fixture: str
) -> None:
    """The classic key-confusion attack: HMAC over the token with the public key as secret."""
    key: SigningKey = request.getfixturevalue(key_fixture)
    token = hs256_token(key.public_pem, key.kid, claims_for(BASE_URL + DISCOVERY))
    assert_refused(discover(client, token), "disallowed_algorithm")


@pytest.mark.parametrize("algorithm", ["HS256", "HS384", "none"])
def test_hmac_and_none_cannot_be_switched_on_by_configuration(
    tmp_path: Path, algorithm: str
) -> None:
    with pytest.raises(ConfigError):
        Settings(database_url="sqlite://", instance_path=tmp_path, jwt_algorithms=(algorithm,))


# =========================================================================== audience
@pytest.mark.parametrize(
    "aud",
    [
        BASE_URL + "/cds-services/some-other-service",
        BASE_URL + DISCOVERY,  # the discovery URL, presented on a service endpoint
        BASE_URL + FEEDBACK,
        "https://elsewhere.test" + SERVICE,
    ],
)
def test_a_token_for_another_url_is_refused(
    client: FlaskClient, es384_key: SigningKey, aud: str
) -> None:
    token = sign(es384_key, claims_for(aud))
    response = client.post(SERVICE, json={}, headers=bearer(token))
    assert_refused(response, "invalid_audience")


def test_an_aud_list_containing_this_url_is_accepted(
    client: FlaskClient, es384_key: SigningKey
) -> None:
    token = sign(es384_key, claims_for([BASE_URL + SERVICE, BASE_URL + DISCOVERY]))
    assert discover(client, token).status_code == 200


def test_an_aud_list_without_this_url_is_refused(
    client: FlaskClient, es384_key: SigningKey
) -> None:
    token = sign(es384_key, claims_for([BASE_URL + SERVICE, BASE_URL + FEEDBACK]))
    assert_refused(discover(client, token), "invalid_audience")


# =========================================================================== time
def test_an_expired_token_is_refused(client: FlaskClient, mint: Mint) -> None:
    now = int(time.time())
    token = mint(DISCOVERY, iat=now - 120, exp=now - 60)  # 60 s > the 30 s leeway
    assert_refused(discover(client, token), "expired")


def test_a_token_issued_in_the_future_is_refused(client: FlaskClient, mint: Mint) -> None:
    now = int(time.time())
    token = mint(DISCOVERY, iat=now + 120, exp=now + 300)
    assert_refused(discover(client, token), "issued_in_future")


@pytest.mark.parametrize(("iat_offset", "exp_offset"), [(-60, -10), (10, 300)])
def test_clock_skew_within_the_leeway_is_tolerated(
    client: FlaskClient, mint: Mint, iat_offset: int, exp_offset: int
) -> None:
    now = int(time.time())
    token = mint(DISCOVERY, iat=now + iat_offset, exp=now + exp_offset)
    assert discover(client, token).status_code == 200


@pytest.mark.parametrize(("lifetime_s", "status"), [(3600, 200), (3601, 401)])
def test_token_lifetime_is_bounded_at_one_hour(
    client: FlaskClient, mint: Mint, lifetime_s: int, status: int
) -> None:
    now = int(time.time())
    response = discover(client, mint(DISCOVERY, iat=now, exp=now + lifetime_s))
    if status == 401:
        assert_refused(response, "lifetime_too_long")
    else:
        assert response.status_code == 200


def test_numeric_string_times_are_refused(client: FlaskClient, es384_key: SigningKey) -> None:
    """RFC 7519 NumericDate is a JSON number; PyJWT alone would accept "1700000000"."""
    now = int(time.time())
    claims = claims_for(BASE_URL + DISCOVERY, iat=str(now), exp=now + 300)
    assert_refused(discover(client, sign_raw(es384_key, claims)), "malformed_token")


# =========================================================================== replay
def test_a_replayed_token_is_refused(client: FlaskClient, mint: Mint) -> None:
    token = mint(DISCOVERY)
    assert discover(client, token).status_code == 200
    assert_refused(discover(client, token), "replayed")


def test_a_reused_jti_is_refused_even_in_a_freshly_signed_token(
    client: FlaskClient, mint: Mint
) -> None:
    jti = str(uuid.uuid4())
    assert discover(client, mint(DISCOVERY, jti=jti)).status_code == 200
    response = client.post(SERVICE, json={}, headers=bearer(mint(SERVICE, jti=jti)))
    assert_refused(response, "replayed")


def test_replay_memory_is_shared_by_every_app_on_the_same_database(
    make_app: AppFactory, mint: Mint
) -> None:
    """Two app instances on one database stand in for two gunicorn workers."""
    worker_a, worker_b = make_app().test_client(), make_app().test_client()
    token = mint(DISCOVERY)
    assert discover(worker_a, token).status_code == 200
    assert_refused(discover(worker_b, token), "replayed")


def test_a_refused_token_does_not_use_up_its_jti(client: FlaskClient, mint: Mint) -> None:
    """Only a verified token is remembered, so a forger cannot burn a genuine token's jti."""
    jti = str(uuid.uuid4())
    genuine = mint(DISCOVERY, jti=jti)
    assert_refused(discover(client, with_payload_claim(genuine, sub="forger")), "invalid_signature")
    assert discover(client, genuine).status_code == 200


# =========================================================================== keys and issuers
def test_an_unknown_kid_is_refused(client: FlaskClient, es384_key: SigningKey) -> None:
    token = sign(es384_key, claims_for(BASE_URL + DISCOVERY), headers={"kid": "no-such-key"})
    assert_refused(discover(client, token), "unknown_key")


def test_an_untrusted_issuer_is_refused(client: FlaskClient, mint: Mint) -> None:
    token = mint(DISCOVERY, iss="https://rogue-ehr.test")
    assert_refused(discover(client, token), "untrusted_issuer")


def test_a_jku_not_on_the_allow_list_is_refused(client: FlaskClient, es384_key: SigningKey) -> None:
    headers = {"jku": "https://rogue-ehr.test/jwks.json"}
    token = sign(es384_key, claims_for(BASE_URL + DISCOVERY), headers=headers)
    assert_refused(discover(client, token), "untrusted_jku")


def test_a_tampered_payload_is_refused(client: FlaskClient, mint: Mint) -> None:
    token = with_payload_claim(mint(DISCOVERY), sub="someone-else")
    assert_refused(discover(client, token), "invalid_signature")


def test_a_signature_by_another_key_under_a_trusted_kid_is_refused(
    client: FlaskClient, es384_key: SigningKey
) -> None:
    impostor = _ec_key(es384_key.kid)
    assert_refused(
        discover(client, sign(impostor, claims_for(BASE_URL + DISCOVERY))), "invalid_signature"
    )


@pytest.mark.parametrize(
    ("claim", "reason"),
    [
        ("jti", "missing_claim"),
        ("exp", "missing_claim"),
        ("iat", "missing_claim"),
        ("aud", "missing_claim"),
        ("iss", "untrusted_issuer"),  # no issuer named, so none is trusted
    ],
)
def test_a_missing_required_claim_is_refused(
    client: FlaskClient, es384_key: SigningKey, claim: str, reason: str
) -> None:
    claims = claims_for(BASE_URL + DISCOVERY)
    del claims[claim]
    token = sign(es384_key, claims)
    assert_refused(discover(client, token), reason)


@pytest.mark.parametrize(
    ("header", "payload", "reason"),
    [
        ({"crit": "exp"}, {}, "malformed_token"),
        ({"jku": ["https://rogue-ehr.test/jwks.json"]}, {}, "malformed_token"),
        ({"typ": "at+jwt"}, {}, "malformed_token"),
        ({}, {"iss": [ISSUER]}, "untrusted_issuer"),
        ({}, {"iss": {"iss": ISSUER}}, "untrusted_issuer"),
        ({}, {"jti": 42}, "malformed_token"),
    ],
    ids=["crit-not-a-list", "jku-a-list", "typ-not-jwt", "iss-a-list", "iss-an-object", "jti-int"],
)
def test_odd_header_and_claim_types_are_refused_not_a_server_error(
    client: FlaskClient,
    es384_key: SigningKey,
    header: dict[str, Any],
    payload: dict[str, Any],
    reason: str,
) -> None:
    token = sign_raw(es384_key, claims_for(BASE_URL + DISCOVERY) | payload, headers=header)
    assert_refused(discover(client, token), reason)


def test_a_non_string_kid_is_refused_as_malformed(client: FlaskClient, mint: Mint) -> None:
    # PyJWT will not sign with kid=7, so the header is swapped after signing; the header is
    # refused before any signature check, hence malformed_token and not invalid_signature.
    token = with_header(mint(DISCOVERY), kid=7)
    assert_refused(discover(client, token), "malformed_token")


# =========================================================================== accepted tokens
@pytest.mark.parametrize("key_fixture", ["es384_key", "rs384_key"])
def test_a_valid_token_is_accepted(
    client: FlaskClient, mint: Mint, request: pytest.FixtureRequest, key_fixture: str
) -> None:
    key: SigningKey = request.getfixturevalue(key_fixture)
    token = mint(DISCOVERY, key=key)
    assert jwt.get_unverified_header(token)["alg"] == key.alg
    response = discover(client, token)
    assert response.status_code == 200
    assert "WWW-Authenticate" not in response.headers
    assert [s["id"] for s in response.get_json()["services"]] == [s.id for s in BUILT_IN_SERVICES]


def test_a_valid_token_reaches_the_service(client: FlaskClient, mint: Mint) -> None:
    """Past authentication, an empty body is the service's 400, not an auth refusal."""
    response = client.post(SERVICE, json={}, headers=bearer(mint(SERVICE)))
    assert response.status_code == 400
    assert response.get_json()["error"] == "invalid_request"


# =========================================================================== jku key sets
def test_a_key_from_an_allow_listed_jku_is_fetched_and_accepted(
    make_app: AppFactory, tmp_path: Path, jwks_host: JwksHost, second_ehr_key: SigningKey
) -> None:
    jku = jwks_host.serve("/ehr2/jwks.json", {"keys": [second_ehr_key.public_jwk]})
    issuers = write_issuers(tmp_path / "ti.json", {"iss": OTHER_ISSUER, "jku_allowlist": [jku]})
    client = make_app(trusted_issuers_file=issuers).test_client()

    assert discover(client, second_ehr_token(second_ehr_key, jku)).status_code == 200
    assert jwks_host.hits == ["/ehr2/jwks.json"]
    assert discover(client, second_ehr_token(second_ehr_key, jku)).status_code == 200
    assert jwks_host.hits == ["/ehr2/jwks.json"]  # the key set is cached


def test_a_kid_missing_from_the_jku_key_set_is_refused(
    make_app: AppFactory, tmp_path: Path, jwks_host: JwksHost, second_ehr_key: SigningKey
) -> None:
    other = _ec_key("not-published")
    jku = jwks_host.serve("/ehr2/jwks.json", {"keys": [second_ehr_key.public_jwk]})
    issuers = write_issuers(tmp_path / "ti.json", {"iss": OTHER_ISSUER, "jku_allowlist": [jku]})
    client = make_app(trusted_issuers_file=issuers).test_client()

    assert_refused(discover(client, second_ehr_token(other, jku)), "unknown_key")


@pytest.mark.parametrize(
    ("status", "body"),
    [(404, b'{"error":"not found"}'), (200, b"<html>sign in</html>"), (200, b'{"keys":[]}')],
    ids=["http-404", "not-json", "no-keys"],
)
def test_a_broken_jku_key_set_is_refused_as_unknown_key(
    make_app: AppFactory,
    tmp_path: Path,
    jwks_host: JwksHost,
    second_ehr_key: SigningKey,
    status: int,
    body: bytes,
) -> None:
    jku = jwks_host.serve("/ehr2/jwks.json", body, status=status)
    issuers = write_issuers(tmp_path / "ti.json", {"iss": OTHER_ISSUER, "jku_allowlist": [jku]})
    client = make_app(trusted_issuers_file=issuers).test_client()

    assert_refused(discover(client, second_ehr_token(second_ehr_key, jku)), "unknown_key")


def test_a_pinned_key_is_used_without_fetching_an_allow_listed_jku(
    make_app: AppFactory, tmp_path: Path, jwks_host: JwksHost, second_ehr_key: SigningKey
) -> None:
    jku = jwks_host.base_url + "/ehr2/jwks.json"  # serves nothing: it must not be needed
    issuers = write_issuers(
        tmp_path / "ti.json",
        {
            "iss": OTHER_ISSUER,
            "jwks": {"keys": [second_ehr_key.public_jwk]},
            "jku_allowlist": [jku],
        },
    )
    client = make_app(trusted_issuers_file=issuers).test_client()

    assert discover(client, second_ehr_token(second_ehr_key, jku)).status_code == 200
    assert jwks_host.hits == []


# =========================================================================== the spec's example
@pytest.fixture(scope="module")
def spec() -> dict[str, Any]:
    return json.loads(SPEC_VECTOR.read_text())


VerifierFactory = Callable[..., JwtVerifier]


@pytest.fixture
def spec_verifier_for(database_url: str, tmp_path: Path) -> Iterator[VerifierFactory]:
    """Build a real ``JwtVerifier`` (database replay store) from trusted-issuers entries."""
    engine = make_engine(database_url)
    store = DatabaseReplayStore(make_sessionmaker(engine), leeway_s=30)

    def _build(*entries: dict[str, Any]) -> JwtVerifier:
        issuers = load_trusted_issuers(write_issuers(tmp_path / "spec-issuers.json", *entries))
        return JwtVerifier(issuers, store, algorithms=("ES384", "RS384"))

    yield _build
    engine.dispose()


def spec_issuer(spec: dict[str, Any], jku_allowlist: list[str]) -> dict[str, Any]:
    return {
        "iss": spec["decoded_payload"]["iss"],
        "jwks": spec["jwks"],
        "jku_allowlist": jku_allowlist,
    }


SPEC_TOKENS = ["token", "alternate"]


def spec_token(spec: dict[str, Any], which: str) -> str:
    return spec["token"] if which == "token" else spec["alternate_tokens"][0]["token"]


@pytest.mark.parametrize("which", SPEC_TOKENS)
def test_the_spec_example_signature_verifies_with_the_published_key(
    spec: dict[str, Any], which: str
) -> None:
    key = jwt.PyJWKSet.from_dict(spec["jwks"])["example-kid"]
    claims = jwt.decode(
        spec_token(spec, which),
        key=key,
        algorithms=["ES384"],
        options={"verify_exp": False, "verify_aud": False},
    )
    expected = (
        spec["decoded_payload"]
        if which == "token"
        else spec["alternate_tokens"][0]["decoded_payload"]
    )
    assert claims == expected
    assert jwt.get_unverified_header(spec_token(spec, which)) == spec["decoded_header"]


@pytest.mark.parametrize("which", SPEC_TOKENS)
def test_the_spec_example_is_refused_as_expired_not_as_a_bad_signature(
    spec: dict[str, Any], spec_verifier_for: VerifierFactory, which: str
) -> None:
    jku = spec["decoded_header"]["jku"]
    verifier = spec_verifier_for(spec_issuer(spec, jku_allowlist=[jku]))
    with pytest.raises(AuthError) as refused:
        verifier.verify(f"Bearer {spec_token(spec, which)}", spec["decoded_payload"]["aud"])
    assert refused.value.reason == "expired"


def test_the_spec_example_tampered_is_refused_as_a_bad_signature(
    spec: dict[str, Any], spec_verifier_for: VerifierFactory
) -> None:
    jku = spec["decoded_header"]["jku"]
    verifier = spec_verifier_for(spec_issuer(spec, jku_allowlist=[jku]))
    tampered = with_payload_claim(spec["token"], tenant="another-tenant")
    with pytest.raises(AuthError) as refused:
        verifier.verify(f"Bearer {tampered}", spec["decoded_payload"]["aud"])
    assert refused.value.reason == "invalid_signature"


def test_the_spec_example_jku_must_be_allow_listed_even_for_a_pinned_key(
    spec: dict[str, Any], spec_verifier_for: VerifierFactory
) -> None:
    verifier = spec_verifier_for(spec_issuer(spec, jku_allowlist=[]))
    with pytest.raises(AuthError) as refused:
        verifier.verify(f"Bearer {spec['token']}", spec["decoded_payload"]["aud"])
    assert refused.value.reason == "untrusted_jku"


def test_a_fresh_token_from_the_spec_example_key_is_accepted_once(
    spec: dict[str, Any], spec_verifier_for: VerifierFactory
) -> None:
    """The spec publishes its example private key, so a current token can be minted."""
    private = {k: v for k, v in spec["private_jwk_published_example"].items() if k != "note"}
    header = spec["decoded_header"]
    aud = spec["decoded_payload"]["aud"]
    now = int(time.time())
    claims = spec["decoded_payload"] | {"iat": now, "exp": now + 300, "jti": str(uuid.uuid4())}
    token = jwt.encode(
        claims,
        jwt.PyJWK(private).key,
        algorithm="ES384",
        headers={"kid": header["kid"], "jku": header["jku"], "typ": "JWT"},
    )
    verifier = spec_verifier_for(spec_issuer(spec, jku_allowlist=[header["jku"]]))

    identity = verifier.verify(f"Bearer {token}", aud)
    assert (identity.iss, identity.tenant) == (claims["iss"], claims["tenant"])
    with pytest.raises(AuthError) as refused:
        verifier.verify(f"Bearer {token}", aud)
    assert refused.value.reason == "replayed"


# =========================================================================== operations
def test_auth_off_lets_requests_through_and_warns_at_start_up(
    make_app: AppFactory, caplog: pytest.LogCaptureFixture
) -> None:
    with caplog.at_level(logging.WARNING, logger="cds.app"):
        client = make_app(auth_mode="off").test_client()
    warnings = [r for r in caplog.records if r.name == "cds.app" and r.levelno == logging.WARNING]
    assert any("WARDROUND_AUTH=off" in r.getMessage() for r in warnings)
    assert client.get(DISCOVERY).status_code == 200


UNREACHABLE_DB = "postgresql://postgres@127.0.0.1:1/none"  # nothing listens on port 1


def test_a_database_outage_during_the_replay_check_is_503(make_app: AppFactory, mint: Mint) -> None:
    client = make_app(database_url=UNREACHABLE_DB, db_connect_timeout_s=1).test_client()
    response = discover(client, mint(DISCOVERY))
    assert response.status_code == 503
    assert response.get_json()["error"] == "audit_unavailable"
    assert response.headers["Retry-After"] == "5"
    assert "WWW-Authenticate" not in response.headers


def test_a_bad_token_is_refused_without_the_database(make_app: AppFactory, mint: Mint) -> None:
    client = make_app(database_url=UNREACHABLE_DB, db_connect_timeout_s=1).test_client()
    token = with_payload_claim(mint(DISCOVERY), sub="forger")
    assert_refused(discover(client, token), "invalid_signature")
