"""The checks a store part passes on every read, and the one error it fails with.

A part is trusted only as far as it checks out: its Parquet page checksums (verified by
pyarrow as the pages are read), its columns (``key`` string, ``embedding`` a fixed-size list
of float16 or float32) against the dim and dtype its metadata records, finite values, the norm
the metadata promises (``normalized`` true: every vector has norm ``scale``, 1 unless the
metadata says otherwise) and each key once. Any failure is a :class:`StoreError` naming the
file and the fix; a pyarrow exception never reaches the caller.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any, TypeVar

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

T = TypeVar("T")

VALUE_TYPES = {pa.float16(): "float16", pa.float32(): "float32"}
# |norm - scale| allowed, relative to scale: float16 rounds each component to 2^-11 relative
NORM_TOLERANCE = {"float16": 4e-3, "float32": 1e-3}
CHECK_ROWS = 1 << 16  # rows converted to float32 at a time for the norm check


class StoreError(ValueError):
    """A store file that fails its checks (damaged, mixed or with a key twice): names the file and the fix."""


def fix_for(path: Path) -> str:
    """How to repair a damaged part: delete it and make it again."""
    name = path.name
    if name.startswith("part-") and name.endswith(".parquet"):
        return f"delete {path} and re-run `bindery precompute`, which makes shard {name[5:-8]}'s parts again"
    return f"delete {path} and re-run the stage that wrote it"


def damaged(path: str | Path, what: str) -> StoreError:
    path = Path(path)
    return StoreError(f"{path}: {what}; {fix_for(path)}")


def read_checked(path: str | Path, read: Callable[[str | Path], T]) -> T:
    """``read(path)`` with every failure but a missing file turned into a StoreError naming ``path``
    (a failed page checksum, an unreadable footer, a decompression error, a bad allocation size)."""
    try:
        return read(path)
    except FileNotFoundError:
        raise
    except Exception as exc:  # noqa: BLE001 - a damaged file may fail in any of pyarrow's ways
        message = " ".join(str(exc).split())[:300]
        raise damaged(path, f"cannot be read ({type(exc).__name__}: {message})") from None


def check_schema(schema: pa.Schema, path: Path, meta: Mapping[str, Any]) -> tuple[int, str]:
    """(dim, dtype) of a store part, checked against its own metadata."""
    names = read_checked(path, lambda _: schema.names)  # a damaged footer may not even decode
    if "key" not in names or "embedding" not in names:
        raise damaged(path, f"a store part has columns key and embedding, this one has {names}")
    emb = schema.field("embedding").type
    if not pa.types.is_string(schema.field("key").type) or not pa.types.is_fixed_size_list(emb) \
            or emb.value_type not in VALUE_TYPES:
        raise damaged(path, f"key must be a string and embedding a fixed-size list of float16 or float32; "
                            f"found {schema.field('key').type} and {emb}")
    dim, dtype = emb.list_size, VALUE_TYPES[emb.value_type]
    if meta.get("dim", dim) != dim or meta.get("dtype", dtype) != dtype:
        raise damaged(path, f"its vectors are {dtype} of dim {dim}, its metadata says {meta.get('dtype')} of dim "
                            f"{meta.get('dim')}")
    return dim, dtype


def check_same_layout(first: Path, layout: tuple[int, str], path: Path, other: tuple[int, str]) -> None:
    if layout != other:
        raise StoreError(f"{path.parent}: {first.name} holds {layout[1]} vectors of dim {layout[0]}, {path.name} "
                         f"{other[1]} of dim {other[0]}; one store holds one dtype and dim: delete the parts of the "
                         f"other kind and re-run `bindery precompute` with one modalities.<m>.dtype")


def check_vectors(vectors: np.ndarray, keys: pa.ChunkedArray | None, path: Path, meta: Mapping[str, Any],
                  first_row: int = 0) -> None:
    """Finite values, and the norm ``scale`` where the metadata says the vectors are normalised.
    ``keys`` (when given) name the bad row; ``first_row`` is the part row of ``vectors[0]``."""
    if keys is not None and keys.null_count:
        raise damaged(path, "a key is null")
    normalized = meta.get("normalized") is True
    scale = meta.get("scale", 1.0)
    if normalized and (isinstance(scale, bool) or not isinstance(scale, int | float) or not scale > 0):
        raise damaged(path, f"its metadata gives scale = {scale!r}, not a positive number")
    tolerance = NORM_TOLERANCE["float16" if vectors.dtype == np.float16 else "float32"] * scale

    def row(i: int) -> str:
        return f"row {first_row + i}" + (f" (key {keys[i].as_py()!r})" if keys is not None else "")

    for start in range(0, len(vectors), CHECK_ROWS):
        block = vectors[start:start + CHECK_ROWS].astype(np.float32)
        finite = np.isfinite(block).all(axis=1)
        if not finite.all():
            raise damaged(path, f"{row(start + int(np.argmin(finite)))} holds a non-finite value (NaN or inf)")
        if normalized:
            norms = np.sqrt(np.einsum("ij,ij->i", block, block))
            off = np.abs(norms - scale) > tolerance
            if off.any():
                i = int(np.argmax(off))
                raise damaged(path, f"{row(start + i)} has norm {norms[i]:.6g}, but the metadata says the vectors "
                                    f"are normalised to {scale:g}")


def check_unique_keys(parts: list[tuple[Path, pa.ChunkedArray]]) -> None:
    """Each key once over ``parts`` (path, key column); else a StoreError naming the key and both parts."""
    chunks = [c for _, col in parts for c in col.chunks]
    keys = pa.chunked_array(chunks, type=pa.string())
    if len(pc.unique(keys)) == len(keys):
        return
    seen: dict[str, Path] = {}
    for path, col in parts:
        for key in col.to_pylist():
            if key in seen:
                where = f"twice in {path}" if seen[key] == path else f"in {seen[key]} and in {path}"
                raise StoreError(f"key {key!r} is stored {where}; a store holds each key once. Re-run `bindery "
                                 "precompute` on this output: it keeps a repeated key's first occurrence (in shard "
                                 "order) and records the others as `duplicate` status rows")
            seen[key] = path


def check_status(table: pa.Table, path: Path, schema: pa.Schema, statuses: tuple[str, ...]) -> None:
    if not table.schema.equals(schema, check_metadata=False):
        raise damaged(path, f"a status part has columns {schema.names} of strings, this one {table.schema}")
    unknown = set(table.column("status").unique().to_pylist()) - set(statuses)
    if unknown or table.column("key").null_count:
        raise damaged(path, f"status values {sorted(map(str, unknown))} are not among {statuses}"
                      if unknown else "a key is null")
