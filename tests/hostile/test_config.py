"""Class 5, configuration that should fail at once: exit 2 naming the key, before any work."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

import tests.hostile.encoders  # noqa: F401 - registers hostile-stats
from pipeline.cli import main


def text_manifest(tmp_path: Path, encoder: str = "hostile-stats", extra: str = "") -> Path:
    path = tmp_path / "m.toml"
    shard = tmp_path / "s-000.tar"
    if not shard.exists():
        from tests.hostile import bombs

        bombs.write(shard, bombs.shard("s", b""))
    path.write_text(f'[dataset]\nname = "h"\nshards = "{shard}"\noutput = "{tmp_path / "out"}"\n'
                    f'[modalities.text]\nencoder = "{encoder}"\n{extra}[precompute]\ndevice = "cpu"\nnum_workers = 0\n')
    return path


@pytest.mark.parametrize("encoder", ["os:system", "shutil:rmtree", "tests.hostile.encoders:build"])
def test_a_manifest_never_runs_code_it_names_without_trust_code(tmp_path, capsys, encoder):
    precious = tmp_path / "precious"
    precious.mkdir()
    (precious / "keep.txt").write_text("still here")
    assert main(["precompute", str(text_manifest(tmp_path, encoder))]) == 2
    err = capsys.readouterr().err.splitlines()[-1]
    assert err.startswith(f"bindery precompute: error: modalities.text.encoder: '{encoder}' names Python code")
    assert "precompute.trust_code = true" in err and "'bindery.encoders'" in err
    assert (precious / "keep.txt").read_text() == "still here"
    assert not (tmp_path / "out").exists()  # refused before any work


@pytest.mark.parametrize(("override", "key"), [("modalities.audio.max_seconds=nan", "modalities.audio.max_seconds"),
                                               ("modalities.audio.seconds=inf", "modalities.audio.seconds"),
                                               ("precompute.max_member_mb=nan", "precompute.max_member_mb")])
def test_nan_and_inf_are_refused_where_a_number_is_read(tmp_path, capsys, override, key):
    path = text_manifest(tmp_path)
    path.write_text(path.read_text().replace("[precompute]", '[modalities.audio]\nencoder = "hostile-stats"\n'
                                                             "[precompute]"))
    assert main(["precompute", str(path), "--set", override]) == 2
    assert capsys.readouterr().err.splitlines()[-1].startswith(f"bindery precompute: error: {key}: expected a finite")


def test_a_pattern_that_matches_no_shard_exits_2_before_any_work(tmp_path, capsys):
    path = text_manifest(tmp_path)
    missing = tmp_path / "nowhere-{000..003}.tar"
    assert main(["precompute", str(path), "--set", f'dataset.shards="{missing}"']) == 2
    err = capsys.readouterr().err.splitlines()[-1]
    assert err.startswith("bindery precompute: error: dataset.shards: ") and "matches no shard" in err
    assert "nowhere-000.tar" in err and not (tmp_path / "out").exists()


def test_an_output_that_is_a_file_exits_2_before_any_work(tmp_path, capsys):
    path = text_manifest(tmp_path)
    (tmp_path / "out").write_text("not a folder")
    assert main(["precompute", str(path)]) == 2
    err = capsys.readouterr().err.splitlines()[-1]
    assert err == f"bindery precompute: error: dataset.output: {tmp_path / 'out'} exists and is not a directory; " \
                  "give a folder (it is created if missing)"
    assert (tmp_path / "out").read_text() == "not a folder"


def test_a_second_run_on_one_output_is_refused_naming_the_holder(tmp_path, capsys):
    import subprocess
    import sys

    path = text_manifest(tmp_path)
    (tmp_path / "out").mkdir()
    holder = subprocess.Popen([sys.executable, "-c", (
        "import sys, time; from pathlib import Path; from pipeline.precompute.lock import OutputLock; "
        f"lock = OutputLock(Path({str(tmp_path / 'out' / '.bindery.lock')!r})).acquire(); print('held', flush=True); "
        "time.sleep(60)")], stdout=subprocess.PIPE, text=True, env={"PYTHONPATH": str(Path.cwd())})
    try:
        assert holder.stdout.readline().strip() == "held"
        assert main(["precompute", str(path)]) == 2
        err = capsys.readouterr().err.splitlines()[-1]
        assert err.startswith(f"bindery precompute: error: dataset.output: {tmp_path / 'out'} is being written by "
                              f"another `bindery precompute` (pid {holder.pid} on ")
        assert not (tmp_path / "out" / "embeddings").exists()
    finally:
        holder.kill()
        holder.wait()
    # the holder is gone (its lock with it): the run goes ahead
    assert main(["precompute", str(path)]) == 0


def test_a_full_disk_is_a_clean_error_and_what_was_written_stays_valid(tmp_path, capsys, monkeypatch):
    import errno

    import pyarrow.parquet as pq

    from pipeline.core import store

    shards = [tmp_path / f"s-00{i}.tar" for i in range(3)]
    from tests.hostile import bombs

    for i, s in enumerate(shards):
        bombs.write(s, bombs.shard(f"s{i}", b""))
    path = text_manifest(tmp_path)
    pattern = "::".join(map(str, shards))
    clean = ["precompute", str(path), "--set", f'dataset.shards="{pattern}"']
    assert main([*clean, "--set", f'dataset.output="{tmp_path / "clean"}"']) == 0
    writes, real = [], pq.write_table

    def filling(table, where, **kwargs):
        writes.append(where)
        if len(writes) == 4:  # the first shard's parts are in place, then the disk is full
            raise OSError(errno.ENOSPC, "No space left on device")
        return real(table, where, **kwargs)

    monkeypatch.setattr(store.pq, "write_table", filling)
    assert main(clean) == 1
    err = capsys.readouterr().err.splitlines()[-1]
    assert err.startswith("bindery precompute: error: no space left on device writing ") and "re-run" in err
    assert "Traceback" not in err and not list((tmp_path / "out").rglob("*.tmp"))
    written = store.read_store(tmp_path / "out", "text")  # what was written reads back, checked
    assert sorted(written.keys) == ["s0/good-0", "s0/good-1", "s0/good-2"]
    monkeypatch.undo()
    assert main(clean) == 0
    for m in ("text",):
        a, b = store.read_store(tmp_path / "out", m), store.read_store(tmp_path / "clean", m)
        assert list(a.keys) == list(b.keys) and np.array_equal(a.vectors, b.vectors)
