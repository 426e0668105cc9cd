"""kNN benchmark: torch exact-search queries/s, and a whole `bindery pair` run on synthetic stores.

Full sizes (GPU): 2M x 1024-d targets in fp16 (DESIGN.md target: >= 40k queries/s on one H100),
and 1M captions x 4 pools of 1M x 1024-d. ``--small``: sizes that finish in about a minute on
a 2-core CPU. Synthetic pools are noisy copies of the captions (cosine ~0.9), so the pair run
also reports its precision@1 per modality.

    python -m bench.knn --small            # or: python -m bench.run --only knn --small
"""

from __future__ import annotations

import argparse
import json
import logging
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

FULL = {"targets": 2_000_000, "dim": 1024, "queries": 65_536, "pair_queries": 1_000_000, "pair_pool": 1_000_000}
SMALL = {"targets": 200_000, "dim": 256, "queries": 2_048, "pair_queries": 20_000, "pair_pool": 20_000,
         "pair_dim": 128}
POOLS = ("image", "video", "audio", "points")


def _unit_randn(n: int, dim: int, seed: int):
    import torch

    g = torch.Generator().manual_seed(seed)
    x = torch.randn(n, dim, generator=g)
    return torch.nn.functional.normalize(x, dim=1).numpy()


def measure_search(n_targets: int, dim: int, n_queries: int, device: str) -> dict:
    """Queries/s of the torch engine (after one warm-up call), pool resident on the device."""
    import torch

    from pipeline.pair.knn import TorchSearcher

    targets = _unit_randn(n_targets, dim, 0)
    queries = _unit_randn(n_queries, dim, 1)
    searcher = TorchSearcher(targets, device=device, memory_gb=64.0 if device.startswith("cuda") else 8.0)
    searcher.search(queries[:1024], 16)
    if device.startswith("cuda"):
        torch.cuda.synchronize()
    start = time.perf_counter()
    searcher.search(queries, 16)
    if device.startswith("cuda"):
        torch.cuda.synchronize()
    seconds = time.perf_counter() - start
    return {"targets": n_targets, "dim": dim, "queries": n_queries, "k": 16,
            "dtype": "float16" if device.startswith("cuda") else "float32", "seconds": round(seconds, 3),
            "queries_per_s": round(n_queries / seconds, 1)}


def write_synthetic_stores(output: Path, n_queries: int, n_pool: int, dim: int, noise: float = 0.5) -> None:
    """Captions = random unit vectors; every pool holds noisy copies of the first ``n_pool`` captions."""
    from pipeline.core.layout import OutputLayout
    from pipeline.core.store import write_embeddings

    layout = OutputLayout(output)
    text = _unit_randn(n_queries, dim, 2)
    part = 250_000
    keys = np.array([f"s{i:08d}" for i in range(n_queries)], dtype=object)
    for s in range(0, n_queries, part):
        write_embeddings(layout.embedding_part("text", f"{s // part:06d}"), list(keys[s:s + part]),
                         text[s:s + part], metadata={"modality": "text", "dim": dim, "space": "synthetic"})
    for j, m in enumerate(POOLS):
        noisy = text[:n_pool] + noise * _unit_randn(n_pool, dim, 10 + j)
        noisy /= np.linalg.norm(noisy, axis=1, keepdims=True)
        for s in range(0, n_pool, part):  # pool item i is the noisy copy of caption i
            e = min(s + part, n_pool)
            write_embeddings(layout.embedding_part(m, f"{s // part:06d}"), list(keys[s:e]),
                             noisy[s:e], metadata={"modality": m, "dim": dim, "space": "synthetic"})


def measure_pair(n_queries: int, n_pool: int, dim: int, device: str) -> dict:
    """A whole `bindery pair` run (k=16, max_uses=4) on synthetic stores, timed end to end."""
    import pyarrow.parquet as pq

    from pipeline.core.layout import OutputLayout
    from pipeline.core.manifest import from_dict
    from pipeline.pair import stage as pair

    with tempfile.TemporaryDirectory(prefix="bench-pair-") as tmp:
        t0 = time.perf_counter()
        write_synthetic_stores(Path(tmp), n_queries, n_pool, dim)
        write_s = time.perf_counter() - t0
        manifest = from_dict({"dataset": {"name": "bench", "shards": "x.tar", "output": tmp},
                              "modalities": {"text": {"encoder": "x"}},
                              "pair": {"k": 16, "max_uses": 4, "device": device,
                                       "memory_gb": 32.0 if device.startswith("cuda") else 8.0}})
        start = time.perf_counter()
        summary = pair.run(manifest)
        seconds = time.perf_counter() - start
        quint = pq.read_table(OutputLayout(tmp).pairs.quintuples).to_pandas()
        hits = {m: round(float((quint[f"{m}_key"] == quint["query_key"]).iloc[:n_pool].mean()), 4) for m in POOLS}
    return {"queries": n_queries, "pools": len(POOLS), "pool_size": n_pool, "dim": dim,
            "engines": summary["engines"], "store_write_s": round(write_s, 1), "seconds": round(seconds, 1),
            "queries_per_s": round(n_queries / seconds, 1), "timings": summary["timings"],
            "precision_at_1": hits}


def measure(small: bool, device: str) -> dict:
    sizes = SMALL if small else FULL
    return {
        "torch_search": measure_search(sizes["targets"], sizes["dim"], sizes["queries"], device),
        "pair_run": measure_pair(sizes["pair_queries"], sizes["pair_pool"], sizes.get("pair_dim", sizes["dim"]),
                                 device),
    }


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--small", action="store_true", help="CPU sizes (about a minute on 2 cores)")
    parser.add_argument("--device", default="auto", help="auto | cpu | cuda | cuda:N")
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s: %(message)s")
    import torch

    device = args.device if args.device != "auto" else ("cuda" if torch.cuda.is_available() else "cpu")
    sys.stdout.write(json.dumps(measure(args.small, device), indent=2) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
