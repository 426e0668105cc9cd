"""`bindery pair`: auto-pair every query item (EBind: captions) with its nearest items in the other modalities.

Steps: load the stores into one space (:mod:`pipeline.pair.space`); search the top-k of every
target modality for one query chunk at a time, each chunk written atomically to
``pairs/chunks/`` so a rerun skips what is done; assemble ``neighbors.parquet`` after the
``min_score`` and ``mutual`` filters, choose one partner per query and modality (``max_uses``
hub limit, :mod:`pipeline.pair.filters`) into ``quintuples.parquet``; save a FAISS index per
target modality, ``summary.json`` and score histograms.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import logging
import math
import time
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq

from pipeline.core.manifest import Manifest, ManifestError
from pipeline.core.store import META_PREFIX, atomic_write_table, atomic_write_text, embeddings_dir, list_parts
from pipeline.pair import knn
from pipeline.pair.filters import capped_choice, first_choice, keep_mask
from pipeline.pair.report import modality_stats, quantiles, write_histogram
from pipeline.pair.space import PairInputs, Pool, load_inputs

log = logging.getLogger(__name__)

CHUNK_SCHEMA = pa.schema([("query_index", pa.int64()), ("modality", pa.string()), ("rank", pa.int32()),
                          ("target_index", pa.int64()), ("score", pa.float32())])
NEIGHBOR_SCHEMA = pa.schema([("query_key", pa.string()), ("modality", pa.string()), ("rank", pa.int32()),
                             ("target_key", pa.string()), ("score", pa.float32())])


def _device(manifest: Manifest) -> str:
    device = manifest.pair.device
    if device == "auto":
        return "cuda" if knn.cuda_available() else "cpu"
    if device.startswith("cuda") and not knn.cuda_available():
        raise ManifestError(f"pair.device: {device!r} but this machine has no CUDA device; use auto or cpu")
    return device


def _engines(manifest: Manifest, inputs: PairInputs, device: str) -> dict[str, str]:
    cfg = manifest.pair
    nq = len(inputs.query.keys)
    return {m: cfg.engine if cfg.engine != "auto" else
            knn.choose_engine(nq, len(p.keys), p.vectors.shape[1], cfg.memory_gb, cuda=device.startswith("cuda"))
            for m, p in inputs.targets.items()}


def _keys_digest(keys: np.ndarray) -> str:
    return hashlib.sha1("\n".join(keys.tolist()).encode()).hexdigest()


def _file_sha256(path: Path) -> str:
    h = hashlib.sha256()
    with path.open("rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            h.update(block)
    return h.hexdigest()


def _store_fingerprint(manifest: Manifest, pool: Pool) -> dict:
    """A store's content, cheaply: its encoder digest metadata and its parts' names and sizes."""
    parts = list_parts(embeddings_dir(manifest.output, pool.modality))
    return {"n": len(pool.keys), "dim": int(pool.vectors.shape[1]), "keys": _keys_digest(pool.keys),
            "encoder": pool.metadata.get("encoder"), "digest": pool.metadata.get("digest"),
            "parts": [[p.name, p.stat().st_size] for p in parts]}


def _fingerprint(manifest: Manifest, inputs: PairInputs, engines: dict[str, str], device: str) -> dict:
    """What a chunk's content depends on; chunks written under another fingerprint are discarded."""
    cfg = manifest.pair
    heads = Path(manifest.output) / "runs" / cfg.head_run / "heads.safetensors"
    return {"query": cfg.query, "queries": len(inputs.query.keys), "query_keys": _keys_digest(inputs.query.keys),
            "query_store": _store_fingerprint(manifest, inputs.query),
            "targets": {m: _store_fingerprint(manifest, p) for m, p in inputs.targets.items()},
            "k": cfg.k, "engines": engines, "head_run": cfg.head_run,
            "heads_sha256": _file_sha256(heads) if cfg.head_run else None,
            "query_chunk": cfg.query_chunk, "nprobe": cfg.nprobe, "device": device.split(":")[0]}


def _prepare_chunks(chunks_dir: Path, fingerprint: dict) -> None:
    params = chunks_dir / "params.json"
    if params.is_file() and json.loads(params.read_text()) != fingerprint:
        stale = sorted(chunks_dir.glob("chunk-*.parquet"))
        log.info("pair inputs or parameters changed: discarding %d old chunk(s)", len(stale))
        for p in stale:
            p.unlink()
    atomic_write_text(params, json.dumps(fingerprint, indent=1, sort_keys=True))


