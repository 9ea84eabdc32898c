"""``cds api``: FHIR API clients and their bearer tokens (see cds/api_clients.py)."""

from __future__ import annotations

import json
from pathlib import Path

import click

from cds.access import ROLES
from cds.commands._settings import settings


@click.group()
def api() -> None:
    """FHIR API (/fhir) clients for sites without an authorization server."""


@api.command("client-add")
@click.argument("name")
@click.option(
    "--keys",
    "key_folder",
    type=click.Path(file_okay=False, path_type=Path),
    required=True,
    help="Folder for the client's private key (give it to the client, keep it secret).",
)
def client_add(name: str, key_folder: Path) -> None:
    """Create client NAME's key pair and trust it in the API issuers file."""
    from cds.api_clients import add_client

    issuers = settings().api_issuers_file
    if issuers is None:
        raise click.ClickException("set WARDROUND_API_ISSUERS")
    try:
        client = add_client(name, issuers, key_folder)
    except ValueError as exc:
        raise click.ClickException(str(exc)) from None
    click.echo(f"iss={client.iss} kid={client.kid} key={client.private_key} (issuers: {issuers})")


@api.command("token")
@click.option("--scope", "scopes", multiple=True, help="e.g. system/AuditEvent.read (repeatable)")
@click.option("--role", "roles", multiple=True, type=click.Choice(ROLES), help="(repeatable)")
@click.option("--audience", help="FHIR base URL (default: WARDROUND_PUBLIC_BASE_URL + /fhir)")
@click.option("--lifetime", default=300, show_default=True, help="Seconds until exp.")
@click.option("--key", "key_path", type=click.Path(path_type=Path), help="Private key (PEM).")
@click.option("--name", help="Client name (with --key).")
def token(
    scopes: tuple[str, ...],
    roles: tuple[str, ...],
    audience: str | None,
    lifetime: int,
    key_path: Path | None,
    name: str | None,
) -> None:
    """Mint a FHIR API bearer token (the demo client's unless --key and --name)."""
    from cds.api_clients import ISSUER_PREFIX, mint_api_token
    from cds.demo import ensure_demo_api_client

    current = settings()
    if audience is None:
        if not current.public_base_url:
            raise click.UsageError("give --audience or set WARDROUND_PUBLIC_BASE_URL")
        audience = current.public_base_url + "/fhir"
    if key_path is None:
        info = json.loads(ensure_demo_api_client(current.instance_path).read_text())
        name = info["name"]
        key_path = current.instance_path / "demo-api" / f"{name}-private-key.pem"
    if not name:
        raise click.UsageError("--name is required with --key")
    if not scopes and not roles:
        raise click.UsageError("give at least one --scope or --role")
    click.echo(
        mint_api_token(
            audience,
            key_path.read_bytes(),
            ISSUER_PREFIX + name,
            f"{name}-es384-1",
            name,
            scopes=scopes,
            roles=roles,
            lifetime_s=lifetime,
        )
    )
