"""Fuzz the running service with schemathesis: a real gunicorn server, real JWTs, real SQL.

* :func:`live_server` migrates a SQLite audit database in a temporary folder, writes a
  trusted-issuers file for a fresh ES384 key, and starts ``gunicorn -c gunicorn.conf.py
  wsgi:app`` on a free 127.0.0.1 port (``tests/support/live_server.py``, stopped on exit);
* :func:`load_schema` reads the server's own ``GET /openapi.json`` and registers an auth
  provider that mints a fresh token for every generated case (``aud`` = the exact URL of
  the endpoint, a new ``jti`` each time), and the realism hooks below;
* :func:`fuzz` runs generated cases against every operation and counts cases, statuses and
  failures of the checks in :data:`CHECKS` instead of stopping at the first.

Realism: schemathesis already mixes the OpenAPI ``examples`` (the Synthea patient-view
request) into a fifth of the bodies it generates; on top of that a share of the bodies
for an invocation start from that example with one mutation (a member replaced by fuzz
data or removed), so cases reach the FHIR parsing and card building, not just the
envelope's 400s. Feedback bodies sometimes name a card the server really returned.

Used by ``tests/fuzz/test_schemathesis.py`` (short) and ``make fuzz`` (``run_fuzz.py``).
"""

from __future__ import annotations

import contextlib
import copy
import json
import subprocess
import sys
import time
import uuid
from collections import Counter
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any
from urllib.parse import unquote

import jwt
import requests
import schemathesis
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec
from hypothesis import HealthCheck, Phase, given, settings
from hypothesis import strategies as st
from hypothesis.errors import Unsatisfiable
from jwt.algorithms import ECAlgorithm
from schemathesis.checks import not_a_server_error
from schemathesis.core.failures import Failure
from schemathesis.errors import FailureGroup
from schemathesis.specs.openapi.checks import (
    content_type_conformance,
    response_headers_conformance,
    response_schema_conformance,
    status_code_conformance,
)

from tests.support.live_server import REPO, GunicornServer, write_trusted_issuers

BIN = Path(sys.executable).parent
ISSUER = "https://ehr.fuzz.test"
#: The FHIR API's token issuer (the same key, trusted in the API issuers file).
API_ISSUER = "https://auth.fuzz.test"
KID = "fuzz-es384"
CHECKS = [
    not_a_server_error,
    status_code_conformance,
    content_type_conformance,
    response_headers_conformance,
    response_schema_conformance,
]
#: Share of invocation bodies built from the OpenAPI example by one mutation.
EXAMPLE_MUTATION_SHARE = 0.3
#: Share of feedback bodies whose entries name a card the server returned.
REAL_CARD_SHARE = 0.4


# --------------------------------------------------------------------------- the server
@dataclass
class LiveServer:
    server: GunicornServer
    private_pem: bytes
    #: uuids of cards the server returned while seeding (for realistic feedback).
    cards: list[str] = field(default_factory=list)

    @property
    def base_url(self) -> str:
        return self.server.base_url

    def mint(self, path: str) -> str:
        """A fresh ES384 token for ``path`` (aud = the exact endpoint URL, a new jti); under
        /fhir an API access token (aud = the FHIR base URL, every read granted)."""
        now = int(time.time())
        claims: dict[str, Any] = {
            "iss": ISSUER,
            "sub": "fuzz-client",
            "aud": self.base_url + path,
            "iat": now,
            "exp": now + 300,
            "jti": str(uuid.uuid4()),
        }
        if path.startswith("/fhir"):
            claims |= {"iss": API_ISSUER, "aud": self.base_url + "/fhir", "scope": "system/*.read"}
        return jwt.encode(
            claims, self.private_pem, algorithm="ES384", headers={"kid": KID, "typ": "JWT"}
        )

    def error_lines(self) -> list[str]:
        """Log lines of unhandled errors (each is a 500 the fuzzer should also have seen)."""
        log = self.server.logfile
        text = log.read_text(errors="replace") if log.exists() else ""
        return [line for line in text.splitlines() if '"level": "ERROR"' in line]


