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
    enc = build_encoder("text", TextConfig(encoder="tests.pipeline.encoders.test_registry:plugin"), trust_code=True)
    assert isinstance(enc, CharCount)
    assert enc.features(["abca"])[0, 0] == 2


def test_plugin_that_cannot_serve_video_or_image_is_a_config_error():
    with pytest.raises(EncoderError, match="serves text"):
        build_encoder("video", VideoConfig(encoder="tests.pipeline.encoders.test_registry:plugin"), trust_code=True)


def test_hf_and_unknown_specs(tiny_clip):
    from pipeline.encoders.hf import build

    assert factory_for(f"hf:{tiny_clip}") is build
    assert build_encoder("image", ImageConfig(encoder=f"hf:{tiny_clip}")).dim == 16
    with pytest.raises(EncoderError, match="not registered"):
        factory_for("no-such-encoder")
    with pytest.raises(EncoderError, match="cannot import"):
        factory_for("no_such_module_xyz:build", trust_code=True)
    with pytest.raises(EncoderError, match="has no attribute"):
        factory_for("pipeline.encoders.hf:nope", trust_code=True)


def test_register_by_explicit_name():
    register("test-char-count", plugin)
    assert "test-char-count" in registered()
    assert build_encoder("text", TextConfig(encoder="test-char-count")).dim == 26
    assert {"mobilenet-v2", "minilm-l6", "aisfx"} <= set(registered())


@pytest.mark.parametrize("spec", ["os:system", "shutil:rmtree", "tests.pipeline.encoders.test_registry:plugin"])
def test_a_bare_module_function_is_refused_without_trust_code(spec, monkeypatch):
    imported = []
    monkeypatch.setattr("importlib.import_module", lambda name, *a: imported.append(name))
    with pytest.raises(EncoderError, match=r"^modalities\.text\.encoder: .*precompute\.trust_code = true"):
        build_encoder("text", TextConfig(encoder=spec))
    assert imported == []  # refused before anything was imported


def test_an_entry_point_registers_an_encoder_without_trust_code(tmp_path, monkeypatch):
    dist = tmp_path / "bindery_chars-0.1.dist-info"
    dist.mkdir()
    (dist / "METADATA").write_text("Metadata-Version: 2.1\nName: bindery-chars\nVersion: 0.1\n")
    (dist / "entry_points.txt").write_text(
        "[bindery.encoders]\nchar-count-ep = tests.pipeline.encoders.test_registry:plugin\n"
        "broken-ep = no_such_module_xyz:build\n")
    monkeypatch.syspath_prepend(str(tmp_path))
    assert {"char-count-ep", "broken-ep"} <= set(registered())
    enc = build_encoder("text", TextConfig(encoder="char-count-ep"))
    assert isinstance(enc, CharCount) and enc.encode(enc.preprocessor()(["zz"]))[0, 25] == 2
    with pytest.raises(EncoderError, match=r"broken-ep.*bindery-chars.*does not load"):
        build_encoder("text", TextConfig(encoder="broken-ep"))
