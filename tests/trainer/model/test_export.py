"""Exported heads load into EBind's plain projector layout and reproduce the trained projection."""

from __future__ import annotations

import json
import math

import pytest
import torch
import torch.nn.functional as F
from safetensors.torch import load_file
from torch import nn

from pipeline.core.heads_file import load_heads, project
from trainer.model.export import export
from trainer.model.heads import Binder


def test_default_heads_load_into_plain_sequential(tmp_path):
    binder = Binder({"text": 1024, "audio": 1024, "points": 1024}, "text", ["audio", "points"], dropout=0.1)
    export(tmp_path, binder, {"note": "test"})
    tensors = load_file(str(tmp_path / "heads.safetensors"))
    x = torch.randn(4, 1024)
    for m in ("audio", "points"):
        plain = nn.Sequential(nn.Linear(1024, 2048), nn.ReLU(), nn.Linear(2048, 1024))
        plain.load_state_dict({k[len(m) + 1:]: v for k, v in tensors.items() if k.startswith(f"{m}.")}, strict=True)
        want = binder.eval().project(m, x)
        assert torch.allclose(F.normalize(plain(x), dim=-1), want, atol=1e-5)
    heads, config = load_heads(tmp_path)
    assert config["anchor"] == "text" and config["note"] == "test"
    assert config["heads"]["audio"]["layers"] == [[1024, 2048], [2048, 1024]]
    assert torch.allclose(project(heads["points"], x), binder.project("points", x), atol=1e-5)
    assert json.loads((tmp_path / "config.json").read_text())["logit_scale"] == pytest.approx(1 / 0.07, rel=1e-6)


@pytest.mark.parametrize("logit_scale, recorded", [(math.log(20.0), 20.0), (math.log(250.0), 100.0)])
def test_config_records_the_clamped_logit_scale(tmp_path, logit_scale, recorded):
    binder = Binder({"text": 8, "audio": 4}, "text", ["audio"], hidden=8)
    with torch.no_grad():
        binder.logit_scale.fill_(logit_scale)
    export(tmp_path, binder, {})
    assert json.loads((tmp_path / "config.json").read_text())["logit_scale"] == pytest.approx(recorded, rel=1e-6)
