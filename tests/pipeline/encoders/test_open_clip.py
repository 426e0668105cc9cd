"""open_clip:<arch>[@weights] on a tiny architecture registered from a JSON config, offline."""

import json
import pickle

import numpy as np
import pytest
import torch
from PIL import Image

from pipeline.core.manifest import ImageConfig, TextConfig, VideoConfig
from pipeline.encoders.base import EncoderError
from pipeline.encoders.registry import build_encoder
from pipeline.encoders.thirdparty import import_without_torchvision
from pipeline.encoders.weights import weights_used

TINY = {"embed_dim": 16, "vision_cfg": {"image_size": 32, "layers": 1, "width": 32, "patch_size": 8, "head_width": 16},
        "text_cfg": {"context_length": 16, "vocab_size": 49408, "width": 32, "heads": 2, "layers": 1}}


@pytest.fixture(scope="module")
def config_path(tmp_path_factory):
    path = tmp_path_factory.mktemp("oc") / "tiny-oc.json"
    path.write_text(json.dumps(TINY))
    return path


def test_random_weights_must_be_asked_for(config_path):
    with pytest.raises(EncoderError, match="names no weights"):
        build_encoder("image", ImageConfig(encoder=f"open_clip:{config_path}"))
    with pytest.raises(EncoderError, match="no architecture"):
        build_encoder("image", ImageConfig(encoder="open_clip:no-such-arch", weights="random"))


def test_image_text_and_video_match_open_clip(config_path, tmp_path):
    spec = f"open_clip:{config_path}"
    img = build_encoder("image", ImageConfig(encoder=spec, weights="random"))
    txt = build_encoder("text", TextConfig(encoder=spec, weights="random"))
    assert (img.dim, txt.dim) == (16, 16) and weights_used("image", ImageConfig(encoder=spec), img) == "random"
    oc = import_without_torchvision("open_clip", "open_clip")
    picture = Image.fromarray(np.random.default_rng(0).integers(0, 256, (40, 56, 3), dtype=np.uint8))
    batch = pickle.loads(pickle.dumps(img.preprocessor()))([picture])
    with torch.no_grad():
        want_img = img.model.encode_image(batch["pixel_values"])
        tokens = oc.get_tokenizer("tiny-oc")(["a small dog"])
        want_txt = txt.model.encode_text(tokens)
        assert torch.allclose(img.encode(batch), want_img)
        assert torch.allclose(txt.encode(txt.preprocessor()(["a small dog"])), want_txt)
    # the same seeded random weights in both towers' models: one store identity per spec
    assert img.digest() == build_encoder("image", ImageConfig(encoder=spec, weights="random")).digest()
    video = build_encoder("video", VideoConfig(encoder=spec, weights="random"))
    clip = np.stack([np.asarray(picture)] * 3)
    with torch.no_grad():
        v = video.encode(video.preprocessor()([clip]))
    assert torch.allclose(v, want_img, atol=1e-5)  # three equal frames pool to the frame's feature


def test_a_local_checkpoint_loads(config_path, tmp_path):
    spec = f"open_clip:{config_path}"
    rand = build_encoder("image", ImageConfig(encoder=spec, weights="random"))
    state = {k: v + 0.01 for k, v in rand.model.state_dict().items()}
    torch.save(state, tmp_path / "ckpt.pt")
    loaded = build_encoder("image", ImageConfig(encoder=f"{spec}@{tmp_path / 'ckpt.pt'}"))
    assert loaded.weights == str(tmp_path / "ckpt.pt") and loaded.digest() != rand.digest()
    assert torch.equal(loaded.model.state_dict()["logit_scale"], state["logit_scale"])
