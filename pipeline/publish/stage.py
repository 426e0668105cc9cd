"""`bindery publish`: a dataset bundle that loads without bindery installed.

The bundle is a folder of plain files (layout in ``docs/publish.md``): embedding stores,
class embeddings, sample metadata and pair tables re-partitioned into Parquet files of about
``[publish] part_mb``; the FAISS indexes with their key maps; score histograms; optionally a
run's exported heads; a Hugging Face dataset card (``README.md``), ``bundle.json`` and
``checksums.sha256``. It is built in ``<folder>.tmp-*`` and renamed into place only when
complete, so a crash never leaves a half bundle under the published name.

With ``--upload`` the token and the Hub are checked before anything is written; the
upload is one commit (``upload_folder``) of the finished bundle.
"""

from __future__ import annotations

import json
import logging
import math
import shutil
import uuid
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pyarrow as pa
import pyarrow.parquet as pq
from tqdm import tqdm

from pipeline.core.layout import BundleLayout, OutputLayout, PairsLayout, RunLayout, part_name
from pipeline.core.manifest import DatasetConfig, Manifest, ManifestError, PublishConfig
from pipeline.core.samples import metadata_parts
from pipeline.core.store import list_parts, read_metadata, read_status, stored_modalities, verify_store
from pipeline.publish.bundle import FORMAT, Bundle, BundleError, HeadsSpec, IndexSpec, StoreInfo, TableSpec
from pipeline.publish.card import feature_yaml, render_card, source_licences
from pipeline.publish.emm1 import write_emm1
from pipeline.publish.verify import verify, write_checksums
from pipeline.publish.weights_check import check_weights, random_weight_stores

log = logging.getLogger(__name__)

__all__ = ["run", "verify", "repartition", "BundleError", "FORMAT"]

_DTYPES = {"halffloat": "float16", "float": "float32"}
# Dictionary-encode only low-cardinality columns: on float16 embeddings Parquet's dictionary
# pass triples write time and makes files larger (measured in docs/publish.md).
_WRITE = {"compression": "zstd", "use_dictionary": ["modality"]}


def bundle_folder(cfg: PublishConfig, layout: OutputLayout) -> Path:
    return Path(cfg.folder) if cfg.folder else layout.publish_default


def repartition(sources: list[Path], dest: Path, part_bytes: float) -> tuple[list[Path], int, pa.Schema]:
    """Stream ``sources`` (one schema) into ``dest/part-NNNNN.parquet`` files of about ``part_bytes``.

    Row order and the first source's Parquet key-value metadata (``bindery.*``) are kept.
    The rows per file come from the sources' compressed bytes per row.
    """
    files = [pq.ParquetFile(s) for s in sources]
    schema = files[0].schema_arrow
    for src, f in zip(sources, files, strict=True):
        if not f.schema_arrow.equals(schema, check_metadata=False):
            raise BundleError(f"{src}: schema {f.schema_arrow} differs from {sources[0]}'s; "
                              "every part of a table must have the same columns")
    total_rows = sum(f.metadata.num_rows for f in files)
    total_bytes = sum(s.stat().st_size for s in sources)
    rows_per_file = max(1, int(part_bytes * max(total_rows, 1) / max(total_bytes, 1)))
    n_out = max(1, math.ceil(total_rows / rows_per_file))
    dest.mkdir(parents=True, exist_ok=True)
    outs = [dest / part_name(f"{i:05d}") for i in range(n_out)]
    writer, index, in_file = pq.ParquetWriter(outs[0], schema, **_WRITE), 0, 0
    try:
        for f in files:
            for batch in f.iter_batches(batch_size=min(rows_per_file, 65536)):
                table = pa.Table.from_batches([batch]).replace_schema_metadata(schema.metadata)
                while len(table):
                    if in_file == rows_per_file:
                        writer.close()
                        index, in_file = index + 1, 0
                        writer = pq.ParquetWriter(outs[index], schema, **_WRITE)
                    take = min(len(table), rows_per_file - in_file)
                    writer.write_table(table.slice(0, take))
                    table, in_file = table.slice(take), in_file + take
    finally:
        writer.close()
    return outs, total_rows, schema


# ----------------------------------------------------------------------------- tables


def _table(bundle: BundleLayout, name: str, kind: str, config: str, sources: list[Path], part_bytes: float,
           store_modality: str | None = None) -> TableSpec:
    """Repartition ``sources`` into the bundle folder ``name`` and describe it (with its store's identity)."""
    files, rows, schema = repartition(sources, bundle.path(name), part_bytes)
    metas = [pq.read_metadata(f) for f in files]
    store = None
    if store_modality is not None:
        emb, meta = schema.field("embedding").type, read_metadata(sources[0])
        store = StoreInfo(modality=store_modality, dim=emb.list_size,
                          dtype=_DTYPES.get(str(emb.value_type), str(emb.value_type)),
                          encoder=meta.get("encoder", ""), digest=meta.get("digest", ""), metadata=meta)
    return TableSpec(kind=kind, config=config, files=[f.relative_to(bundle.root).as_posix() for f in files],
                     rows=rows, columns={f.name: str(f.type) for f in schema},
                     num_bytes=sum(m.row_group(i).total_byte_size for m in metas for i in range(m.num_row_groups)),
                     download_size=sum(f.stat().st_size for f in files),
                     features=[feature_yaml(f) for f in schema], store=store)


