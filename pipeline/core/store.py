"""Embedding stores and status tables: the Parquet files every stage meets at.

Layout (DESIGN.md)::

    <output>/embeddings/<modality>/part-<shard>.parquet   key, embedding (fixed-size list)
    <output>/status/<modality>/part-<shard>.parquet       key, status, error

A part is written to a temporary name in the same folder and renamed, so a part that
exists is complete. Parquet key-value metadata records how the vectors were made
(``bindery.*`` keys, JSON values).

This module only needs pyarrow and numpy: the trainer and the publisher may import it.
"""

from __future__ import annotations

import json
import os
import uuid
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq

from pipeline.core.layout import PART_GLOB, OutputLayout

STATUSES = ("missing", "corrupt", "error", "duplicate")
META_PREFIX = "bindery."
# The store metadata that says which encoder made a store and what its vectors are: parts that
# differ in any of these must never be mixed in one store, and a finished part is reused only
# when all of them match the current encoder's.
STORE_IDENTITY = ("encoder", "digest", "dim", "dtype", "normalized")

STATUS_SCHEMA = pa.schema([("key", pa.string()), ("status", pa.string()), ("error", pa.string())])


def embeddings_dir(output: str | Path, modality: str) -> Path:
    return OutputLayout(output).embeddings(modality)


def status_dir(output: str | Path, modality: str) -> Path:
    return OutputLayout(output).status(modality)


def atomic_write(path: str | Path, write: Callable[[Path], object]) -> None:
    """Call ``write(tmp)`` on a hidden temporary file next to ``path``, then rename it onto ``path``,
    so a reader sees the old file or the new one, never half of one."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.{uuid.uuid4().hex}.tmp")
    try:
        write(tmp)
        os.replace(tmp, path)
    finally:
        if tmp.exists():
            tmp.unlink()


def atomic_write_text(path: str | Path, text: str) -> None:
    atomic_write(path, lambda tmp: tmp.write_text(text))


def atomic_write_table(table: pa.Table, path: Path) -> None:
    """Write ``table`` to ``path`` through a temporary file and an atomic rename."""
    # Dictionary-encode only low-cardinality label columns: on float16 vectors and unique
    # keys it made writes ~3x slower and files larger (measured by bench/publish.py).
    labels = [c for c in ("modality", "status") if c in table.column_names]
    atomic_write(path, lambda tmp: pq.write_table(table, tmp, compression="zstd", use_dictionary=labels or False))


def embedding_schema(dim: int, dtype: str, metadata: Mapping[str, Any] | None = None) -> pa.Schema:
    value_type = {"float16": pa.float16(), "float32": pa.float32()}[dtype]
    meta = {f"{META_PREFIX}{k}": json.dumps(v) for k, v in (metadata or {}).items()}
    return pa.schema([("key", pa.string()), ("embedding", pa.list_(value_type, dim))], metadata=meta)


def embedding_table(keys: list[str], vectors: np.ndarray, dtype: str = "float16",
                    metadata: Mapping[str, Any] | None = None) -> pa.Table:
    """Build a store table; ``vectors`` is (n, dim)."""
    vectors = np.asarray(vectors)
    if vectors.ndim != 2 or len(keys) != vectors.shape[0]:
        raise ValueError(f"embedding_table: {len(keys)} keys for vectors of shape {vectors.shape}")
    n, dim = vectors.shape
    np_dtype = np.float16 if dtype == "float16" else np.float32
    flat = pa.array(np.ascontiguousarray(vectors, dtype=np_dtype).reshape(-1))
    emb = pa.FixedSizeListArray.from_arrays(flat, dim)
    schema = embedding_schema(dim, dtype, metadata)
    return pa.Table.from_arrays([pa.array(keys, pa.string()), emb], schema=schema)


def write_embeddings(path: Path, keys: list[str], vectors: np.ndarray, dtype: str = "float16",
                     metadata: Mapping[str, Any] | None = None) -> None:
    atomic_write_table(embedding_table(keys, vectors, dtype, metadata), path)


def status_table(rows: Iterable[tuple[str, str, str]]) -> pa.Table:
    rows = list(rows)
    for _, status, _ in rows:
        if status not in STATUSES:
            raise ValueError(f"status must be one of {STATUSES}, got {status!r}")
    cols = list(zip(*rows, strict=True)) if rows else [[], [], []]
    return pa.Table.from_arrays([pa.array(list(c), pa.string()) for c in cols], schema=STATUS_SCHEMA)


def write_status(path: Path, rows: Iterable[tuple[str, str, str]]) -> None:
    atomic_write_table(status_table(rows), path)


def read_metadata(path: str | Path) -> dict[str, Any]:
    """The ``bindery.*`` key-value metadata of a Parquet file, JSON-decoded, prefix dropped."""
    raw = pq.read_schema(path).metadata or {}
    out = {}
    for k, v in raw.items():
        k = k.decode()
        if k.startswith(META_PREFIX):
            out[k[len(META_PREFIX):]] = json.loads(v.decode())
    return out


def list_parts(folder: str | Path) -> list[Path]:
    """Complete parts in a folder, sorted (temporary files are hidden dot-files)."""
    folder = Path(folder)
    if not folder.is_dir():
        return []
    return sorted(p for p in folder.glob(PART_GLOB) if not p.name.startswith("."))


def stored_modalities(output: str | Path) -> list[str]:
    root = OutputLayout(output).embeddings_root
    if not root.is_dir():
        return []
    return sorted(p.name for p in root.iterdir() if p.is_dir() and list_parts(p))


@dataclass
class Store:
    """One modality's embeddings, loaded whole: ``keys[i]`` owns ``vectors[i]``."""

    modality: str
    keys: np.ndarray  # (n,) object array of str
    vectors: np.ndarray  # (n, dim), float16 or float32 as stored
    metadata: dict[str, Any]

    @property
    def dim(self) -> int:
        return int(self.vectors.shape[1])

    def __len__(self) -> int:
        return len(self.keys)


