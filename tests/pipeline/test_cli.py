"""The real `bindery` command line on precompute."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

from pipeline.cli import main
from tests.conftest import write_manifest

ROOT = Path(__file__).resolve().parents[2]


def bindery() -> list[str]:
    script = Path(sys.executable).parent / "bindery"
    return [str(script)] if script.exists() else [sys.executable, "-m", "pipeline.cli"]


def test_bad_manifest_exits_non_zero_naming_the_key(tmp_path):
    m = tmp_path / "m.toml"
    m.write_text('[dataset]\nname = "d"\nshards = "x.tar"\noutput = "o"\n'
                 '[modalities.image]\nencoder = "hf:x"\nbatch_sise = 3\n')
    res = subprocess.run([*bindery(), "precompute", str(m)], capture_output=True, text=True, timeout=120,
                         env=dict(os.environ, PYTHONPATH=str(ROOT)))
    assert res.returncode == 2
    assert "modalities.image.batch_sise: unknown key" in res.stderr
    assert "batch_size" in res.stderr  # the fix: the allowed keys


def test_bad_override_and_bad_encoder_exit_2(tmp_path, tiny_shards, tiny_clip, tiny_audio, capsys):
    m = write_manifest(tmp_path / "m.toml", tiny_shards["pattern"], tmp_path / "out", tiny_clip, tiny_audio)
    assert main(["precompute", str(m), "--set", "modalities.video.frames=0"]) == 2
    assert "modalities.video.frames: must be > 0" in capsys.readouterr().err
    assert main(["precompute", str(m), "--set", "modalities.audio.encoder=no-such"]) == 2
    assert "not registered" in capsys.readouterr().err


def test_precompute_through_main_with_overrides(tmp_path, tiny_shards, tiny_clip, tiny_audio, capsys):
    m = write_manifest(tmp_path / "m.toml", tiny_shards["pattern"], tmp_path / "out", tiny_clip, tiny_audio)
    del_mods = ["--set", "dataset.shards=" + tiny_shards["pattern"].replace("{000000..000003}", "000001")]
    assert main(["precompute", str(m), *del_mods, "--set", "modalities.image.dtype=float32"]) == 0
    summary = json.loads(capsys.readouterr().out)
    assert summary["counts"]["image"] == {"ok": 4, "missing": 0, "corrupt": 1, "error": 0, "duplicate": 0}
    assert summary["counts"]["audio"] == {"ok": 4, "missing": 0, "corrupt": 1, "error": 0, "duplicate": 0}
    assert json.loads((tmp_path / "out" / "precompute.json").read_text())["counts"] == summary["counts"]
