"""The one preprocessing pipeline of both engines (scikit-learn and Spark MLlib).

Raw feature vectors (NaN = missing, per the spec) → numbers a distance means something on:

1. counts (utilisation) become ``log1p(count)``, so a few frequent visitors do not
   dominate the distance;
2. a missing value is replaced by the training median of its feature (a lab never drawn is
   "typical", not 0) and the share imputed per feature is reported;
3. every column is standardised (training mean, standard deviation; a constant column
   stays 0) and clipped to ``±CLIP`` standard deviations, so that one extreme patient (a
   rare condition, forty admissions) cannot make a cluster of its own;
4. each kind of data weighs the same: a column is multiplied by ``1/sqrt(size of its
   group)`` (conditions, medications, labs, vitals, smoking, utilisation, age; groups in
   ``features.GROUPS``), so eleven condition flags do not outvote three utilisation
   counts;
5. PCA where it helps: the fewest components that keep ``variance_kept`` of the variance,
   used only when they drop at least a quarter of the dimensions (else the standardised
   columns are used as they are).

Everything is fitted once, stored as JSON numbers in the artifact (``preprocessing.json``)
and applied with numpy only, by the hooks, by ``assign`` and inside Spark's
``mapInPandas``: the same arithmetic everywhere.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np

VARIANCE_KEPT = 0.9
CLIP = 3.0
MIN_REDUCTION = 0.25


@dataclass(frozen=True)
class Preprocessing:
    names: tuple[str, ...]
    log1p: tuple[bool, ...]
    medians: tuple[float, ...]
    means: tuple[float, ...]
    scales: tuple[float, ...]
    #: Per column: 1/sqrt(size of its feature group) (step 4).
    weights: tuple[float, ...]
    #: PCA components (rows) over the standardised columns; empty: no PCA.
    components: tuple[tuple[float, ...], ...] = ()
    explained: tuple[float, ...] = ()
    missing_share: tuple[float, ...] = ()

    @property
    def uses_pca(self) -> bool:
        return bool(self.components)

    @property
    def dimensions(self) -> int:
        return len(self.components) if self.components else len(self.names)

    def standardise(self, raw: np.ndarray) -> np.ndarray:
        """Steps 1-4: log1p, median imputation, standardisation, group weights (no PCA)."""
        x = np.array(raw, dtype=float, copy=True)
        if x.ndim == 1:
            x = x[None, :]
        logged = np.array(self.log1p)
        x[:, logged] = np.log1p(np.clip(x[:, logged], 0, None))
        missing = np.isnan(x)
        x[missing] = np.take(np.array(self.medians), np.nonzero(missing)[1])
        z = np.clip((x - np.array(self.means)) / np.array(self.scales), -CLIP, CLIP)
        return z * np.array(self.weights)

    def transform(self, raw: np.ndarray) -> np.ndarray:
        """All steps: the space the clusters live in."""
        z = self.standardise(raw)
        if self.components:
            return z @ np.array(self.components).T
        return z

    def to_json(self) -> dict[str, Any]:
        return {
            "names": list(self.names),
            "log1p": list(self.log1p),
            "medians": list(self.medians),
            "means": list(self.means),
            "scales": list(self.scales),
            "weights": list(self.weights),
            "components": [list(c) for c in self.components],
            "explained_variance_ratio": list(self.explained),
            "missing_share": list(self.missing_share),
            "variance_kept": VARIANCE_KEPT,
            "clip": CLIP,
        }

    @classmethod
    def from_json(cls, data: dict[str, Any]) -> Preprocessing:
        return cls(
            names=tuple(data["names"]),
            log1p=tuple(bool(v) for v in data["log1p"]),
            medians=tuple(float(v) for v in data["medians"]),
            means=tuple(float(v) for v in data["means"]),
            scales=tuple(float(v) for v in data["scales"]),
            weights=tuple(float(v) for v in data["weights"]),
            components=tuple(tuple(float(v) for v in c) for c in data["components"]),
            explained=tuple(float(v) for v in data["explained_variance_ratio"]),
            missing_share=tuple(float(v) for v in data["missing_share"]),
        )


def _rounded(values: Sequence[float] | np.ndarray) -> tuple[float, ...]:
    return tuple(round(float(v), 10) for v in values)


def fit_preprocessing(
    raw: np.ndarray,
    names: Sequence[str],
    counts: frozenset[str],
    groups: Mapping[str, str],
    seed: int,
) -> Preprocessing:
    """Fit the pipeline on the training vectors (rows = patients, columns = ``names``)."""
    from sklearn.decomposition import PCA

    logged = tuple(n in counts for n in names)
    x = np.array(raw, dtype=float, copy=True)
    x[:, np.array(logged)] = np.log1p(np.clip(x[:, np.array(logged)], 0, None))
    missing_share = np.isnan(x).mean(axis=0)
    medians = np.nan_to_num(np.nanmedian(np.where(np.isnan(x).all(axis=0), 0.0, x), axis=0))
    filled = np.where(np.isnan(x), medians, x)
    means = filled.mean(axis=0)
    scales = filled.std(axis=0)
    scales[scales == 0] = 1.0
    kinds = [groups[n] for n in names]
    weights = [1 / math.sqrt(kinds.count(kind)) for kind in kinds]
    base = Preprocessing(
        tuple(names),
        logged,
        _rounded(medians),
        _rounded(means),
        _rounded(scales),
        _rounded(weights),
        missing_share=_rounded(missing_share),
    )
    z = base.standardise(raw)
    pca = PCA(random_state=seed, svd_solver="full").fit(z)
    kept = int(np.searchsorted(np.cumsum(pca.explained_variance_ratio_), VARIANCE_KEPT) + 1)
    if kept > len(names) * (1 - MIN_REDUCTION):
        return base
    components = pca.components_[:kept]
    # A deterministic sign per component (SVD signs are arbitrary across platforms).
    signs = np.sign(components[np.arange(kept), np.abs(components).argmax(axis=1)])
    components = components * signs[:, None]
    return Preprocessing(
        base.names,
        base.log1p,
        base.medians,
        base.means,
        base.scales,
        base.weights,
        components=tuple(_rounded(c) for c in components),
        explained=_rounded(pca.explained_variance_ratio_[:kept]),
        missing_share=base.missing_share,
    )
