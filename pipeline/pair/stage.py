"""`bindery pair`: auto-pair every query item (EBind: captions) with its nearest items in the other modalities.

Steps: load the stores into one space (:mod:`pipeline.pair.space`); search the top-k of every
target modality for one query chunk at a time (:mod:`pipeline.pair.search`), each chunk written
atomically to ``pairs/chunks/`` so a rerun skips what is done; assemble ``neighbors.parquet``
after the ``min_score``, ``mutual`` and calibrated acceptance (:mod:`pipeline.pair.accept`) filters, choose one partner per query and modality
(``max_uses`` hub limit, :mod:`pipeline.pair.filters`) into ``quintuples.parquet``; save a FAISS
index per target modality, ``summary.json`` and score histograms.
"""

from __future__ import annotations

import dataclasses
import json
import logging
import time
from dataclasses import dataclass

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from pipeline.core.layout import OutputLayout, PairsLayout
from pipeline.core.manifest import Manifest, ManifestError, PairConfig
from pipeline.core.store import META_PREFIX, atomic_write, atomic_write_table, atomic_write_text
from pipeline.pair import accept, knn
from pipeline.pair.filters import capped_choice, first_choice, keep_mask
from pipeline.pair.report import modality_stats, quantiles, write_histogram
from pipeline.pair.search import SearchPlan, SearchResult, build_searcher, search_all
from pipeline.pair.space import PairInputs, Pool, load_inputs

log = logging.getLogger(__name__)

NEIGHBOR_SCHEMA = pa.schema([("query_key", pa.string()), ("modality", pa.string()), ("rank", pa.int32()),
                             ("target_key", pa.string()), ("score", pa.float32())])


# ----------------------------------------------------------------------------- entry checks


def _device(requested: str) -> str:
    if requested == "auto":
        return "cuda" if knn.cuda_available() else "cpu"
    if requested.startswith("cuda") and not knn.cuda_available():
        raise ManifestError(f"pair.device: {requested!r} but this machine has no CUDA device; use auto or cpu")
    return requested


def _engines(cfg: PairConfig, inputs: PairInputs, device: str) -> dict[str, str]:
    nq = len(inputs.query.keys)
    return {m: cfg.engine if cfg.engine != "auto" else
            knn.choose_engine(nq, len(p.keys), p.vectors.shape[1], cfg.memory_gb, cuda=device.startswith("cuda"))
            for m, p in inputs.targets.items()}


# ----------------------------------------------------------------------------- filters and choice


@dataclass
class ModalityPairs:
    """One target modality after the filters: the kept neighbours and each query's chosen partner."""

    neighbors: pa.Table  # NEIGHBOR_SCHEMA rows that survived min_score and mutual
    target: np.ndarray  # (n_queries,) chosen target index, -1 where none
    score: np.ndarray  # (n_queries,) its score, NaN where none
    top1: np.ndarray  # (n_queries,) raw top-1 score, NaN where the search found nothing
    stats: dict


def _key_array(pool: Pool) -> pa.Array:
    return pa.array(pool.keys.tolist(), pa.string())


def _reverse_pairs(plan: SearchPlan, m: str) -> tuple[np.ndarray, np.ndarray]:
    """Each target's top-k among the queries, for the mutual test."""
    searcher = build_searcher(plan, plan.engines[m], plan.inputs.query.vectors)
    target = plan.inputs.targets[m].vectors
    _, ids = searcher.search(target, plan.cfg.k)
    return np.repeat(np.arange(len(target), dtype=np.int64), plan.cfg.k), ids.ravel()


def _raw_top1(sub: pa.Table, n_queries: int) -> np.ndarray:
    top1 = np.full(n_queries, np.nan, np.float32)
    first = sub.filter(pc.equal(sub.column("rank"), 0))
    top1[first.column("query_index").to_numpy()] = first.column("score").to_numpy()
    return top1


