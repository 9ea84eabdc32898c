"""What each cluster is, in clinical terms: profiles, over-represented conditions and
medications, outcome rates with Wilson confidence intervals, and modifiable differences.

Profiles are computed on the baseline's raw feature values (before imputation: a lab mean
is over the patients who had it measured, with that count reported). Outcome rates are
counted on the landmark samples (``cohort``), each in the phenotype of its nearest
centroid. A patient gives several samples, which are not independent: the 95 % Wilson
interval is computed on the effective sample size ``n / DE``, with Kish's design effect
``DE = 1 + (m - 1) ICC`` (``m`` the size-weighted mean number of samples per patient in the
group, ICC the outcome's one-way ANOVA intra-patient correlation over all samples).
Everything here describes the cohort; nothing in it is causal.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np

from models.phenotypes.features import BINARY, GROUPS, MODIFIABLE, labels

Z95 = 1.959963984540054
#: Over-represented: prevalence at least this many times the rest's, and this much higher.
OVER_RATIO = 1.5
OVER_DIFFERENCE = 0.10
#: A modifiable factor "differs" between two phenotypes at this standardised difference.
DIFFERENT_SMD = 0.5


def wilson(events: float, n: float) -> tuple[float, float]:
    """The 95 % Wilson score interval of ``events / n`` ((0, 1) when n = 0); ``n`` may be an
    effective sample size (then ``events`` is scaled with it)."""
    if n <= 0:
        return 0.0, 1.0
    p = events / n
    centre = (p + Z95**2 / (2 * n)) / (1 + Z95**2 / n)
    half = Z95 * math.sqrt(p * (1 - p) / n + Z95**2 / (4 * n * n)) / (1 + Z95**2 / n)
    return max(0.0, centre - half), min(1.0, centre + half)


def intra_patient_correlation(outcomes: Sequence[int | None], patients: Sequence[str]) -> float:
    """One-way ANOVA ICC of a binary outcome with patients as groups (0 when undefined)."""
    groups: dict[str, list[int]] = {}
    for value, patient in zip(outcomes, patients, strict=True):
        if value is not None:
            groups.setdefault(patient, []).append(value)
    n, k = sum(len(g) for g in groups.values()), len(groups)
    if k < 2 or n <= k:
        return 0.0
    mean = sum(sum(g) for g in groups.values()) / n
    between = sum(len(g) * (sum(g) / len(g) - mean) ** 2 for g in groups.values()) / (k - 1)
    within = sum(sum((v - sum(g) / len(g)) ** 2 for v in g) for g in groups.values()) / (n - k)
    m0 = (n - sum(len(g) ** 2 for g in groups.values()) / n) / (k - 1)
    denominator = between + (m0 - 1) * within
    return max(0.0, (between - within) / denominator) if denominator > 0 else 0.0


def rate(
    outcomes: Sequence[int | None], patients: Sequence[str] | None = None, icc: float = 0.0
) -> dict[str, Any]:
    """Events, samples, patients, the rate and its 95 % Wilson interval (design-adjusted)."""
    patients = patients if patients is not None else [str(i) for i in range(len(outcomes))]
    known = [(v, p) for v, p in zip(outcomes, patients, strict=True) if v is not None]
    events, n = int(sum(v for v, _ in known)), len(known)
    per_patient: dict[str, int] = {}
    for _, p in known:
        per_patient[p] = per_patient.get(p, 0) + 1
    m = sum(c * c for c in per_patient.values()) / n if n else 1.0
    design_effect = 1 + (m - 1) * icc
    n_eff = n / design_effect if n else 0.0
    low, high = wilson(events / n * n_eff if n else 0.0, n_eff)
    return {
        "events": events,
        "n": n,
        "patients": len(per_patient),
        "rate": round(events / n, 4) if n else None,
        "ci95": [round(low, 4), round(high, 4)],
        "design_effect": round(design_effect, 3),
    }


def _column_stats(values: np.ndarray) -> dict[str, Any]:
    known = values[~np.isnan(values)]
    if not len(known):
        return {"mean": None, "sd": None, "n": 0}
    return {
        "mean": round(float(known.mean()), 3),
        "sd": round(float(known.std()), 3),
        "n": len(known),
    }


def profiles(
    raw: np.ndarray, names: Sequence[str], cluster_labels: np.ndarray
) -> dict[str, dict[str, dict[str, Any]]]:
    """cluster → feature → mean / sd / n of the raw values (binary means are prevalences)."""
    out: dict[str, dict[str, dict[str, Any]]] = {}
    for c in sorted(set(cluster_labels.tolist())):
        rows = raw[cluster_labels == c]
        out[str(c)] = {n: _column_stats(rows[:, j]) for j, n in enumerate(names)}
    return out


def over_represented(
    raw: np.ndarray, names: Sequence[str], cluster_labels: np.ndarray, cluster: int
) -> list[dict[str, Any]]:
    """Conditions and medications more common in ``cluster`` than in everyone else."""
    inside, outside = raw[cluster_labels == cluster], raw[cluster_labels != cluster]
    found = []
    for j, name in enumerate(names):
        if GROUPS[name] not in ("condition", "medication"):
            continue
        p_in = float(np.nanmean(inside[:, j])) if len(inside) else 0.0
        p_out = float(np.nanmean(outside[:, j])) if len(outside) else 0.0
        if p_in - p_out >= OVER_DIFFERENCE and p_in >= OVER_RATIO * p_out:
            found.append(
                {
                    "feature": name,
                    "label": labels()[name],
                    "kind": GROUPS[name],
                    "prevalence": round(p_in, 3),
                    "rest": round(p_out, 3),
                    "ratio": round(p_in / p_out, 2) if p_out else None,
                }
            )
    return sorted(found, key=lambda f: -(f["prevalence"] - f["rest"]))


def modifiable_differences(
    profile: Mapping[str, Mapping[str, Any]],
    other: Mapping[str, Mapping[str, Any]],
    pooled_sd: Mapping[str, float],
) -> list[dict[str, Any]]:
    """Modifiable factors whose cluster means differ by >= DIFFERENT_SMD pooled SDs."""
    found = []
    for name, stats in profile.items():
        if GROUPS[name] not in MODIFIABLE:
            continue
        mine, theirs, sd = stats["mean"], other[name]["mean"], pooled_sd.get(name) or 0.0
        if mine is None or theirs is None or sd <= 0:
            continue
        smd = (mine - theirs) / sd
        if abs(smd) >= DIFFERENT_SMD:
            found.append(
                {
                    "feature": name,
                    "label": labels()[name],
                    "kind": GROUPS[name],
                    "binary": name in BINARY,
                    "this": mine,
                    "other": theirs,
                    "smd": round(smd, 2),
                }
            )
    return sorted(found, key=lambda f: -abs(f["smd"]))


def pooled_sds(raw: np.ndarray, names: Sequence[str]) -> dict[str, float]:
    return {
        n: float(np.nanstd(raw[:, j])) if (~np.isnan(raw[:, j])).any() else 0.0
        for j, n in enumerate(names)
    }


@dataclass(frozen=True)
class SampleOutcomes:
    """The landmark samples' phenotypes, patients and outcomes (outcome id → values)."""

    phenotypes: np.ndarray
    patients: Sequence[str]
    outcomes: Mapping[str, Sequence[int | None]]


