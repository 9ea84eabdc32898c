"""Fixtures of the reliability suite: a private PostgreSQL cluster and the real gunicorn server.

Everything here is a real process driven by real signals; teardown stops all of it even
when a test fails. Missing PostgreSQL binaries skip the suite, or fail it under ``CI``.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

from tests.conftest import SigningKey, claims_for, sign, synthea_bundles
from tests.reliability.harness import GunicornServer, HarnessUnavailable, PgCluster
from tests.support.missing import unavailable


@pytest.fixture(scope="session")
def pg_cluster() -> Iterator[PgCluster]:
    """The suite's own PostgreSQL cluster (never the shared server on port 5432)."""
    try:
        cluster = PgCluster()
    except HarnessUnavailable as exc:
        unavailable(str(exc))
    try:
        cluster.start()
        yield cluster
    finally:
        cluster.destroy()


@pytest.fixture
def pg(pg_cluster: PgCluster) -> Iterator[PgCluster]:
    """The cluster, running at the start and again at the end of the test (even if stopped)."""
    if not pg_cluster.is_running():
        pg_cluster.start()
    yield pg_cluster
    if not pg_cluster.is_running():
        pg_cluster.start()


@pytest.fixture
def audit_db(pg: PgCluster) -> str:
    """A fresh, migrated database on the private cluster."""
    return pg.create_database()


ServerFactory = Callable[..., GunicornServer]


@pytest.fixture
def start_server(trusted_issuers_file: Path, tmp_path: Path) -> Iterator[ServerFactory]:
    """Start ``gunicorn -c gunicorn.conf.py wsgi:app`` against a database; stopped at teardown."""
    servers: list[GunicornServer] = []

    def _start(database_url: str, **extra_env: str) -> GunicornServer:
        server = GunicornServer(
            database_url,
            trusted_issuers_file,
            tmp_path / f"server-{len(servers)}",
            extra_env=extra_env,
        )
        servers.append(server)
        return server.start()

    yield _start
    for server in servers:
        server.stop()
        print(f"--- gunicorn log tail ({server.base_url}) ---\n{server.log_tail(3000)}")


@pytest.fixture(scope="session")
def token_for(es384_key: SigningKey) -> Callable[[str], str]:
    """A fresh ES384 JWT (new ``jti``) for the endpoint URL given."""
    return lambda audience: sign(es384_key, claims_for(audience))


@pytest.fixture(scope="session")
def hook_bodies() -> list[dict[str, Any]]:
    """Real patient-view requests built from the first eight shared Synthea patients."""
    from cds.demo import patient_view_request

    return [patient_view_request(path) for path in synthea_bundles()[:8]]