def _write_issuer(folder: Path) -> tuple[bytes, Path]:
    """A fresh ES384 key: its private PEM, and the trusted-issuers file naming its public half."""
    key = ec.generate_private_key(ec.SECP384R1())
    jwk = json.loads(ECAlgorithm.to_jwk(key.public_key())) | {"kid": KID, "alg": "ES384"}
    issuers = write_trusted_issuers(folder, ISSUER, {"keys": [jwk]})
    private_pem = key.private_bytes(
        serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
    )
    return private_pem, issuers


@contextlib.contextmanager
def live_server(workdir: Path, workers: int = 1, threads: int = 4) -> Iterator[LiveServer]:
    """gunicorn serving wsgi:app with a migrated SQLite audit log under ``workdir``."""
    private_pem, issuers = _write_issuer(workdir)
    api_issuers = issuers.parent / "api-issuers.json"
    api_issuers.write_text(
        json.dumps({"issuers": [{"iss": API_ISSUER, "jwks_file": "ehr-jwks.json"}]})
    )
    server = GunicornServer(
        f"sqlite:///{workdir / 'audit.db'}",
        issuers,
        workdir,
        workers=workers,
        threads=threads,
        log_level="WARNING",
        clean_env=True,
        extra_env={
            "WARDROUND_API_ISSUERS": str(api_issuers),
            "WARDROUND_SECRET_KEY": uuid.uuid4().hex + uuid.uuid4().hex,
        },
    )
    subprocess.run(
        [str(BIN / "cds"), "db", "upgrade"],
        cwd=REPO,
        env=server.env,
        check=True,
        capture_output=True,
    )
    with server:
        yield LiveServer(server, private_pem)


# --------------------------------------------------------------------------- the schema
def _operation_examples(raw: dict[str, Any], path: str) -> list[Any]:
    operation = raw["paths"].get(path, {}).get("post", {})
    media = operation.get("requestBody", {}).get("content", {}).get("application/json", {})
    return [example["value"] for example in media.get("examples", {}).values()]


def seed_cards(server: LiveServer, raw: dict[str, Any]) -> None:
    """Invoke each service once with its example body, keeping the uuids of the cards."""
    for path in raw["paths"]:
        for example in _operation_examples(raw, path):
            response = requests.post(
                server.base_url + path,
                json=example,
                headers={"Authorization": f"Bearer {server.mint(path)}"},
                timeout=30,
            )
            if response.status_code == 200:
                server.cards.extend(card["uuid"] for card in response.json()["cards"])


_leaf = (
    st.none()
    | st.booleans()
    | st.integers(min_value=-(2**63), max_value=2**63)
    | st.floats(allow_nan=False, allow_infinity=False)
    | st.text(max_size=40)
    # NUL and lone surrogates too: JSON carries them as \u escapes, databases refuse them
    | st.text(st.characters(exclude_categories=()), max_size=40)
)
JSON_VALUES = st.recursive(
    _leaf,
    lambda inner: (
        st.lists(inner, max_size=4) | st.dictionaries(st.text(max_size=12), inner, max_size=4)
    ),
    max_leaves=12,
)


def json_slots(value: Any, out: list[tuple[Any, Any]]) -> list[tuple[Any, Any]]:
    """Every (container, key) pair inside a JSON value, depth first."""
    items = value.items() if isinstance(value, dict) else enumerate(value)
    for key, item in items:
        out.append((value, key))
        if isinstance(item, dict | list) and item:
            json_slots(item, out)
    return out


@st.composite
def mutated_example(draw: st.DrawFn, example: dict[str, Any], generated: Any) -> Any:
    body = copy.deepcopy(example)
    body["hookInstance"] = str(draw(st.uuids()))
    if draw(st.integers(0, 9)) == 0:
        return body  # the example as it is: a 200 with a card
    container, key = draw(st.sampled_from(json_slots(body, [])))
    action = draw(st.sampled_from(["replace", "replace", "generated", "remove"]))
    if action == "remove":
        del container[key]
    elif action == "generated":
        container[key] = copy.deepcopy(generated)
    else:
        container[key] = draw(JSON_VALUES)
    return body


def _is_json(value: Any) -> bool:
    try:
        json.dumps(value, allow_nan=False)
    except (TypeError, ValueError):
        return False
    return True


def _with_card(body: Any, card: str) -> Any:
    if not isinstance(body, dict) or not isinstance(body.get("feedback"), list):
        return body
    body = copy.deepcopy(body)
    for entry in body["feedback"]:
        if isinstance(entry, dict):
            entry["card"] = card
    return body