def _pair_modality(plan: SearchPlan, raw: pa.Table, m: str, split: tuple[int, float]) -> ModalityPairs:
    """Calibrate the acceptance threshold, filter one modality's raw neighbour lists and choose a
    partner per query."""
    cfg, inputs = plan.cfg, plan.inputs
    nq, pool = len(inputs.query.keys), inputs.targets[m]
    sub = raw.filter(pc.equal(raw.column("modality"), m))
    q, t = sub.column("query_index").to_numpy(), sub.column("target_index").to_numpy()
    rank, score = sub.column("rank").to_numpy(), sub.column("score").to_numpy()
    truth = accept.query_truth(inputs.query.keys, pool.keys, *split)
    cal = accept.calibrate(accept.Neighbours(q, t, score), truth,
                           accept.own_scores(inputs.query.vectors, pool.vectors, truth.own), cfg.accept_quantile)
    reverse = _reverse_pairs(plan, m) if cfg.mutual else None
    keep = keep_mask(q, t, score, min_score=cal.min_score(cfg.min_score), reverse=reverse, n_queries=nq)
    q, t, rank, score = q[keep], t[keep], rank[keep], score[keep]
    pick = capped_choice(q, t, score, nq, cfg.max_uses) if cfg.max_uses else first_choice(q, nq)
    ok = pick >= 0
    chosen_t, chosen_s = np.full(nq, -1, np.int64), np.full(nq, np.nan, np.float32)
    chosen_t[ok], chosen_s[ok] = t[pick[ok]], score[pick[ok]]
    neighbors = pa.table({
        "query_key": _key_array(inputs.query).take(pa.array(q)),
        "modality": pa.array(np.full(len(q), m, dtype=object), pa.string()),
        "rank": pa.array(rank, pa.int32()),
        "target_key": _key_array(pool).take(pa.array(t)),
        "score": pa.array(score, pa.float32())}, schema=NEIGHBOR_SCHEMA)
    top1 = _raw_top1(sub, nq)
    stats = modality_stats(len(pool.keys), top1, sub.num_rows, len(q), chosen_t, chosen_s)
    stats["acceptance"] = accept.acceptance_report(cal, truth, chosen_t, cfg.accept_quantile)
    return ModalityPairs(neighbors, chosen_t, chosen_s, top1, stats)


def _quintuples(inputs: PairInputs, chosen: dict[str, ModalityPairs]) -> pa.Table:
    """One row per query; a query without a partner in a modality gets nulls there. The Parquet
    metadata name the query modality and the targets (``bindery.query``, ``bindery.targets``)."""
    cols = {"query_key": _key_array(inputs.query)}
    for m, c in chosen.items():
        ok = c.target >= 0
        cols[f"{m}_key"] = _key_array(inputs.targets[m]).take(pa.array(c.target, pa.int64(), mask=~ok))
        cols[f"{m}_score"] = pa.array(c.score.astype(np.float32), pa.float32(), mask=~ok)
    meta = {"query": inputs.query.modality, "targets": list(chosen)}
    return pa.table(cols).replace_schema_metadata({f"{META_PREFIX}{k}": json.dumps(v) for k, v in meta.items()})


def _write_pairs(plan: SearchPlan, raw: pa.Table, pairs: PairsLayout, split: tuple[int, float]
                 ) -> dict[str, ModalityPairs]:
    """Filter and choose per modality; write the histograms, ``neighbors`` and ``quintuples``."""
    cfg = plan.cfg
    chosen = {}
    for m in plan.inputs.targets:
        chosen[m] = c = _pair_modality(plan, raw, m, split)
        threshold = c.stats["acceptance"]["threshold"]
        write_histogram(pairs.histogram(m), m, cfg.query, c.top1, c.score,
                        cfg.min_score if threshold is None else max(cfg.min_score, threshold))
    atomic_write_table(pa.concat_tables([c.neighbors for c in chosen.values()]), pairs.neighbors)
    atomic_write_table(_quintuples(plan.inputs, chosen), pairs.quintuples)
    return chosen


