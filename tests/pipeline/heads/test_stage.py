"""`bindery import-heads PATH MANIFEST --run NAME` writes a run that eval reads."""

import json
import subprocess
import sys

import torch
from safetensors.torch import save_file

from pipeline.core.heads_file import load_heads
from pipeline.core.manifest import from_dict
from pipeline.heads.stage import run
from tests.planted import write_planted_stores


def manifest_for(tmp_path):
    return from_dict({"dataset": {"name": "t", "shards": "x.tar", "output": str(tmp_path / "out")},
                      "modalities": {"text": {"encoder": "x"}, "audio": {"encoder": "x"}},
                      "train": {"anchor": "text", "modalities": ["audio"]}})


def ebind_file(path, d_in=24, d_out=32, hidden=16):
    torch.manual_seed(0)
    state = {"projectors.audio.net.0.weight": torch.randn(hidden, d_in), "projectors.audio.net.0.bias": torch.randn(hidden),
             "projectors.audio.net.2.weight": torch.randn(d_out, hidden), "projectors.audio.net.2.bias": torch.randn(d_out)}
    save_file(state, str(path))
    return state


def test_import_then_eval(tmp_path):
    m = manifest_for(tmp_path)
    write_planted_stores(m.output, n=60, dims={"text": 32, "audio": 24})
    state = ebind_file(tmp_path / "ebind.safetensors")
    summary = run(m, str(tmp_path / "ebind.safetensors"), run="ebind-full")
    assert summary["heads"] == {"audio": [[24, 16], [16, 32]]} and summary["parameters"] == 24 * 16 + 16 + 16 * 32 + 32
    heads, config = load_heads(m.layout.run("ebind-full").root)
    assert torch.equal(heads["audio"][2].weight, state["projectors.audio.net.2.weight"])
    assert config["imported"]["format"] == "ebind-full" and config["anchor"] == "text"
    from trainer.eval.evaluate import run as evaluate

    metrics = evaluate(from_dict({**m.to_dict(), "eval": {"run": "ebind-full", "eshot": []}}))
    assert "audio->text" in metrics and 0.0 <= metrics["audio->text"]["R@1"] <= 1.0


def test_cli_refuses_a_head_of_the_wrong_width(tmp_path):
    m = manifest_for(tmp_path)
    write_planted_stores(m.output, n=20, dims={"text": 32, "audio": 24})
    ebind_file(tmp_path / "wide.safetensors", d_in=40)
    toml = tmp_path / "m.toml"
    toml.write_text(f'[dataset]\nname = "t"\nshards = "x.tar"\noutput = "{m.output}"\n'
                    '[modalities.text]\nencoder = "x"\n[modalities.audio]\nencoder = "x"\n')
    out = subprocess.run([sys.executable, "-m", "pipeline.cli", "import-heads", str(tmp_path / "wide.safetensors"),
                          str(toml), "--run", "r"], capture_output=True, text=True)
    assert out.returncode == 2 and "takes 40-d inputs but the audio store is 24-d" in out.stderr
    ebind_file(tmp_path / "ok.safetensors")
    ok = subprocess.run([sys.executable, "-m", "pipeline.cli", "import-heads", str(tmp_path / "ok.safetensors"),
                         str(toml), "--run", "r"], capture_output=True, text=True)
    assert ok.returncode == 0, ok.stderr
    assert json.loads(ok.stdout)["run"] == "r"
