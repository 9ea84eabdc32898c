"""``similar-patients`` (patient-view): the patient's phenotype, only when it adds information.

The phenotype model (``models/phenotypes``, loaded through the registry) places the
patient's record of today in the phenotype of its nearest centroid. A card is shown only
when, for an outcome of the risk models that applies to the patient, the phenotype's rate
lies (with its 95 % interval) above the population's, a lower-risk phenotype exists, and
the two differ in modifiable factors (the rule: ``models.phenotypes.model``). It shows the
phenotype, its outcome rates with intervals, the modifiable differences beside the
patient's own values, worded as descriptive, non-causal evidence, and links to the
phenotype report (``/models/patient-phenotypes/``). Otherwise: no card.
"""

from __future__ import annotations

import logging
import math
from typing import TYPE_CHECKING

from cds.cards import Card, Source
from cds.model_pages import card_links
from cds.results import CardResult, Code, Input
from cds.services.registry import CdsService, HookCall, ServiceResult
from cds.services.risk_common import prefetch, service_result, usage_requirements
from models import registry
from models.risk.catalog import PREFETCH_KEYS, RISK_OUTCOME_SYSTEM
from models.risk.features.evaluate import FeaturesUnavailable

if TYPE_CHECKING:
    from models.phenotypes.model import OutcomeContrast, PhenotypeModel, SimilarPatients

log = logging.getLogger("cds.services.similar_patients")
MODEL_ID = "patient-phenotypes"
REPORT_LABEL = "Phenotype report: how patients were grouped, outcome rates, limits"
NOT_CAUSAL = (
    "_Descriptive, not causal: these are outcome rates observed in groups of patients "
    "with similar records (synthetic Synthea data). They do not show that changing any "
    "factor would change this patient's risk; use them as context, not as a prediction._"
)


def _pct(value: float) -> str:
    return f"{100 * value:.0f} %" if value >= 0.1 else f"{100 * value:.1f} %"


def _rate(r: dict) -> str:
    low, high = r["ci95"]
    return f"{_pct(r['rate'])} (95 % CI {_pct(low)}-{_pct(high)})"


def _years(years: float) -> str:
    return "1 year" if years == 1 else f"{years:g} years"


def _number(value: float, binary: bool) -> str:
    if math.isnan(value):
        return "not recorded"
    if binary:
        return "yes" if value >= 0.5 else "no"
    return f"{value:.3g}"


def _mean(value: float, binary: bool) -> str:
    return f"{100 * value:.0f} % of patients" if binary else f"{value:.3g}"


def _differences(model: PhenotypeModel, found: SimilarPatients, c: OutcomeContrast) -> str:
    own = found.assignment.vector.as_dict()
    lines = []
    for d in c.differences:
        unit = next(f.unit for f in model.features.features if f.name == d["feature"])
        unit_text = f" {unit}" if unit and not d["binary"] and unit != "a" else ""
        lines.append(
            f"- **{d['label']}**: {_mean(d['this'], d['binary'])}{unit_text} in this phenotype "
            f"vs {_mean(d['other'], d['binary'])}{unit_text} in phenotype "
            f"{c.lower_phenotype + 1}; this patient: "
            f"{_number(own[d['feature']], d['binary'])}{unit_text}"
        )
    return "\n".join(lines)


def _detail(model: PhenotypeModel, found: SimilarPatients) -> str:
    clusters = model.descriptions["clusters"]
    parts = [
        f"This patient's record is most like **{found.name}** ({found.size} patients of the "
        "phenotype cohort)."
    ]
    for c in found.contrasts:
        parts.append(
            f"**{c.label[0].upper()}{c.label[1:]} within {_years(c.horizon_years)}**: "
            f"{_rate(c.mine)} of patients in this phenotype, against {_pct(c.population['rate'])}"
            f" of all patients and {_rate(c.lower)} in the lower-risk phenotype "
            f"{c.lower_phenotype + 1}."
        )
    shown: set[int] = set()
    for c in found.contrasts:
        if c.lower_phenotype in shown:
            continue
        shown.add(c.lower_phenotype)
        mine = clusters[str(found.assignment.phenotype)]
        parts.append(
            f"**{model.phenotype_name(c.lower_phenotype)}** differs from this phenotype "
            f"(median age {mine['age']['median']:g}) in these modifiable factors (phenotype "
            "means; age differs too, cannot be changed and accounts for part of the gap):\n"
            + _differences(model, found, c)
        )
    parts.append(NOT_CAUSAL)
    return "\n\n".join(parts)


def _card(call: HookCall, model: PhenotypeModel, found: SimilarPatients) -> tuple[Card, CardResult]:
    first = found.contrasts[0]
    outcomes = " and ".join(c.outcome for c in found.contrasts)
    summary = (
        f"Similar patients (phenotype {found.assignment.phenotype + 1}) had higher rates "
        f"of {outcomes}"
    )
    card = Card(
        summary=summary[:139],
        detail=_detail(model, found),
        indicator="info",
        source=Source(label=f"Wardround patient phenotypes {model.identity.version}"),
        links=card_links(call.settings, MODEL_ID, REPORT_LABEL),
    )
    vector = found.assignment.vector
    inputs = tuple(
        Input(name=e.name, value=v, unit=e.unit, reference=e.reference)
        for e, v in zip(vector.evidence, vector.values, strict=True)
        if e is not None and not math.isnan(v)
    )
    result = CardResult(
        kind="risk-assessment",
        code=Code(system=RISK_OUTCOME_SYSTEM, code=first.outcome, display=first.label),
        model=MODEL_ID,
        probability=first.mine["rate"],
        qualitative=found.name,
        horizon_years=first.horizon_years,
        inputs=inputs,
        basis=tuple(dict.fromkeys(i.reference for i in inputs if i.reference)),
        text=summary,
        facts={
            "phenotype": found.assignment.phenotype + 1,
            "distance": round(found.assignment.distance, 4),
            "as_of": vector.as_of.isoformat(),
            "contrasts": [
                {
                    "outcome": c.outcome,
                    "rate": c.mine["rate"],
                    "ci95": c.mine["ci95"],
                    "population_rate": c.population["rate"],
                    "lower_phenotype": c.lower_phenotype + 1,
                    "lower_rate": c.lower["rate"],
                    "lower_ci95": c.lower["ci95"],
                    "differences": [d["feature"] for d in c.differences],
                }
                for c in found.contrasts
            ],
        },
    )
    return card, result


def assess(call: HookCall) -> ServiceResult:
    model: PhenotypeModel = registry.get(MODEL_ID)
    if call.patient.deceased:
        return service_result([], [model.identity])
    try:
        found = model.similar(call.patient)
    except FeaturesUnavailable as exc:
        log.info("phenotype not assigned", extra={"model": MODEL_ID, "reason": str(exc)})
        found = None
    pairs = [_card(call, model, found)] if found is not None else []
    return service_result(pairs, [model.identity])


SERVICE = CdsService(
    id="similar-patients",
    hook="patient-view",
    title="Similar patients (phenotypes)",
    description=(
        "The patient's phenotype (a group of patients with similar records) when its "
        "outcome rates are higher than the population's and a lower-risk phenotype differs "
        "in modifiable factors: descriptive, non-causal evidence, with a link to the report."
    ),
    handler=assess,
    prefetch=prefetch(PREFETCH_KEYS),
    usage_requirements=usage_requirements(
        PREFETCH_KEYS, "Phenotypes fitted on synthetic data: see the card's report link."
    ),
)
