"""Two precompute outputs hold the same stores: keys, vectors, status rows, sample metadata, part files."""

from __future__ import annotations

from pathlib import Path

import pyarrow.parquet as pq

from pipeline.core.store import embeddings_dir, list_parts
from tests.conftest import MODS
from tests.pipeline.precompute.test_stage import assert_same_stores


def metadata_rows(output: Path) -> list[tuple]:
    return sorted(tuple(r.values()) for p in sorted((output / "metadata").glob("*.parquet"))
                  for r in pq.read_table(p).to_pylist())


def assert_same_as_local(local: Path, output: Path) -> None:
    assert_same_stores(local, output)  # keys, vectors, status rows
    assert metadata_rows(local) == metadata_rows(output)
    for m in MODS:
        assert [p.name for p in list_parts(embeddings_dir(output, m))] == \
            [p.name for p in list_parts(embeddings_dir(local, m))]
