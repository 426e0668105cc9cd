"""Sample metadata: the ``metadata/part-*.parquet`` tables and the json member they hold.

Each sample's json member (labels, class names, groups, licence, source) is stored as text
beside its key. :func:`parse_sample_json` is the one reading of that text: a json object, or
``{}`` for an absent, invalid or non-object member.
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pyarrow as pa

from pipeline.core.layout import OutputLayout
from pipeline.core.store import atomic_write_table, list_parts, open_part, read_table

METADATA_SCHEMA = pa.schema([("key", pa.string()), ("json", pa.string()), ("sha256", pa.string())])
# ``sha256``: json ``{modality: hex sha256}`` of the member each modality reads (parts written before it lack the column)


def parse_sample_json(text: str | bytes | None) -> dict[str, Any]:
    """The sample's json member as a dict; ``{}`` when absent, not valid json, or not an object."""
    if not text:
        return {}
    try:
        value = json.loads(text)
    except (ValueError, TypeError):
        return {}
    return value if isinstance(value, dict) else {}


def write_metadata(layout: OutputLayout, shard_id: str, rows: list[tuple[str, ...]]) -> None:
    """One shard's ``(key, json text, member sha256 json)`` rows as its metadata part; a row without
    the third field (metadata not read from a shard, e.g. condensed sets) records no hashes."""
    rows = [(*r, "{}")[:3] for r in rows]
    cols = list(zip(*rows, strict=True)) if rows else [[], [], []]
    table = pa.Table.from_arrays([pa.array(list(c), pa.string()) for c in cols], schema=METADATA_SCHEMA)
    atomic_write_table(table, layout.metadata_part(shard_id))


def metadata_parts(layout: OutputLayout) -> list[Path]:
    return list_parts(layout.metadata)


def iter_sample_metadata(layout: OutputLayout) -> Iterator[tuple[str, dict[str, Any]]]:
    """(key, parsed json) of every sample with a metadata row."""
    for part in metadata_parts(layout):
        table = read_table(part, ["key", "json"])  # page checksums verified
        for key, text in zip(table.column("key").to_pylist(), table.column("json").to_pylist(), strict=True):
            yield key, parse_sample_json(text)


def sample_labels(layout: OutputLayout, label_key: str) -> dict[str, str]:
    """key -> class name, for samples whose json carries a non-empty ``label_key``."""
    return {key: str(meta[label_key]) for key, meta in iter_sample_metadata(layout)
            if meta.get(label_key) not in (None, "")}


def member_hashes(layout: OutputLayout) -> dict[str, dict[str, str]]:
    """key -> ``{modality: sha256}`` of its members, for every sample whose metadata part records them."""
    out: dict[str, dict[str, str]] = {}
    for part in metadata_parts(layout):
        if "sha256" not in open_part(part).schema_arrow.names:
            continue
        table = read_table(part, ["key", "sha256"])
        for key, text in zip(table.column("key").to_pylist(), table.column("sha256").to_pylist(), strict=True):
            out[key] = parse_sample_json(text)
    return out


def label_names(layout: OutputLayout, label_key: str) -> list[str]:
    """Sorted distinct values of ``label_key`` over every sample's json."""
    return sorted(set(sample_labels(layout, label_key).values()))
