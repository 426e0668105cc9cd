from __future__ import annotations

import numpy as np
import pytest
import torch

from pipeline.core.manifest import ImageConfig, TextConfig, VideoConfig
from pipeline.encoders.base import Encoder, EncoderError
from pipeline.encoders.registry import build_encoder, factory_for, register, registered


class CharCount(Encoder):
    """A plugin text encoder: letter histogram (a-z)."""

    name, dim = "tests.pipeline.encoders.test_registry:plugin", 26

    def __init__(self, modality):
        self.modality = modality

    def preprocessor(self):
        return _histogram

    def encode(self, batch):
        return batch["counts"]

    def modules(self):
        return []


def _histogram(texts):
    out = np.zeros((len(texts), 26), np.float32)
    for i, t in enumerate(texts):
        for ch in t.lower():
            if "a" <= ch <= "z":
                out[i, ord(ch) - 97] += 1
    return {"counts": torch.from_numpy(out)}


def plugin(modality, config):
    if modality != "text":
        raise EncoderError(f"the plugin serves text, not {modality}")
    return CharCount(modality)


def test_module_function_plugin_is_resolved():
    enc = build_encoder("text", TextConfig(encoder="tests.pipeline.encoders.test_registry:plugin"))
    assert isinstance(enc, CharCount)
    assert enc.encode(enc.preprocessor()(["abca"]))[0, 0] == 2


def test_plugin_that_cannot_serve_video_or_image_is_a_config_error():
    with pytest.raises(EncoderError, match="serves text"):
        build_encoder("video", VideoConfig(encoder="tests.pipeline.encoders.test_registry:plugin"))


def test_hf_and_unknown_specs(tiny_clip):
    from pipeline.encoders.hf import build

    assert factory_for(f"hf:{tiny_clip}") is build
    assert build_encoder("image", ImageConfig(encoder=f"hf:{tiny_clip}")).dim == 16
    with pytest.raises(EncoderError, match="not registered"):
        factory_for("no-such-encoder")
    with pytest.raises(EncoderError, match="cannot import"):
        factory_for("no_such_module_xyz:build")
    with pytest.raises(EncoderError, match="has no attribute"):
        factory_for("pipeline.encoders.hf:nope")


def test_register_by_explicit_name():
    register("test-char-count", plugin)
    assert "test-char-count" in registered()
    assert build_encoder("text", TextConfig(encoder="test-char-count")).dim == 26
    assert {"mobilenet-v2", "minilm-l6", "aisfx"} <= set(registered())
