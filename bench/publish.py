"""Publish benchmark: bundle write and verify time on synthetic stores, pairs and a flat index.

``measure(small, device)`` follows ``bench/run.py``'s contract (the device is unused: publishing
is I/O and CPU work). Also runnable alone: ``python -m bench.publish [--small]``.
Full size: 400k text (384-d) + 400k image (512-d) float16 vectors, 16 neighbours per query,
a 400k x 512 flat FAISS index, ``part_mb = 64``.
"""

from __future__ import annotations

import argparse
import json
import resource
import tempfile
import time
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq


def _write_inputs(out: Path, n: int, k: int = 16, parts: int = 8) -> None:
    import faiss

    from pipeline.core.layout import OutputLayout
    from pipeline.core.store import atomic_write_table, write_embeddings

    layout, rng = OutputLayout(out), np.random.default_rng(0)
    pairs = layout.pairs
    keys = np.array([f"k{i:09d}" for i in range(n)])
    for m, d in (("text", 384), ("image", 512)):
        for p, idx in enumerate(np.array_split(np.arange(n), parts)):
            write_embeddings(layout.embedding_part(m, f"{p:06d}"), list(keys[idx]),
                             rng.standard_normal((len(idx), d)).astype(np.float16), "float16",
                             {"encoder": f"bench-{m}", "digest": "sha256:0", "dim": d})
    targets = keys[rng.integers(0, n, n * k)]
    atomic_write_table(pa.table({
        "query_key": np.repeat(keys, k), "modality": np.full(n * k, "image"),
        "rank": pa.array(np.tile(np.arange(k), n), pa.int32()), "target_key": targets,
        "score": rng.random(n * k).astype(np.float32)}), pairs.neighbors)
    atomic_write_table(pa.table({"query_key": keys, "image_key": targets[::k],
                                 "image_score": rng.random(n).astype(np.float32)}), pairs.quintuples)
    pairs.index_dir.mkdir(parents=True, exist_ok=True)
    index = faiss.IndexFlatIP(512)
    index.add(rng.standard_normal((n, 512)).astype(np.float32))
    faiss.write_index(index, str(pairs.index("image")))
    pq.write_table(pa.table({"key": keys}), pairs.index_keys("image"))


def measure(small: bool = False, device: str = "cpu") -> dict:
    from pipeline.core.layout import BundleLayout
    from pipeline.core.manifest import from_dict
    from pipeline.publish import stage as publish
    from pipeline.publish.bundle import Bundle

    n = 50_000 if small else 400_000
    with tempfile.TemporaryDirectory(prefix="bindery-bench-publish-") as tmp:
        out = Path(tmp) / "out"
        _write_inputs(out, n)
        manifest = from_dict({"dataset": {"name": "bench", "shards": "s-{0..1}.tar", "output": str(out)},
                              "modalities": {"text": {"encoder": "x"}, "image": {"encoder": "x"}},
                              "publish": {"part_mb": 64, "verify": False}})
        source_mb = sum(f.stat().st_size for f in out.rglob("*") if f.is_file()) / 2**20
        t0 = time.perf_counter()
        result = publish.run(manifest)
        t_publish = time.perf_counter() - t0
        t0 = time.perf_counter()
        publish.verify(result["bundle"])
        t_verify = time.perf_counter() - t0
        bundle = BundleLayout(Path(result["bundle"]))
        image = Bundle.read(bundle.path(BundleLayout.BUNDLE_JSON)).tables[BundleLayout.embeddings("image")]
        sizes = [bundle.path(f).stat().st_size / 2**20 for f in image.files]
    return {"rows_per_store": n, "input_mb": round(source_mb, 1), "publish_s": round(t_publish, 2),
            "verify_s": round(t_verify, 2), "publish_mb_per_s": round(source_mb / t_publish, 1),
            "image_file_mb": [round(s, 1) for s in sizes],
            "peak_rss_mb": round(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024, 0)}


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--small", action="store_true", help="50k rows per store instead of 400k")
    args = parser.parse_args()
    print(json.dumps(measure(args.small), indent=2))
