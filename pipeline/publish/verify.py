"""Re-check a published bundle and name the first problem.

A bundle (see ``docs/publish.md``) carries ``checksums.sha256`` (sha256sum format, every
file but itself) and ``bundle.json`` (its tables, row counts, column types, indexes). The
checks run from cheap and certain to slow: files and checksums, then per-table schemas and
row counts, then keys that must join (every pair key is in the store it points into, every
index key map matches its index). The first failure raises :class:`BundleError`.

Needs pyarrow only; faiss is imported when a bundle has indexes.
"""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Any

import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq

from pipeline.core.hashing import file_sha256
from pipeline.core.layout import BundleLayout, PairsLayout
from pipeline.publish.bundle import Bundle, BundleError, IndexSpec, TableSpec

log = logging.getLogger(__name__)

__all__ = ["BundleError", "bundle_files", "write_checksums", "verify"]

CHECKSUMS = BundleLayout.CHECKSUMS
BUNDLE_JSON = BundleLayout.BUNDLE_JSON
NEIGHBORS, QUINTUPLES = (BundleLayout.pairs(t) for t in PairsLayout.TABLES)


def bundle_files(root: Path) -> list[str]:
    """Every file under ``root`` (posix paths relative to it), sorted, the checksum file excluded."""
    return sorted(p.relative_to(root).as_posix() for p in root.rglob("*")
                  if p.is_file() and p.relative_to(root).as_posix() != CHECKSUMS)


def write_checksums(root: Path) -> int:
    """Write ``checksums.sha256`` for every file of the bundle; ``sha256sum -c`` reads it."""
    lines = [f"{file_sha256(root / rel)}  {rel}\n" for rel in bundle_files(root)]
    (root / CHECKSUMS).write_text("".join(lines), encoding="utf-8")
    return len(lines)


def _check_checksums(root: Path) -> int:
    listed: dict[str, str] = {}
    for n, line in enumerate((root / CHECKSUMS).read_text(encoding="utf-8").splitlines(), 1):
        digest, sep, rel = line.partition("  ")
        if not sep or len(digest) != 64:
            raise BundleError(f"{root / CHECKSUMS}: line {n} is not '<sha256>  <path>': {line!r}")
        listed[rel] = digest
    for rel, digest in listed.items():
        if not (root / rel).is_file():
            raise BundleError(f"{root / rel}: listed in {CHECKSUMS} but missing from the bundle")
        if file_sha256(root / rel) != digest:
            raise BundleError(f"{root / rel}: checksum mismatch (the file changed after publishing)")
    extra = sorted(set(bundle_files(root)) - set(listed))
    if extra:
        raise BundleError(f"{root / extra[0]}: not listed in {CHECKSUMS} (a file added after publishing)")
    return len(listed)


def _check_table(root: Path, name: str, spec: TableSpec) -> int:
    rows = 0
    for rel in spec.files:
        meta = pq.read_metadata(root / rel)
        schema = meta.schema.to_arrow_schema()
        got = {f.name: str(f.type) for f in schema}
        if got != spec.columns:
            raise BundleError(f"{root / rel}: columns {got} do not match bundle.json's {name} table {spec.columns}")
        rows += meta.num_rows
    if rows != spec.rows:
        raise BundleError(f"{name}: {rows} rows in its files, bundle.json says {spec.rows}")
    return rows


def _column(root: Path, files: list[str], column: str) -> pa.ChunkedArray:
    return pa.concat_tables([pq.read_table(root / f, columns=[column]) for f in files]).column(column)


def _check_subset(values: pa.ChunkedArray, keys: pa.Array, what: str, store: str) -> None:
    values = values.drop_null()
    outside = values.filter(pc.invert(pc.is_in(values, value_set=keys)))
    if len(outside):
        raise BundleError(f"{what}: key {outside[0].as_py()!r} is not in the {store} store "
                          f"({len(outside)} keys do not join)")


def _store_keys(root: Path, tables: dict[str, TableSpec]) -> dict[str, pa.Array]:
    """modality -> the keys of its embedding store, each checked to occur once."""
    keys: dict[str, pa.Array] = {}
    for name, spec in tables.items():
        if spec.kind != "embeddings":
            continue
        col = _column(root, spec.files, "key").combine_chunks()
        if pc.count_distinct(col).as_py() != len(col):
            counts = pc.value_counts(col)
            dup = counts.filter(pc.greater(counts.field("counts"), 1))[0]["values"].as_py()
            raise BundleError(f"{name}: key {dup!r} occurs more than once in the embedding store "
                              "(keys must be unique for pairs to join)")
        keys[spec.modality] = col
    return keys


