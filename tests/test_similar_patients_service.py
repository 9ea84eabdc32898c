"""``similar-patients`` end to end: real shared Synthea patients through the real app.

A patient whose phenotype's outcome rate lies above the population's (with a lower-risk
phenotype that differs in modifiable factors) gets one card; a patient in a phenotype
without such a contrast gets none. Which phenotypes qualify is re-derived here from the
shipped artifact's descriptions, independently of the model's own rule code.
"""

from __future__ import annotations

import copy
from functools import cache
from pathlib import Path
from typing import Any

import pytest

from cds.audit.tables import Invocation
from models import registry
from tests.conftest import synthea_bundles
from tests.test_audit_log import rows_of, verify
from tests.test_risk_services import LEARNED_KEYS, _cards, _context, _request, _shifted, _stored

SERVICE, MODEL_ID = "similar-patients", "patient-phenotypes"
MODIFIABLE = {"medication", "lab", "vital", "smoking", "utilisation"}


def _model():  # type: ignore[no-untyped-def]
    return registry.get(MODEL_ID)


def _qualifying(descriptions: dict[str, Any]) -> dict[int, set[str]]:
    """phenotype → outcomes with a higher rate and a lower-risk, modifiably different one."""
    population = descriptions["population"]["outcomes"]
    clusters, profiles, sds = (
        descriptions["clusters"],
        descriptions["profiles"],
        descriptions["pooled_sd"],
    )
    groups = _model().descriptions["labels"] and {name: kind for name, kind in _groups().items()}
    found: dict[int, set[str]] = {}
    for key, cluster in clusters.items():
        for outcome, mine in cluster["outcomes"].items():
            if mine["n"] < 10 or mine["ci95"][0] <= population[outcome]["rate"]:
                continue
            for other, theirs in clusters.items():
                rate = theirs["outcomes"][outcome]
                if other == key or rate["n"] < 10 or rate["rate"] >= population[outcome]["rate"]:
                    continue
                if rate["ci95"][1] >= mine["rate"]:
                    continue
                differs = [
                    f
                    for f, stats in profiles[key].items()
                    if groups[f] in MODIFIABLE
                    and stats["mean"] is not None
                    and profiles[other][f]["mean"] is not None
                    and sds[f] > 0
                    and abs(stats["mean"] - profiles[other][f]["mean"]) / sds[f] >= 0.5
                ]
                if differs:
                    found.setdefault(int(key), set()).add(outcome)
    return found


def _groups() -> dict[str, str]:
    from models.phenotypes.features import GROUPS

    return GROUPS


@cache
def _patient(with_card: bool) -> tuple[Path, str, int]:
    """The first living adult shared patient (moved to today) in a phenotype that does
    (or does not) qualify for every outcome that applies to them."""
    model = _model()
    qualifying = _qualifying(model.descriptions)
    assert qualifying, "the shipped artifact has a phenotype worth a card"
    for bundle in synthea_bundles():
        context = _context(_shifted(bundle))
        if context.deceased or context.age_years is None or not 40 <= context.age_years <= 75:
            continue
        phenotype = model.assign(context).phenotype
        applies = {o for o in model.outcomes if model._applies(context, o)}
        if with_card == bool(qualifying.get(phenotype, set()) & applies):
            return bundle, context.patient_id, phenotype
    pytest.skip(f"no shared patient {'with' if with_card else 'without'} a card")


def test_a_patient_in_a_higher_risk_phenotype_gets_the_card(hooks, database_url) -> None:  # type: ignore[no-untyped-def]
    bundle, patient_id, phenotype = _patient(True)
    model = _model()
    cards = _cards(hooks, SERVICE, _request(bundle, LEARNED_KEYS))
    (card,) = cards
    assert card["indicator"] == "info"
    assert f"phenotype {phenotype + 1}" in card["summary"]
    detail = card["detail"]
    cluster = model.descriptions["clusters"][str(phenotype)]
    assert cluster["name"] in detail
    population = model.descriptions["population"]["outcomes"]
    stated = [o for o in _qualifying(model.descriptions)[phenotype] if o in card["summary"]]
    assert stated
    for outcome in stated:
        low, high = cluster["outcomes"][outcome]["ci95"]
        assert f"95 % CI {100 * low:.0f} %-{100 * high:.0f} %" in detail or (
            f"95 % CI {100 * low:.1f} %-" in detail
        )
        rate = population[outcome]["rate"]
        assert (f"{100 * rate:.0f} %" if rate >= 0.1 else f"{100 * rate:.1f} %") in detail
    assert "modifiable factors" in detail and "this patient:" in detail
    assert "not causal" in detail and "Age" not in detail.split("modifiable factors")[1]
    assert card["links"] == [
        {
            "label": "Phenotype report: how patients were grouped, outcome rates, limits",
            "url": "http://localhost/models/patient-phenotypes/",
            "type": "absolute",
        }
    ]
    [invocation] = rows_of(database_url, Invocation)
    assert {"id": MODEL_ID, "version": model.identity.version, "hash": model.identity.sha256} in (
        invocation.model_versions
    )
    result = _stored(database_url)[card["uuid"]]
    assert result["model"] == MODEL_ID and result["facts"]["phenotype"] == phenotype + 1
    assert result["probability"] == cluster["outcomes"][result["code"]["code"]]["rate"]
    assert invocation.patient_id == patient_id
    assert verify(database_url).ok


def test_a_patient_in_a_phenotype_without_a_contrast_gets_no_card(hooks, database_url) -> None:  # type: ignore[no-untyped-def]
    bundle, _, _phenotype = _patient(False)
    assert _model().similar(_context(_shifted(bundle))) is None  # the model's rule agrees
    assert _cards(hooks, SERVICE, _request(bundle, LEARNED_KEYS)) == []
    [invocation] = rows_of(database_url, Invocation)
    assert [m["id"] for m in invocation.model_versions] == [MODEL_ID]


def test_no_modifiable_difference_means_no_card() -> None:
    """The same phenotype, with the lower-risk phenotypes made identical in every
    modifiable factor: the rule has nothing to say."""
    model = copy.copy(_model())
    key = min(_qualifying(model.descriptions))
    descriptions = copy.deepcopy(model.descriptions)
    for other in descriptions["profiles"]:
        for name, stats in descriptions["profiles"][other].items():
            if _groups()[name] in MODIFIABLE:
                stats["mean"] = descriptions["profiles"][str(key)][name]["mean"]
    assert _model().contrasts(key, list(model.outcomes))
    model.descriptions = descriptions
    assert model.contrasts(key, list(model.outcomes)) == []
