"""Embedding stores and status tables: the Parquet files every stage meets at.

Layout (DESIGN.md)::

    <output>/embeddings/<modality>/part-<shard>.parquet   key, embedding (fixed-size list)
    <output>/status/<modality>/part-<shard>.parquet       key, status, error

A part is written to a temporary name in the same folder and renamed, so a part that
exists is complete. Parquet key-value metadata records how the vectors were made
(``bindery.*`` keys, JSON values).

Every file is written with Parquet page checksums, and every read verifies them. A store
part is checked as it is read (:mod:`pipeline.core.store_checks`): its columns, dim and dtype
against its metadata and the other parts, finite values, the norm the metadata promises,
and each key once in the whole store. A part that fails is a :class:`StoreError` naming the
file and the fix, never a pyarrow traceback and never a silently different vector.

This module only needs pyarrow and numpy: the trainer and the publisher may import it.
"""

from __future__ import annotations

import errno
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
from pipeline.core.store_checks import (
    StoreError,
    check_same_layout,
    check_schema,
    check_status,
    check_unique_keys,
    check_vectors,
    damaged,
    read_checked,
)

STATUSES = ("missing", "corrupt", "error", "duplicate")
META_PREFIX = "bindery."
# The store metadata that says which encoder made a store and what its vectors are: parts that
# differ in any of these must never be mixed in one store, and a finished part is reused only
# when all of them match the current encoder's.
STORE_IDENTITY = ("encoder", "digest", "dim", "dtype", "normalized", "scale")

STATUS_SCHEMA = pa.schema([("key", pa.string()), ("status", pa.string()), ("error", pa.string())])


def embeddings_dir(output: str | Path, modality: str) -> Path:
    return OutputLayout(output).embeddings(modality)


def status_dir(output: str | Path, modality: str) -> Path:
    return OutputLayout(output).status(modality)


class WriteError(RuntimeError):
    """The disk (or quota) is full: names the file; what was written before it stays complete."""


def _full(exc: OSError) -> bool:
    return exc.errno in (errno.ENOSPC, errno.EDQUOT) or "No space left on device" in str(exc)


def atomic_write(path: str | Path, write: Callable[[Path], object]) -> None:
    """Call ``write(tmp)`` on a hidden temporary file next to ``path``, then rename it onto ``path``,
    so a reader sees the old file or the new one, never half of one. A full disk is a WriteError."""
    path = Path(path)
    tmp = path.with_name(f".{path.name}.{uuid.uuid4().hex}.tmp")
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        write(tmp)
        os.replace(tmp, path)
    except OSError as exc:
        if not _full(exc):
            raise
        raise WriteError(f"no space left on device writing {path}; every file written before it is complete "
                         "and kept: free some space (or set another dataset.output) and re-run, which "
                         "redoes only what is missing") from None
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
    atomic_write(path, lambda tmp: pq.write_table(table, tmp, compression="zstd", use_dictionary=labels or False,
                                                  write_page_checksum=True))


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
    return schema_metadata(read_checked(path, pq.read_schema), path)


def schema_metadata(schema: pa.Schema, path: str | Path) -> dict[str, Any]:
    out = {}
    for k, v in (schema.metadata or {}).items():
        try:
            k = k.decode()
            if k.startswith(META_PREFIX):
                out[k[len(META_PREFIX):]] = json.loads(v.decode())
        except ValueError as exc:  # UnicodeDecodeError and JSONDecodeError included
            raise damaged(path, f"its metadata is not valid JSON ({exc})") from None
    return out


def read_table(path: str | Path, columns: list[str] | None = None) -> pa.Table:
    """A whole Parquet file, its page checksums verified (StoreError naming it when they fail)."""
    return read_checked(path, lambda p: pq.read_table(p, columns=columns, page_checksum_verification=True))


def open_part(path: str | Path) -> pq.ParquetFile:
    """A memory-mapped Parquet file whose pages are checksum-verified as they are read."""
    return read_checked(path, lambda p: pq.ParquetFile(pa.memory_map(str(p)), page_checksum_verification=True))


def read_row_group(file: pq.ParquetFile, path: str | Path, group: int, columns: list[str]) -> pa.Table:
    return read_checked(path, lambda _: file.read_row_group(group, columns=columns))


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


@dataclass
class PartInfo:
    """What a store part says about itself, checked against its own footer."""

    path: Path
    metadata: dict[str, Any]
    layout: tuple[int, str]  # (dim, dtype) of its vectors


def _info(path: Path, schema: pa.Schema) -> PartInfo:
    meta = schema_metadata(schema, path)
    return PartInfo(path, meta, check_schema(schema, path, meta))


def _consistent(modality: str, first: PartInfo, part: PartInfo) -> None:
    """Every part of a store against its first: one encoder, one dtype and dim."""
    if store_identity(part.metadata) != store_identity(first.metadata):
        raise StoreError(
            f"{modality} store under {part.path.parent} mixes encoders: {first.path.name} has "
            f"{store_identity(first.metadata)}, {part.path.name} has {store_identity(part.metadata)}; "
            "recompute the modality into an empty folder")
    check_same_layout(first.path, first.layout, part.path, part.layout)


