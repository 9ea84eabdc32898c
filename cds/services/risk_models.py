"""``risk-models`` (patient-view): the learned risk models, as cards only above their threshold.

For each model of :data:`MODEL_IDS` (``models/risk``, loaded through the model registry):
patients outside its scope (age range, the predicted condition already recorded, deceased)
are not scored; a probability below the model's action threshold (its artifact default,
or ``WARDROUND_RISK_THRESHOLDS``) gives no card. A card shows the calibrated probability
and its band (indicator: info for "elevated", warning for "high"), the patient's top
factors with direction, values and dates in clinical words, the advice and its source,
the held-out performance, and a link to the model card. Every model that ran is named
(id, version, artifact hash) on the audit row; each card's result records the
probability, the inputs and the factors.
"""

from __future__ import annotations

import logging
import math
from typing import TYPE_CHECKING

from cds.cards import Card, Source
from cds.config import Settings
from cds.model_pages import MODEL_CARD_LABEL, card_links
from cds.results import CardResult, Code, Factor
from cds.services.registry import CdsService, HookCall, ServiceResult
from cds.services.risk_common import (
    basis,
    prefetch,
    result_inputs,
    service_result,
    threshold,
    usage_requirements,
)
from models import registry
from models.risk.catalog import PREFETCH_KEYS, RISK_OUTCOME_SYSTEM
from models.risk.evidence import Evidence
from models.risk.features.evaluate import FeaturesUnavailable

if TYPE_CHECKING:  # the models (xgboost) are imported when the registry first loads one
    from models.risk.learned import LearnedRiskModel, RiskPrediction

log = logging.getLogger("cds.services.risk_models")
MODEL_IDS = ("cvd-event-3y", "acute-care-1y")
SHOWN_FACTORS = 5
INDICATOR = {"elevated": "info", "high": "warning"}


def _percent(p: float) -> str:
    return f"{100 * p:.0f} %" if p >= 0.1 else f"{100 * p:.1f} %"


def _years(years: float) -> str:
    return "1 year" if years == 1 else f"{years:g} years"


def _factor_line(
    factor_label: str, contribution: float, item: Evidence | None, value: float
) -> str:
    arrow, effect = ("↑", "raises") if contribution > 0 else ("↓", "lowers")
    if item is not None:
        shown = item.describe().split(": ", 1)[1]
    elif math.isnan(value):
        shown = "not recorded"
    else:
        shown = "none" if value == 0 else f"{value:g}"
    return (
        f"- {arrow} **{factor_label}**: {shown} — {effect} the risk ({contribution:+.2f} log-odds)"
    )


def _detail(model: LearnedRiskModel, prediction: RiskPrediction) -> str:
    factors = prediction.factors[:SHOWN_FACTORS]
    lines = [
        f"Predicted probability of {model.outcome.label} within "
        f"{_years(model.outcome.horizon_years)}: **{_percent(prediction.probability)}** "
        f"(action threshold {_percent(prediction.threshold)}; patients like those the model "
        f"was trained on: {_percent(model.base_rate)}).",
        "**What drives it for this patient** (largest first):",
        "\n".join(_factor_line(f.label, f.contribution, f.evidence, f.value) for f in factors),
        f"**Consider**: {model.advice} _({model.advice_source})_",
    ]
    metrics = model.metrics
    ci = metrics.get("ci95", {}).get("auroc")
    if metrics.get("auroc") is not None and ci:
        lines.append(
            f"_Model {model.id} {model.identity.version}: AUROC {metrics['auroc']:.2f} "
            f"(95 % CI {ci[0]:.2f}-{ci[1]:.2f}) on {metrics['test_patients']} held-out "
            "synthetic (Synthea) patients; not validated on real patients._"
        )
    return "\n\n".join(lines)


def _card(
    settings: Settings | None, model: LearnedRiskModel, prediction: RiskPrediction
) -> tuple[Card, CardResult]:
    band = prediction.band or "elevated"
    summary = f"{model.title}: {_percent(prediction.probability)} ({band} risk)"
    card = Card(
        summary=summary[:139],
        detail=_detail(model, prediction),
        indicator=INDICATOR[band],  # type: ignore[arg-type]
        source=Source(label=f"Wardround risk model {model.id} {model.identity.version}"),
        links=card_links(settings, model.id, MODEL_CARD_LABEL),
    )
    evidence = [f.evidence for f in prediction.factors if f.evidence is not None]
    result = CardResult(
        kind="risk-assessment",
        code=Code(system=RISK_OUTCOME_SYSTEM, code=model.outcome.code, display=model.title),
        model=model.id,
        probability=prediction.probability,
        qualitative=band,
        horizon_years=model.outcome.horizon_years,
        inputs=result_inputs(evidence),
        basis=basis(evidence),
        factors=tuple(
            Factor(
                name=f.label,
                contribution=round(f.contribution, 4),
                value=None if math.isnan(f.value) else f.value,
            )
            for f in prediction.factors
        ),
        text=f"{model.title}: {_percent(prediction.probability)}",
        facts={
            "threshold": prediction.threshold,
            "high_threshold": prediction.high_threshold,
            "baseline_logit": round(prediction.baseline_logit, 4),
            "as_of": prediction.vector.as_of.isoformat(),
        },
    )
    return card, result


def assess(call: HookCall) -> ServiceResult:
    from models.risk.learned import NotEligible

    pairs: list[tuple[Card, CardResult]] = []
    models = []
    for model_id in MODEL_IDS:
        model: LearnedRiskModel = registry.get(model_id)
        models.append(model.identity)
        try:
            prediction = model.predict(
                call.patient, threshold(call.settings, model_id, model.threshold)
            )
        except NotEligible:
            continue
        except FeaturesUnavailable as exc:
            log.info("risk model not run", extra={"model": model_id, "reason": str(exc)})
            continue
        if prediction.band is not None:
            pairs.append(_card(call.settings, model, prediction))
    return service_result(pairs, models)


SERVICE = CdsService(
    id="risk-models",
    hook="patient-view",
    title="Learned risk models (cardiovascular event, acute care use)",
    description=(
        "Calibrated xgboost risk of a first cardiovascular event within 3 years and of an "
        "emergency visit or admission within 1 year, with the factors behind each "
        "prediction: a card only when the risk reaches the model's threshold."
    ),
    handler=assess,
    prefetch=prefetch(PREFETCH_KEYS),
    usage_requirements=usage_requirements(
        PREFETCH_KEYS, "Trained on synthetic data: see each card's model card link."
    ),
)
