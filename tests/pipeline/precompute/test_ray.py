"""``engine = "ray"`` on one module-scoped local Ray cluster (num_cpus=2): the stores equal a local run's.

Ray's start costs seconds, so every test here shares the one cluster; the stage finds it
initialised and neither starts nor stops one.
"""

from __future__ import annotations

import json
import logging
import os
from dataclasses import replace
from pathlib import Path

import pytest
import ray

from pipeline.core.manifest import Manifest, load
from pipeline.core.store import embeddings_dir, list_parts
from pipeline.precompute.engines import ray as ray_engine
from pipeline.precompute.engines.base import StopRun
from pipeline.precompute.stage import run
from tests.conftest import MODS, write_manifest
from tests.pipeline.precompute import ray_hooks
from tests.pipeline.precompute.compare import assert_same_as_local

ROOT = Path(__file__).resolve().parents[3]
HOOKS = "tests.pipeline.precompute.ray_hooks"


@pytest.fixture(scope="module")
def cluster():
    # The actors import the test hooks from this checkout (pipeline itself is installed in CI): the
    # cluster's processes inherit this environment, which is cheaper than a runtime_env per worker.
    before = os.environ.get("PYTHONPATH")
    os.environ["PYTHONPATH"] = os.pathsep.join(p for p in (str(ROOT), before) if p)
    try:
        ray.init(num_cpus=2, include_dashboard=False)
        yield ray.cluster_resources()
    finally:
        ray.shutdown()
        if before is None:
            del os.environ["PYTHONPATH"]
        else:
            os.environ["PYTHONPATH"] = before


@pytest.fixture(scope="module")
def local_run(tmp_path_factory, tiny_clip, tiny_audio, tiny_shards) -> dict:
    d = tmp_path_factory.mktemp("local")
    manifest = load(write_manifest(d / "m.toml", tiny_shards["pattern"], d / "out", tiny_clip, tiny_audio))
    return {"output": d / "out", "summary": run(manifest), "manifest": manifest}


def with_tiny_encoders(manifest: Manifest) -> Manifest:
    """Every modality through the plain-torch plugin encoder: actors that import no transformers start fast."""
    return replace(manifest, precompute=replace(manifest.precompute, trust_code=True),
                   modalities={m: replace(c, encoder=f"{HOOKS}:tiny") for m, c in manifest.modalities.items()})


@pytest.fixture(scope="module")
def tiny_local_run(tmp_path_factory, local_run) -> dict:
    d = tmp_path_factory.mktemp("tiny-local")
    manifest = with_tiny_encoders(local_run["manifest"])
    manifest = replace(manifest, dataset=replace(manifest.dataset, output=str(d / "out")))
    return {"output": d / "out", "summary": run(manifest), "manifest": manifest}


def on_ray(manifest: Manifest, output: Path, **keys) -> Manifest:
    return replace(manifest, dataset=replace(manifest.dataset, output=str(output)),
                   precompute=replace(manifest.precompute, engine="ray", **keys))


def test_a_ray_run_writes_the_local_runs_stores(cluster, local_run, tiny_shards, tmp_path):
    assert cluster["CPU"] == 2
    # 3 actors of 1 CPU on 2 CPUs: the third never finds room, and holds no part back
    summary = run(on_ray(local_run["manifest"], tmp_path / "out", workers=3))
    assert_same_as_local(local_run["output"], tmp_path / "out")
    engine = json.loads((tmp_path / "out" / "precompute.json").read_text())["engine"]
    parts = tiny_shards["shards"] * len(MODS)
    assert engine["name"] == "ray" and engine["workers"] == 3 and engine["retries"] == 0
    assert engine["parts"] == parts and engine["skipped"] == 0 and engine["actors_started"] == 3
    assert sorted(r["parts_written"] > 0 for r in summary["ranks"]) == [False, True, True]
    assert summary["this_run"] == local_run["summary"]["this_run"]
    assert sum(r["parts_written"] for r in summary["ranks"]) == parts
    # the parts are the completion markers: the other engine finds nothing left to do
    again = run(replace(on_ray(local_run["manifest"], tmp_path / "out"),
                        precompute=local_run["manifest"].precompute))
    assert again["engine"]["name"] == "local" and again["ranks"][0]["parts_written"] == 0


def test_a_failed_part_and_a_lost_worker_are_retried(cluster, tiny_local_run, tmp_path, monkeypatch):
    monkeypatch.setattr(ray_engine, "PART_HOOK", f"{HOOKS}:raise_once_and_kill_once")
    summary = run(on_ray(tiny_local_run["manifest"], tmp_path / "out", max_retries=1))
    assert_same_as_local(tiny_local_run["output"], tmp_path / "out")
    engine = summary["engine"]
    retried = {(r["shard"], r["modality"]): r for r in engine["retried_parts"]}
    assert set(retried) == {ray_hooks.RAISE_ON, ray_hooks.KILL_ON} and engine["retries"] == 2
    assert retried[ray_hooks.RAISE_ON]["reason"] == "error" and "fails on attempt 0" in \
        retried[ray_hooks.RAISE_ON]["error"]
    assert retried[ray_hooks.KILL_ON]["reason"] == "lost"
    assert engine["actors_started"] == 3  # the dead actor's slot got a fresh one
    assert engine["parts"] == len(MODS) * 4  # each part counted once, on its successful try


def one_part(manifest: Manifest, pattern: str, shard: str, modality: str, output: Path, **keys) -> Manifest:
    """A ray run of a single part (one shard, one modality, one actor, a plain-torch encoder): the cheap way
    to fail."""
    manifest = on_ray(with_tiny_encoders(manifest), output, workers=1, **keys)
    return replace(manifest, dataset=replace(manifest.dataset, shards=pattern.replace("{000000..000003}", shard)),
                   modalities={modality: manifest.modalities[modality]})


def test_a_part_that_fails_every_try_stops_the_run_naming_it(cluster, local_run, tiny_shards, tmp_path,
                                                              monkeypatch):
    monkeypatch.setattr(ray_engine, "PART_HOOK", f"{HOOKS}:always_raise")
    shard, modality = ray_hooks.RAISE_ON
    manifest = one_part(local_run["manifest"], tiny_shards["pattern"], shard[len("shard-"):], modality,
                        tmp_path / "out", max_retries=1)
    with pytest.raises(ray_engine.PartFailed, match=r"shard-000000/text failed 2 time\(s\).*max_retries = 1"):
        run(manifest)
    assert list_parts(embeddings_dir(tmp_path / "out", "text")) == []


def test_a_stop_asked_by_the_handler_is_not_retried(cluster, local_run, tiny_shards, tmp_path, caplog):
    manifest = one_part(local_run["manifest"], tiny_shards["pattern"], "000001", "image",  # a corrupt JPEG
                        tmp_path / "out", handler="raise")
    with caplog.at_level(logging.WARNING, logger="pipeline.precompute.engines.ray"), \
            pytest.raises(StopRun, match="shard-000001/image"):
        run(manifest)
    assert "trying again" not in caplog.text
    assert list_parts(embeddings_dir(tmp_path / "out", "image")) == []
