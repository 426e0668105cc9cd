"""The resumable kNN search of `bindery pair`: every target modality's top-k, one query chunk at a time.

Each finished chunk is written atomically to ``pairs/chunks/chunk-NNNNNN.parquet`` beside
``params.json``, the fingerprint of what the chunks depend on (the stores, the keys, the head
run's file, k, the engines, the chunk size). A rerun under the same fingerprint searches only
the missing chunks; under another one, the old chunks are discarded instead of mixed in.
"""

from __future__ import annotations

import json
import logging
import math
import time
from dataclasses import dataclass, field

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq

from pipeline.core.hashing import file_sha256, keys_digest
from pipeline.core.layout import OutputLayout, PairsLayout
from pipeline.core.manifest import PairConfig
from pipeline.core.store import atomic_write_table, atomic_write_text, store_fingerprint
from pipeline.pair import knn
from pipeline.pair.space import PairInputs, Pool

log = logging.getLogger(__name__)

CHUNK_SCHEMA = pa.schema([("query_index", pa.int64()), ("modality", pa.string()), ("rank", pa.int32()),
                          ("target_index", pa.int64()), ("score", pa.float32())])


@dataclass(frozen=True)
class SearchPlan:
    """What the pair stage's entry resolved: the section, the stores in one space, the device, the engines."""

    cfg: PairConfig
    layout: OutputLayout
    inputs: PairInputs
    device: str
    engines: dict[str, str]  # target modality -> concrete engine (never ``auto``)


@dataclass
class SearchResult:
    table: pa.Table  # CHUNK_SCHEMA rows of every chunk, in query order
    chunks: int
    chunks_reused: int
    searchers: dict = field(default_factory=dict)  # target modality -> searcher (empty when all were reused)
    build_index_s: float = 0.0
    search_s: float = 0.0
    searched: int = 0  # queries searched by this run

    def timings(self) -> dict[str, float | None]:
        qps = round(self.searched / self.search_s, 1) if self.searched and self.search_s > 0 else None
        return {"build_index_s": round(self.build_index_s, 3), "search_s": round(self.search_s, 3),
                "queries_per_s": qps}


def build_searcher(plan: SearchPlan, engine: str, vectors: np.ndarray):
    """A searcher over ``vectors`` with the plan's device, memory budget and nprobe."""
    return knn.build_searcher(engine, vectors, device=plan.device, memory_gb=plan.cfg.memory_gb,
                              nprobe=plan.cfg.nprobe)


def _pool_fingerprint(layout: OutputLayout, pool: Pool) -> dict:
    """The store's fingerprint (identity, parts) and what pairing read of it: how many keys, which, the space's dim."""
    return {**store_fingerprint(layout.root, pool.modality), "n": len(pool.keys),
            "keys": keys_digest(pool.keys.tolist()), "space_dim": int(pool.vectors.shape[1])}


def fingerprint(plan: SearchPlan) -> dict:
    """What a chunk's content depends on; chunks written under another fingerprint are discarded."""
    cfg, inputs, layout = plan.cfg, plan.inputs, plan.layout
    return {"query": cfg.query, "queries": len(inputs.query.keys),
            "query_keys": keys_digest(inputs.query.keys.tolist()),
            "query_store": _pool_fingerprint(layout, inputs.query),
            "targets": {m: _pool_fingerprint(layout, p) for m, p in inputs.targets.items()},
            "k": cfg.k, "engines": plan.engines, "head_run": cfg.head_run,
            "heads_sha256": file_sha256(layout.run(cfg.head_run).heads) if cfg.head_run else None,
            "query_chunk": cfg.query_chunk, "nprobe": cfg.nprobe, "device": plan.device.split(":")[0]}


def _prepare_chunks(pairs: PairsLayout, fingerprint: dict) -> None:
    params = pairs.chunk_params
    if params.is_file() and json.loads(params.read_text()) != fingerprint:
        stale = pairs.chunk_files()
        log.info("pair inputs or parameters changed: discarding %d old chunk(s)", len(stale))
        for p in stale:
            p.unlink()
    atomic_write_text(params, json.dumps(fingerprint, indent=1, sort_keys=True))


def _write_chunk(path, table: pa.Table) -> None:
    """Write one finished chunk (a separate function so tests can interrupt a run here)."""
    atomic_write_table(table, path)


def _search_chunk(searchers: dict, query: Pool, rows: slice, k: int) -> pa.Table:
    q = query.vectors[rows]
    q_index = np.arange(rows.start, rows.start + len(q), dtype=np.int64)
    cols: dict[str, list] = {n: [] for n in CHUNK_SCHEMA.names}
    for m, searcher in searchers.items():
        scores, ids = searcher.search(q, k)
        valid = ids >= 0
        cols["query_index"].append(np.repeat(q_index, k).reshape(-1, k)[valid])
        cols["modality"].append(np.full(int(valid.sum()), m, dtype=object))
        cols["rank"].append(np.tile(np.arange(k, dtype=np.int32), (len(q), 1))[valid])
        cols["target_index"].append(ids[valid])
        cols["score"].append(scores[valid].astype(np.float32))
    return pa.table({n: pa.array(np.concatenate(v) if v else [], CHUNK_SCHEMA.field(n).type)
                     for n, v in cols.items()}, schema=CHUNK_SCHEMA)


def search_all(plan: SearchPlan, pairs: PairsLayout) -> SearchResult:
    """Search the chunks not on disk yet (building the searchers only if there is one) and read them all."""
    from tqdm import tqdm

    cfg, inputs = plan.cfg, plan.inputs
    _prepare_chunks(pairs, fingerprint(plan))
    nq = len(inputs.query.keys)
    n_chunks = max(1, math.ceil(nq / cfg.query_chunk))
    paths = [pairs.chunk(c) for c in range(n_chunks)]
    todo = [c for c, p in enumerate(paths) if not p.is_file()]
    t0 = time.perf_counter()
    searchers = ({m: build_searcher(plan, plan.engines[m], p.vectors) for m, p in inputs.targets.items()}
                 if todo else {})
    t_build = time.perf_counter() - t0
    searched = 0
    for c in tqdm(todo, desc="pair chunks", unit="chunk", disable=len(todo) < 2):
        rows = slice(c * cfg.query_chunk, min(nq, (c + 1) * cfg.query_chunk))
        _write_chunk(paths[c], _search_chunk(searchers, inputs.query, rows, cfg.k))
        searched += rows.stop - rows.start
    t_search = time.perf_counter() - t0 - t_build
    table = pa.concat_tables([pq.read_table(p) for p in paths])
    return SearchResult(table, n_chunks, n_chunks - len(todo), searchers, t_build, t_search, searched)
