"""The service registry: each CDS service is declared once, and discovery is generated from it."""

from __future__ import annotations

from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

from cds.cards import Action, Card
from cds.config import Settings
from cds.hook_request import HOOK_CONTEXTS, HookRequest
from cds.results import CardResult
from fhir_adapters import PatientContext
from models.artifacts import ModelIdentity


def model_json(model: ModelIdentity) -> dict[str, str]:
    """A model as the audit log records it: id, version and artifact hash (when it has one)."""
    entry = {"id": model.id, "version": model.version}
    if model.sha256:
        entry["hash"] = model.sha256
    return entry


@dataclass(frozen=True)
class HookCall:
    """What a service handler receives: the request, its typed hook context and the patient."""

    request: HookRequest
    context: Any
    #: The patient, built from prefetch and the FHIR server (what models consume).
    patient: PatientContext
    #: prefetch key → FHIR JSON as obtained (None: no data). Keys not obtained are absent.
    prefetch: Mapping[str, dict[str, Any] | None]
    #: The deployment's settings (look-back, viewer URL, …); None outside the app.
    settings: Settings | None = None


@dataclass(frozen=True)
class ServiceResult:
    cards: list[Card] = field(default_factory=list)
    system_actions: list[Action] = field(default_factory=list)
    #: Every model (or rule set) that ran, with its exact version and artifact hash.
    models: list[ModelIdentity] = field(default_factory=list)
    #: What each card asserts, as data (card uuid → result); stored with the card.
    results: Mapping[str, CardResult] = field(default_factory=dict)
    #: Inputs the service passed over, by prefetch key, one line each ("imaging: <study>:
    #: <instance>: <reason>", no patient data): audited with that key's prefetch record,
    #: beside what the adapters skipped.
    skipped: Mapping[str, Sequence[str]] = field(default_factory=dict)


class PrefetchInvalid(ValueError):
    """A prefetched resource is not what its key promised (wrong type, patient or FHIR)."""

    def __init__(self, key: str, message: str) -> None:
        super().__init__(message)
        self.key = key


Handler = Callable[[HookCall], ServiceResult]


@dataclass(frozen=True)
class CdsService:
    id: str
    hook: str
    title: str
    description: str
    handler: Handler
    prefetch: Mapping[str, str] = field(default_factory=dict)
    #: Prefetch keys the service cannot answer without (absent and not fetchable → 412).
    required_prefetch: frozenset[str] = frozenset({"patient"})
    #: Retrieve the imaging studies' DICOM instances (DICOMweb) into ``PatientContext.images``.
    with_images: bool = False
    usage_requirements: str | None = None

    def __post_init__(self) -> None:
        if self.hook not in HOOK_CONTEXTS:
            raise ValueError(f"service {self.id}: unsupported hook {self.hook}")
        if "patient" not in self.prefetch:
            raise ValueError(f"service {self.id}: every service declares the patient prefetch")
        if not self.required_prefetch <= set(self.prefetch):
            raise ValueError(f"service {self.id}: required prefetch keys must be declared")

    def discovery_entry(self) -> dict[str, Any]:
        entry: dict[str, Any] = {
            "hook": self.hook,
            "id": self.id,
            "title": self.title,
            "description": self.description,
        }
        if self.prefetch:
            entry["prefetch"] = dict(self.prefetch)
        if self.usage_requirements:
            entry["usageRequirements"] = self.usage_requirements
        return entry


class ServiceRegistry:
    def __init__(self, services: Iterable[CdsService]) -> None:
        self._services: dict[str, CdsService] = {}
        for service in services:
            if service.id in self._services:
                raise ValueError(f"duplicate service id {service.id}")
            self._services[service.id] = service

    def get(self, service_id: str) -> CdsService | None:
        return self._services.get(service_id)

    def discovery(self) -> dict[str, Any]:
        return {"services": [s.discovery_entry() for s in self._services.values()]}

    def __iter__(self):  # type: ignore[no-untyped-def]
        return iter(self._services.values())
