"""Nearest-neighbour search engines for pairing: exact torch, exact FAISS flat, approximate FAISS IVF.

Every engine takes L2-normalised float32 arrays (cosine = inner product) and returns
``(scores, ids)`` of shape ``(n_queries, k)``, best first; ``ids`` is ``-1`` (score ``-inf``)
where the pool has fewer than ``k`` items. Exact engines return the same neighbours in the
same order as a NumPy brute force: candidates are sorted by float32 score, ties broken by the
lower target index (fp16 GPU candidates are re-scored in float32 first).

``auto`` follows autofaiss's reasoning: exact search while it is affordable (on a GPU, torch
streams target blocks through a blocked fp16 matmul, so exact is always affordable there; on a
CPU, an exact flat index while the pool fits the memory budget and the brute-force work stays
small), else an IVF index with about ``4 * sqrt(n)`` lists.
"""

from __future__ import annotations

import logging
import math
from dataclasses import dataclass

import numpy as np

log = logging.getLogger(__name__)

ENGINES = ("torch", "faiss-flat", "faiss-ivf")
# Brute-force multiply-adds a CPU flat search may spend before auto switches to IVF
# (~2e12 MACs is a few minutes on a handful of cores).
EXACT_CPU_MACS = 2e12


def _faiss():
    try:
        import faiss
    except ImportError as exc:  # pragma: no cover - faiss-cpu is a core dependency
        raise ImportError("the faiss engines need faiss: pip install faiss-cpu (or faiss-gpu)") from exc
    return faiss


def faiss_available() -> bool:
    try:
        _faiss()
    except ImportError:
        return False
    return True


def cuda_available() -> bool:
    import torch

    return torch.cuda.is_available()


def choose_engine(n_queries: int, n_targets: int, dim: int, memory_gb: float, cuda: bool | None = None) -> str:
    """Pick an engine for ``auto`` (see the module docstring)."""
    cuda = cuda_available() if cuda is None else cuda
    if cuda or not faiss_available():
        return "torch"
    flat_bytes = n_targets * dim * 4
    macs = float(n_queries) * n_targets * dim
    if flat_bytes <= memory_gb * 2**30 and macs <= EXACT_CPU_MACS:
        return "faiss-flat"
    return "faiss-ivf"


def rank_candidates(scores: np.ndarray, ids: np.ndarray, k: int) -> tuple[np.ndarray, np.ndarray]:
    """Sort candidates (n, c) by score, ties broken by the lower id, ``-1`` ids last; keep ``k``
    columns, padding with ``-1`` / ``-inf`` when there are fewer candidates than ``k``."""
    n, c = ids.shape
    scores = np.where(ids < 0, -np.inf, scores).astype(np.float32)
    tie = np.where(ids < 0, np.iinfo(np.int64).max, ids)
    rows = np.repeat(np.arange(n), c)
    order = np.lexsort((tie.ravel(), -scores.ravel(), rows)).reshape(n, c) - (np.arange(n) * c)[:, None]
    out_ids = np.take_along_axis(ids, order, 1)[:, :k].astype(np.int64)
    out_scores = np.take_along_axis(scores, order, 1)[:, :k]
    if out_ids.shape[1] < k:  # pool smaller than k
        pad = ((0, 0), (0, k - out_ids.shape[1]))
        out_scores = np.pad(out_scores, pad, constant_values=-np.inf)
        out_ids = np.pad(out_ids, pad, constant_values=-1)
    return out_scores, out_ids


def _empty(nq: int, k: int) -> tuple[np.ndarray, np.ndarray]:
    return np.full((nq, k), -np.inf, np.float32), np.full((nq, k), -1, np.int64)