def load_schema(server: LiveServer) -> schemathesis.BaseSchema:
    """The server's own OpenAPI document, with per-case auth and the realism hooks."""
    schema = schemathesis.openapi.from_url(server.base_url + "/openapi.json")
    schema.config.update(base_url=server.base_url)
    # The provider below signs every case; negating the Authorization header would spend
    # most negative cases on 401s (tests/test_auth.py covers refusals one by one).
    schema.config.generation.update(with_security_parameters=False)
    raw = schema.raw_schema
    seed_cards(server, raw)

    @schema.auth(refresh_interval=None)  # no caching: every case gets its own token
    class FreshJwt:
        def get(self, case: schemathesis.Case, context: schemathesis.AuthContext) -> str:
            # The server compares aud with its base URL + the decoded request path.
            return server.mint(unquote(case.formatted_path))

        def set(
            self, case: schemathesis.Case, data: str, context: schemathesis.AuthContext
        ) -> None:
            case.headers["Authorization"] = f"Bearer {data}"

    def flatmap_body(context: schemathesis.HookContext, body: Any) -> st.SearchStrategy:
        operation = context.operation
        if operation is None or operation.method.upper() != "POST" or not _is_json(body):
            return st.just(body)  # raw bytes test the JSON reader: keep them as they are
        examples = _operation_examples(raw, operation.path)
        if examples:
            return st.floats(0, 1).flatmap(
                lambda p: (
                    mutated_example(examples[0], body)
                    if p < EXAMPLE_MUTATION_SHARE
                    else st.just(body)
                )
            )
        if operation.path.endswith("/feedback") and server.cards:
            return st.tuples(st.floats(0, 1), st.sampled_from(server.cards)).map(
                lambda pc: _with_card(body, pc[1]) if pc[0] < REAL_CARD_SHARE else body
            )
        return st.just(body)

    schema.hook(flatmap_body)
    return schema


# --------------------------------------------------------------------------- the run
@dataclass
class Totals:
    cases: int = 0
    statuses: Counter[int] = field(default_factory=Counter)
    by_operation: Counter[str] = field(default_factory=Counter)
    #: 200 answers that carried at least one card (the service really ran)
    with_cards: int = 0
    #: (operation label, generation mode, status) → responses
    outcomes: Counter[tuple[str, str, int]] = field(default_factory=Counter)
    failures: list[str] = field(default_factory=list)

    def merge(self, other: Totals) -> None:
        self.cases += other.cases
        self.with_cards += other.with_cards
        self.statuses.update(other.statuses)
        self.by_operation.update(other.by_operation)
        self.outcomes.update(other.outcomes)
        self.failures.extend(other.failures)

    def summary(self) -> str:
        statuses = ", ".join(f"{code}: {n}" for code, n in sorted(self.statuses.items()))
        return (
            f"cases: {self.cases}, failures: {len(self.failures)}, "
            f"answers with cards: {self.with_cards} (statuses {statuses})"
        )


def _cards(response: Any) -> list[Any]:
    try:
        body = response.json()
    except ValueError:
        return []
    return body.get("cards") or [] if isinstance(body, dict) else []


def _describe(case: schemathesis.Case, mode: str, base_url: str, exc: object) -> str:
    curl = case.as_curl_command(base_url=base_url)
    return f"{case.operation.label} [{mode}]\n{exc}\n{curl[:2000]}"


def fuzz_operation(
    server: LiveServer,
    operation: Any,
    *,
    mode: schemathesis.GenerationMode,
    max_examples: int,
    totals: Totals,
    session: requests.Session,
    derandomize: bool = False,
) -> None:
    """Run up to ``max_examples`` generated cases; record failures, never stop at one."""
    strategy = operation.as_strategy(generation_mode=mode)

    @settings(
        max_examples=max_examples,
        deadline=None,
        database=None,
        derandomize=derandomize,
        phases=[Phase.generate],
        suppress_health_check=list(HealthCheck),
    )
    @given(case=strategy)
    def run(case: schemathesis.Case) -> None:
        totals.cases += 1
        totals.by_operation[operation.label] += 1
        try:
            response = case.call_and_validate(session=session, checks=CHECKS, timeout=30)
        except (Failure, FailureGroup) as exc:
            totals.failures.append(_describe(case, mode.value, server.base_url, exc))
            return
        except requests.RequestException as exc:
            totals.failures.append(_describe(case, mode.value, server.base_url, exc))
            return
        totals.statuses[response.status_code] += 1
        if response.status_code == 503:  # documented, but the database here is healthy
            message = f"503 while the audit database is healthy: {response.text[:200]}"
            totals.failures.append(_describe(case, mode.value, server.base_url, message))
        totals.outcomes[operation.label, mode.value, response.status_code] += 1
        if response.status_code == 200 and _cards(response):
            totals.with_cards += 1

    with contextlib.suppress(Unsatisfiable):  # every distinct case was already tried
        run()


