"""The phenotype fit on the shared Synthea patients: deterministic, k by the stated rule,
validation reported, the shipped artifact reproduced, the report written."""

from __future__ import annotations

import json
import warnings
from pathlib import Path

import numpy as np
import pytest
from sklearn.cluster import KMeans
from sklearn.metrics import adjusted_rand_score, silhouette_score

from models.artifacts import load_artifact
from models.phenotypes.clustering import BOOTSTRAPS, MIN_SHARE, STABLE, kmeans_stability
from models.phenotypes.features import PHENOTYPE_FEATURES
from models.phenotypes.fit import SEED, fit_phenotypes, write_artifact
from models.phenotypes.model import ARTIFACT, PhenotypeModel
from models.phenotypes.report import FIGURES, write_report
from models.registry import CARD_FIGURES


def test_cohort_is_adults_alive_at_baseline_with_outcomes(cohort) -> None:  # type: ignore[no-untyped-def]
    assert cohort.records == 299
    assert 150 <= len(cohort.rows) <= 299
    assert all(row.age >= 18 for row in cohort.rows)
    assert cohort.matrix.shape == (len(cohort.rows), len(PHENOTYPE_FEATURES.names))
    # Landmarks are the risk training's index dates: the same count of acute-care samples.
    from models.risk.learned import ARTIFACTS

    training = json.loads((ARTIFACTS / "acute-care-1y" / "training_data.json").read_text())
    acute = [s.outcomes["acute-care-1y"] for s in cohort.samples]
    assert sum(v is not None for v in acute) == training["samples"]
    assert sum(v == 1 for v in acute) == training["events"]


def test_fit_is_deterministic_with_a_seed(cohort, fitted, tmp_path: Path) -> None:  # type: ignore[no-untyped-def]
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", FutureWarning)
        again = fit_phenotypes(cohort, SEED)
    for first, second in zip(fitted.methods, again.methods, strict=True):
        assert np.array_equal(first.labels, second.labels)
    assert np.array_equal(fitted.centroids, again.centroids)
    assert fitted.metrics() == again.metrics()
    one = write_artifact(fitted, tmp_path / "one")
    two = write_artifact(again, tmp_path / "two")
    assert one.sha256 == two.sha256


def test_k_is_chosen_by_the_rule(fitted) -> None:  # type: ignore[no-untyped-def]
    table = fitted.k_choice.table
    assert [r["k"] for r in table] == list(range(2, 9))
    sized = [r for r in table if r["smallest_share"] >= MIN_SHARE]
    assert sized, "some k gives every cluster its minimum share"
    stable = [r for r in sized if r["stability"] >= STABLE]
    if stable:  # the highest silhouette among the stable k
        expected = max(stable, key=lambda r: (r["silhouette"], -r["k"]))["k"]
    else:  # none reaches the stability bar (the shared data: k = 3 at 0.798): the most stable
        expected = max(sized, key=lambda r: (r["stability"], -r["k"]))["k"]
        assert "no k" in fitted.k_choice.rule
    assert fitted.k_choice.k == expected == fitted.kmeans.clusters
    # The table's numbers are what they say: recomputed independently for the chosen k.
    row = next(r for r in table if r["k"] == expected)
    labels = KMeans(n_clusters=expected, n_init=10, random_state=SEED).fit(fitted.space).labels_
    assert silhouette_score(fitted.space, labels) == pytest.approx(row["silhouette"], abs=1e-4)
    assert adjusted_rand_score(labels, fitted.kmeans.labels) == 1.0
    stability = kmeans_stability(fitted.space, expected, SEED)
    assert stability.mean == pytest.approx(row["stability"], abs=1e-4)
    assert stability.pairs == BOOTSTRAPS * (BOOTSTRAPS - 1) // 2


def test_stability_and_silhouette_are_reported_per_method(fitted) -> None:  # type: ignore[no-untyped-def]
    methods = {m["method"]: m for m in fitted.metrics()["methods"]}
    assert set(methods) == {"k-means", "DBSCAN", "HDBSCAN"}
    for m in methods.values():
        assert 0 <= m["stability"]["mean_ari"] <= 1
        assert m["stability"]["pairs"] == 190
        assert sum(m["sizes"].values()) == len(fitted.cohort.rows)
    assert methods["k-means"]["noise"] == 0
    assert -1 <= methods["k-means"]["silhouette"] <= 1
    # DBSCAN's noise is reported as noise, not as a cluster.
    assert methods["DBSCAN"]["noise"] == int((fitted.dbscan.labels == -1).sum())
    assert ("noise" in methods["DBSCAN"]["sizes"]) == (methods["DBSCAN"]["noise"] > 0)
    assert methods["DBSCAN"]["params"]["eps"] > 0


def test_training_patients_sit_in_their_own_centroid(fitted) -> None:  # type: ignore[no-untyped-def]
    from models.phenotypes.clustering import nearest

    labels, _ = nearest(fitted.space, fitted.centroids)
    assert np.array_equal(labels, fitted.kmeans.labels)


def test_clusters_are_described_with_outcome_rates(fitted) -> None:  # type: ignore[no-untyped-def]
    d = fitted.descriptions
    assert set(d["clusters"]) == {str(c) for c in range(fitted.kmeans.clusters)}
    for outcome, population in d["population"]["outcomes"].items():
        assert population["ci95"][0] <= population["rate"] <= population["ci95"][1]
        # Every landmark sample is in exactly one phenotype.
        assert sum(c["outcomes"][outcome]["n"] for c in d["clusters"].values()) == population["n"]
        assert (
            sum(c["outcomes"][outcome]["events"] for c in d["clusters"].values())
            == population["events"]
        )
    named = [c for c in d["clusters"].values() if c["over_represented"]]
    assert named, "some phenotype has over-represented conditions or medications"


def test_shipped_artifact_is_this_fit(fitted) -> None:  # type: ignore[no-untyped-def]
    shipped = PhenotypeModel(load_artifact(ARTIFACT))
    assert shipped.centroids.shape == fitted.centroids.shape
    assert np.allclose(shipped.centroids, fitted.centroids, atol=1e-6)
    labels, _ = shipped.assign_vectors(fitted.raw)
    assert np.array_equal(labels, fitted.kmeans.labels)
    assert shipped.metrics["k_selection"] == fitted.metrics()["k_selection"]


def test_report_files_exist_and_are_not_trivial(fitted, tmp_path: Path) -> None:  # type: ignore[no-untyped-def]
    import matplotlib.image as mpimg

    artifact = write_artifact(fitted, tmp_path / "artifact")
    card = tmp_path / "card" / "MODEL_CARD.md"
    card.parent.mkdir()
    written = write_report(fitted, artifact, card, tmp_path / "html" / "report.html")
    for name in FIGURES:
        png = card.parent / CARD_FIGURES / name
        assert png in written and png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
        assert png.stat().st_size > 10_000
        pixels = mpimg.imread(png)
        assert pixels.std() > 0.05  # a plot, not a blank canvas
        assert (tmp_path / "html" / CARD_FIGURES / name).is_file()
    text = card.read_text()
    k_means = fitted.kmeans
    assert f"k = {k_means.clusters}" in text
    assert f"{k_means.stability.mean:.3f}" in text and f"{k_means.silhouette:.3f}" in text
    for name in fitted.descriptions["clusters"].values():
        assert name["name"] in text
    page = (tmp_path / "html" / "report.html").read_text()
    assert page.count("<img") == len(FIGURES) and "<table>" in page
