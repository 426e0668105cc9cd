"""The sample-space (cross-dataset) route over each item's ``k`` nearest other-set pivots.

METHODS.md section 4: ``A_{1<-2} = argmin ||A P_2 - P_1||^2 + lambda ||A||^2`` writes each D1 pivot
as a combination of D2 pivots; the pseudo partner is ``A C_2``. Each row of ``A`` is its own ridge
problem, so restricted to the ``k`` nearest D2 pivots ``N`` of D1 item ``i`` (rows of ``P_N``,
``k x d``) it is the ``k x k`` kernel solve::

    alpha_i = (P_N P_N^T + lambda I)^-1 P_N p_i        c_hat_i = alpha_i^T C_N

Items are processed in blocks sized to ``bridge.memory_gb``; neighbours come from the pair stage's
searchers (:func:`pipeline.pair.knn.build_searcher`: FAISS flat/IVF on the CPU, torch on a GPU).
A neighbour slot without an item (fewer than ``k`` allowed) is a zero row, whose weight the solve
sets to exactly 0, so padding changes nothing. One eigendecomposition of each local kernel gives
``alpha`` for every lambda of a CV grid.

Precision: the solves (eigendecomposition, ``alpha``) are float64. The neighbours are gathered as
float32 and their products ``P_N P_N^T``, ``P_N p_i`` and ``alpha^T C_N`` are float32 matmuls: from
float16 stores their rounding (about 1e-7 relative per product, summed over ``d``) stays orders of
magnitude below the stored vectors' own (float16: 5e-4), and it halves the time and memory of the
gather, which dominates the route (measured by ``bench/bridge.py``).
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable
from dataclasses import dataclass

import numpy as np
import torch
from tqdm import tqdm

from pipeline.pair.knn import build_searcher, choose_engine

log = logging.getLogger(__name__)
MAX_BLOCK = 8192  # queries per block at most, whatever the budget


def unit32(x: np.ndarray) -> np.ndarray:
    x = np.asarray(x, np.float32)
    return x / np.maximum(np.linalg.norm(x, axis=1, keepdims=True), 1e-12)


def local_combination(query: torch.Tensor, bank_p: torch.Tensor, bank_y: torch.Tensor,
                      lams: list[float]) -> torch.Tensor:
    """``(L, B, e)`` float32 pseudo targets for ``B`` queries ``(B, d)`` from their gathered neighbours'
    pivots ``(B, k, d)`` and targets ``(B, k, e)`` (float32), one slice per lambda; solved in float64."""
    kernel = (bank_p @ bank_p.transpose(1, 2)).double()  # (B, k, k)
    rhs = (bank_p @ query.unsqueeze(2)).squeeze(2).double()  # (B, k)
    if len(lams) == 1:  # one lambda: a Cholesky solve is several times cheaper than an eigendecomposition
        eye = torch.eye(kernel.shape[1], dtype=kernel.dtype)
        alpha = torch.cholesky_solve(rhs.unsqueeze(2), torch.linalg.cholesky(kernel + lams[0] * eye)).squeeze(2)
        return (alpha.float().unsqueeze(1) @ bank_y).squeeze(1).unsqueeze(0)
    evals, vecs = torch.linalg.eigh(kernel)
    rotated = (vecs.transpose(1, 2) @ rhs.unsqueeze(2)).squeeze(2)  # (B, k)
    out = []
    for lam in lams:
        alpha = (vecs @ (rotated / (evals.clamp(min=0.0) + lam)).unsqueeze(2)).squeeze(2)
        out.append((alpha.float().unsqueeze(1) @ bank_y).squeeze(1))
    return torch.stack(out)


@dataclass
class NeighborBank:
    """The set whose pivots and targets are combined: ``pivots[i]`` belongs with ``targets[i]``."""

    pivots: np.ndarray  # (n, d) as stored
    targets: np.ndarray  # (n, e) as stored
    k: int
    memory_gb: float
    queries: int = MAX_BLOCK  # how many queries will be searched (the engine choice weighs the work)

    def __post_init__(self) -> None:
        n, d = self.pivots.shape
        start = time.perf_counter()
        self.engine = choose_engine(self.queries, n, d, self.memory_gb)
        self.searcher = build_searcher(self.engine, unit32(self.pivots), memory_gb=self.memory_gb)
        self.seconds = {"index": time.perf_counter() - start, "search": 0.0, "solve": 0.0}
        # torch views of the arrays (no copy when contiguous): torch gathers and widens float16 fast
        self._pivots_t = torch.from_numpy(np.ascontiguousarray(self.pivots))
        self._targets_t = torch.from_numpy(np.ascontiguousarray(self.targets))
        log.info("bridge: %s index over %d pivots (%d-d), k = %d", self.engine, n, d, self.k)

    @property
    def mean_square_norm(self) -> float:
        sample = np.asarray(self.pivots[:: max(1, len(self.pivots) // 10000)], np.float64)
        return float(np.mean(np.einsum("ij,ij->i", sample, sample)))

    def block_size(self, lams: int = 1) -> int:
        """Queries per block such that one block's working set fits ``memory_gb``: the gathered neighbours
        (float32, plus their stored-dtype copy while gathering), the kernels and their eigenvectors
        (float64), and one pseudo target per lambda."""
        d, e = self.pivots.shape[1], self.targets.shape[1]
        item = self.pivots.dtype.itemsize
        per_query = self.k * (d + e) * (4 + item) + 8 * self.k * self.k * 4 + 4 * (lams + 1) * (d + e)
        return int(max(1, min(MAX_BLOCK, self.memory_gb * 2**30 // per_query)))

    def neighbors(self, queries: np.ndarray, allowed: Callable[[np.ndarray], np.ndarray] | None = None,
                  extra: int = 0) -> np.ndarray:
        """``(B, k)`` bank rows nearest each query (-1 = none). With ``allowed(ids) -> bool mask``, the
        first ``k`` allowed of ``k + extra`` candidates are kept (the others become -1)."""
        _, ids = self.searcher.search(unit32(queries), self.k + extra)
        if allowed is None:
            return ids[:, :self.k]
        ok = (ids >= 0) & allowed(ids)
        rank = np.cumsum(ok, axis=1)
        keep = ok & (rank <= self.k)
        out = np.full((len(ids), self.k), -1, np.int64)
        rows, cols = np.nonzero(keep)
        out[rows, rank[rows, cols] - 1] = ids[rows, cols]
        return out

    def gather(self, ids: np.ndarray) -> tuple[torch.Tensor, torch.Tensor]:
        """Neighbours' pivots and targets as float32 tensors, zero rows where ``ids`` is -1."""
        valid = torch.from_numpy(ids >= 0).unsqueeze(-1)
        safe = torch.from_numpy(np.maximum(ids, 0).ravel())
        p = self._pivots_t[safe].to(torch.float32).view(*ids.shape, -1)
        y = self._targets_t[safe].to(torch.float32).view(*ids.shape, -1)
        return p.mul_(valid), y.mul_(valid)

    def predict(self, queries: np.ndarray, lams: list[float], allowed_for: Callable[[slice], Callable] | None = None,
                extra: int = 0, dtype: type = np.float64, desc: str = "") -> np.ndarray:
        """``(L, n, e)`` pseudo targets of ``queries`` for every lambda in ``lams`` (returned as ``dtype``).
        ``allowed_for(rows)`` gives the neighbour filter of the queries ``rows`` (see :meth:`neighbors`).
        Time spent searching and solving adds up in ``self.seconds``."""
        n = len(queries)
        out = np.empty((len(lams), n, self.targets.shape[1]), dtype)
        step = self.block_size(len(lams))
        for start in tqdm(range(0, n, step), desc=desc or "bridge neighbours", disable=n <= step):
            rows = slice(start, start + step)
            t0 = time.perf_counter()
            ids = self.neighbors(queries[rows], allowed_for(rows) if allowed_for else None, extra)
            t1 = time.perf_counter()
            p, y = self.gather(ids)
            q = torch.from_numpy(np.ascontiguousarray(queries[rows])).to(torch.float32)
            out[:, rows] = local_combination(q, p, y, lams).numpy()
            self.seconds["search"] += t1 - t0
            self.seconds["solve"] += time.perf_counter() - t1
        return out
