from __future__ import annotations

import pickle

import numpy as np
import pytest
import torch

from pipeline.core.manifest import AudioConfig, ImageConfig, TextConfig
from pipeline.encoders.base import EncoderError
from pipeline.encoders.hf import build
from pipeline.encoders.registry import build_encoder
from tests.conftest import WORDS


def build_tiny_bert(folder):
    """A plain text model (no get_text_features): served mean-pooled over the attention mask."""
    from tokenizers import Tokenizer, models, pre_tokenizers
    from transformers import BertConfig, BertModel, PreTrainedTokenizerFast

    vocab = {w: i for i, w in enumerate(["[PAD]", "[UNK]", *WORDS])}
    tok = Tokenizer(models.WordLevel(vocab, unk_token="[UNK]"))
    tok.pre_tokenizer = pre_tokenizers.Whitespace()
    PreTrainedTokenizerFast(tokenizer_object=tok, pad_token="[PAD]", unk_token="[UNK]",
                            model_max_length=16).save_pretrained(folder)
    torch.manual_seed(0)
    BertModel(BertConfig(vocab_size=len(vocab), hidden_size=20, num_hidden_layers=1, num_attention_heads=2,
                         intermediate_size=24, max_position_embeddings=16)).save_pretrained(folder)
    return folder


def test_clip_image_and_text_towers(tiny_clip):
    from PIL import Image

    img = build("image", ImageConfig(encoder=f"hf:{tiny_clip}"))
    assert img.dim == 16 and img.provenance()["pooling"] == "get_image_features"
    pre = pickle.loads(pickle.dumps(img.preprocessor()))  # DataLoader workers get a pickled copy
    batch = img.prepare(pre([Image.new("RGB", (50, 40), (200, 10, 10)), Image.new("RGB", (32, 32))]))
    assert batch["pixel_values"].shape == (2, 3, 32, 32) and img.input_size == 32
    with torch.no_grad():
        feats = img.encode(batch)
        direct = img.model.get_image_features(pixel_values=batch["pixel_values"]).pooler_output
    torch.testing.assert_close(feats, direct)
    txt = build("text", TextConfig(encoder=f"hf:{tiny_clip}"))
    batch = txt.preprocessor()(["a photo of the cat", "dog"])
    assert batch["input_ids"].shape[0] == 2
    with torch.no_grad():
        out = txt.encode(batch)
    assert out.shape == (2, 16) and not torch.allclose(out[0], out[1])


def test_plain_text_model_is_mean_pooled_over_the_mask(tmp_path):
    folder = build_tiny_bert(tmp_path / "bert")
    enc = build("text", TextConfig(encoder=f"hf:{folder}"))
    assert enc.dim == 20 and enc.provenance()["pooling"] == "mean over the attention mask"
    with torch.no_grad():
        alone = enc.features(["cat"])
        padded = enc.features(["cat", "a photo of the red car tree"])
    torch.testing.assert_close(alone[0], padded[0], atol=1e-5, rtol=1e-5)  # padding does not leak in


def test_audio_model_with_feature_extractor(tiny_audio):
    enc = build("audio", AudioConfig(encoder=f"hf:{tiny_audio}"))
    assert enc.sample_rate == 16000 and enc.dim == 24
    wav = np.sin(np.arange(8000) / 10).astype(np.float32)
    with torch.no_grad():
        out = enc.features([wav, wav * 0.5])
    assert out.shape == (2, 24) and torch.isfinite(out).all()
    assert build("audio", AudioConfig(encoder=f"hf:{tiny_audio}", sample_rate=16000)).sample_rate == 16000
    with pytest.raises(EncoderError, match="modalities.audio.sample_rate"):  # refused where every encoder is built
        build_encoder("audio", AudioConfig(encoder=f"hf:{tiny_audio}", sample_rate=8000))


def test_wrong_modality_and_bad_path_are_encoder_errors(tiny_clip, tmp_path):
    with pytest.raises(EncoderError, match="modalities.audio.encoder"):
        build("audio", AudioConfig(encoder=f"hf:{tiny_clip}"))
    with pytest.raises(EncoderError, match="cannot load"):
        build("image", ImageConfig(encoder=f"hf:{tmp_path / 'nothing'}"))
