"""Side outputs of precompute: the sample metadata table, zero-shot class names, store counts.

* ``<output>/metadata/part-<shard>.parquet`` -- ``key``, ``json`` (the raw json member, "" if none)
* ``<output>/classes/text.parquet`` -- store format, key = class name, embedding = the text
  encoder on ``class_prompt.format(name)``, L2-normalised
* ``<output>/faults/<shard>.json`` -- ``{"shard", "error"}``: the shard's last read fault. It
  outlives the run (a truncated shard's parts are done, so a rerun does not read it again) and
  goes when the shard is read without one; precompute.json's ``faults`` lists these markers.
"""

from __future__ import annotations

import json
import logging
from pathlib import Path
from typing import Any

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq

from pipeline.core.layout import part_name
from pipeline.core.store import (
    atomic_write_table,
    atomic_write_text,
    list_parts,
    read_status,
    write_embeddings,
)

log = logging.getLogger(__name__)

METADATA_SCHEMA = pa.schema([("key", pa.string()), ("json", pa.string())])


def metadata_dir(output: str | Path) -> Path:
    return Path(output) / "metadata"


def classes_path(output: str | Path) -> Path:
    return Path(output) / "classes" / "text.parquet"


def faults_dir(output: str | Path) -> Path:
    return Path(output) / "faults"


def record_fault(output: str | Path, shard_id: str, error: str | None) -> None:
    """Write (atomically) or clear the shard's fault marker."""
    path = faults_dir(output) / f"{shard_id}.json"
    if error is None:
        path.unlink(missing_ok=True)
        return
    atomic_write_text(path, json.dumps({"shard": shard_id, "error": error}))


def read_faults(output: str | Path) -> dict[str, str]:
    """{shard_id: error} of every fault marker."""
    folder = faults_dir(output)
    if not folder.is_dir():
        return {}
    faults = {}
    for path in sorted(folder.glob("*.json")):
        if not path.name.startswith("."):
            marker = json.loads(path.read_text())
            faults[marker["shard"]] = marker["error"]
    return faults


def write_metadata(output: str | Path, shard_id: str, rows: list[tuple[str, str]]) -> None:
    cols = list(zip(*rows, strict=True)) if rows else [[], []]
    table = pa.Table.from_arrays([pa.array(list(c), pa.string()) for c in cols], schema=METADATA_SCHEMA)
    atomic_write_table(table, metadata_dir(output) / part_name(shard_id))


def read_labels(output: str | Path, label_key: str) -> list[str]:
    """Sorted distinct values of ``label_key`` over every sample's json."""
    labels: set[str] = set()
    for part in list_parts(metadata_dir(output)):
        for text in pq.read_table(part, columns=["json"]).column("json").to_pylist():
            if not text:
                continue
            try:
                meta = json.loads(text)
            except ValueError:
                continue
            if isinstance(meta, dict) and meta.get(label_key) not in (None, ""):
                labels.add(str(meta[label_key]))
    return sorted(labels)


def write_classes(output: str | Path, names: list[str], prompt: str, encode_texts: Any, dtype: str,
                  metadata: dict[str, Any]) -> None:
    """Embed ``prompt.format(name)`` for each class with ``encode_texts(list[str]) -> (n, dim)`` unit vectors."""
    vectors = encode_texts([prompt.format(n) for n in names]) if names else np.zeros((0, metadata["dim"]))
    write_embeddings(classes_path(output), list(names), vectors, dtype=dtype,
                     metadata={**metadata, "class_prompt": prompt, "classes": len(names)})
    log.info("wrote %d class-name embeddings to %s", len(names), classes_path(output))


def store_counts(output: str | Path, modalities: list[str]) -> dict[str, dict[str, int]]:
    """Per modality: rows in the embedding store ("ok") and in the status table, by status."""
    from pipeline.core.store import embeddings_dir

    counts = {}
    for m in modalities:
        ok = sum(pq.read_metadata(p).num_rows for p in list_parts(embeddings_dir(output, m)))
        c = {"ok": ok, "missing": 0, "corrupt": 0, "error": 0}
        for s in read_status(output, m).column("status").to_pylist():
            c[s] += 1
        counts[m] = c
    return counts