def _write_chunk(path: Path, table: pa.Table) -> None:
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


def _search_all(manifest: Manifest, inputs: PairInputs, engines: dict[str, str], device: str,
                out: Path) -> tuple[pa.Table, dict]:
    from tqdm import tqdm

    cfg = manifest.pair
    chunks_dir = out / "chunks"
    _prepare_chunks(chunks_dir, _fingerprint(manifest, inputs, engines, device))
    nq = len(inputs.query.keys)
    n_chunks = max(1, math.ceil(nq / cfg.query_chunk))
    paths = [chunks_dir / f"chunk-{c:06d}.parquet" for c in range(n_chunks)]
    todo = [c for c, p in enumerate(paths) if not p.is_file()]
    t0 = time.perf_counter()
    searchers = ({m: knn.build_searcher(engines[m], p.vectors, device=device, memory_gb=cfg.memory_gb,
                                        nprobe=cfg.nprobe) for m, p in inputs.targets.items()} if todo else {})
    t_build = time.perf_counter() - t0
    searched = 0
    for c in tqdm(todo, desc="pair chunks", unit="chunk", disable=len(todo) < 2):
        rows = slice(c * cfg.query_chunk, min(nq, (c + 1) * cfg.query_chunk))
        _write_chunk(paths[c], _search_chunk(searchers, inputs.query, rows, cfg.k))
        searched += rows.stop - rows.start
    t_search = time.perf_counter() - t0 - t_build
    table = pa.concat_tables([pq.read_table(p) for p in paths])
    timings = {"build_index_s": round(t_build, 3), "search_s": round(t_search, 3),
               "queries_per_s": round(searched / t_search, 1) if searched and t_search > 0 else None}
    return table, {"chunks": n_chunks, "chunks_reused": n_chunks - len(todo), "searchers": searchers, **timings}


def _reverse_pairs(manifest: Manifest, inputs: PairInputs, m: str, engine: str, device: str):
    """Each target's top-k among the queries, for the mutual test."""
    cfg = manifest.pair
    searcher = knn.build_searcher(engine, inputs.query.vectors, device=device, memory_gb=cfg.memory_gb,
                                  nprobe=cfg.nprobe)
    target = inputs.targets[m].vectors
    _, ids = searcher.search(target, cfg.k)
    return np.repeat(np.arange(len(target), dtype=np.int64), cfg.k), ids.ravel()


def _save_index(out: Path, m: str, pool: Pool, searcher, engine: str, device: str, manifest: Manifest) -> None:
    index_dir = out / "index"
    path, keys_path = index_dir / f"{m}.faiss", index_dir / f"{m}.keys.parquet"
    if path.is_file() and keys_path.is_file() and searcher is None:
        return
    if not knn.faiss_available():
        log.warning("faiss is not installed: no %s written", path)
        return
    import faiss

    searcher = searcher or knn.build_searcher(engine, pool.vectors, device=device,
                                              memory_gb=manifest.pair.memory_gb, nprobe=manifest.pair.nprobe)
    index_dir.mkdir(parents=True, exist_ok=True)
    tmp = index_dir / f".{m}.faiss.tmp"
    faiss.write_index(searcher.faiss_index(), str(tmp))
    tmp.replace(path)
    atomic_write_table(pa.table({"key": pa.array(pool.keys.tolist(), pa.string())}), keys_path)


def _key_array(pool: Pool) -> pa.Array:
    return pa.array(pool.keys.tolist(), pa.string())


def _quintuples(inputs: PairInputs, chosen: dict[str, tuple[np.ndarray, np.ndarray]]) -> pa.Table:
    """One row per query; a query without a partner in a modality gets nulls there. The Parquet
    metadata name the query modality and the targets (``bindery.query``, ``bindery.targets``)."""
    cols = {"query_key": _key_array(inputs.query)}
    for m, (tgt, score) in chosen.items():
        ok = tgt >= 0
        cols[f"{m}_key"] = _key_array(inputs.targets[m]).take(pa.array(tgt, pa.int64(), mask=~ok))
        cols[f"{m}_score"] = pa.array(score.astype(np.float32), pa.float32(), mask=~ok)
    meta = {"query": inputs.query.modality, "targets": list(chosen)}
    return pa.table(cols).replace_schema_metadata({f"{META_PREFIX}{k}": json.dumps(v) for k, v in meta.items()})