def _store_tables(layout: OutputLayout, bundle: BundleLayout, part_bytes: float) -> dict[str, TableSpec]:
    """The embedding stores, the class embeddings and the sample metadata."""
    tables: dict[str, TableSpec] = {}
    for m in tqdm(stored_modalities(layout.root), desc="publish stores", unit="store"):
        name = BundleLayout.embeddings(m)
        tables[name] = _table(bundle, name, "embeddings", m, list_parts(layout.embeddings(m)), part_bytes, m)
    if layout.classes.is_file():
        tables[BundleLayout.CLASSES] = _table(bundle, BundleLayout.CLASSES, "classes", "classes", [layout.classes],
                                              part_bytes, "text")
    sample_parts = metadata_parts(layout)
    if sample_parts:
        tables[BundleLayout.SAMPLES] = _table(bundle, BundleLayout.SAMPLES, "samples", "samples", sample_parts,
                                              part_bytes)
    return tables


def _copy(src: Path, bundle: BundleLayout, rel: str) -> str:
    dest = bundle.path(rel)
    dest.parent.mkdir(parents=True, exist_ok=True)
    shutil.copy2(src, dest)
    return rel


@dataclass
class PairFiles:
    """What ``bindery pair`` left for the bundle (all empty when it has not run)."""

    tables: dict[str, TableSpec] = field(default_factory=dict)
    indexes: dict[str, IndexSpec] = field(default_factory=dict)
    figures: list[str] = field(default_factory=list)
    summary: dict[str, Any] = field(default_factory=dict)


def _add_pairs(pairs: PairsLayout, bundle: BundleLayout, part_bytes: float) -> PairFiles:
    """Pair tables, indexes and histograms, when ``bindery pair`` has run."""
    found = PairFiles()
    for table in PairsLayout.TABLES:
        if pairs.table(table).is_file():
            name = BundleLayout.pairs(table)
            found.tables[name] = _table(bundle, name, table, table, [pairs.table(table)], part_bytes)
    for m in pairs.indexed_modalities():
        index, keys = pairs.index(m), pairs.index_keys(m)
        if not keys.is_file():
            raise BundleError(f"{keys}: missing; the index {index} cannot be used without its key map")
        found.indexes[m] = IndexSpec(index=_copy(index, bundle, BundleLayout.index(index.name)),
                                     keys=_copy(keys, bundle, BundleLayout.index(keys.name)),
                                     ntotal=pq.read_metadata(keys).num_rows)
    found.figures = [_copy(png, bundle, BundleLayout.figure(png.name)) for png in pairs.histograms()]
    if pairs.summary.is_file():
        found.summary = json.loads(pairs.summary.read_text())
    return found


def _add_heads(run_name: str, layout: OutputLayout, bundle: BundleLayout) -> HeadsSpec | None:
    if not run_name:
        return None
    run = layout.run(run_name)
    bundle.path(BundleLayout.heads(run_name)).mkdir(parents=True)
    names = [n for n in RunLayout.PUBLISHED if run.file(n).is_file()]
    return HeadsSpec(run=run_name, files=[_copy(run.file(n), bundle, BundleLayout.heads(run_name, n))
                                          for n in names])


def _status_counts(layout: OutputLayout, modality: str) -> dict[str, int]:
    return dict(sorted(Counter(read_status(layout.root, modality).column("status").to_pylist()).items()))


def _build(layout: OutputLayout, root: Path, cfg: PublishConfig, dataset: DatasetConfig, *, query: str,
           manifest_record: dict[str, Any]) -> Bundle:
    """Write every table and file of the bundle into ``root``, then ``bundle.json``, the card and checksums."""
    bundle_root, part_bytes = BundleLayout(root), cfg.part_mb * 2**20
    tables = _store_tables(layout, bundle_root, part_bytes)
    pairs = _add_pairs(layout.pairs, bundle_root, part_bytes)
    tables.update(pairs.tables)
    if layout.precompute_summary.is_file():  # how the stores were made: counts, world size, timings
        _copy(layout.precompute_summary, bundle_root, BundleLayout.provenance(layout.precompute_summary.name))
    bundle = Bundle(
        name=dataset.name, created=datetime.now(UTC).isoformat(timespec="seconds"),
        query=pairs.summary.get("query", query), tables=tables, indexes=pairs.indexes, figures=pairs.figures,
        heads=_add_heads(cfg.run, layout, bundle_root),
        status={m: _status_counts(layout, m) for m in stored_modalities(layout.root)},
        pair_summary=pairs.summary, sources=source_licences(layout, dataset.license), manifest=manifest_record,
        random_weights=random_weight_stores(layout),
        emm1=write_emm1(layout, bundle_root.root, query) if cfg.emm1 else {})
    bundle_root.path(BundleLayout.BUNDLE_JSON).write_text(bundle.to_json(), encoding="utf-8")
    bundle_root.path(BundleLayout.CARD).write_text(render_card(bundle), encoding="utf-8")
    write_checksums(root)
    return bundle


