"""Shared fixtures of the trainer tests: planted-truth stores and a manifest over them."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from pipeline.core.manifest import Manifest, from_dict
from tests.planted import write_planted_stores
from trainer.checks import check_rows, check_train
from trainer.data.rows import CachedData, load

DIMS = {"text": 32, "audio": 24, "points": 16}


def make_manifest(output: Path, **train) -> Manifest:
    raw = {"dataset": {"name": "planted", "shards": "unused-{0..1}.tar", "output": str(output)},
           "modalities": {m: {"encoder": f"planted-{m}"} for m in DIMS},
           "train": {"hidden": 64, "epochs": 3, "batch_size": 64, "lr": 3e-3, "warmup_steps": 2, **train}}
    return from_dict(raw, base=output)


def load_checked(manifest: Manifest, device: str = "cpu") -> CachedData:
    """The training data as `bindery train` gets it: the stage checks, the row join, the row check."""
    check_train(manifest.train, manifest.layout)
    data = load(manifest.train, manifest.layout, device)
    check_rows(manifest.train, data)
    return data


def write_quintuples(output: Path, keys: list[str], partners: dict[str, list[str | None]]) -> Path:
    cols = {"query_key": pa.array(keys, pa.string())}
    for m, ks in partners.items():
        cols[f"{m}_key"] = pa.array(ks, pa.string())
        cols[f"{m}_score"] = pa.array([None if k is None else 0.9 for k in ks], pa.float32())
    path = output / "pairs" / "quintuples.parquet"
    path.parent.mkdir(parents=True, exist_ok=True)
    pq.write_table(pa.table(cols), path)
    return path


@pytest.fixture
def planted(tmp_path: Path) -> tuple[Path, dict[str, np.ndarray]]:
    """400 items, text 32-d anchor, audio/points noisy random linear maps of it."""
    vectors = write_planted_stores(tmp_path, n=400, dims=DIMS, noise=0.1, seed=0)
    return tmp_path, vectors
