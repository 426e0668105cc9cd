"""The engines' pieces that need no cluster: part tasks, worker counts, the stopping handler, stat sums."""

from __future__ import annotations

from dataclasses import replace

import pytest

from pipeline.core.manifest import ManifestError, PrecomputeConfig, load
from pipeline.ingest.shards import Shard
from pipeline.precompute import stage
from pipeline.precompute.engines.base import StoppingHandler, StopRun
from pipeline.precompute.engines.ray import part_tasks, worker_count
from pipeline.precompute.handlers import record_and_continue, reraise_exception
from pipeline.precompute.loader import ShardWork
from pipeline.precompute.stats import RankStats
from tests.conftest import write_manifest


def test_one_task_per_missing_part_with_the_metadata_on_the_first():
    a, b = Shard("a.tar", "a"), Shard("b.tar", "b")
    tasks = part_tasks([ShardWork(a, ("image", "text"), True), ShardWork(b, (), True),
                        ShardWork(Shard("c.tar", "c"), ("text",), False)])
    assert [(t.name, t.write_metadata, t.attempt) for t in tasks] == [
        ("a/image", True, 0), ("a/text", False, 0), ("b/metadata", True, 0), ("c/text", False, 0)]
    assert tasks[2].work() == ShardWork(b, (), True) and tasks[1].work() == ShardWork(a, ("text",), False)


@pytest.mark.parametrize(("keys", "resources", "parts", "want"), [
    ({}, {"CPU": 8.0}, 100, 8),
    ({"cpus_per_worker": 3.0}, {"CPU": 8.0}, 100, 2),
    ({"workers": 5}, {"CPU": 2.0}, 100, 5),  # more than fit: the rest wait for resources
    ({}, {"CPU": 8.0}, 3, 3),  # never more actors than parts
    ({"gpus_per_worker": 1.0}, {"CPU": 32.0, "GPU": 4.0}, 100, 4),
    ({"gpus_per_worker": 0.5}, {"CPU": 32.0, "GPU": 4.0}, 100, 8),
])
def test_worker_count(keys, resources, parts, want):
    assert worker_count(replace(PrecomputeConfig(), **keys), resources, parts) == want


def test_a_worker_larger_than_the_cluster_names_the_keys():
    with pytest.raises(ManifestError, match=r"gpus_per_worker.*1.0 GPU, the Ray cluster has 8.0 CPU and 0 GPU"):
        worker_count(PrecomputeConfig(gpus_per_worker=1.0), {"CPU": 8.0}, 10)


def test_the_stopping_handler_turns_a_stop_into_stop_run():
    assert StoppingHandler(record_and_continue)(ValueError("bad jpeg")) is True
    with pytest.raises(StopRun, match="ValueError: bad jpeg"):
        StoppingHandler(reraise_exception)(ValueError("bad jpeg"))
    with pytest.raises(StopRun, match="KeyError"):
        StoppingHandler(lambda exn: False)(KeyError("k"))


def test_absorbed_parts_sum_to_the_worker():
    worker = RankStats.start(0, "", ["image", "text"])
    for shard, m, stored, statuses in (("s0", "image", 3, ["missing"]), ("s0", "text", 2, []),
                                       ("s1", "image", 1, ["corrupt", "error"])):
        part = RankStats.start(0, "cpu", [m])
        part.shards.append(shard)
        part.samples_read, part.read_s, part.wall_s = 4, 0.5, 1.0
        part.add_part(m, stored, statuses)
        part.add_encode(m, 0.25)
        worker.absorb(part)
    out = worker.to_json()
    assert out["device"] == "cpu" and out["shards"] == ["s0", "s0", "s1"] and out["parts_written"] == 3
    assert out["counts"] == {"image": {"ok": 4, "missing": 1, "corrupt": 1, "error": 1}, "text": {"ok": 2}}
    assert out["samples_read"] == 12 and out["read_s"] == 1.5 and out["wall_s"] == 3.0
    assert out["encode_s"] == 0.75 and out["encode_s_by_modality"] == {"image": 0.5, "text": 0.25}


def test_engine_errors_are_raised_at_the_entry(tiny_shards, tiny_clip, tiny_audio, tmp_path, monkeypatch):
    manifest = load(write_manifest(tmp_path / "m.toml", tiny_shards["pattern"], tmp_path / "out", tiny_clip,
                                   tiny_audio, 'engine = "ray"'))
    manifest = replace(manifest, precompute=replace(manifest.precompute, device="cuda"))
    with pytest.raises(ManifestError, match="precompute.gpus_per_worker: 0 with device = 'cuda'"):
        stage.run(manifest)
    assert not (tmp_path / "out").exists()
    pc = PrecomputeConfig(engine="ray")
    with pytest.raises(ManifestError, match="one of 2 torch.distributed processes"):
        stage._check_engine(pc, 2)
    monkeypatch.setattr(stage.importlib.util, "find_spec", lambda name: None)
    with pytest.raises(ManifestError, match=r"pip install 'bindery\[ray\]'"):
        stage._check_engine(pc, 1)