def table_vectors(table: pa.Table) -> np.ndarray:
    """The embedding column of a store table as an (n, dim) array, without copying per row."""
    col = table.column("embedding").combine_chunks()
    dim = col.type.list_size
    flat = col.values.to_numpy(zero_copy_only=False)
    return flat.reshape(-1, dim) if len(col) else np.zeros((0, dim), dtype=flat.dtype)


def read_part(path: str | Path) -> Store:
    table = pq.read_table(path)
    modality = Path(path).parent.name
    return Store(modality, np.asarray(table.column("key").to_pylist(), dtype=object),
                 table_vectors(table), read_metadata(path))


def read_store(output: str | Path, modality: str) -> Store:
    """Load every part of a modality's store (for stores that fit in memory)."""
    parts = list_parts(embeddings_dir(output, modality))
    if not parts:
        raise FileNotFoundError(
            f"no embedding store for {modality!r} under {embeddings_dir(output, modality)}; run `bindery precompute` first")
    meta = read_metadata(parts[0])
    same = STORE_IDENTITY
    for p in parts[1:]:
        other = read_metadata(p)
        if any(other.get(k) != meta.get(k) for k in same):
            raise ValueError(
                f"{modality} store under {embeddings_dir(output, modality)} mixes encoders: {parts[0].name} has "
                f"{ {k: meta.get(k) for k in same} }, {p.name} has { {k: other.get(k) for k in same} }; "
                "recompute the modality into an empty folder")
    tables = [pq.read_table(p) for p in parts]
    table = pa.concat_tables(tables)
    keys = np.asarray(table.column("key").to_pylist(), dtype=object)
    return Store(modality, keys, table_vectors(table), meta)


def read_status(output: str | Path, modality: str) -> pa.Table:
    parts = list_parts(status_dir(output, modality))
    if not parts:
        return status_table([])
    return pa.concat_tables([pq.read_table(p) for p in parts])


def store_identity(metadata: Mapping[str, Any]) -> dict[str, Any]:
    """The :data:`STORE_IDENTITY` fields of a store's metadata."""
    return {k: metadata.get(k) for k in STORE_IDENTITY}


def identity_diff(old: Mapping[str, Any], new: Mapping[str, Any]) -> list[str]:
    """``"field old -> new"`` for every identity field that differs (empty when one encoder made both)."""
    return [f"{k} {old.get(k)!r} -> {new.get(k)!r}" for k in STORE_IDENTITY if old.get(k) != new.get(k)]


def store_fingerprint(output: str | Path, modality: str) -> dict[str, Any]:
    """What identifies a store's content cheaply: its identity (the first part's metadata) and its
    parts' names and sizes. A re-encoded or re-written store gets another fingerprint; used by
    pairing's resumable chunks and the trainer's resumable checkpoints alike."""
    parts = list_parts(embeddings_dir(output, modality))
    meta = read_metadata(parts[0]) if parts else {}
    return {**store_identity(meta), "parts": [[p.name, p.stat().st_size] for p in parts]}