def outcome_rates(samples: SampleOutcomes) -> tuple[dict[str, Any], dict[int, dict[str, Any]]]:
    """The population's rate and each phenotype's rate, per outcome."""
    population, by_cluster = {}, {}
    phenotypes = sorted(int(v) for v in set(samples.phenotypes.tolist()))
    for outcome, values in samples.outcomes.items():
        icc = intra_patient_correlation(values, samples.patients)
        population[outcome] = rate(values, samples.patients, icc) | {"icc": round(icc, 4)}
        for c in phenotypes:
            members = samples.phenotypes == c
            by_cluster.setdefault(c, {})[outcome] = rate(
                [v for v, m in zip(values, members, strict=True) if m],
                [p for p, m in zip(samples.patients, members, strict=True) if m],
                icc,
            )
    return population, by_cluster


def describe_clusters(
    raw: np.ndarray,
    names: Sequence[str],
    cluster_labels: np.ndarray,
    samples: SampleOutcomes | None,
    ages: Sequence[int],
) -> dict[str, Any]:
    """The clinical description stored in the artifact and shown in the report."""
    by_cluster = profiles(raw, names, cluster_labels)
    sds = pooled_sds(raw, names)
    population, rates = outcome_rates(samples) if samples is not None else ({}, {})
    clusters = {}
    age_array = np.array(ages)
    for c in sorted(int(v) for v in set(cluster_labels.tolist())):
        members = cluster_labels == c
        clusters[str(c)] = {
            "size": int(members.sum()),
            "share": round(float(members.mean()), 4),
            "age": {
                "median": float(np.median(age_array[members])),
                "iqr": [float(v) for v in np.percentile(age_array[members], [25, 75])],
            },
            "over_represented": over_represented(raw, names, cluster_labels, c),
            "outcomes": rates.get(c, {}),
        }
    return {
        "population": {"size": len(cluster_labels), "outcomes": population},
        "clusters": clusters,
        "profiles": by_cluster,
        "pooled_sd": {n: round(v, 4) for n, v in sds.items()},
    }