def _check_neighbors(root: Path, spec: TableSpec, query: str, keys: dict[str, pa.Array]) -> None:
    for rel in spec.files:  # file by file: neighbours can be huge
        nb = pq.read_table(root / rel, columns=["query_key", "modality", "target_key"])
        if query in keys:
            _check_subset(nb.column("query_key"), keys[query], f"{rel} query_key", query)
        for m in pc.unique(nb.column("modality")).to_pylist():
            if m not in keys:
                raise BundleError(f"{rel}: modality {m!r} has no embedding store in the bundle")
            sel = nb.filter(pc.equal(nb.column("modality"), m)).column("target_key")
            _check_subset(sel, keys[m], f"{rel} target_key ({m})", m)


def _check_quintuples(root: Path, spec: TableSpec, query: str, keys: dict[str, pa.Array]) -> None:
    targets = {c: c.removesuffix("_key") for c in spec.columns if c.endswith("_key") and c != "query_key"}
    for rel in spec.files:
        qt = pq.read_table(root / rel, columns=["query_key", *targets])
        if query in keys:
            _check_subset(qt.column("query_key"), keys[query], f"{rel} query_key", query)
        for col, m in targets.items():
            if m not in keys:
                raise BundleError(f"{rel} {col}: modality {m!r} has no embedding store in the bundle")
            _check_subset(qt.column(col), keys[m], f"{rel} {col}", m)


def _check_joins(root: Path, bundle: Bundle) -> None:
    tables, query = bundle.tables, bundle.query
    keys = _store_keys(root, tables)
    if query not in keys and (NEIGHBORS in tables or QUINTUPLES in tables):
        raise BundleError(f"pairs: the query modality {query!r} has no embedding store in the bundle")
    if NEIGHBORS in tables:
        _check_neighbors(root, tables[NEIGHBORS], query, keys)
    if QUINTUPLES in tables:
        _check_quintuples(root, tables[QUINTUPLES], query, keys)
    _check_indexes(root, bundle.indexes, keys)


def _read_index_lazily(faiss, path: Path):
    """Open an index memory-mapped where FAISS can (flat codes, IVF lists): only ntotal is needed."""
    flags = getattr(faiss, "IO_FLAG_MMAP_IFC", 0) | getattr(faiss, "IO_FLAG_MMAP", 0) | faiss.IO_FLAG_READ_ONLY
    try:
        return faiss.read_index(str(path), flags)
    except RuntimeError:  # an index type without mmap support: read it whole
        return faiss.read_index(str(path))


def _check_indexes(root: Path, indexes: dict[str, IndexSpec], keys: dict[str, pa.Array]) -> None:
    if not indexes:
        return
    logging.getLogger("faiss.loader").setLevel(logging.WARNING)  # its CPU-feature probing is noise here
    try:
        import faiss
    except ImportError as exc:  # pragma: no cover - faiss-cpu is a core dependency
        raise BundleError("checking the bundle's FAISS indexes needs faiss: pip install faiss-cpu") from exc
    for m, spec in indexes.items():
        index = _read_index_lazily(faiss, root / spec.index)
        key_map = pq.read_table(root / spec.keys, columns=["key"]).column("key")
        if index.ntotal != len(key_map):
            raise BundleError(f"{root / spec.index}: {index.ntotal} vectors but {spec.keys} has "
                              f"{len(key_map)} keys (row i must be FAISS id i)")
        if m in keys:
            _check_subset(key_map, keys[m], spec.keys, m)


def verify(folder: str | Path) -> dict[str, Any]:
    """Re-check a bundle: checksums, schemas and row counts, joining keys, index key maps.

    Returns a summary; raises :class:`BundleError` naming the first problem.
    """
    root = Path(folder)
    for name in (CHECKSUMS, BUNDLE_JSON):
        if not (root / name).is_file():
            raise BundleError(f"{root / name}: missing; {root} is not a complete bindery bundle")
    n_files = _check_checksums(root)
    bundle = Bundle.read(root / BUNDLE_JSON)
    rows = {name: _check_table(root, name, spec) for name, spec in bundle.tables.items()}
    _check_joins(root, bundle)
    log.info("bundle %s verified: %d files, %d tables", root, n_files, len(rows))
    return {"bundle": str(root), "ok": True, "files": n_files, "rows": rows, "indexes": sorted(bundle.indexes)}