# ----------------------------------------------------------------------------- entry, upload, move into place


def _check_inputs(cfg: PublishConfig, layout: OutputLayout, folder: Path, upload: bool) -> None:
    if not stored_modalities(layout.root):
        raise ManifestError(f"dataset.output: no embedding stores under {layout.embeddings_root}; "
                            "run `bindery precompute` first")
    for m in stored_modalities(layout.root):
        verify_store(layout.root, m)  # a damaged part, mixed parts or a key twice: StoreError, nothing written
    run = cfg.run
    if run and not layout.run(run).heads.is_file():
        raise ManifestError(f"publish.run: run {run!r} has no {layout.run(run).heads.name} under "
                            f"{layout.runs_root}; run `bindery train` first or set publish.run = \"\"")
    if folder.exists() and not (folder / BundleLayout.BUNDLE_JSON).is_file() and any(folder.iterdir()):
        raise ManifestError(f"publish.folder: {folder} exists and is not a bindery bundle; "
                            "choose a new or empty folder")
    if upload and not cfg.repo_id:
        raise ManifestError("publish.repo_id: required with --upload; set it to '<user-or-org>/<dataset>'")


def _hub_api(repo_id: str):
    """Check the token and the Hub before anything is written; return an HfApi."""
    try:
        from huggingface_hub import HfApi, get_token
    except ImportError as exc:  # pragma: no cover - a core dependency
        raise BundleError("--upload needs huggingface_hub: pip install huggingface_hub") from exc
    token = get_token()
    if not token:
        raise BundleError("--upload needs a Hugging Face token: set HF_TOKEN (or run `hf auth login`); "
                          "nothing was written")
    api = HfApi(token=token)
    try:
        user = api.whoami()
    except Exception as exc:  # network, offline mode, bad token: all stop here, before any write
        raise BundleError(f"--upload: cannot reach the Hugging Face Hub with this token "
                          f"({type(exc).__name__}: {exc}); nothing was written") from None
    log.info("uploading as %s to %s", user.get("name", "?"), repo_id)
    return api


def _upload(api, cfg: PublishConfig, folder: Path, name: str) -> dict[str, str]:
    api.create_repo(cfg.repo_id, repo_type="dataset", private=cfg.private, exist_ok=True)
    commit = api.upload_folder(folder_path=str(folder), repo_id=cfg.repo_id, repo_type="dataset",
                               commit_message=f"bindery publish {name}")
    return {"repo_id": cfg.repo_id, "commit": str(getattr(commit, "oid", commit))}


def _move_into_place(tmp: Path, folder: Path) -> None:
    old = folder.with_name(f"{folder.name}.old-{uuid.uuid4().hex[:8]}")
    if folder.exists():
        folder.rename(old)
    tmp.rename(folder)
    if old.exists():
        shutil.rmtree(old)


def _build_in_place(folder: Path, build: Callable[[Path], Bundle], check: bool) -> Bundle:
    """Build into ``<folder>.tmp-*`` (verified when ``check``) and rename it onto ``folder`` only when complete."""
    for stale in [*folder.parent.glob(f"{folder.name}.tmp-*"), *folder.parent.glob(f"{folder.name}.old-*")]:
        log.warning("%s was left by an interrupted publish and is not the published bundle; remove it", stale)
    folder.parent.mkdir(parents=True, exist_ok=True)
    tmp = folder.with_name(f"{folder.name}.tmp-{uuid.uuid4().hex[:8]}")
    tmp.mkdir()
    try:
        bundle = build(tmp)
        if check:
            verify(tmp)
        _move_into_place(tmp, folder)
    finally:
        if tmp.exists():
            shutil.rmtree(tmp)
    return bundle


def run(manifest: Manifest, upload: bool = False) -> dict[str, Any]:
    """Write the bundle to ``[publish] folder`` (and upload it with ``upload=True``); return a summary."""
    cfg, layout = manifest.publish, manifest.layout
    folder = bundle_folder(cfg, layout)
    _check_inputs(cfg, layout, folder, upload)
    check_weights(cfg, layout)  # random-weight stores are refused before anything is written
    api = _hub_api(cfg.repo_id) if upload else None
    bundle = _build_in_place(folder, lambda root: _build(
        layout, root, cfg, manifest.dataset, query=manifest.pair.query, manifest_record=manifest.to_dict()),
        check=cfg.verify)
    log.info("bundle written to %s", folder)
    result: dict[str, Any] = {"bundle": str(folder), "tables": {n: t.rows for n, t in bundle.tables.items()},
                              "indexes": sorted(bundle.indexes), "heads": bundle.heads.run if bundle.heads else ""}
    if api is not None:
        result["uploaded"] = _upload(api, cfg, folder, manifest.dataset.name)
    return result
