"""Side outputs of precompute: fault markers, zero-shot class names, store counts.

Paths come from :class:`~pipeline.core.layout.OutputLayout`; the sample metadata table is
written and read by :mod:`pipeline.core.samples`.

* ``layout.classes`` (``classes/text.parquet``) -- store format, key = class name, embedding =
  the text encoder on ``class_prompt.format(name)``, L2-normalised
* ``layout.fault_marker(shard)`` (``faults/<shard>.json``) -- ``{"shard", "error"}``: the shard's
  last read fault. It outlives the run (a truncated shard's parts are done, so a rerun does not
  read it again) and goes when the shard is read without one; precompute.json's ``faults``
  lists these markers.
"""

from __future__ import annotations

import json
import logging
from collections.abc import Callable, Sequence
from typing import Any

import numpy as np
import pyarrow.parquet as pq

from pipeline.core.layout import OutputLayout
from pipeline.core.store import atomic_write_text, list_parts, read_status, write_embeddings
from pipeline.precompute.stats import COUNTED

log = logging.getLogger(__name__)


def record_fault(layout: OutputLayout, shard_id: str, error: str | None) -> None:
    """Write (atomically) or clear the shard's fault marker."""
    path = layout.fault_marker(shard_id)
    if error is None:
        path.unlink(missing_ok=True)
        return
    atomic_write_text(path, json.dumps({"shard": shard_id, "error": error}))


def read_faults(layout: OutputLayout) -> dict[str, str]:
    """{shard_id: error} of every fault marker."""
    if not layout.faults.is_dir():
        return {}
    faults = {}
    for path in sorted(layout.faults.glob("*.json")):
        if not path.name.startswith("."):
            marker = json.loads(path.read_text())
            faults[marker["shard"]] = marker["error"]
    return faults


def write_classes(layout: OutputLayout, names: list[str], prompt: str,
                  encode_texts: Callable[[list[str]], np.ndarray], dtype: str, metadata: dict[str, Any]) -> None:
    """Embed ``prompt.format(name)`` for each class with ``encode_texts(list[str]) -> (n, dim)`` unit vectors."""
    vectors = encode_texts([prompt.format(n) for n in names]) if names else np.zeros((0, metadata["dim"]))
    write_embeddings(layout.classes, list(names), vectors, dtype=dtype,
                     metadata={**metadata, "class_prompt": prompt, "classes": len(names)})
    log.info("wrote %d class-name embeddings to %s", len(names), layout.classes)


def store_counts(layout: OutputLayout, modalities: Sequence[str]) -> dict[str, dict[str, int]]:
    """Per modality: rows in the embedding store ("ok") and in the status table, by status."""
    counts = {}
    for m in modalities:
        c = dict.fromkeys(COUNTED, 0)
        c["ok"] = sum(pq.read_metadata(p).num_rows for p in list_parts(layout.embeddings(m)))
        for s in read_status(layout.root, m).column("status").to_pylist():
            c[s] += 1
        counts[m] = c
    return counts
