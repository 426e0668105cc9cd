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
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pyarrow as pa
import pyarrow.parquet as pq
from tqdm import tqdm

from pipeline.core.manifest import Manifest, ManifestError
from pipeline.core.store import list_parts, read_metadata, read_status, stored_modalities
from pipeline.publish.card import feature_yaml, render_card, source_licences
from pipeline.publish.verify import BUNDLE_JSON, BundleError, verify, write_checksums

log = logging.getLogger(__name__)

__all__ = ["run", "verify", "repartition", "BundleError"]

FORMAT = "bindery-bundle-v1"
_DTYPES = {"halffloat": "float16", "float": "float32"}
# Dictionary-encode only low-cardinality columns: on float16 embeddings Parquet's dictionary
# pass triples write time and makes files larger (measured in docs/publish.md).
_WRITE = {"compression": "zstd", "use_dictionary": ["modality"]}


def bundle_folder(manifest: Manifest) -> Path:
    return Path(manifest.publish.folder) if manifest.publish.folder else manifest.output / "publish"


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
    outs = [dest / f"part-{i:05d}.parquet" for i in range(n_out)]
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


def _table_spec(root: Path, kind: str, config: str, files: list[Path], rows: int, schema: pa.Schema,
                **extra: Any) -> dict[str, Any]:
    metas = [pq.read_metadata(f) for f in files]
    return {"kind": kind, "config": config, "files": [f.relative_to(root).as_posix() for f in files],
            "rows": rows, "columns": {f.name: str(f.type) for f in schema},
            "num_bytes": sum(m.row_group(i).total_byte_size for m in metas for i in range(m.num_row_groups)),
            "download_size": sum(f.stat().st_size for f in files),
            "features": [feature_yaml(f) for f in schema], **extra}


def _add_store(root: Path, tables: dict, name: str, kind: str, config: str, sources: list[Path],
               part_bytes: float, modality: str) -> None:
    files, rows, schema = repartition(sources, root / name, part_bytes)
    emb = schema.field("embedding").type
    meta = read_metadata(sources[0])
    tables[name] = _table_spec(root, kind, config, files, rows, schema, modality=modality, dim=emb.list_size,
                               dtype=_DTYPES.get(str(emb.value_type), str(emb.value_type)),
                               encoder=meta.get("encoder", ""), digest=meta.get("digest", ""), metadata=meta)


def _add_pairs(out: Path, root: Path, tables: dict, part_bytes: float) -> tuple[dict, list[str], dict]:
    """Pair tables, indexes and histograms, when ``bindery pair`` has run."""
    pairs = out / "pairs"
    for table in ("neighbors", "quintuples"):
        if (pairs / f"{table}.parquet").is_file():
            files, rows, schema = repartition([pairs / f"{table}.parquet"], root / "pairs" / table, part_bytes)
            tables[f"pairs/{table}"] = _table_spec(root, table, table, files, rows, schema)
    indexes = {}
    for index in sorted((pairs / "index").glob("*.faiss")):
        m = index.name.removesuffix(".faiss")
        keys = index.with_name(f"{m}.keys.parquet")
        if not keys.is_file():
            raise BundleError(f"{keys}: missing; the index {index} cannot be used without its key map")
        (root / "index").mkdir(exist_ok=True)
        shutil.copy2(index, root / "index" / index.name)
        shutil.copy2(keys, root / "index" / keys.name)
        indexes[m] = {"index": f"index/{index.name}", "keys": f"index/{keys.name}",
                      "ntotal": pq.read_metadata(keys).num_rows}
    figures = []
    for png in sorted(pairs.glob("scores_*.png")):
        (root / "figures").mkdir(exist_ok=True)
        shutil.copy2(png, root / "figures" / png.name)
        figures.append(f"figures/{png.name}")
    summary_path = pairs / "summary.json"
    summary = json.loads(summary_path.read_text()) if summary_path.is_file() else {}
    return indexes, figures, summary


def _add_heads(manifest: Manifest, root: Path) -> dict[str, Any]:
    run = manifest.publish.run
    if not run:
        return {}
    src = manifest.output / "runs" / run
    dest = root / "heads" / run
    dest.mkdir(parents=True)
    names = [n for n in ("heads.safetensors", "config.json", "metrics.json") if (src / n).is_file()]
    for name in names:
        shutil.copy2(src / name, dest / name)
    return {"run": run, "files": [f"heads/{run}/{n}" for n in names]}


