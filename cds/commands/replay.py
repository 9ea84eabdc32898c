"""``cds demo replay``: Synthea patients through a running server's hooks (demo data)."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import click

from cds.commands._settings import settings


def _default_folder() -> Path:
    from models.shared_data import shared_data

    return shared_data() / "synthea-r4"


@click.command("replay")
@click.argument("folder", required=False, type=click.Path(file_okay=False, path_type=Path))
@click.option("--url", help="Server base URL (default: WARDROUND_PUBLIC_BASE_URL).")
@click.option("--limit", type=int, help="Replay only the first N patients.")
def replay(folder: Path | None, url: str | None, limit: int | None) -> None:
    """Replay the Synthea patient bundles in FOLDER through the hooks of a running server,
    signing as the demo EHR (default folder: $WARDROUND_SHARED_DATA/synthea-r4)."""
    import requests

    from cds.demo import ensure_demo_ehr, mint_token
    from cds.replay import replay as run

    current = settings()
    base = (url or current.public_base_url or "").rstrip("/")
    if not base:
        raise click.UsageError("give --url or set WARDROUND_PUBLIC_BASE_URL")
    folder = folder or _default_folder()
    bundles = sorted(p for p in folder.glob("*.gz") if not p.name.startswith("hospital"))
    if not bundles:
        raise click.ClickException(f"no Synthea bundles in {folder}")
    instance = current.instance_path
    ensure_demo_ehr(instance)
    ehr = json.loads((instance / "demo-ehr" / "ehr.json").read_text())
    key = (instance / "demo-ehr" / "private-key.pem").read_bytes()
    session = requests.Session()

    def post(path: str, body: dict[str, Any]) -> tuple[int, Any]:
        token = mint_token(base + path, key, ehr["iss"], ehr["kid"])
        answer = session.post(
            base + path, json=body, headers={"Authorization": f"Bearer {token}"}, timeout=60
        )
        return answer.status_code, answer.json() if answer.content else {}

    stats = run(bundles[:limit] if limit else bundles, post)
    click.echo(
        f"{stats.patients} patients, {stats.calls} calls, {stats.cards} cards, "
        f"{stats.feedback} feedback entries; statuses {dict(sorted(stats.statuses.items()))}"
    )