def run(manifest: Manifest) -> dict:
    """Pair ``pair.query`` items with their neighbours in each target modality; return the summary."""
    cfg = manifest.pair
    out = Path(manifest.output) / "pairs"
    t_start = time.perf_counter()
    inputs = load_inputs(manifest)
    device = _device(manifest)
    engines = _engines(manifest, inputs, device)
    t_load = time.perf_counter() - t_start
    log.info("pairing %d %s queries with %s (engines %s, device %s)", len(inputs.query.keys), cfg.query,
             ", ".join(f"{m}: {len(p.keys)}" for m, p in inputs.targets.items()), engines, device)
    raw, search_info = _search_all(manifest, inputs, engines, device, out)
    searchers = search_info.pop("searchers")

    t0 = time.perf_counter()
    nq = len(inputs.query.keys)
    neighbor_parts, chosen, stats = [], {}, {}
    query_keys = _key_array(inputs.query)
    for m, pool in inputs.targets.items():
        sub = raw.filter(pc.equal(raw.column("modality"), m))
        q, t = sub.column("query_index").to_numpy(), sub.column("target_index").to_numpy()
        rank, score = sub.column("rank").to_numpy(), sub.column("score").to_numpy()
        reverse = _reverse_pairs(manifest, inputs, m, engines[m], device) if cfg.mutual else None
        keep = keep_mask(q, t, score, min_score=cfg.min_score, reverse=reverse, n_queries=nq)
        q, t, rank, score = q[keep], t[keep], rank[keep], score[keep]
        pick = capped_choice(q, t, score, nq, cfg.max_uses) if cfg.max_uses else first_choice(q, nq)
        ok = pick >= 0
        chosen_t, chosen_s = np.full(nq, -1, np.int64), np.full(nq, np.nan, np.float32)
        chosen_t[ok], chosen_s[ok] = t[pick[ok]], score[pick[ok]]
        chosen[m] = (chosen_t, chosen_s)
        neighbor_parts.append(pa.table({
            "query_key": query_keys.take(pa.array(q)),
            "modality": pa.array(np.full(len(q), m, dtype=object), pa.string()),
            "rank": pa.array(rank, pa.int32()),
            "target_key": _key_array(pool).take(pa.array(t)),
            "score": pa.array(score, pa.float32())}, schema=NEIGHBOR_SCHEMA))
        top1 = np.full(nq, np.nan, np.float32)
        first = sub.filter(pc.equal(sub.column("rank"), 0))
        top1[first.column("query_index").to_numpy()] = first.column("score").to_numpy()
        stats[m] = modality_stats(len(pool.keys), top1, sub.num_rows, len(q), *chosen[m])
        write_histogram(out / f"scores_{m}.png", m, cfg.query, top1, chosen[m][1], cfg.min_score)
    atomic_write_table(pa.concat_tables(neighbor_parts), out / "neighbors.parquet")
    atomic_write_table(_quintuples(inputs, chosen), out / "quintuples.parquet")
    t_filter = time.perf_counter() - t0

    t0 = time.perf_counter()
    if cfg.save_index:
        for m, pool in inputs.targets.items():
            _save_index(out, m, pool, searchers.get(m), engines[m], device, manifest)
    t_index = time.perf_counter() - t0
    paired_all = np.all([c[0] >= 0 for c in chosen.values()], axis=0)
    summary = {
        "query": cfg.query, "queries": nq, "targets": list(inputs.targets), "device": device, "engines": engines,
        "space": {m: {"space": p.space, "projected": p.projected, "dim": int(p.vectors.shape[1])}
                  for m, p in {cfg.query: inputs.query, **inputs.targets}.items()},
        "params": dataclasses.asdict(cfg),
        "queries_paired_in_every_modality": int(paired_all.sum()),
        "modalities": stats,
        "chosen_score_all": quantiles(np.concatenate([c[1] for c in chosen.values()])),
        "chunks": search_info.pop("chunks"), "chunks_reused": search_info.pop("chunks_reused"),
        "timings": {"load_s": round(t_load, 3), **search_info, "filter_s": round(t_filter, 3),
                    "index_s": round(t_index, 3), "total_s": round(time.perf_counter() - t_start, 3)},
    }
    atomic_write_text(out / "summary.json", json.dumps(summary, indent=2))
    log.info("pairs written to %s: %d queries, paired per modality %s", out, nq,
             {m: s["paired_queries"] for m, s in stats.items()})
    return summary