def _build(manifest: Manifest, root: Path) -> dict[str, Any]:
    out, part_bytes = manifest.output, manifest.publish.part_mb * 2**20
    tables: dict[str, dict[str, Any]] = {}
    modalities = stored_modalities(out)
    for m in tqdm(modalities, desc="publish stores", unit="store"):
        _add_store(root, tables, f"embeddings/{m}", "embeddings", m, list_parts(out / "embeddings" / m),
                   part_bytes, m)
    if (out / "classes" / "text.parquet").is_file():
        _add_store(root, tables, "classes", "classes", "classes", [out / "classes" / "text.parquet"],
                   part_bytes, "text")
    sample_parts = list_parts(out / "metadata")
    if sample_parts:
        files, rows, schema = repartition(sample_parts, root / "samples", part_bytes)
        tables["samples"] = _table_spec(root, "samples", "samples", files, rows, schema)
    indexes, figures, summary = _add_pairs(out, root, tables, part_bytes)
    status = {m: _status_counts(out, m) for m in modalities}
    if (out / "precompute.json").is_file():  # how the stores were made: counts, world size, timings
        (root / "provenance").mkdir()
        shutil.copy2(out / "precompute.json", root / "provenance" / "precompute.json")
    bundle = {
        "format": FORMAT, "name": manifest.dataset.name,
        "created": datetime.now(UTC).isoformat(timespec="seconds"),
        "query": summary.get("query", manifest.pair.query), "tables": tables, "indexes": indexes,
        "figures": figures, "heads": _add_heads(manifest, root), "status": status,
        "pair_summary": summary, "sources": source_licences(sample_parts, manifest.dataset.license),
        "manifest": manifest.to_dict(),
    }
    (root / BUNDLE_JSON).write_text(json.dumps(bundle, indent=2, default=str), encoding="utf-8")
    (root / "README.md").write_text(render_card(bundle), encoding="utf-8")
    write_checksums(root)
    return bundle


def _status_counts(out: Path, modality: str) -> dict[str, int]:
    return dict(sorted(Counter(read_status(out, modality).column("status").to_pylist()).items()))


def _check_inputs(manifest: Manifest, folder: Path) -> None:
    if not stored_modalities(manifest.output):
        raise ManifestError(f"dataset.output: no embedding stores under {manifest.output / 'embeddings'}; "
                            "run `bindery precompute` first")
    run = manifest.publish.run
    if run and not (manifest.output / "runs" / run / "heads.safetensors").is_file():
        raise ManifestError(f"publish.run: run {run!r} has no heads.safetensors under {manifest.output / 'runs'}; "
                            "run `bindery train` first or set publish.run = \"\"")
    if folder.exists() and not (folder / BUNDLE_JSON).is_file() and any(folder.iterdir()):
        raise ManifestError(f"publish.folder: {folder} exists and is not a bindery bundle; "
                            "choose a new or empty folder")


def _hub_api(manifest: Manifest):
    """Check the repo id, the token and the Hub before anything is written; return an HfApi."""
    if not manifest.publish.repo_id:
        raise ManifestError("publish.repo_id: required with --upload; set it to '<user-or-org>/<dataset>'")
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
    log.info("uploading as %s to %s", user.get("name", "?"), manifest.publish.repo_id)
    return api


def _move_into_place(tmp: Path, folder: Path) -> None:
    old = folder.with_name(f"{folder.name}.old-{uuid.uuid4().hex[:8]}")
    if folder.exists():
        folder.rename(old)
    tmp.rename(folder)
    if old.exists():
        shutil.rmtree(old)


def run(manifest: Manifest, upload: bool = False) -> dict[str, Any]:
    """Write the bundle to ``[publish] folder`` (and upload it with ``upload=True``); return a summary."""
    folder = bundle_folder(manifest)
    _check_inputs(manifest, folder)
    for stale in [*folder.parent.glob(f"{folder.name}.tmp-*"), *folder.parent.glob(f"{folder.name}.old-*")]:
        log.warning("%s was left by an interrupted publish and is not the published bundle; remove it", stale)
    api = _hub_api(manifest) if upload else None
    folder.parent.mkdir(parents=True, exist_ok=True)
    tmp = folder.with_name(f"{folder.name}.tmp-{uuid.uuid4().hex[:8]}")
    tmp.mkdir()
    try:
        bundle = _build(manifest, tmp)
        if manifest.publish.verify:
            verify(tmp)
        _move_into_place(tmp, folder)
    finally:
        if tmp.exists():
            shutil.rmtree(tmp)
    log.info("bundle written to %s", folder)
    result = {"bundle": str(folder), "tables": {n: t["rows"] for n, t in bundle["tables"].items()},
              "indexes": sorted(bundle["indexes"]), "heads": bundle["heads"].get("run", "")}
    if api is not None:
        repo = manifest.publish.repo_id
        api.create_repo(repo, repo_type="dataset", private=manifest.publish.private, exist_ok=True)
        commit = api.upload_folder(folder_path=str(folder), repo_id=repo, repo_type="dataset",
                                   commit_message=f"bindery publish {manifest.dataset.name}")
        result["uploaded"] = {"repo_id": repo, "commit": str(getattr(commit, "oid", commit))}
    return result
