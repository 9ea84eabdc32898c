"""k-means with k chosen by a stated rule, DBSCAN with eps from the k-distance curve,
scikit-learn's HDBSCAN beside them, and the same validation for each.

* **Stability**: the mean adjusted Rand index (ARI) between the clusterings of
  :data:`BOOTSTRAPS` bootstrap resamples, every pair compared. k-means fitted on a resample
  labels every patient (``predict``); DBSCAN and HDBSCAN cannot predict, so a pair is
  compared on the patients drawn in both resamples. Noise is a label of its own.
* **Silhouette** on the preprocessed space (without the noise points).
* **Choice of k** (:func:`choose_k`): among k = 2 … 8 whose smallest cluster holds at
  least :data:`MIN_SHARE` of the patients (a phenotype of two patients describes nobody),
  those whose stability reaches :data:`STABLE`; of those, the highest silhouette. If none
  is stable, the most stable k. Nothing is chosen by eye.
* **DBSCAN eps**: the knee of the sorted distances to the ``min_samples``-th neighbour
  (the point farthest from the chord between the curve's ends).
"""

from __future__ import annotations

import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from itertools import combinations
from typing import Any

import numpy as np

K_RANGE = tuple(range(2, 9))
BOOTSTRAPS = 20
STABLE = 0.8
MIN_SHARE = 0.05
N_INIT = 10
MIN_SAMPLES = 5
MIN_CLUSTER_SIZE = 10


@dataclass(frozen=True)
class Stability:
    mean: float
    sd: float
    pairs: int

    def to_json(self) -> dict[str, Any]:
        return {"mean_ari": round(self.mean, 4), "sd_ari": round(self.sd, 4), "pairs": self.pairs}


@dataclass(frozen=True)
class MethodResult:
    method: str
    labels: np.ndarray
    stability: Stability
    silhouette: float | None
    params: dict[str, Any] = field(default_factory=dict)
    seconds: float = 0.0

    @property
    def clusters(self) -> int:
        return len({int(v) for v in self.labels if v >= 0})

    @property
    def noise(self) -> int:
        return int((self.labels < 0).sum())

    def to_json(self) -> dict[str, Any]:
        sizes = {int(c): int((self.labels == c).sum()) for c in sorted(set(self.labels.tolist()))}
        return {
            "method": self.method,
            "clusters": self.clusters,
            "noise": self.noise,
            "sizes": {("noise" if c < 0 else str(c)): n for c, n in sizes.items()},
            "silhouette": None if self.silhouette is None else round(self.silhouette, 4),
            "stability": self.stability.to_json(),
            "params": self.params,
            "seconds": round(self.seconds, 2),
        }


def _ari(a: np.ndarray, b: np.ndarray) -> float:
    from sklearn.metrics import adjusted_rand_score

    return float(adjusted_rand_score(a, b))


def silhouette(x: np.ndarray, labels: np.ndarray, seed: int) -> float | None:
    from sklearn.metrics import silhouette_score

    kept = labels >= 0
    if len(set(labels[kept].tolist())) < 2 or kept.sum() < 3:
        return None
    return float(silhouette_score(x[kept], labels[kept], random_state=seed))


def _summary(scores: Sequence[float]) -> Stability:
    values = np.array(scores, dtype=float)
    return Stability(float(values.mean()), float(values.std()), len(values))


def _resamples(n: int, seed: int, count: int) -> list[np.ndarray]:
    rng = np.random.default_rng(seed)
    return [rng.choice(n, size=n, replace=True) for _ in range(count)]


def kmeans(x: np.ndarray, k: int, seed: int):  # type: ignore[no-untyped-def]
    from sklearn.cluster import KMeans

    return KMeans(n_clusters=k, n_init=N_INIT, random_state=seed).fit(x)


def kmeans_stability(x: np.ndarray, k: int, seed: int, count: int = BOOTSTRAPS) -> Stability:
    """Fit on each resample, label everyone, compare every pair of labelings."""
    labelings = [
        kmeans(x[idx], k, seed + i).predict(x)
        for i, idx in enumerate(_resamples(len(x), seed, count))
    ]
    return _summary([_ari(a, b) for a, b in combinations(labelings, 2)])


def overlap_stability(
    x: np.ndarray, fit_labels: Callable[[np.ndarray], np.ndarray], seed: int, count: int
) -> Stability:
    """For methods without ``predict``: compare pairs on the patients both resamples drew."""
    labelings = []
    for idx in _resamples(len(x), seed, count):
        unique = np.unique(idx)
        labels = np.full(len(x), -2)
        labels[unique] = fit_labels(x[unique])
        labelings.append(labels)
    scores = []
    for a, b in combinations(labelings, 2):
        both = (a != -2) & (b != -2)
        scores.append(_ari(a[both], b[both]))
    return _summary(scores)


@dataclass(frozen=True)
class KChoice:
    k: int
    table: list[dict[str, Any]]
    rule: str