@dataclass
class TorchSearcher:
    """Exact search: blocked matmul + top-k, target blocks streamed over all queries of a call.

    On CUDA the pool is fp16 and stays resident when it fits half of ``memory_gb`` (else it
    stays in pinned host memory and is copied block by block, so a pool larger than GPU
    memory works); 2k fp16 candidates are then re-scored in float32 before the final sort.
    On the CPU everything is float32.
    """

    targets: np.ndarray
    device: str = "cpu"
    memory_gb: float = 8.0
    query_batch: int = 0  # 0 = 4096 on CUDA, 1024 on CPU

    def __post_init__(self):
        import torch

        self._half = self.device.startswith("cuda")
        dtype = torch.float16 if self._half else torch.float32
        n, dim = self.targets.shape
        elem = 2 if self._half else 4
        budget = self.memory_gb * 2**30
        self.query_batch = self.query_batch or (4096 if self._half else 1024)
        # a score tile (query_batch x block) gets at most a quarter of the budget, 2 GiB at most
        score_bytes = min(budget / 4, 2 * 2**30)
        self.block = int(max(1024, min(n, score_bytes // (self.query_batch * elem))))
        pool = torch.from_numpy(np.ascontiguousarray(self.targets, dtype=np.float32)).to(dtype)
        self.resident = n * dim * elem <= budget / 2
        if self.resident:
            pool = pool.to(self.device)
        elif self._half:
            pool = pool.pin_memory()
        self._pool = pool

    def search(self, queries: np.ndarray, k: int) -> tuple[np.ndarray, np.ndarray]:
        import torch

        n = self.targets.shape[0]
        nq = queries.shape[0]
        c = min(n, 2 * k if self._half else k)
        if nq == 0 or n == 0:
            return _empty(nq, k)
        q_all = torch.from_numpy(np.ascontiguousarray(queries, dtype=np.float32)).to(self.device, self._pool.dtype)
        best_s = torch.full((nq, c), -math.inf, device=self.device, dtype=torch.float32)
        best_i = torch.full((nq, c), -1, device=self.device, dtype=torch.int64)
        with torch.no_grad():
            for start in range(0, n, self.block):
                block = self._pool[start:start + self.block].to(self.device, non_blocking=True)
                kb = min(c, block.shape[0])
                for qs in range(0, nq, self.query_batch):
                    rows = slice(qs, qs + self.query_batch)
                    s, i = (q_all[rows] @ block.T).topk(kb, dim=1)
                    cat_s = torch.cat([best_s[rows], s.float()], 1)
                    cat_i = torch.cat([best_i[rows], i + start], 1)
                    top_s, pos = cat_s.topk(c, dim=1)
                    best_s[rows] = top_s
                    best_i[rows] = cat_i.gather(1, pos)
            if self._half:
                best_s = self._rescore(q_all, best_i)
        return rank_candidates(best_s.cpu().numpy(), best_i.cpu().numpy(), k)

    def _rescore(self, q_all, ids):
        """Exact float32 scores of the candidates (ids are all valid: c <= n)."""
        import torch

        out = torch.empty(ids.shape, dtype=torch.float32, device=self.device)
        for qs in range(0, ids.shape[0], self.query_batch):
            rows = slice(qs, qs + self.query_batch)
            cand = self._pool[ids[rows].to(self._pool.device)].to(self.device).float()
            out[rows] = torch.bmm(cand, q_all[rows].float().unsqueeze(2)).squeeze(2)
        return out

    def faiss_index(self):
        """A flat FAISS index of the pool, saved next to the pairs for later look-ups."""
        return FaissFlatSearcher(self.targets).index


class _FaissSearcher:
    """Search through a built FAISS index (``self.index``, searched as ``self._search_index``)."""

    targets: np.ndarray
    index: object
    _search_index: object

    def search(self, queries: np.ndarray, k: int) -> tuple[np.ndarray, np.ndarray]:
        c = min(self.targets.shape[0], k)
        if c == 0 or queries.shape[0] == 0:
            return _empty(queries.shape[0], k)
        scores, ids = self._search_index.search(np.ascontiguousarray(queries, dtype=np.float32), c)
        return rank_candidates(scores, ids, k)

    def faiss_index(self):
        return self.index


class FaissFlatSearcher(_FaissSearcher):
    """Exact search with ``IndexFlatIP`` (on a GPU when faiss-gpu sees one)."""

    def __init__(self, targets: np.ndarray):
        faiss = _faiss()
        self.targets = targets
        self.index = faiss.IndexFlatIP(targets.shape[1])
        self.index.add(np.ascontiguousarray(targets, dtype=np.float32))
        self._search_index = _maybe_gpu(self.index)


def ivf_lists(n: int) -> int:
    """About ``4 * sqrt(n)`` lists (a power of two), with at least 39 training points per list."""
    if n < 78:
        return 1
    lists = 2 ** round(math.log2(4 * math.sqrt(n)))
    return int(max(1, min(lists, n // 39)))


class FaissIVFSearcher(_FaissSearcher):
    """Approximate search with ``IndexIVFFlat`` (inner product), ``nprobe`` lists probed per query."""

    def __init__(self, targets: np.ndarray, nprobe: int = 32, seed: int = 0):
        faiss = _faiss()
        n, dim = targets.shape
        self.targets = targets
        self.nlist = ivf_lists(n)
        quantizer = faiss.IndexFlatIP(dim)
        self.index = faiss.IndexIVFFlat(quantizer, dim, self.nlist, faiss.METRIC_INNER_PRODUCT)
        data = np.ascontiguousarray(targets, dtype=np.float32)
        sample = data
        max_train = 256 * self.nlist
        if n > max_train:
            sample = data[np.sort(np.random.default_rng(seed).choice(n, max_train, replace=False))]
        self.index.train(sample)
        self.index.add(data)
        self.index.nprobe = min(nprobe, self.nlist)
        self._search_index = _maybe_gpu(self.index)
        log.info("IVF index: %d lists, nprobe %d, %d vectors", self.nlist, self.index.nprobe, n)


def _maybe_gpu(index):
    """Move an index to the GPU when faiss-gpu is installed and sees one; else return it."""
    faiss = _faiss()
    if hasattr(faiss, "StandardGpuResources") and faiss.get_num_gpus() > 0:
        return faiss.index_cpu_to_gpu(faiss.StandardGpuResources(), 0, index)
    return index


def build_searcher(engine: str, targets: np.ndarray, *, device: str | None = None, memory_gb: float = 8.0,
                   nprobe: int = 32):
    """A searcher over ``targets`` for a concrete engine name (not ``auto``)."""
    if engine == "torch":
        return TorchSearcher(targets, device or ("cuda" if cuda_available() else "cpu"), memory_gb)
    if engine == "faiss-flat":
        return FaissFlatSearcher(targets)
    if engine == "faiss-ivf":
        return FaissIVFSearcher(targets, nprobe)
    raise ValueError(f"unknown kNN engine {engine!r}; use one of {', '.join(ENGINES)}")
