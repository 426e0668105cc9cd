"""bundle.json as dataclasses: a v1 bundle written before the dataclasses reads back and writes the same keys."""

from __future__ import annotations

import json

import pytest

from pipeline.publish.bundle import Bundle, BundleError, HeadsSpec, IndexSpec, TableSpec

# A bindery-bundle-v1 description as the dict-based publisher wrote it (keys and order from docs/publish.md).
OLD = {
    "format": "bindery-bundle-v1", "name": "tiny", "created": "2025-01-01T00:00:00+00:00", "query": "text",
    "tables": {
        "embeddings/text": {"kind": "embeddings", "config": "text", "files": ["embeddings/text/part-00000.parquet"],
                            "rows": 3, "columns": {"key": "string", "embedding": "fixed_size_list<item: halffloat>[4]"},
                            "num_bytes": 100, "download_size": 900,
                            "features": [{"name": "key", "dtype": "string"},
                                         {"name": "embedding", "sequence": "float16", "length": 4}],
                            "modality": "text", "dim": 4, "dtype": "float16", "encoder": "e", "digest": "",
                            "metadata": {"encoder": "e"}},
        "pairs/quintuples": {"kind": "quintuples", "config": "quintuples",
                             "files": ["pairs/quintuples/part-00000.parquet"], "rows": 3,
                             "columns": {"query_key": "string"}, "num_bytes": 10, "download_size": 500,
                             "features": [{"name": "query_key", "dtype": "string"}]},
    },
    "indexes": {"image": {"index": "index/image.faiss", "keys": "index/image.keys.parquet", "ntotal": 3}},
    "figures": ["figures/scores_image.png"], "heads": {}, "status": {"text": {"missing": 1}},
    "pair_summary": {"query": "text"},
    "sources": [{"source": "", "license": "cc0-1.0", "attribution": "", "url": "", "samples": 3}],
    "manifest": {"dataset": {"name": "tiny"}},
}


def test_an_old_bundle_reads_into_types_and_writes_back_identically():
    bundle = Bundle.from_dict(json.loads(json.dumps(OLD)))
    text, quint = bundle.tables["embeddings/text"], bundle.tables["pairs/quintuples"]
    assert isinstance(text, TableSpec) and text.store is not None and text.store.dim == 4
    assert text.modality == "text" and text.encoder == "e" and quint.store is None and quint.modality == ""
    assert bundle.indexes["image"] == IndexSpec("index/image.faiss", "index/image.keys.parquet", 3)
    assert bundle.heads is None and bundle.sources[0].license == "cc0-1.0"
    assert json.dumps(bundle.to_dict()) == json.dumps(OLD)  # same keys, same order, same values


def test_heads_round_trip_and_a_bad_description_names_the_file(tmp_path):
    raw = {**OLD, "heads": {"run": "r1", "files": ["heads/r1/heads.safetensors"]}}
    bundle = Bundle.from_dict(raw)
    assert bundle.heads == HeadsSpec("r1", ["heads/r1/heads.safetensors"]) and bundle.to_dict() == raw
    path = tmp_path / "bundle.json"
    path.write_text(json.dumps({"format": "bindery-bundle-v1"}))  # no tables
    with pytest.raises(BundleError, match=f"{path}: not a bindery bundle description"):
        Bundle.read(path)
    path.write_text("{not json")
    with pytest.raises(BundleError, match="not a bindery bundle description"):
        Bundle.read(path)
