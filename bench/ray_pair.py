"""Does `bindery pair` gain from Ray for its query chunks? The same chunked search here and on Ray actors.

Both sides run pair's own chunk search (:func:`pipeline.pair.search._search_chunk` over
:func:`pipeline.pair.knn.build_searcher` searchers) on the same synthetic unit vectors: a query
pool and ``--pools`` target pools. In process: one searcher per pool, the chunks one after another,
torch using every core. On Ray: a local cluster of ``--cpus`` CPUs, one actor per CPU (one torch
thread each), the targets put once in the object store, each actor building its own searchers,
chunks handed to idle actors. Reported: the cluster start, the actors' build, the search itself and
the end-to-end ratio (Ray's total / in process), with the load average beside them.
``python -m bench.ray_pair [--queries 20000 --targets 20000 --pools 4 --dim 128 --chunk 2048]``
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time

import numpy as np

from pipeline.pair.knn import build_searcher
from pipeline.pair.search import _search_chunk
from pipeline.pair.space import Pool


def unit(n: int, dim: int, seed: int) -> np.ndarray:
    v = np.random.default_rng(seed).standard_normal((n, dim)).astype(np.float32)
    return v / np.linalg.norm(v, axis=1, keepdims=True)


def pool(name: str, vectors: np.ndarray) -> Pool:
    return Pool(name, np.array([f"{name}{i}" for i in range(len(vectors))], dtype=object), vectors, "bench")


class ChunkSearcher:
    """A Ray actor's side: searchers over every target pool, then chunks of queries."""

    def __init__(self, targets: dict[str, np.ndarray], threads: int):
        import torch

        torch.set_num_threads(threads)
        self.searchers = {m: build_searcher("torch", v, device="cpu") for m, v in targets.items()}

    def search(self, query: Pool, rows: slice, k: int):
        return _search_chunk(self.searchers, query, rows, k)


def chunks(n: int, size: int) -> list[slice]:
    return [slice(s, min(n, s + size)) for s in range(0, n, size)]


def in_process(query: Pool, targets: dict[str, np.ndarray], size: int, k: int) -> dict:
    t0 = time.perf_counter()
    searcher = ChunkSearcher(targets, os.cpu_count() or 1)
    t1 = time.perf_counter()
    rows = sum(searcher.search(query, r, k).num_rows for r in chunks(len(query.keys), size))
    t2 = time.perf_counter()
    return {"build_s": round(t1 - t0, 3), "search_s": round(t2 - t1, 3), "total_s": round(t2 - t0, 3), "rows": rows}


def on_ray(query: Pool, targets: dict[str, np.ndarray], size: int, k: int, cpus: int) -> dict:
    import ray

    t0 = time.perf_counter()
    ray.init(num_cpus=cpus, include_dashboard=False, log_to_driver=False)
    t1 = time.perf_counter()
    targets_ref, query_ref = ray.put(targets), ray.put(query)
    actors = [ray.remote(num_cpus=1)(ChunkSearcher).remote(targets_ref, 1) for _ in range(cpus)]
    ray.get([a.__ray_ready__.remote() for a in actors])
    t2 = time.perf_counter()
    pending, idle, rows = list(chunks(len(query.keys), size)), list(actors), 0
    running = {}
    while pending or running:
        while pending and idle:
            actor = idle.pop()
            running[actor.search.remote(query_ref, pending.pop(), k)] = actor
        (ref,), _ = ray.wait(list(running), num_returns=1)
        idle.append(running.pop(ref))
        rows += ray.get(ref).num_rows
    t3 = time.perf_counter()
    ray.shutdown()
    return {"init_s": round(t1 - t0, 3), "actors_build_s": round(t2 - t1, 3), "search_s": round(t3 - t2, 3),
            "total_s": round(t3 - t0, 3), "rows": rows}


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--queries", type=int, default=20000)
    p.add_argument("--targets", type=int, default=20000)
    p.add_argument("--pools", type=int, default=4)
    p.add_argument("--dim", type=int, default=128)
    p.add_argument("--chunk", type=int, default=2048)
    p.add_argument("--k", type=int, default=16)
    p.add_argument("--cpus", type=int, default=os.cpu_count() or 1)
    a = p.parse_args(argv)
    query = pool("q", unit(a.queries, a.dim, 0))
    targets = {f"t{j}": unit(a.targets, a.dim, 1 + j) for j in range(a.pools)}
    load = [round(x, 2) for x in os.getloadavg()]
    local = in_process(query, targets, a.chunk, a.k)
    ray_ = on_ray(query, targets, a.chunk, a.k, a.cpus)
    assert local["rows"] == ray_["rows"]
    out = {"args": vars(a), "loadavg_before": load, "in_process": local, "ray": ray_,
           "ray_search_over_in_process": round(ray_["search_s"] / local["search_s"], 2),
           "ray_total_over_in_process": round(ray_["total_s"] / local["total_s"], 2),
           "loadavg_after": [round(x, 2) for x in os.getloadavg()]}
    print(json.dumps(out, indent=1))
    return 0


if __name__ == "__main__":
    sys.exit(main())