def _modes(operation: Any) -> list[schemathesis.GenerationMode]:
    """Negative cases too, except where nothing can be negated.

    On ``/cds-services/{service_id}`` a negated path parameter is a *registered* id: the
    request belongs to that service's own operation, fuzzed there, not to this one.
    """
    negatable = bool(operation.body) or any(True for _ in operation.iter_parameters())
    if "{" in operation.path or not negatable:
        return [schemathesis.GenerationMode.POSITIVE]
    return [schemathesis.GenerationMode.POSITIVE, schemathesis.GenerationMode.NEGATIVE]


#: Relative share of the cases, by kind of operation and generation mode.
WEIGHTS = {
    ("invoke", "positive"): 6,
    ("invoke", "negative"): 3,
    ("feedback", "positive"): 3,
    ("feedback", "negative"): 2,
    ("unknown-service", "positive"): 1,
    ("other", "positive"): 0,  # GETs without parameters: one distinct case each
    # The FHIR API (searches with parameters, reads) and the review page (HTML behind a
    # log-in: mostly redirects; tests/review and the browser test cover it).
    ("fhir", "positive"): 1,
    ("fhir", "negative"): 1,
    ("review", "positive"): 1,
    ("review", "negative"): 1,
}


def _kind(operation: Any) -> str:
    for prefix in ("fhir", "review"):
        if operation.path.startswith(f"/{prefix}/"):
            return prefix
    if operation.method.upper() != "POST":
        return "other"
    if "{" in operation.path:
        return "unknown-service"
    return "feedback" if operation.path.endswith("/feedback") else "invoke"


def _weight(operation: Any, mode: str, focus: str | None) -> int:
    kind = _kind(operation)
    if focus and kind in ("invoke", "feedback") and f"/cds-services/{focus}" not in operation.path:
        return 1
    return WEIGHTS.get((kind, mode), 1)


def plan(
    schema: schemathesis.BaseSchema, cases: int, focus: str | None = None
) -> dict[tuple[str, str], int]:
    """Split ``cases`` over every (operation, mode) by :data:`WEIGHTS` (at least 1 each).

    ``focus``: a service id whose invocation and feedback keep their full weight while the
    other services' get the minimum (a short run that must still reach that service's
    cards and feedback store, with more services registered than cases to spread).
    """
    slots = [
        (operation.label, mode.value, _weight(operation, mode.value, focus))
        for operation in (result.ok() for result in schema.get_all_operations())
        for mode in _modes(operation)
    ]
    total_weight = sum(weight for *_, weight in slots) or 1
    return {
        (label, mode): max(1, round(cases * weight / total_weight)) for label, mode, weight in slots
    }


def fuzz(
    server: LiveServer,
    schema: schemathesis.BaseSchema,
    budget: dict[tuple[str, str], int],
    progress: Callable[[str], None] | None = None,
    derandomize: bool = False,
) -> Totals:
    """Fuzz every operation of ``schema``; ``budget[label, mode]`` caps its cases (see plan)."""
    totals = Totals()
    with requests.Session() as session:
        for result in schema.get_all_operations():
            operation = result.ok()
            for mode in _modes(operation):
                n = budget.get((operation.label, mode.value), 0)
                if n <= 0:
                    continue
                before = totals.cases, len(totals.failures)
                fuzz_operation(
                    server,
                    operation,
                    mode=mode,
                    max_examples=n,
                    totals=totals,
                    session=session,
                    derandomize=derandomize,
                )
                if progress:
                    progress(
                        f"{operation.label} [{mode.value}]: {totals.cases - before[0]} cases, "
                        f"{len(totals.failures) - before[1]} failures"
                    )
    return totals
