"""What a hostile test runs in a subprocess under an address-space limit (see :mod:`tests.hostile.harness`).

``python -m tests.hostile.worker decode MODALITIES MAX_MEMBER_MB SHARD...``: read each shard and
decode every sample's modalities (comma-separated) as a DataLoader worker does; one JSON line
per (shard, key, modality), and after each shard the peak RSS so far.
``python -m tests.hostile.worker precompute MANIFEST``: a whole `bindery precompute` run with the
weightless encoders of :mod:`tests.hostile.encoders`; its summary.
Both end with a ``{"peak_rss_mb": ...}`` line.
"""

from __future__ import annotations

import json
import resource
import sys
from pathlib import Path

import numpy as np


def _peak_mb() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def _describe(item) -> dict:
    if isinstance(item, np.ndarray):
        return {"shape": list(item.shape), "finite": bool(np.isfinite(item).all()),
                "max_abs": float(np.abs(item).max()) if item.size else 0.0}
    if isinstance(item, str):
        return {"text": item}
    return {"size": list(item.size), "mode": item.mode}


def decode(modalities: list[str], max_member_mb: float, urls: list[str]) -> None:
    from pipeline.core.manifest import MODALITY_SECTIONS
    from pipeline.ingest.decode import DecodeError, decode_member
    from pipeline.ingest.shards import ShardFault, iter_samples

    configs = {m: MODALITY_SECTIONS[m](encoder="x") for m in modalities}
    for url in urls:
        shard = Path(url).name
        for sample in iter_samples(url, int(max_member_mb * 2**20)):
            if isinstance(sample, ShardFault):
                print(json.dumps({"shard": shard, "fault": sample.error, "partial_key": sample.partial_key}))
                continue
            for m in modalities:
                row = {"shard": shard, "key": sample["__key__"], "modality": m}
                try:
                    row.update(status="ok", **_describe(decode_member(sample, m, configs[m], 16_000)))
                except DecodeError as exc:
                    row.update(status=exc.status, error=str(exc))
                print(json.dumps(row), flush=True)
        print(json.dumps({"shard": shard, "rss_after_mb": _peak_mb()}), flush=True)


def precompute(manifest: str) -> None:
    import tests.hostile.encoders  # noqa: F401 - registers hostile-stats
    from pipeline.core.manifest import load
    from pipeline.precompute.stage import run

    print(json.dumps({"summary": run(load(manifest))}, default=str), flush=True)


if __name__ == "__main__":
    mode, *args = sys.argv[1:]
    if mode == "decode":
        decode(args[0].split(","), float(args[1]), args[2:])
    else:
        precompute(args[0])
    print(json.dumps({"peak_rss_mb": _peak_mb()}), flush=True)
