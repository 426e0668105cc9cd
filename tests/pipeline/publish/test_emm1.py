"""publish.emm1: the pairs in E-MM1's layout, against hand-written expected CSVs; random weights refused."""

import numpy as np
import pyarrow as pa
import pytest

from pipeline.core.layout import BundleLayout, part_name
from pipeline.core.manifest import ManifestError, from_dict
from pipeline.core.store import atomic_write_table, write_embeddings
from pipeline.publish import stage as publish
from pipeline.publish.emm1 import write_emm1

NEIGHBOR_SCHEMA = pa.schema([("query_key", pa.string()), ("modality", pa.string()), ("rank", pa.int32()),
                             ("target_key", pa.string()), ("score", pa.float32())])
STORES = {"text": [["c-b", "c-a"], ["c-c"]], "image": [["i-2", "i-1"]], "audio": [["a-1"], ["a-0"]]}


def build(tmp_path, weights="real", **publish_keys):
    out = tmp_path / "out"
    for m, parts in STORES.items():
        for p, keys in enumerate(parts):
            write_embeddings(out / "embeddings" / m / part_name(f"shard-{p}"), keys, np.eye(len(keys), 4),
                             metadata={"encoder": f"e-{m}", "dim": 4, "normalized": True, "shard": f"shard-{p}",
                                       "weights": weights})
    rows = [("c-a", "image", 0, "i-2"), ("c-a", "image", 1, "i-1"), ("c-a", "audio", 0, "a-0"),
            ("c-b", "image", 0, "i-1"), ("c-c", "audio", 0, "a-1"), ("c-c", "audio", 1, "a-0")]
    table = pa.table({"query_key": [r[0] for r in rows], "modality": [r[1] for r in rows],
                      "rank": pa.array([r[2] for r in rows], pa.int32()), "target_key": [r[3] for r in rows],
                      "score": pa.array([0.5] * len(rows), pa.float32())}, schema=NEIGHBOR_SCHEMA)
    atomic_write_table(table.replace_schema_metadata({b"bindery.query": b'"text"'}), out / "pairs" / "neighbors.parquet")
    return from_dict({"dataset": {"name": "t", "shards": "x.tar", "output": str(out)},
                      "modalities": {m: {"encoder": f"e-{m}"} for m in STORES},
                      "publish": {"folder": str(tmp_path / "bundle"), **publish_keys}})


def test_tables_are_in_emm1s_exact_layout(tmp_path):
    manifest = build(tmp_path)
    root = tmp_path / "root"
    summary = write_emm1(manifest.layout, root, manifest.pair.query)
    assert summary == {"folder": "emm1", "k": [1, 2], "infos": ["audio", "image", "text"]}
    read = lambda rel: (root / rel).read_text().splitlines()  # noqa: E731
    # ids are the row numbers of the sorted keys; a missing neighbour is an empty cell
    assert read(BundleLayout.emm1_groups(1)) == [
        '"encord_text_id","encord_video_id","encord_audio_id","encord_image_id","encord_points_id","nn_index"',
        "0,,0,1,,1",  # c-a: audio a-0 (id 0), image i-2 (id 1)
        "1,,,0,,1",  # c-b: image i-1
        "2,,1,,,1",  # c-c: audio a-1
    ]
    assert read(BundleLayout.emm1_groups(2)) == [read(BundleLayout.emm1_groups(1))[0], "0,,,0,,2", "2,,0,,,2"]
    assert read(BundleLayout.emm1_info("audio")) == ['"encord_audio_id","save_folder","file_name","key"',
                                                     '0,"shard-1","a-0","a-0"', '1,"shard-0","a-1","a-1"']
    assert read(BundleLayout.emm1_info("text"))[1:] == ['0,"shard-0","c-a","c-a"', '1,"shard-0","c-b","c-b"',
                                                        '2,"shard-1","c-c","c-c"']


def test_publish_writes_them_and_refuses_random_weights(tmp_path):
    result = publish.run(build(tmp_path, emm1=True))
    assert (tmp_path / "bundle" / BundleLayout.emm1_groups(2)).is_file() and result["bundle"]
    with pytest.raises(ManifestError, match="publish.allow_random_weights"):
        publish.run(build(tmp_path / "r", weights="random"))
    assert not (tmp_path / "r" / "bundle").exists()
    publish.run(build(tmp_path / "r", weights="random", allow_random_weights=True))
    import json

    bundle = json.loads((tmp_path / "r" / "bundle" / "bundle.json").read_text())
    assert bundle["random_weights"] == ["audio", "image", "text"]
