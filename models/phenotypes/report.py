"""The phenotype report: ``MODEL_CARD.md`` (served at ``/models/patient-phenotypes/``),
its figures in ``model_card/`` and the same page as standalone HTML (``report.html``).

Written from a :class:`~models.phenotypes.fit.PhenotypeFit` and its artifact by
``cds population phenotypes fit`` (``make phenotypes``). Figures: the 2-D projection
coloured by phenotype, the k-selection curves, the k-distance curve, the cluster profiles
and the outcome rates with their intervals. No patient identifier is written.
"""

from __future__ import annotations

import html
from pathlib import Path
from typing import Any

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt
import numpy as np
from markdown_it import MarkdownIt

from models.artifacts import Artifact
from models.phenotypes.clustering import MIN_SAMPLES
from models.phenotypes.cohort import OUTCOMES
from models.phenotypes.describe import DIFFERENT_SMD, OVER_DIFFERENCE, OVER_RATIO
from models.phenotypes.features import GROUPS, PHENOTYPE_FEATURES
from models.phenotypes.fit import PhenotypeFit
from models.phenotypes.model import MIN_PATIENTS, PhenotypeModel
from models.registry import CARD_FIGURES

REGENERATE = "make phenotypes"
CARD = Path(__file__).resolve().parent / "MODEL_CARD.md"
FIGURES = (
    "projection.png",
    "k-selection.png",
    "k-distance.png",
    "profiles.png",
    "outcome-rates.png",
)
COLOURS = plt.get_cmap("tab10")


def _pct(value: float | None) -> str:
    return "—" if value is None else f"{100 * value:.1f} %"


def _rate(r: dict[str, Any]) -> str:
    if not r or r.get("rate") is None:
        return "—"
    low, high = r["ci95"]
    return (
        f"{_pct(r['rate'])} ({_pct(low)}-{_pct(high)}; {r['events']}/{r['n']}, {r['patients']} pts)"
    )


# ----------------------------------------------------------------------------- figures
def _projection(fit: PhenotypeFit, path: Path) -> None:
    from sklearn.decomposition import PCA

    xy = PCA(n_components=2, random_state=fit.seed).fit_transform(fit.space)
    fig, ax = plt.subplots(figsize=(6.4, 4.8))
    for c in sorted(set(fit.kmeans.labels.tolist())):
        members = fit.kmeans.labels == c
        ax.scatter(
            xy[members, 0], xy[members, 1], s=14, color=COLOURS(c), label=f"Phenotype {c + 1}"
        )
    ax.set_xlabel("PC 1 of the preprocessed space")
    ax.set_ylabel("PC 2")
    ax.set_title(f"k-means phenotypes (k = {fit.kmeans.clusters}), baseline patients")
    ax.legend(fontsize=8)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


def _k_selection(fit: PhenotypeFit, path: Path) -> None:
    table = fit.k_choice.table
    ks = [r["k"] for r in table]
    fig, ax = plt.subplots(figsize=(6.4, 3.6))
    ax.plot(ks, [r["silhouette"] for r in table], "o-", label="silhouette")
    ax.errorbar(
        ks,
        [r["stability"] for r in table],
        yerr=[r["stability_sd"] for r in table],
        fmt="s-",
        capsize=3,
        label="bootstrap stability (mean ARI ± sd)",
    )
    ax.axvline(fit.k_choice.k, color="grey", linestyle=":", label=f"chosen k = {fit.k_choice.k}")
    ax.set_xlabel("k")
    ax.set_ylim(0, 1.05)
    ax.legend(fontsize=8)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


def _k_distance(fit: PhenotypeFit, path: Path) -> None:
    fig, ax = plt.subplots(figsize=(6.4, 3.6))
    ax.plot(fit.k_distance)
    ax.axhline(fit.dbscan.params["eps"], color="red", linestyle=":", label="eps (knee)")
    ax.set_xlabel("patients, sorted")
    ax.set_ylabel(f"distance to neighbour {MIN_SAMPLES}")
    ax.legend(fontsize=8)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


def _profiles(fit: PhenotypeFit, path: Path) -> None:
    names = PHENOTYPE_FEATURES.names
    z = fit.preprocessing.standardise(fit.raw) / np.array(fit.preprocessing.weights)
    clusters = sorted(set(fit.kmeans.labels.tolist()))
    means = np.array([z[fit.kmeans.labels == c].mean(axis=0) for c in clusters])
    fig, ax = plt.subplots(figsize=(7.2, 0.6 + 0.5 * len(clusters) + 2.4))
    image = ax.imshow(means, cmap="RdBu_r", vmin=-1.5, vmax=1.5, aspect="auto")
    ax.set_yticks(range(len(clusters)), [f"Phenotype {c + 1}" for c in clusters])
    ax.set_xticks(range(len(names)), names, rotation=90, fontsize=7)
    fig.colorbar(image, ax=ax, label="mean standardised value")
    ax.set_title("Cluster profiles (standardised, imputed)")
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