def _checked_part(path: Path) -> tuple[pa.Table, PartInfo]:
    """A store part read whole and checked: schema against its metadata, values finite, norms as promised."""
    table = read_table(path)
    info = _info(path, table.schema)
    check_vectors(table_vectors(table), table.column("key"), path, info.metadata)
    return table, info


def _part_paths(output: str | Path, modality: str) -> list[Path]:
    folder = embeddings_dir(output, modality)
    paths = list_parts(folder)
    if not paths:
        raise FileNotFoundError(f"no embedding store for {modality!r} under {folder}; run `bindery precompute` first")
    return paths


def read_part(path: str | Path) -> Store:
    table, info = _checked_part(Path(path))
    keys = table.column("key")
    check_unique_keys([(info.path, keys)])
    return Store(info.path.parent.name, np.asarray(keys.to_pylist(), dtype=object), table_vectors(table),
                 info.metadata)


def _store_parts(output: str | Path, modality: str):
    """Every part of a store, read whole and checked, one at a time: (table, info)."""
    first = None
    for path in _part_paths(output, modality):
        table, info = _checked_part(path)
        first = first or info
        _consistent(modality, first, info)
        yield table, info


def read_store(output: str | Path, modality: str) -> Store:
    """Load every part of a modality's store (for stores that fit in memory), each part checked."""
    parts = list(_store_parts(output, modality))
    check_unique_keys([(info.path, table.column("key")) for table, info in parts])
    table = pa.concat_tables([t for t, _ in parts])
    keys = np.asarray(table.column("key").to_pylist(), dtype=object)
    return Store(modality, keys, table_vectors(table), parts[0][1].metadata)


def verify_store(output: str | Path, modality: str) -> int:
    """Check every part of a store, one part in memory at a time (a store of any size); its rows.
    Only the keys of every part are held, to find a key stored twice."""
    keys = [(info.path, table.column("key")) for table, info in _store_parts(output, modality)]
    check_unique_keys(keys)
    return sum(len(k) for _, k in keys)


def open_store(output: str | Path, modality: str) -> list[tuple[pq.ParquetFile, PartInfo]]:
    """Every part of a store memory-mapped (pages checksum-verified as they are read), footers checked
    and consistent; for readers that decode row groups as they need them (check each block with
    :func:`check_block`)."""
    out, first = [], None
    for path in _part_paths(output, modality):
        file = open_part(path)
        info = _info(path, file.schema_arrow)
        first = first or info
        _consistent(modality, first, info)
        out.append((file, info))
    return out


def check_block(vectors: np.ndarray, info: PartInfo, first_row: int) -> np.ndarray:
    """``vectors`` (rows from ``first_row`` of a part) checked finite and of the promised norm."""
    check_vectors(vectors, None, info.path, info.metadata, first_row)
    return vectors


def read_keys(parts: list[Path]) -> list[pa.ChunkedArray]:
    """The key column of each part, checksums verified and every key once over all of them."""
    keys = [read_table(p, columns=["key"]).column("key") for p in parts]
    check_unique_keys(list(zip(parts, keys, strict=True)))
    return keys


def read_status(output: str | Path, modality: str) -> pa.Table:
    parts = list_parts(status_dir(output, modality))
    if not parts:
        return status_table([])
    tables = [read_table(p) for p in parts]
    for p, t in zip(parts, tables, strict=True):
        check_status(t, p, STATUS_SCHEMA, STATUSES)
    return pa.concat_tables(tables)


# what a part written before the output-convention keys existed holds
_IDENTITY_DEFAULTS = {"normalized": True, "scale": 1.0}


def store_identity(metadata: Mapping[str, Any]) -> dict[str, Any]:
    """The :data:`STORE_IDENTITY` fields of a store's metadata."""
    return {k: metadata.get(k, _IDENTITY_DEFAULTS.get(k)) for k in STORE_IDENTITY}


def identity_diff(old: Mapping[str, Any], new: Mapping[str, Any]) -> list[str]:
    """``"field old -> new"`` for every identity field that differs (empty when one encoder made both)."""
    a, b = store_identity(old), store_identity(new)
    return [f"{k} {a[k]!r} -> {b[k]!r}" for k in STORE_IDENTITY if a[k] != b[k]]


def store_fingerprint(output: str | Path, modality: str) -> dict[str, Any]:
    """What identifies a store's content cheaply: its identity (the first part's metadata) and its
    parts' names and sizes. A re-encoded or re-written store gets another fingerprint; used by
    pairing's resumable chunks and the trainer's resumable checkpoints alike."""
    parts = list_parts(embeddings_dir(output, modality))
    meta = read_metadata(parts[0]) if parts else {}
    return {**store_identity(meta), "parts": [[p.name, p.stat().st_size] for p in parts]}
