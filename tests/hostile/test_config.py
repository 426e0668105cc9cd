"""Class 5, configuration that should fail at once: exit 2 naming the key, before any work."""

from __future__ import annotations

from pathlib import Path

import pytest

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
