"""The large path: randomized PCA against the exact one, FAISS k-means on planted clusters, the
sampled silhouette against scikit-learn's, and the stage switching to it past `large`."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch
from sklearn.metrics import adjusted_rand_score, silhouette_score

from tests.trainer.analyze.conftest import analyze_manifest, planted_listings
from trainer.analyze.cluster import internal_scores
from trainer.analyze.large import covariance_pca, faiss_kmeans, sklearn_randomized_pca
from trainer.analyze.reduce import Reduction, reduce
from trainer.analyze.stage import run


def _low_rank(n: int = 2000, dim: int = 64, seed: int = 0) -> np.ndarray:
    rng = np.random.default_rng(seed)
    scales = 2.0 ** -np.arange(dim / 4, step=0.25)  # a decaying spectrum with distinct eigenvalues
    return (rng.standard_normal((n, dim)) * scales + 5.0).astype(np.float32)


def _same_subspaces(a, b) -> None:
    for d in a.dims:
        # the two bases of the leading d components span the same space: |cos| of each column pair ~ 1
        ca, cb = a.at(d), b.at(d)
        cos = np.abs((ca * cb).sum(0)) / (np.linalg.norm(ca, axis=0) * np.linalg.norm(cb, axis=0))
        assert cos.min() > 0.999, (d, cos.min())
        assert a.explained[d] == pytest.approx(b.explained[d], rel=1e-3)


def _as_reduction(projected, ratio, dims=(4, 8, 16)) -> Reduction:
    cumulative = np.cumsum(ratio)
    return Reduction(dims, np.asarray(projected, np.float32), {d: float(cumulative[d - 1]) for d in dims}, "")


def test_the_cpu_large_pcas_match_the_exact_one():
    x = _low_rank()
    exact = reduce(x, (4, 8, 16), 0, large=False)
    streamed = _as_reduction(*covariance_pca(x, 16, chunk=300))  # several chunks
    _same_subspaces(streamed, exact)
    np.testing.assert_allclose(streamed.projected, exact.projected, atol=2e-3)  # same signs as scikit-learn's
    _same_subspaces(_as_reduction(*sklearn_randomized_pca(x, 16, 0)[:2]), exact)
    if not torch.cuda.is_available():
        assert reduce(x, (4, 8, 16), 0, large=True).solver == "covariance (exact, streamed)"


@pytest.mark.gpu
def test_torch_pca_lowrank_on_the_gpu_matches_the_exact_one():
    x = _low_rank()
    randomized, exact = reduce(x, (4, 8, 16), 0, large=True), reduce(x, (4, 8, 16), 0, large=False)
    assert randomized.solver == "torch.pca_lowrank (cuda)"
    _same_subspaces(randomized, exact)


def test_faiss_kmeans_finds_planted_clusters():
    rng = np.random.default_rng(0)
    centres = rng.standard_normal((6, 16)) * 5
    labels = np.repeat(np.arange(6), 200)
    z = (centres[labels] + rng.standard_normal((len(labels), 16))).astype(np.float32)
    assignments, centroids = faiss_kmeans(z, 6, seed=0, restarts=3)
    assert adjusted_rand_score(labels, assignments) == pytest.approx(1.0)
    for c in range(6):  # each centroid is the mean of its members
        np.testing.assert_allclose(centroids[c], z[assignments == c].mean(0), atol=1e-3)


def test_the_sampled_silhouette_is_scikit_learns_on_the_same_sample():
    rng = np.random.default_rng(1)
    z = rng.standard_normal((500, 4))
    a = (z[:, 0] > 0).astype(int) + 2 * (z[:, 1] > 0)
    sil, _, _ = internal_scores(z, a, sample=120, seed=7)
    assert sil == pytest.approx(silhouette_score(z, a, sample_size=120, random_state=7))
    assert sil != pytest.approx(silhouette_score(z, a), abs=1e-6)


def test_the_stage_takes_the_large_path_past_large(tmp_path):
    planted_listings(tmp_path, clusters=4, per_cluster=30, dim=24)
    run(analyze_manifest(tmp_path, large=100, silhouette_sample=60, ks=[3, 4]))
    report = json.loads(analyze_manifest(tmp_path).layout.analysis("default").report_json.read_text())
    space = report["space"]
    assert space["large"] and space["silhouette_sample"] == 60
    assert space["pca_solver"] in ("covariance (exact, streamed)", "torch.pca_lowrank (cuda)")
    assert report["choice"]["k"] == 4 and report["choice"]["scores"]["ari"] == pytest.approx(1.0)