# ----------------------------------------------------------------------------- indexes and summary


def _save_index(pairs: PairsLayout, plan: SearchPlan, m: str, searcher) -> None:
    """``index/<m>.faiss`` and its key map; reuses the search's searcher, else keeps what is on disk."""
    path, keys_path = pairs.index(m), pairs.index_keys(m)
    if path.is_file() and keys_path.is_file() and searcher is None:
        return
    if not knn.faiss_available():
        log.warning("faiss is not installed: no %s written", path)
        return
    import faiss

    pool = plan.inputs.targets[m]
    searcher = searcher or build_searcher(plan, plan.engines[m], pool.vectors)
    index = searcher.faiss_index()
    atomic_write(path, lambda tmp: faiss.write_index(index, str(tmp)))
    atomic_write_table(pa.table({"key": _key_array(pool)}), keys_path)


def _summary(plan: SearchPlan, search: SearchResult, chosen: dict[str, ModalityPairs],
             timings: dict[str, float]) -> dict:
    cfg, inputs = plan.cfg, plan.inputs
    paired_all = np.all([c.target >= 0 for c in chosen.values()], axis=0)
    return {
        "query": cfg.query, "queries": len(inputs.query.keys), "targets": list(inputs.targets),
        "device": plan.device, "engines": plan.engines,
        "space": {m: {"space": p.space, "projected": p.projected, "dim": int(p.vectors.shape[1])}
                  for m, p in {cfg.query: inputs.query, **inputs.targets}.items()},
        "params": dataclasses.asdict(cfg),
        "queries_paired_in_every_modality": int(paired_all.sum()),
        "modalities": {m: c.stats for m, c in chosen.items()},
        "chosen_score_all": quantiles(np.concatenate([c.score for c in chosen.values()])),
        "chunks": search.chunks, "chunks_reused": search.chunks_reused,
        "timings": {"load_s": timings["load_s"], **search.timings(), "filter_s": timings["filter_s"],
                    "index_s": timings["index_s"], "total_s": timings["total_s"]},
    }


def _plan(cfg: PairConfig, layout: OutputLayout) -> SearchPlan:
    """The checked entry: stores in one space, the device and the engines (ManifestError before any search)."""
    inputs = load_inputs(cfg, layout)
    device = _device(cfg.device)
    return SearchPlan(cfg, layout, inputs, device, _engines(cfg, inputs, device))


def run(manifest: Manifest) -> dict:
    """Pair ``pair.query`` items with their neighbours in each target modality; return the summary."""
    pairs = manifest.layout.pairs
    t_start = time.perf_counter()
    plan = _plan(manifest.pair, manifest.layout)
    timings = {"load_s": round(time.perf_counter() - t_start, 3)}
    log.info("pairing %d %s queries with %s (engines %s, device %s)", len(plan.inputs.query.keys),
             plan.cfg.query, ", ".join(f"{m}: {len(p.keys)}" for m, p in plan.inputs.targets.items()),
             plan.engines, plan.device)
    search = search_all(plan, pairs)

    t0 = time.perf_counter()
    chosen = _write_pairs(plan, search.table, pairs, accept.split_params(plan.cfg, manifest.layout, manifest.train))
    timings["filter_s"] = round(time.perf_counter() - t0, 3)
    t0 = time.perf_counter()
    if plan.cfg.save_index:
        for m in plan.inputs.targets:
            _save_index(pairs, plan, m, search.searchers.get(m))
    timings["index_s"] = round(time.perf_counter() - t0, 3)
    timings["total_s"] = round(time.perf_counter() - t_start, 3)

    summary = _summary(plan, search, chosen, timings)
    atomic_write_text(pairs.summary, json.dumps(summary, indent=2))
    log.info("pairs written to %s: %d queries, paired per modality %s", pairs.root, summary["queries"],
             {m: c.stats["paired_queries"] for m, c in chosen.items()})
    return summary
