"""Per-rank figures, their merge, and the plan of missing parts (no encoder needed)."""

from __future__ import annotations

import json

import numpy as np
import pytest

from pipeline.core.layout import OutputLayout
from pipeline.core.store import write_embeddings, write_status
from pipeline.ingest.shards import Shard
from pipeline.precompute.plan import MixedEncoders, part_done, plan_work
from pipeline.precompute.stats import COUNTED, RankStats

# precompute.json's per-rank keys, in order (docs/precompute.md)
RANK_KEYS = ["rank", "device", "shards", "parts_written", "samples_read", "counts", "faults", "read_s", "wait_s",
             "encode_s", "write_s", "loop_s", "encode_s_by_modality", "wall_s", "cores",
             "decode"]


def two_ranks() -> list[RankStats]:
    a, b = RankStats.start(0, "cpu", ["image", "text"]), RankStats.start(1, "cpu", ["image", "text"])
    a.add_part("image", 3, ["missing", "error"])
    a.add_part("text", 4, [])
    b.add_part("image", 2, ["corrupt", "corrupt"])
    a.add_encode("image", 0.25)
    a.add_encode("text", 0.5)
    a.add_encode("image", 0.25)
    a.read_s, b.read_s, b.write_s = 1.0, 2.0, 0.125
    return [b, a]  # gathered in any order


def test_rank_stats_serialise_with_the_documented_keys():
    _, a = two_ranks()
    out = a.to_json()
    assert list(out) == RANK_KEYS
    assert out["counts"] == {"image": {"ok": 3, "missing": 1, "error": 1}, "text": {"ok": 4}}
    assert out["encode_s_by_modality"] == {"image": 0.5, "text": 0.5} and out["encode_s"] == 1.0
    assert out["parts_written"] == 2
    assert json.loads(json.dumps(out)) == out  # plain JSON


def test_merge_sums_the_ranks_in_rank_order():
    run = RankStats.merge(two_ranks())
    assert [r["rank"] for r in run.to_json()] == [0, 1]
    assert run.this_run(["image", "text"]) == {
        "image": {"ok": 5, "missing": 1, "corrupt": 2, "error": 1, "duplicate": 0},
        "text": {"ok": 4, "missing": 0, "corrupt": 0, "error": 0, "duplicate": 0}}
    assert list(run.this_run(["image"])["image"]) == list(COUNTED)
    assert run.seconds() == {"read_s": 3.0, "wait_s": 0.0, "encode_s": 1.0, "write_s": 0.125}
    assert run.stored == 9


def test_plan_takes_what_is_missing_and_refuses_another_encoder(tmp_path):
    layout = OutputLayout(tmp_path)
    meta = {"encoder": "e", "digest": "sha256:1", "dim": 2, "dtype": "float16", "normalized": True}
    write_embeddings(layout.embedding_part("text", "s0"), ["k"], np.ones((1, 2)) / np.sqrt(2), metadata=meta)
    assert not part_done(layout, "text", "s0")  # no status part yet
    write_status(layout.status_part("text", "s0"), [])
    assert part_done(layout, "text", "s0", meta)
    shards = [Shard(f"/x/s{i}.tar", f"s{i}") for i in range(3)]
    work = plan_work(shards, ["text"], layout, 0, 1, {"text": meta})
    assert [(w.shard.shard_id, w.modalities, w.write_metadata) for w in work] == [
        ("s0", (), True), ("s1", ("text",), True), ("s2", ("text",), True)]
    assert [w.shard.shard_id for w in plan_work(shards, ["text"], layout, 1, 2)] == ["s1"]
    with pytest.raises(MixedEncoders, match=r"dim 2 -> 4") as got:
        plan_work(shards, ["text"], layout, 0, 1, {"text": {**meta, "dim": 4}})
    assert got.value.modality == "text" and got.value.part == layout.embedding_part("text", "s0")
