"""Class 1, memory bombs: a few MB of input never become GBs in a worker.

Every bomb of :data:`~tests.hostile.conftest.BOMBS` sits between good samples in its own
shard. One worker process (address space capped at 1.5 GiB) reads and decodes them all; then
a whole `bindery precompute` run over the same shards, under the same cap, must store every
sample exactly once, as an embedding or a status row.
"""

from __future__ import annotations

import re
from collections import Counter

import pytest

from pipeline.core.store import read_status, read_store
from tests.hostile import bombs, harness
from tests.hostile.conftest import BOMBS, GOOD

MODALITIES = ("image", "text", "audio", "points")


@pytest.fixture(scope="module")
def decoded(bomb_dir):
    result = harness.run_worker("decode", ",".join(MODALITIES), "512", *[str(bomb_dir / b.file) for b in BOMBS])
    assert result.rc == 0, result.stderr[-3000:]
    return result


def _keys(bomb) -> list[str]:
    return [bomb.key(k) for k in (*GOOD, "bomb")]


@pytest.mark.parametrize("bomb", BOMBS, ids=[b.name for b in BOMBS])
def test_a_bomb_is_one_status_row_and_its_neighbours_are_decoded(decoded, bomb):
    rows = decoded.shard(bomb.file)
    assert not [r for r in rows if "fault" in r]
    per_sample = Counter((r["key"], r["modality"]) for r in rows if "key" in r)
    assert per_sample == Counter({(k, m): 1 for k in _keys(bomb) for m in MODALITIES})  # one row each
    assert all(r["status"] == "ok" for r in rows if r.get("key") in _keys(bomb)[:3])
    row = next(r for r in rows if r.get("key") == bomb.key() and r["modality"] == bomb.modality)
    assert row["status"] == bomb.status, row
    if bomb.status == "ok":
        assert row["shape"] == [160_000] and row["finite"]  # 10 s at 16 kHz
    else:
        assert re.search(bomb.message, row["error"]), row["error"]


def test_the_worker_stays_under_the_memory_bound(decoded):
    assert len([r for r in decoded.rows if "rss_after_mb" in r]) == len(BOMBS)  # it read every shard
    assert decoded.peak_rss_mb < harness.PEAK_RSS_MB, decoded.peak_rss_mb


def test_a_member_there_is_no_memory_for_is_a_status_row(tmp_path):
    """With the member limit above the worker's memory (16 GiB), a 6 GiB member cannot be held:
    the MemoryError is that sample's status row, and the shard goes on."""
    path = bombs.write(tmp_path / "oom.tar", bombs.shard("oom", bombs.sparse_member("oom/bomb.npy", 6 * bombs.GiB)))
    result = harness.run_worker("decode", "points", "16384", str(path))
    assert result.rc == 0, result.stderr[-3000:]
    rows = {r["key"]: r for r in result.shard("oom.tar") if "key" in r}
    assert rows["oom/bomb"]["status"] == "error" and "no memory to hold it" in rows["oom/bomb"]["error"]
    assert [rows[f"oom/{k}"]["status"] for k in GOOD] == ["ok"] * 3


def test_precompute_stores_every_sample_once_within_the_bound(bomb_dir, tmp_path):
    out = tmp_path / "out"
    manifest = tmp_path / "hostile.toml"
    mods = "".join(f'[modalities.{m}]\nencoder = "hostile-stats"\nbatch_size = 2\n' for m in MODALITIES)
    manifest.write_text(f'[dataset]\nname = "hostile"\nshards = "{"::".join(str(bomb_dir / b.file) for b in BOMBS)}"\n'
                        f'output = "{out}"\n{mods}[precompute]\ndevice = "cpu"\nnum_workers = 1\n')
    result = harness.run_worker("precompute", str(manifest), timeout=300)
    assert result.rc == 0, result.stderr[-3000:]
    assert result.peak_rss_mb < harness.PEAK_RSS_MB, result.peak_rss_mb
    every = [k for b in BOMBS for k in _keys(b)]
    for m in MODALITIES:
        embedded = list(read_store(out, m).keys)  # the checked reader: finite, unit norm, each key once
        status = {r["key"]: r for r in read_status(out, m).to_pylist()}
        assert Counter(embedded + list(status)) == Counter(every)  # each sample exactly once
        for b in BOMBS:
            assert {b.key(k) for k in GOOD} <= set(embedded)
            if b.modality != m:
                assert status[b.key()]["status"] == "missing"
            elif b.status == "ok":
                assert b.key() in embedded
            else:
                assert status[b.key()]["status"] == b.status and re.search(b.message, status[b.key()]["error"])
