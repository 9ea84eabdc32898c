"""Development helpers: a demo EHR identity (key pair + trusted-issuers file) and sample requests.

The demo EHR's private key lives in ``instance/demo-ehr/`` (git-ignored); the server trusts
only its public JWK Set. Real deployments list their EHRs in their own trusted-issuers file.
"""

from __future__ import annotations

import json
import secrets
import time
import uuid
from collections.abc import Iterable
from datetime import date
from pathlib import Path
from typing import Any

import jwt
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec
from jwt.algorithms import ECAlgorithm

from fhir_adapters.synthea import load_bundle, prefetch_for, resources_by_type
from fhir_adapters.time_shift import days_between, shift_record
from models.draft_orders import dosage_instruction, dose_quantity, medication_request

SUMMARY_KEYS = ("patient", "conditions", "medications", "allergies")
DEMO_ISSUER = "https://demo-ehr.wardround.example"
DEMO_KID = "demo-ehr-es384-1"


def ensure_demo_ehr(instance: Path) -> Path:
    """Create the demo EHR key pair and trusted-issuers file once; return the issuers file."""
    folder = instance / "demo-ehr"
    folder.mkdir(parents=True, exist_ok=True)
    private_path = folder / "private-key.pem"
    if not private_path.exists():
        key = ec.generate_private_key(ec.SECP384R1())
        pem = key.private_bytes(
            serialization.Encoding.PEM,
            serialization.PrivateFormat.PKCS8,
            serialization.NoEncryption(),
        )
        private_path.touch(mode=0o600)
        private_path.write_bytes(pem)
    key = serialization.load_pem_private_key(private_path.read_bytes(), password=None)
    public_jwk = json.loads(ECAlgorithm.to_jwk(key.public_key()))  # type: ignore[arg-type]
    public_jwk.update({"kid": DEMO_KID, "alg": "ES384", "use": "sig"})
    (folder / "jwks.json").write_text(json.dumps({"keys": [public_jwk]}, indent=2) + "\n")
    (folder / "ehr.json").write_text(json.dumps({"iss": DEMO_ISSUER, "kid": DEMO_KID}) + "\n")
    issuers = instance / "trusted-issuers.json"
    if not issuers.exists():
        issuers.write_text(
            json.dumps(
                {"issuers": [{"iss": DEMO_ISSUER, "jwks_file": "demo-ehr/jwks.json"}]}, indent=2
            )
            + "\n"
        )
    return issuers


def mint_token(
    audience: str,
    private_key_pem: bytes,
    issuer: str,
    kid: str,
    lifetime_s: int = 300,
    subject: str | None = None,
    algorithm: str = "ES384",
) -> str:
    now = int(time.time())
    claims: dict[str, Any] = {
        "iss": issuer,
        "sub": subject or issuer,
        "aud": audience,
        "iat": now,
        "exp": now + lifetime_s,
        "jti": str(uuid.uuid4()),
    }
    return jwt.encode(
        claims, private_key_pem, algorithm=algorithm, headers={"kid": kid, "typ": "JWT"}
    )


def patient_view_request(
    bundle_path: Path,
    user_id: str = "Practitioner/example",
    keys: Iterable[str] | None = None,
    shift_to_today: bool = False,
) -> dict:
    """A ``patient-view`` request whose prefetch holds a Synthea patient's data.

    ``keys``: the prefetch keys to include (default: those of the patient-summary service).
    ``shift_to_today``: move every date of the record so that its last encounter is today
    (the shared records end in 2021: unshifted, risk scores rightly call their values stale).
    """
    resources = resources_by_type(load_bundle(bundle_path))
    if not resources.get("Patient"):
        raise ValueError(f"{bundle_path.name} holds no Patient (not a patient bundle)")
    if shift_to_today:
        starts = [e["period"]["start"][:10] for e in resources.get("Encounter", [])]
        if starts:
            last = date.fromisoformat(max(starts))
            resources = shift_record(resources, days_between(last, date.today()))
    patient = resources["Patient"][0]
    prefetch = prefetch_for(resources)
    wanted = tuple(keys) if keys is not None else SUMMARY_KEYS
    return {
        "hook": "patient-view",
        "hookInstance": str(uuid.uuid4()),
        "context": {"userId": user_id, "patientId": patient["id"]},
        "prefetch": {key: prefetch[key] for key in wanted},
    }


def draft_medication_request(
    patient_id: str,
    rxnorm: tuple[str, str],
    dose: tuple[float, str] | None = None,
    per_day: tuple[int, float, str] | None = None,
    order_id: str | None = None,
) -> dict[str, Any]:
    """A draft MedicationRequest as an EHR puts it in ``draftOrders``.

    ``rxnorm``: (code, display); ``dose``: (value, unit code, e.g. "TAB" or "mg");
    ``per_day``: (frequency, period, periodUnit), e.g. (1, 6, "h") for every 6 hours.
    """
    return medication_request(
        patient_id,
        rxnorm,
        order_id=order_id or str(uuid.uuid4()),
        instruction=dosage_instruction(
            per_day=per_day, dose=dose_quantity(*dose) if dose else None
        ),
    )


def order_request(
    bundle_path: Path,
    hook: str,
    drafts: list[dict[str, Any]],
    selections: list[str] | None = None,
    keys: Iterable[str] = ("patient", "medications", "allergies", "observations"),
) -> dict[str, Any]:
    """An ``order-select`` / ``order-sign`` request for a Synthea patient with ``drafts``."""
    base = patient_view_request(bundle_path, keys=keys)
    context = base["context"] | {
        "draftOrders": {
            "resourceType": "Bundle",
            "type": "collection",
            "entry": [{"resource": draft} for draft in drafts],
        }
    }
    if hook == "order-select":
        context["selections"] = selections or [f"MedicationRequest/{drafts[-1]['id']}"]
    return {**base, "hook": hook, "context": context}


# --------------------------------------------------------------------------- review + FHIR API
DEMO_API_CLIENT = "demo"
DEMO_REVIEWER = "demo"


def ensure_demo_api_client(instance: Path) -> Path:
    """A demo FHIR API client (key pair in instance/demo-api/, trusted in api-issuers.json)."""
    from cds.api_clients import add_client

    folder = instance / "demo-api"
    info = folder / "client.json"
    if not info.exists():
        client = add_client(DEMO_API_CLIENT, instance / "api-issuers.json", folder)
        info.write_text(json.dumps({"name": client.name, "iss": client.iss, "kid": client.kid}))
    return info


def ensure_session_key(instance: Path) -> Path:
    """A random session-signing key for the demo (``make serve`` exports it as
    WARDROUND_SECRET_KEY; production sets that variable itself)."""
    path = instance / "demo-session-key"
    if not path.exists():
        path.touch(mode=0o600)
        path.write_text(secrets.token_hex(32))
    return path


def ensure_demo_reviewer(instance: Path, accounts: Any) -> tuple[str, str]:
    """The demo reviewer (roles reviewer and auditor); its password in instance/, 0600."""
    from cds.review.accounts import AccountError

    path = instance / "demo-reviewer.txt"
    password = path.read_text().strip() if path.exists() else secrets.token_urlsafe(18)
    try:
        accounts.add(DEMO_REVIEWER, password, ["reviewer", "auditor"])
    except AccountError:
        if not path.exists():  # the account outlived its password file: set a new one
            accounts.set_password(DEMO_REVIEWER, password)
    if not path.exists():
        path.touch(mode=0o600)
        path.write_text(password + "\n")
    return DEMO_REVIEWER, password