def _outcome_rates(fit: PhenotypeFit, path: Path) -> None:
    clusters = fit.descriptions["clusters"]
    population = fit.descriptions["population"]["outcomes"]
    fig, axes = plt.subplots(1, len(OUTCOMES), figsize=(3.4 * len(OUTCOMES), 3.6))
    for ax, spec in zip(np.atleast_1d(axes), OUTCOMES, strict=True):
        keys = sorted(clusters, key=int)
        rates = [clusters[k]["outcomes"][spec.id] for k in keys]
        y = [r["rate"] or 0 for r in rates]
        low = [max(0.0, v - r["ci95"][0]) for v, r in zip(y, rates, strict=True)]
        high = [max(0.0, r["ci95"][1] - v) for v, r in zip(y, rates, strict=True)]
        ax.bar(
            [int(k) + 1 for k in keys],
            y,
            yerr=[low, high],
            capsize=4,
            color=[COLOURS(int(k)) for k in keys],
        )
        ax.axhline(population[spec.id]["rate"], color="black", linestyle="--", label="all")
        ax.set_title(spec.id, fontsize=9)
        ax.set_xlabel("phenotype")
        ax.set_ylabel("rate (95 % CI)")
        ax.legend(fontsize=8)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


def write_figures(fit: PhenotypeFit, folder: Path) -> list[Path]:
    folder.mkdir(parents=True, exist_ok=True)
    writers = (_projection, _k_selection, _k_distance, _profiles, _outcome_rates)
    paths = []
    for name, write in zip(FIGURES, writers, strict=True):
        write(fit, folder / name)
        paths.append(folder / name)
    return paths


# ----------------------------------------------------------------------------- the card
def _method_rows(fit: PhenotypeFit) -> list[str]:
    rows = [
        "| method | clusters | noise | silhouette | stability (mean ARI ± sd) | parameters |",
        "| --- | --- | --- | --- | --- | --- |",
    ]
    for m in fit.methods:
        params = ", ".join(f"{k} {v}" for k, v in m.params.items() if k not in ("rule", "seed"))
        sil = "—" if m.silhouette is None else f"{m.silhouette:.3f}"
        rows.append(
            f"| {m.method} | {m.clusters} | {m.noise} ({m.noise / len(m.labels):.0%}) | {sil} "
            f"| {m.stability.mean:.3f} ± {m.stability.sd:.3f} | {params} |"
        )
    return rows


def _phenotype_sections(fit: PhenotypeFit, model: PhenotypeModel) -> list[str]:
    out = []
    clusters = fit.descriptions["clusters"]
    for key in sorted(clusters, key=int):
        c = clusters[key]
        out.append(f"### {c['name']}")
        out.append(
            f"{c['size']} baseline patients ({c['share']:.0%}); median age {c['age']['median']:g} "
            f"(IQR {c['age']['iqr'][0]:g}-{c['age']['iqr'][1]:g})."
        )
        if c["over_represented"]:
            out.append("Over-represented (vs. every other patient):")
            out += [
                f"- {f['label']}: {f['prevalence']:.0%} vs {f['rest']:.0%}"
                for f in c["over_represented"]
            ]
        else:
            out.append("No condition or medication is over-represented.")
        out.append("Outcome rates after the landmark dates assigned to this phenotype:")
        out += [f"- {o}: {_rate(r)}" for o, r in c["outcomes"].items()]
        contrasts = model.contrasts(int(key), list(model.outcomes))
        if contrasts:
            out.append(
                "**The `similar-patients` card is shown for its patients** (when the "
                "outcome applies to them):"
            )
            for contrast in contrasts:
                diffs = ", ".join(
                    f"{d['label']} {d['this']:.3g} vs {d['other']:.3g}"
                    for d in contrast.differences[:5]
                )
                out.append(
                    f"- {contrast.outcome}: lower-risk Phenotype {contrast.lower_phenotype + 1} "
                    f"({_rate(contrast.lower)}); differs in {diffs}"
                )
        out.append("")
    return out


