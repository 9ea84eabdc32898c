"""What the two risk services share: inputs as card text and as result data, thresholds,
the prefetch they declare and the result they return."""

from __future__ import annotations

from collections.abc import Iterable, Sequence

from cds.cards import Card
from cds.config import Settings
from cds.results import CardResult, Input
from cds.services.registry import ServiceResult
from fhir_adapters import PATIENT_CONTEXT_PREFETCH
from models.artifacts import ModelIdentity
from models.risk.evidence import Evidence, Missing


def prefetch(keys: Sequence[str]) -> dict[str, str]:
    return {key: PATIENT_CONTEXT_PREFETCH[key] for key in keys}


def usage_requirements(keys: Sequence[str], then: str) -> str:
    """Discovery's ``usageRequirements``: which prefetch to send (or to let us fetch)."""
    named = ", ".join(keys[:-1]) + f" and {keys[-1]}"
    return (
        f"Send the {named} prefetch, or fhirServer with fhirAuthorization so the service "
        f"fetches them. {then}"
    )


def service_result(
    pairs: Sequence[tuple[Card, CardResult]], models: Sequence[ModelIdentity]
) -> ServiceResult:
    """The cards in order, each with its result, and every model that ran."""
    return ServiceResult(
        cards=[card for card, _ in pairs],
        models=list(models),
        results={card.uuid: result for card, result in pairs},
    )


def threshold(settings: Settings | None, model_id: str, default: float) -> float:
    """The configured action threshold of ``model_id`` (WARDROUND_RISK_THRESHOLDS)."""
    if settings is None:
        return default
    return float(settings.risk_thresholds.get(model_id, default))


def result_inputs(items: Iterable[Evidence]) -> tuple[Input, ...]:
    """Evidence as the result record stores it (value, unit, date, FHIR reference)."""
    out = []
    for item in items:
        value = item.value if isinstance(item.value, str | int | float | bool) else None
        out.append(
            Input(
                name=item.name,
                value=value,
                unit=item.unit,
                date=item.date.isoformat() if item.date else None,
                reference=item.reference,
            )
        )
    return tuple(out)


def basis(items: Iterable[Evidence]) -> tuple[str, ...]:
    return tuple(dict.fromkeys(i.reference for i in items if i.reference))


def bullet_inputs(items: Sequence[Evidence]) -> str:
    return "\n".join(f"- {item.describe()}" for item in items)


def bullet_missing(items: Sequence[Missing]) -> str:
    return "\n".join(f"- **{item.name}**: {item.reason}" for item in items)
