"""EBind's backbones through the registry: ebind's own model code, weights random or from a local file."""

import numpy as np
import pytest
import torch
from safetensors.torch import save_file

from pipeline.core.manifest import AudioConfig, TextConfig
from pipeline.encoders.base import EncoderError
from pipeline.encoders.ebind.uni3d import GREY, CloudsPreprocessor, make_uni3d
from pipeline.encoders.registry import build_encoder, factory_for


def test_names_are_registered():
    for name in ("pe-core-l14-336", "imagebind-huge-audio", "uni3d-g"):
        assert callable(factory_for(name))
    with pytest.raises(EncoderError, match="audio only"):
        build_encoder("image", AudioConfig(encoder="imagebind-huge-audio", weights="random"))


@pytest.fixture(scope="module")
def audio():
    return build_encoder("audio", AudioConfig(encoder="imagebind-huge-audio", weights="random", sample_rate=16000))


def test_audio_is_the_clip_mean_of_imagebinds_unit_times_20(audio):
    assert audio.dim == 1024 and audio.sample_rate == 16000 and audio.weights == "random"
    rng = np.random.default_rng(0)
    batch = audio.preprocessor()([rng.standard_normal(16000 * 4).astype(np.float32)])
    with torch.no_grad():
        got = audio.encode(batch)
        per_clip = torch.stack([audio.model(batch["input"][:, c]) for c in range(3)], dim=1)
    assert torch.allclose(per_clip.norm(dim=-1), torch.full((1, 3), 20.0), atol=1e-3)
    assert torch.allclose(got, per_clip.mean(dim=1), atol=1e-4)


def test_audio_weights_load_from_a_full_imagebind_file(audio, tmp_path):
    state = {f"modality_trunks.audio.{k[len('trunk.'):]}": v + 0.5 for k, v in audio.model.state_dict().items()
             if k.startswith("trunk.")}
    state.update({f"modality_{part}.audio.{k.split('.', 1)[1]}": v for k, v in audio.model.state_dict().items()
                  for part, prefix in (("preprocessors", "preprocessor."), ("heads", "head."),
                                       ("postprocessors", "postprocessor.")) if k.startswith(prefix)})
    state["modality_trunks.vision.x"] = torch.zeros(1)  # other towers of the full model are ignored
    save_file({k: v.contiguous() for k, v in state.items()}, str(tmp_path / "model.safetensors"))
    loaded = build_encoder("audio", AudioConfig(encoder="imagebind-huge-audio", weights=str(tmp_path)))
    assert loaded.weights == str(tmp_path / "model.safetensors")
    key = next(k for k in loaded.model.state_dict() if k.startswith("trunk."))
    assert torch.equal(loaded.model.state_dict()[key], state[f"modality_trunks.audio.{key[6:]}"])
    with pytest.raises(EncoderError, match="not found"):
        build_encoder("audio", AudioConfig(encoder="imagebind-huge-audio", weights=str(tmp_path / "nope.pt")))


def test_pe_core_text_random_and_from_its_checkpoint(tmp_path):
    text = build_encoder("text", TextConfig(encoder="pe-core-l14-336", weights="random"))
    assert text.dim == 1024
    batch = text.preprocessor()(["a dog barks", "rain on a tin roof"])
    assert batch["input"].shape == (2, 32)
    with torch.no_grad():
        out = text.encode(batch)
    assert torch.isfinite(out).all() and (out.norm(dim=-1) > 0).all()  # no uninitialised tensors
    assert all(torch.isfinite(t).all() for t in text.model.parameters())
    state = {k: v * 0.5 for k, v in text.model.state_dict().items()}
    torch.save({**state, "visual.proj": torch.zeros(2)}, tmp_path / "PE-Core-L14-336.pt")
    loaded = build_encoder("text", TextConfig(encoder="pe-core-l14-336", weights=str(tmp_path)))
    with torch.no_grad():
        assert torch.allclose(loaded.model.token_embedding.weight, state["token_embedding.weight"])
        assert not torch.allclose(loaded.encode(batch), text.encode(batch))


def test_uni3d_clouds_without_colour_get_uni3ds_grey():
    model = make_uni3d({"depth": 1, "num_heads": 2, "embed_dim_eva": 32, "pc_feat_dim": 32, "mlp_ratio": 2.0,
                        "num_group": 8, "group_size": 4, "pc_model": "eva_giant_patch14_224"}).eval()
    rng = np.random.default_rng(0)
    xyz = rng.uniform(-1, 1, (64, 3)).astype(np.float32)
    pre = CloudsPreprocessor()
    grey = pre([xyz])["input"]
    explicit = torch.from_numpy(np.concatenate([xyz, np.full((64, 3), GREY, np.float32)], 1))[None]
    assert torch.equal(grey, explicit)
    with torch.no_grad():
        out = model(grey)
    assert out.shape == (1, 1024) and torch.isfinite(out).all()