def card_markdown(fit: PhenotypeFit, artifact: Artifact, model: PhenotypeModel) -> str:
    metrics = fit.metrics()
    pre = metrics["preprocessing"]
    cohort = metrics["cohort"]
    samples = fit.descriptions["samples"]
    population = fit.descriptions["population"]["outcomes"]
    lines = [
        "# Patient phenotypes (`patient-phenotypes`)",
        "",
        f"Version {artifact.version}, artifact `{artifact.sha256[:16]}…`. Regenerate: "
        f"`{REGENERATE}` (`cds population phenotypes fit`). **Synthetic data (Synthea): "
        "descriptive, not for clinical use before local validation.**",
        "",
        "## What it is",
        "",
        "Patients grouped by what their records hold (conditions, medications, labs, vitals, "
        "smoking, utilisation, age), to describe a panel and to show, for one patient, how "
        "patients *like them* fared. Associations in this cohort, **not causal effects**: "
        "a phenotype with lower event rates and better blood pressure does not show that "
        "lowering the blood pressure lowers the risk.",
        "",
        "## Data",
        "",
        f"- {cohort['records']} shared Synthea records; baseline on {cohort['index_date']} "
        f"(data end {cohort['data_end']} minus 3 years): {cohort['patients']} adults alive "
        "then, one vector each, as the record stood that day.",
        f"- Outcome rates: {samples['landmarks']} landmark samples of {samples['patients']} "
        f"patients ({samples['index_dates']}), each in the phenotype of its nearest centroid; "
        "the risk models' outcomes, read after each date with their training rules.",
        "- Population rates: "
        + "; ".join(f"{o} {_rate(r)}, ICC {r['icc']}" for o, r in population.items())
        + ".",
        "",
        "## Features and preprocessing",
        "",
        f"{pre['features']} declared features (`feature_spec.json` in the artifact; the risk "
        "models' spec and evaluator). Counts log1p; missing values imputed with the training "
        "median; standardised and clipped to ±3 SD; each kind of data weighted "
        "1/sqrt(its number of features); then "
        + (
            f"PCA to {pre['dimensions']} components ({pre['explained_variance']:.0%} of the "
            "variance)."
            if pre["pca"]
            else "no PCA (it did not remove a quarter of the dimensions)."
        ),
        "",
        "| feature | kind | missing at baseline |",
        "| --- | --- | --- |",
    ]
    lines += [
        f"| {f.label} | {GROUPS[f.name]} | {pre['missing_share'][f.name]:.0%} |"
        for f in PHENOTYPE_FEATURES.features
    ]
    lines += [
        "",
        "## Choosing k",
        "",
        f"Rule: {fit.k_choice.rule}. Chosen: **k = {fit.k_choice.k}**.",
        "",
        "| k | smallest cluster | silhouette | stability (mean ARI) |",
        "| --- | --- | --- | --- |",
    ]
    lines += [
        f"| {r['k']} | {r['smallest_share']:.0%} | {r['silhouette']:.3f} | "
        f"{r['stability']:.3f} ± {r['stability_sd']:.3f} |"
        for r in fit.k_choice.table
    ]
    lines += [
        "",
        f"![silhouette and stability by k]({CARD_FIGURES}/k-selection.png)",
        "",
        "## Methods: stability and silhouette",
        "",
        "Stability: mean adjusted Rand index between the clusterings of 20 bootstrap "
        "resamples (all 190 pairs; DBSCAN and HDBSCAN compared on the patients both "
        "resamples drew). Silhouette on the preprocessed space, noise left out. DBSCAN's eps "
        "is the knee of the k-distance curve; its noise points are reported as noise.",
        "",
        *_method_rows(fit),
        "",
        f"![k-distance curve]({CARD_FIGURES}/k-distance.png)",
        "",
        "## Phenotypes (k-means)",
        "",
        f"![projection]({CARD_FIGURES}/projection.png)",
        "",
        f"![profiles]({CARD_FIGURES}/profiles.png)",
        "",
        f"![outcome rates]({CARD_FIGURES}/outcome-rates.png)",
        "",
        f"Over-represented: prevalence >= {OVER_RATIO} times and ≥ {OVER_DIFFERENCE:.0%} above the "
        "other patients'. Rates: events / landmark samples with the 95 % Wilson interval on "
        "the effective sample size (Kish design effect from the intra-patient correlation).",
        "",
        *_phenotype_sections(fit, model),
        "## The `similar-patients` card",
        "",
        "Shown only when it adds information: for an outcome that applies to the patient, "
        f"the patient's phenotype (≥ {MIN_PATIENTS} patients) has a rate whose 95 % interval "
        "lies above the population rate, a lower-risk phenotype exists (rate below the "
        "population's, interval below the patient's phenotype rate) and the two differ in "
        f"modifiable factors (labs, vitals, medications, smoking, utilisation) by ≥ "
        f"{DIFFERENT_SMD} pooled SD. Worded as descriptive, non-causal evidence.",
        "",
        "## Limitations",
        "",
        "- 299 synthetic patients; phenotypes and rates will differ on real populations.",
        "- Stability near the threshold means the phenotypes are broad groupings, not types.",
        "- Rates are associations; confounding by age and by everything not recorded is likely.",
        "",
    ]
    return "\n".join(lines)


def write_report(
    fit: PhenotypeFit, artifact: Artifact, card: Path = CARD, html_out: Path | None = None
) -> list[Path]:
    """Write the card, its figures and (``html_out``) the standalone HTML report."""
    model = PhenotypeModel(artifact)
    figures = write_figures(fit, card.parent / CARD_FIGURES)
    text = card_markdown(fit, artifact, model)
    card.write_text(text, encoding="utf-8")
    written = [card, *figures]
    if html_out is not None:
        html_out.parent.mkdir(parents=True, exist_ok=True)
        if html_out.parent != card.parent:
            target = html_out.parent / CARD_FIGURES
            target.mkdir(parents=True, exist_ok=True)
            for figure in figures:
                (target / figure.name).write_bytes(figure.read_bytes())
        body = MarkdownIt("commonmark", {"html": False}).enable("table").render(text)
        html_out.write_text(
            "<!doctype html><html lang='en'><head><meta charset='utf-8'>"
            f"<title>{html.escape('Patient phenotypes')}</title></head><body>"
            f"{body}</body></html>\n",
            encoding="utf-8",
        )
        written.append(html_out)
    return written
