"""Planted truth for BrokenBind: ``a = unit(unit(p M1) + noise)``, ``c = unit(unit(p M2) + noise)``.

Keys ``k00000...``: the first ``n1`` items are D1 (their ``c`` is withheld: generated, never
written), the next ``n2`` are D2 (``a`` withheld), the last ``ne`` are evaluation items with all
three (their pivot is written too: bridge and train must ignore it). Labels (``label`` in the
metadata json) are ``cls<i % 5>`` for the EShot scores.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from pipeline.core.layout import OutputLayout
from pipeline.core.manifest import Manifest, from_dict
from pipeline.core.store import write_embeddings

DIMS = {"text": 32, "image": 24, "audio": 24}


def unit(x: np.ndarray) -> np.ndarray:
    return x / np.linalg.norm(x, axis=1, keepdims=True)


def numpy_ridge(x: np.ndarray, y: np.ndarray, lam: float, bias: bool = True) -> tuple[np.ndarray, np.ndarray]:
    """The reference ridge: ``[W; b] = (X1^T X1 + lam diag(1, ..., 1, 0))^-1 X1^T Y`` with ``X1 = [X, 1]``
    (without bias: ``X1 = X`` and ``b = 0``)."""
    x1 = np.hstack([x, np.ones((len(x), 1))]) if bias else x
    pen = np.full(x1.shape[1], lam)
    if bias:
        pen[-1] = 0.0
    wb = np.linalg.solve(x1.T @ x1 + np.diag(pen), x1.T @ y)
    return (wb[:-1], wb[-1]) if bias else (wb, np.zeros(y.shape[1]))


@dataclass
class Planted:
    output: Path
    keys: np.ndarray  # every item's key
    vectors: dict[str, np.ndarray]  # every item's vectors, withheld ones included
    maps: dict[str, np.ndarray]  # the planted pivot -> modality maps
    d1: np.ndarray  # item indices
    d2: np.ndarray
    evaluation: np.ndarray
    noise: float


def write_bridge_stores(output: Path, n1: int = 400, n2: int = 400, ne: int = 200, noise: float = 0.3,
                        seed: int = 0) -> Planted:
    rng = np.random.default_rng(seed)
    n = n1 + n2 + ne
    p = unit(rng.standard_normal((n, DIMS["text"])))
    vectors, maps = {"text": p}, {}
    for m in ("image", "audio"):
        maps[m] = rng.standard_normal((DIMS["text"], DIMS[m])) / np.sqrt(DIMS["text"])
        vectors[m] = unit(unit(p @ maps[m]) + noise * rng.standard_normal((n, DIMS[m])) / np.sqrt(DIMS[m]))
    keys = np.array([f"k{i:05d}" for i in range(n)], dtype=object)
    d1, d2, ev = np.arange(n1), np.arange(n1, n1 + n2), np.arange(n1 + n2, n)
    layout = OutputLayout(output)
    written = {"text": np.arange(n), "image": np.r_[d1, ev], "audio": np.r_[d2, ev]}
    for m, rows in written.items():
        for part, chunk in enumerate(np.array_split(rows, 2)):
            write_embeddings(layout.embedding_part(m, f"{part:06d}"), list(keys[chunk]), vectors[m][chunk],
                             dtype="float32", metadata={"encoder": f"planted-{m}", "dim": DIMS[m],
                                                        "normalized": True, "dtype": "float32", "modality": m})
    meta = pa.table({"key": pa.array(list(keys)),
                     "json": pa.array([json.dumps({"label": f"cls{i % 5}"}) for i in range(n)])})
    layout.metadata.mkdir(parents=True, exist_ok=True)
    pq.write_table(meta, layout.metadata_part("000000"))
    return Planted(output, keys, vectors, maps, d1, d2, ev, noise)


def bridge_manifest(output: Path, bridge: dict | None = None, **train) -> Manifest:
    raw = {"dataset": {"name": "planted", "shards": "unused-{0..1}.tar", "output": str(output)},
           "modalities": {m: {"encoder": f"planted-{m}"} for m in DIMS},
           "bridge": {"name": "mox", "modalities": ["image", "audio"], "neighbors": 16, **(bridge or {})},
           "train": {"bridge": "mox", "hidden": 128, "epochs": 20, "batch_size": 128, "lr": 2e-3,
                     "warmup_steps": 5, "val_fraction": 0.1, **train},
           "eval": {"eshot": []}}
    return from_dict(raw, base=output)


@pytest.fixture
def planted_bridge(tmp_path: Path) -> Planted:
    return write_bridge_stores(tmp_path)