def choose_k(x: np.ndarray, seed: int, ks: Sequence[int] = K_RANGE) -> KChoice:
    table = []
    for k in ks:
        labels = kmeans(x, k, seed).labels_
        stab = kmeans_stability(x, k, seed)
        smallest = int(np.bincount(labels, minlength=k).min())
        table.append(
            {
                "k": k,
                "smallest_share": round(smallest / len(x), 4),
                "silhouette": round(silhouette(x, labels, seed) or 0.0, 4),
                "stability": round(stab.mean, 4),
                "stability_sd": round(stab.sd, 4),
            }
        )
    sized = [row for row in table if row["smallest_share"] >= MIN_SHARE] or table
    stable = [row for row in sized if row["stability"] >= STABLE]
    if stable:
        best = max(stable, key=lambda r: (r["silhouette"], -r["k"]))
        rule = (
            f"highest silhouette among k with every cluster >= {MIN_SHARE:.0%} of patients "
            f"and bootstrap stability (mean ARI) >= {STABLE}"
        )
    else:
        best = max(sized, key=lambda r: (r["stability"], -r["k"]))
        rule = (
            f"no k with every cluster >= {MIN_SHARE:.0%} of patients reached stability "
            f"{STABLE}: the most stable of them"
        )
    return KChoice(int(best["k"]), table, rule)


def run_kmeans(x: np.ndarray, seed: int) -> tuple[MethodResult, KChoice, Any]:
    started = time.perf_counter()
    choice = choose_k(x, seed)
    model = kmeans(x, choice.k, seed)
    labels = _relabel_by_size(model.labels_)
    order = np.argsort([-(model.labels_ == c).sum() for c in range(choice.k)], kind="stable")
    centroids = model.cluster_centers_[order]
    row = next(r for r in choice.table if r["k"] == choice.k)
    result = MethodResult(
        "k-means",
        labels,
        Stability(row["stability"], row["stability_sd"], BOOTSTRAPS * (BOOTSTRAPS - 1) // 2),
        silhouette(x, labels, seed),
        {"k": choice.k, "n_init": N_INIT, "seed": seed, "rule": choice.rule},
        time.perf_counter() - started,
    )
    return result, choice, centroids


def _relabel_by_size(labels: np.ndarray) -> np.ndarray:
    """Cluster 0 is the largest (then 1, …); noise stays -1: stable names across runs."""
    clusters = [c for c in np.unique(labels) if c >= 0]
    order = sorted(clusters, key=lambda c: (-(labels == c).sum(), c))
    mapping = {old: new for new, old in enumerate(order)}
    return np.array([mapping.get(int(v), -1) for v in labels])


def k_distance_eps(x: np.ndarray, k: int = MIN_SAMPLES) -> tuple[float, np.ndarray]:
    """eps at the knee of the sorted k-distance curve, and the curve (for the report)."""
    from sklearn.neighbors import NearestNeighbors

    distances, _ = NearestNeighbors(n_neighbors=k).fit(x).kneighbors(x)
    curve = np.sort(distances[:, -1])
    n = len(curve)
    points = np.column_stack([np.linspace(0, 1, n), (curve - curve[0]) / (np.ptp(curve) or 1)])
    chord = points[-1] - points[0]
    chord /= np.linalg.norm(chord)
    offsets = points - points[0]
    gap = np.abs(offsets[:, 0] * chord[1] - offsets[:, 1] * chord[0])
    return float(curve[int(gap.argmax())]), curve


def run_dbscan(x: np.ndarray, seed: int) -> tuple[MethodResult, np.ndarray]:
    from sklearn.cluster import DBSCAN

    started = time.perf_counter()
    eps, curve = k_distance_eps(x)

    def fit(data: np.ndarray) -> np.ndarray:
        return DBSCAN(eps=eps, min_samples=MIN_SAMPLES).fit(data).labels_

    labels = _relabel_by_size(fit(x))
    result = MethodResult(
        "DBSCAN",
        labels,
        overlap_stability(x, fit, seed, BOOTSTRAPS),
        silhouette(x, labels, seed),
        {"eps": round(eps, 4), "min_samples": MIN_SAMPLES, "eps_rule": "k-distance knee"},
        time.perf_counter() - started,
    )
    return result, curve


def run_hdbscan(x: np.ndarray, seed: int) -> MethodResult:
    from sklearn.cluster import HDBSCAN

    started = time.perf_counter()

    def fit(data: np.ndarray) -> np.ndarray:
        return HDBSCAN(min_cluster_size=MIN_CLUSTER_SIZE, min_samples=MIN_SAMPLES).fit(data).labels_

    labels = _relabel_by_size(fit(x))
    return MethodResult(
        "HDBSCAN",
        labels,
        overlap_stability(x, fit, seed, BOOTSTRAPS),
        silhouette(x, labels, seed),
        {"min_cluster_size": MIN_CLUSTER_SIZE, "min_samples": MIN_SAMPLES},
        time.perf_counter() - started,
    )


def nearest(x: np.ndarray, centroids: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Each row's nearest centroid and its distance (the k-means assignment rule)."""
    distances = np.linalg.norm(x[:, None, :] - centroids[None, :, :], axis=2)
    return distances.argmin(axis=1), distances.min(axis=1)
