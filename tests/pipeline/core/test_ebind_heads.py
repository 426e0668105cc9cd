"""bindery heads <-> EBind's released layout, checked with ebind's own MLPProjector and EBindModel keys."""

import pytest
import torch
from safetensors.torch import load_file, save_file

from pipeline.core.ebind_heads import HeadsLayoutError, read_ebind_heads, write_ebind_heads
from pipeline.core.heads_file import load_heads, project
from pipeline.encoders.thirdparty import ebind_module
from trainer.model.export import export
from trainer.model.heads import Binder


def projector():
    return ebind_module("models.ebind.projector").MLPProjector(input_dim=1024, output_dim=1024, hidden_dims=[2048])


def test_bindery_export_loads_into_ebinds_projectors(tmp_path):
    binder = Binder({"text": 1024, "audio": 1024, "points": 1024}, "text", ["audio", "points"], dropout=0.1).eval()
    config = {"manifest": {"train": {"export_ebind": True}}}
    export(tmp_path, binder, config)
    state = load_file(str(tmp_path / "ebind-heads.safetensors"))
    assert sum(v.numel() for v in state.values()) == 8_394_752  # EBind's two projectors
    x = torch.randn(6, 1024)
    for m in ("audio", "points"):
        proj = projector()
        proj.load_state_dict({k[len(f"projectors.{m}."):]: v for k, v in state.items()
                              if k.startswith(f"projectors.{m}.")}, strict=True)
        with torch.no_grad():
            assert torch.allclose(proj(x), binder.project(m, x), atol=1e-5)


def test_ebinds_projectors_load_into_bindery_heads(tmp_path):
    torch.manual_seed(0)
    projectors = {m: projector().eval() for m in ("audio", "points")}
    # EBindModel.state_dict(): its projectors ModuleDict, backbones dropped
    state = {f"projectors.{m}.{k}": v for m, p in projectors.items() for k, v in p.state_dict().items()}
    save_file(state, str(tmp_path / "model.safetensors"))
    heads = read_ebind_heads(tmp_path / "model.safetensors")
    x = torch.randn(5, 1024) * 20  # EBind's audio inputs are unit(x) * 20
    for m, p in projectors.items():
        with torch.no_grad():
            assert torch.allclose(project(heads[m], x), p(x), atol=1e-5)
    write_ebind_heads(tmp_path / "again.safetensors", heads)
    again = load_file(str(tmp_path / "again.safetensors"))
    assert set(again) == set(state) and all(torch.equal(again[k], state[k]) for k in state)


def test_other_layouts_are_refused(tmp_path):
    save_file({"audio.0.weight": torch.zeros(2, 2)}, str(tmp_path / "x.safetensors"))
    with pytest.raises(HeadsLayoutError, match="not an EBind projector key"):
        read_ebind_heads(tmp_path / "x.safetensors")
    save_file({"projectors.audio.net.1.weight": torch.zeros(2, 2), "projectors.audio.net.1.bias": torch.zeros(2)},
              str(tmp_path / "y.safetensors"))
    with pytest.raises(HeadsLayoutError, match="expected weight and bias at 0, 2"):
        read_ebind_heads(tmp_path / "y.safetensors")


def test_imported_run_loads_like_a_trained_one(tmp_path):
    from pipeline.core.heads_file import save_heads

    torch.manual_seed(1)
    proj = projector().eval()
    heads = read_ebind_heads(write_ebind_heads(tmp_path / "h.safetensors", {"audio": proj.net}))
    save_heads(tmp_path / "run", heads, {"note": 1}, space="text")
    loaded, config = load_heads(tmp_path / "run")
    x = torch.randn(3, 1024)
    with torch.no_grad():
        assert torch.allclose(project(loaded["audio"], x), proj(x), atol=1e-5)
    assert config["heads"]["audio"]["layers"] == [[1024, 2048], [2048, 1024]]
