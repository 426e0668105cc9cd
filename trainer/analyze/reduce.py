"""PCA of the fused vectors to each analysed dimension.

One PCA is fitted at the largest dimension; the first ``d`` of its components are the PCA to
``d`` (principal components are nested, so this equals a separate fit to ``d`` up to the signs
that :func:`sklearn.utils.extmath.svd_flip` fixes). Past ``analyze.large`` listings the fit is
one of :func:`trainer.analyze.large.large_pca`'s (randomized on the GPU, streamed covariance on the CPU).
"""

from __future__ import annotations

import logging
from dataclasses import dataclass

import numpy as np

from pipeline.core.manifest import ManifestError

log = logging.getLogger(__name__)


@dataclass
class Reduction:
    """The fused vectors in PCA coordinates: column ``j`` is component ``j``."""

    dims: tuple[int, ...]  # sorted, unique
    projected: np.ndarray  # (n, max(dims)) float32
    explained: dict[int, float]  # dim -> cumulative explained-variance ratio
    solver: str  # "full" | "covariance (exact, streamed)" | "randomized (sklearn)" | "torch.pca_lowrank (cuda)"

    def at(self, dim: int) -> np.ndarray:
        """The PCA-``dim`` vectors."""
        return self.projected[:, :dim]


def checked_dims(dims: tuple[int, ...], n: int, dim: int) -> tuple[int, ...]:
    """``analyze.dims`` sorted and unique; an error naming the key when PCA cannot reach one."""
    dims = tuple(sorted(set(dims)))
    limit = min(n, dim)
    if dims[-1] > limit:
        raise ManifestError(f"analyze.dims: {dims[-1]} dimensions asked, but {n} listings of dim {dim} give PCA at "
                            f"most {limit}; use dims <= {limit}, e.g. {[d for d in dims if d <= limit] or [limit]}")
    return dims


def reduce(vectors: np.ndarray, dims: tuple[int, ...], seed: int, large: bool) -> Reduction:
    """PCA of ``vectors`` to every dim in ``dims`` (a full SVD, or past ``analyze.large`` the large path's PCA)."""
    dims = checked_dims(dims, *vectors.shape)
    top = dims[-1]
    if large:
        from trainer.analyze.large import large_pca

        projected, ratio, solver = large_pca(vectors, top, seed)
    else:
        from sklearn.decomposition import PCA

        pca = PCA(n_components=top, svd_solver="full", random_state=seed)
        projected, ratio, solver = pca.fit_transform(vectors), pca.explained_variance_ratio_, "full"
    cumulative = np.cumsum(ratio)
    explained = {d: float(cumulative[d - 1]) for d in dims}
    log.info("PCA (%s) to %s: explained variance %s", solver, list(dims),
             ", ".join(f"{d}: {v:.3f}" for d, v in explained.items()))
    return Reduction(dims, np.ascontiguousarray(projected, dtype=np.float32), explained, solver)
