"""The large path (past ``analyze.large`` listings): FAISS k-means and randomized PCA.

scikit-learn's exact PCA (an SVD of the whole centred matrix) and its k-means (every item at every
iteration, ``restarts`` times) are too slow for millions of listings, and the exact silhouette is
quadratic. Here:

* PCA: ``torch.pca_lowrank`` (a randomized range finder seeded by ``analyze.seed``) on the GPU
  when CUDA is present. On the CPU, up to COVARIANCE_MAX_DIM input dims, the exact PCA from the
  covariance matrix accumulated over row chunks (float64), which costs n·d² and no copy of the
  vectors; scikit-learn's randomized PCA costs about n·d·(q + 10)·10 here and copies them (its
  centring), so for d = 1024 it is both slower and twice the memory (bench/analyze.py measures both).
  Past COVARIANCE_MAX_DIM, scikit-learn's randomized PCA.
* k-means: ``faiss.Kmeans`` (GPU when the FAISS build has one) from k-means++ centres, which trains
  on at most 256 items per centroid (its default sample) and then assigns every item to its nearest
  centroid; the best of ``analyze.restarts`` runs is kept.
* silhouette: on a seeded sample of ``analyze.silhouette_sample`` listings (:mod:`trainer.analyze.cluster`).
"""

from __future__ import annotations

import logging

import numpy as np
import torch

log = logging.getLogger(__name__)
KMEANS_ITERATIONS = 25
TRAIN_PER_CENTROID = 256  # FAISS's default training sample per centroid
CHUNK = 65536
COVARIANCE_MAX_DIM = 4096  # a d x d float64 covariance of 128 MiB and its eigh, at most
OVERSAMPLE = 10  # extra random directions of the range finder (scikit-learn's default)
POWER_ITERATIONS = 4


def _total_variance(x: np.ndarray, chunk: int = CHUNK) -> float:
    """Sum of the columns' variances (ddof 1), in float64 and chunks, without a centred copy of ``x``."""
    n = len(x)
    s = np.zeros(x.shape[1])
    ss = np.zeros(x.shape[1])
    for i in range(0, n, chunk):
        block = np.asarray(x[i:i + chunk], np.float64)
        s += block.sum(0)
        ss += (block * block).sum(0)
    return float((ss - s * s / n).sum() / (n - 1))


def _torch_pca(x: np.ndarray, top: int, seed: int) -> tuple[np.ndarray, np.ndarray]:
    torch.manual_seed(seed)
    xt = torch.from_numpy(np.ascontiguousarray(x, np.float32)).cuda()
    mean = xt.mean(0, keepdim=True)
    q = min(top + OVERSAMPLE, *xt.shape)
    _, s, v = torch.pca_lowrank(xt - mean, q=q, center=False, niter=POWER_ITERATIONS)
    projected = ((xt - mean) @ v[:, :top]).cpu().numpy()
    variance = (s[:top].double() ** 2 / (len(x) - 1)).cpu().numpy()
    return projected, variance


def covariance_pca(x: np.ndarray, top: int, chunk: int = CHUNK) -> tuple[np.ndarray, np.ndarray]:
    """Exact PCA by the eigenvectors of the covariance, accumulated over centred row chunks in float64.

    Memory beyond ``x``: one chunk, the d x d covariance and the (n, top) output. Component signs
    follow scikit-learn's ``svd_flip`` rule (each component's largest-magnitude loading is positive).
    """
    n, d = x.shape
    mean = np.zeros(d)
    for i in range(0, n, chunk):
        mean += np.asarray(x[i:i + chunk]).sum(0, dtype=np.float64)
    mean /= n
    mean32, cov = mean.astype(np.float32), np.zeros((d, d))
    for i in range(0, n, chunk):
        block = np.asarray(x[i:i + chunk], np.float32) - mean32
        cov += block.T @ block  # float32 products of centred rows, summed in float64
    cov /= n - 1
    values, vectors = np.linalg.eigh(cov)
    values, vectors = np.clip(values[::-1], 0, None), vectors[:, ::-1][:, :top]
    vectors *= np.sign(vectors[np.abs(vectors).argmax(0), np.arange(top)])
    basis = vectors.astype(np.float32)
    out = np.empty((n, top), np.float32)
    for i in range(0, n, chunk):
        out[i:i + chunk] = (np.asarray(x[i:i + chunk], np.float32) - mean32) @ basis
    return out, values[:top] / values.sum()


def large_pca(x: np.ndarray, top: int, seed: int) -> tuple[np.ndarray, np.ndarray, str]:
    """(the ``top`` leading PCA coordinates, each component's explained-variance ratio, the solver's name)."""
    if torch.cuda.is_available():
        projected, variance = _torch_pca(x, top, seed)
        return projected, variance / _total_variance(x), "torch.pca_lowrank (cuda)"
    if x.shape[1] <= COVARIANCE_MAX_DIM:
        projected, ratio = covariance_pca(x, top)
        return projected, ratio, "covariance (exact, streamed)"
    return sklearn_randomized_pca(x, top, seed)


def sklearn_randomized_pca(x: np.ndarray, top: int, seed: int) -> tuple[np.ndarray, np.ndarray, str]:
    from sklearn.decomposition import PCA

    pca = PCA(n_components=top, svd_solver="randomized", random_state=seed, iterated_power=POWER_ITERATIONS)
    projected = pca.fit_transform(x)
    return projected, pca.explained_variance_ratio_, "randomized (sklearn)"


def faiss_kmeans(z: np.ndarray, k: int, seed: int, restarts: int) -> tuple[np.ndarray, np.ndarray]:
    """Assignments and centroids of the best (lowest objective) of ``restarts`` FAISS k-means runs.

    Each run starts from k-means++ centres (scikit-learn's ``kmeans_plusplus``, on a seeded sample of
    FAISS's training size), not FAISS's uniform random ones: those, measured by bench/analyze.py on
    planted clusters, often merge two clusters and split another (ARI 0.82 against scikit-learn's).
    """
    import faiss
    from sklearn.cluster import kmeans_plusplus

    z = np.ascontiguousarray(z, np.float32)
    gpu = hasattr(faiss, "StandardGpuResources") and faiss.get_num_gpus() > 0
    best = None
    for r in range(restarts):
        rng = np.random.default_rng([seed, r])
        sample = z[rng.choice(len(z), min(len(z), TRAIN_PER_CENTROID * k), replace=False)]
        init, _ = kmeans_plusplus(sample, k, random_state=int(rng.integers(2**31)))
        km = faiss.Kmeans(z.shape[1], k, niter=KMEANS_ITERATIONS, seed=seed + r, gpu=gpu, verbose=False,
                          max_points_per_centroid=TRAIN_PER_CENTROID)
        km.train(z, init_centroids=np.ascontiguousarray(init, np.float32))
        if best is None or km.obj[-1] < best.obj[-1]:
            best = km
    _, nearest = best.index.search(z, 1)
    return nearest[:, 0].astype(np.int32), np.asarray(best.centroids, np.float32)
