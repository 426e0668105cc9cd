"""k-means at every (dim, k) and its scores.

Internal scores (no labels): silhouette (higher is better), Calinski–Harabasz (higher) and
Davies–Bouldin (lower), all scikit-learn's, on the PCA-``dim`` vectors the clustering saw. With
labels: NMI, ARI (scikit-learn's) and purity (each cluster counts its commonest label), over the
labelled listings only. Past ``analyze.large`` listings k-means is FAISS's and the silhouette is
scored on a seeded sample of ``analyze.silhouette_sample`` listings (CH and DB stay exact: both
are linear in the number of items).
"""

from __future__ import annotations

import logging
from dataclasses import dataclass

import numpy as np
from tqdm import tqdm

from pipeline.core.manifest import AnalyzeConfig, ManifestError
from trainer.analyze.reduce import Reduction

log = logging.getLogger(__name__)


@dataclass(frozen=True, order=True)
class Setting:
    dim: int
    k: int

    @property
    def name(self) -> str:
        """The setting's column in ``clusters.parquet``."""
        return f"d{self.dim}_k{self.k}"


@dataclass
class Scores:
    silhouette: float
    calinski_harabasz: float
    davies_bouldin: float
    inertia: float  # sum of squared distances to the nearest centroid
    nmi: float | None = None  # None when no listing has a label
    ari: float | None = None
    purity: float | None = None


@dataclass
class Clustering:
    setting: Setting
    assignments: np.ndarray  # (n,) int32 cluster per listing
    centroids: np.ndarray  # (k, dim) float32
    scores: Scores


def k_values(cfg: AnalyzeConfig) -> tuple[int, ...]:
    """``analyze.ks`` as a sorted list: the range [first, last] in steps of ``k_step`` when it is > 0."""
    if cfg.k_step:
        return tuple(range(cfg.ks[0], cfg.ks[1] + 1, cfg.k_step))
    return tuple(sorted(set(cfg.ks)))


def checked_ks(ks: tuple[int, ...], n: int) -> tuple[int, ...]:
    if ks[-1] >= n:
        raise ManifestError(f"analyze.ks: k = {ks[-1]} needs more than {ks[-1]} listings, there are {n}; "
                            f"use ks below {n}")
    return ks


def kmeans(z: np.ndarray, k: int, seed: int, restarts: int, large: bool) -> tuple[np.ndarray, np.ndarray]:
    """Assignments and centroids of the best of ``restarts`` k-means runs (lowest inertia)."""
    if large:
        from trainer.analyze.large import faiss_kmeans

        return faiss_kmeans(z, k, seed, restarts)
    from sklearn.cluster import KMeans

    km = KMeans(n_clusters=k, n_init=restarts, random_state=seed).fit(z)
    return km.labels_.astype(np.int32), km.cluster_centers_.astype(np.float32)


def inertia(z: np.ndarray, assignments: np.ndarray, centroids: np.ndarray) -> float:
    return float(((z - centroids[assignments]) ** 2).sum(dtype=np.float64))


def internal_scores(z: np.ndarray, assignments: np.ndarray, sample: int | None, seed: int) -> tuple[float, ...]:
    """(silhouette, Calinski–Harabasz, Davies–Bouldin); the silhouette on ``sample`` seeded items when given."""
    from sklearn.metrics import calinski_harabasz_score, davies_bouldin_score, silhouette_score

    if len(np.unique(assignments)) < 2:  # a degenerate clustering: every score is undefined
        return float("nan"), float("nan"), float("nan")
    size = sample if sample is not None and sample < len(z) else None
    silhouette = silhouette_score(z, assignments, sample_size=size, random_state=seed)
    return float(silhouette), float(calinski_harabasz_score(z, assignments)), float(davies_bouldin_score(z, assignments))


def purity(assignments: np.ndarray, labels: np.ndarray) -> float:
    """Share of items whose label is their cluster's commonest one."""
    from sklearn.metrics.cluster import contingency_matrix

    table = contingency_matrix(labels, assignments)
    return float(table.max(axis=0).sum() / table.sum())


def external_scores(assignments: np.ndarray, labels: np.ndarray) -> tuple[float | None, ...]:
    """(NMI, ARI, purity) over the listings with a label ("" = none); Nones when there are none."""
    from sklearn.metrics import adjusted_rand_score, normalized_mutual_info_score

    has = labels != ""
    if not has.any():
        return None, None, None
    a, y = assignments[has], labels[has].astype(str)
    return float(normalized_mutual_info_score(y, a)), float(adjusted_rand_score(y, a)), purity(a, y)


def cluster_all(reduction: Reduction, ks: tuple[int, ...], labels: np.ndarray, cfg: AnalyzeConfig,
                large: bool) -> dict[Setting, Clustering]:
    """k-means and its scores at every (dim, k)."""
    sample = cfg.silhouette_sample if large else None
    out = {}
    settings = [Setting(d, k) for d in reduction.dims for k in ks]
    for s in tqdm(settings, desc="k-means", disable=len(settings) < 4):
        z = reduction.at(s.dim)
        assignments, centroids = kmeans(z, s.k, cfg.seed, cfg.restarts, large)
        sil, ch, db = internal_scores(z, assignments, sample, cfg.seed)
        nmi, ari, pur = external_scores(assignments, labels)
        scores = Scores(sil, ch, db, inertia(z, assignments, centroids), nmi, ari, pur)
        out[s] = Clustering(s, assignments, centroids, scores)
        log.debug("%s: %s", s.name, scores)
    return out
