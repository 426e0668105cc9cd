"""Class 1, memory bombs: a few MB of input never become GBs in a worker.

Every bomb of :data:`~tests.hostile.conftest.BOMBS` sits between good samples in its own
shard. One whole `bindery precompute` run over them all (its address space capped at 1.5 GiB,
decoding in a DataLoader worker) must give each bomb its status row and message, store every
sample exactly once (an embedding or a status row), and stay under the stated peak RSS.
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
def precomputed(bomb_dir, tmp_path_factory):
    """One `bindery precompute` over every bomb shard (a DataLoader worker decodes), under the cap."""
    tmp = tmp_path_factory.mktemp("precomputed")
    out, manifest = tmp / "out", tmp / "hostile.toml"
    mods = "".join(f'[modalities.{m}]\nencoder = "hostile-stats"\nbatch_size = 2\n' for m in MODALITIES)
    manifest.write_text(f'[dataset]\nname = "hostile"\nshards = "{"::".join(str(bomb_dir / b.file) for b in BOMBS)}"\n'
                        f'output = "{out}"\n{mods}[precompute]\ndevice = "cpu"\nnum_workers = 1\n')
    result = harness.run_worker("precompute", str(manifest), timeout=300)
    assert result.rc == 0, result.stderr[-3000:]
    status = {m: {r["key"]: r for r in read_status(out, m).to_pylist()} for m in MODALITIES}
    return result, out, status


def _keys(bomb) -> list[str]:
    return [bomb.key(k) for k in (*GOOD, "bomb")]


@pytest.mark.parametrize("bomb", BOMBS, ids=[b.name for b in BOMBS])
def test_a_bomb_is_one_status_row_and_its_neighbours_are_stored(precomputed, bomb):
    _, out, status = precomputed
    row = status[bomb.modality].get(bomb.key())
    if bomb.status == "ok":
        assert row is None and bomb.key() in set(read_store(out, bomb.modality).keys)
    else:
        assert row["status"] == bomb.status and re.search(bomb.message, row["error"]), row
    assert not [k for m in MODALITIES for k in _keys(bomb)[:3] if k in status[m]]  # the good ones: all stored


def test_every_sample_is_stored_once_and_the_worker_stays_under_the_bound(precomputed):
    result, out, status = precomputed
    every = [k for b in BOMBS for k in _keys(b)]
    for m in MODALITIES:
        embedded = list(read_store(out, m).keys)  # the checked reader: finite, unit norm, each key once
        assert Counter(embedded + list(status[m])) == Counter(every)  # each sample exactly once
        assert all(status[m][b.key()]["status"] == "missing" for b in BOMBS if b.modality != m)
    assert result.peak_rss_mb < harness.PEAK_RSS_MB, result.peak_rss_mb


def test_a_member_there_is_no_memory_for_is_a_status_row(tmp_path):
    """With the member limit above the worker's memory (16 GiB), a 6 GiB member cannot be held:
    the MemoryError is that sample's status row, and the shard goes on."""
    path = bombs.write(tmp_path / "oom.tar", bombs.shard("oom", bombs.sparse_member("oom/bomb.npy", 6 * bombs.GiB)))
    result = harness.run_worker("decode", "points", "16384", str(path))
    assert result.rc == 0, result.stderr[-3000:]
    rows = {r["key"]: r for r in result.shard("oom.tar") if "key" in r}
    assert rows["oom/bomb"]["status"] == "error" and "no memory to hold it" in rows["oom/bomb"]["error"]
    assert [rows[f"oom/{k}"]["status"] for k in GOOD] == ["ok"] * 3
