"""The ``cds`` command: operational tasks for hospital IT and integrators."""

from __future__ import annotations

import json
import sys
from pathlib import Path

import click

from cds.commands import api as api_commands
from cds.commands import replay as replay_commands
from cds.commands import reviewers as reviewers_commands
from cds.commands import risk_models
from cds.commands._settings import settings
from cds.commands.imaging import imaging
from cds.commands.nlp import nlp
from cds.commands.phenotypes import phenotypes
from cds.commands.population import population


@click.group()
def main() -> None:
    """Wardround CDS service administration."""


@main.group()
def db() -> None:
    """Database schema (Alembic migrations)."""


@db.command("upgrade")
@click.option("--revision", default="head", show_default=True)
def db_upgrade(revision: str) -> None:
    """Apply migrations to DATABASE_URL (default: SQLite in instance/)."""
    from cds.migrate import upgrade

    current = settings()
    current.instance_path.mkdir(parents=True, exist_ok=True)
    upgrade(current.database_url, revision)
    click.echo(f"database at revision {revision}")


@db.command("current")
def db_current() -> None:
    """Print the schema revision of DATABASE_URL."""
    from cds.migrate import current

    click.echo(current(settings().database_url) or "empty (run: cds db upgrade)")


@main.group()
def audit() -> None:
    """The tamper-evident audit log."""


@audit.command("verify")
def audit_verify() -> None:
    """Walk the hash chain; exit 1 and name the first broken link if it is not intact."""
    from cds.audit import verify_chain
    from cds.db import make_engine, make_sessionmaker

    engine = make_engine(settings().database_url)
    try:
        with make_sessionmaker(engine)() as session:
            result = verify_chain(session)
    finally:
        engine.dispose()
    click.echo(result.describe())
    sys.exit(0 if result.ok else 1)


@main.group()
def models() -> None:
    """The model registry: what the service runs, with versions and artifact hashes."""


@models.command("list")
def models_list() -> None:
    """Load every registered model, verifying its artifact, and print id, version and hash."""
    from models import registry
    from models.artifacts import ArtifactInvalid

    failed = False
    for entry in registry.MODEL_ENTRIES:
        try:
            identity = registry.identity(entry.id)
        except ArtifactInvalid as exc:
            failed = True
            click.echo(f"{entry.id}\tBROKEN\t{exc}")
            continue
        click.echo(f"{identity.id}\t{identity.version}\t{identity.sha256 or '-'}")
    sys.exit(1 if failed else 0)


models.add_command(risk_models.train)


@main.group()
def demo() -> None:
    """Demo EHR identity and sample requests, for trying the service locally."""


@demo.command("setup")
def demo_setup() -> None:
    """Create the demo EHR key pair and the trusted-issuers file in instance/ (idempotent);
    also the demo FHIR API client, session key and reviewer (after `cds db upgrade`)."""
    from cds.commands._settings import database
    from cds.demo import (
        ensure_demo_api_client,
        ensure_demo_ehr,
        ensure_demo_reviewer,
        ensure_session_key,
    )
    from cds.review.accounts import ReviewerAccounts

    current = settings()
    click.echo(str(ensure_demo_ehr(current.instance_path)))
    ensure_demo_api_client(current.instance_path)
    ensure_session_key(current.instance_path)
    with database(current.database_url) as (write, read):
        ensure_demo_reviewer(current.instance_path, ReviewerAccounts(write, read))


@demo.command("request")
@click.argument("bundle", type=click.Path(exists=True, dir_okay=False, path_type=Path))
@click.option("--service", "service_id", help="Prefetch the keys this service declares.")
@click.option("--shift-to-today", is_flag=True, help="Move the record so its last visit is today.")
def demo_request(bundle: Path, service_id: str | None, shift_to_today: bool) -> None:
    """Print a patient-view request built from a Synthea patient BUNDLE (.json or .json.gz)."""
    from cds.demo import patient_view_request
    from cds.services import default_registry

    keys = None
    if service_id is not None:
        service = default_registry().get(service_id)
        if service is None:
            raise click.UsageError(f"no service {service_id!r}")
        keys = list(service.prefetch)
    request = patient_view_request(bundle, keys=keys, shift_to_today=shift_to_today)
    click.echo(json.dumps(request, indent=2))


@main.group()
def token() -> None:
    """CDS Hooks JWTs."""


@token.command("mint")
@click.argument("audience")
@click.option("--lifetime", default=300, show_default=True, help="Seconds until exp.")
@click.option("--key", "key_path", type=click.Path(path_type=Path), help="Private key (PEM).")
@click.option("--iss", help="Issuer (default: the demo EHR).")
@click.option("--kid", help="Key id (default: the demo EHR's).")
@click.option("--alg", default="ES384", show_default=True)
def token_mint(
    audience: str,
    lifetime: int,
    key_path: Path | None,
    iss: str | None,
    kid: str | None,
    alg: str,
) -> None:
    """Mint a JWT for AUDIENCE, the full URL of the endpoint to call.

    Without --key it signs as the demo EHR that `make serve` trusts.
    """
    from cds.demo import ensure_demo_ehr, mint_token

    if key_path is None:
        instance = settings().instance_path
        ensure_demo_ehr(instance)
        ehr = json.loads((instance / "demo-ehr" / "ehr.json").read_text())
        key_path = instance / "demo-ehr" / "private-key.pem"
        iss, kid = iss or ehr["iss"], kid or ehr["kid"]
    if not iss or not kid:
        raise click.UsageError("--iss and --kid are required with --key")
    click.echo(mint_token(audience, key_path.read_bytes(), iss, kid, lifetime, algorithm=alg))


main.add_command(nlp)
main.add_command(imaging)
main.add_command(reviewers_commands.reviewers)
main.add_command(api_commands.api)
demo.add_command(replay_commands.replay)
main.add_command(population)
population.add_command(phenotypes)

if __name__ == "__main__":
    main()
