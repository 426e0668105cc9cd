"""whisper-tiny: Whisper tiny.en's encoder via CTranslate2 on a torch log-mel front end."""

import io
import tarfile
from pathlib import Path

import numpy as np
import pytest
import soundfile as sf
import torch

from pipeline.core.manifest import AudioConfig
from pipeline.encoders import whisper
from pipeline.encoders.aisfx import mel_filterbank
from pipeline.encoders.base import EncoderError, Pcm

DEMO = Path(__file__).resolve().parents[3] / "data" / "demo"
PROMPT = "speech-dictate-forhelp"  # an asterisk recording in the demo: "Press 0 for help."


@pytest.fixture(scope="module")
def encoder():
    return whisper.build("audio", AudioConfig(encoder="pipeline.encoders.whisper:build"))


@pytest.fixture(scope="module")
def prompt():
    with tarfile.open(DEMO / "demo-000000.tar") as tar:
        audio, rate = sf.read(io.BytesIO(tar.extractfile(f"{PROMPT}.flac").read()), dtype="float32")
        text = tar.extractfile(f"{PROMPT}.txt").read().decode()
    return Pcm(audio, rate), text


def test_features_match_transformers_whisper_extractor():
    from transformers import WhisperFeatureExtractor

    fe = WhisperFeatureExtractor(feature_size=80, sampling_rate=16_000, hop_length=160, chunk_length=30, n_fft=400)
    ours = mel_filterbank(16_000, 400, 80, 0.0, 8_000.0, False, "slaney").numpy()
    assert np.abs(ours - fe.mel_filters.T).max() < 1e-7
    t = np.arange(2 * 16_000) / 16_000
    tone = (0.3 * np.sin(2 * np.pi * 440 * t) * np.linspace(0, 1, t.size)).astype(np.float32)
    ref = fe(tone, sampling_rate=16_000, return_tensors="np").input_features[0]
    assert np.abs(whisper.log_mel(tone).numpy() - ref).max() < 1e-4


def test_the_encoder_states_carry_the_words(encoder, prompt):
    """Whisper's own decoder reads the transcript back from our features: the front end is right."""
    import ctranslate2
    from tokenizers import Tokenizer

    audio, text = prompt
    mel = encoder.prepare(encoder.preprocessor()([audio]))["mel"].numpy()
    out = encoder.model.generate(ctranslate2.StorageView.from_array(mel),
                                 [["<|startoftranscript|>", "<|notimestamps|>"]], max_length=16)
    said = Tokenizer.from_file(str(whisper.model_dir() / "tokenizer.json")).decode(out[0].sequences_ids[0])
    assert said.strip().lower().rstrip(".") == text.lower().rstrip(".") == "press 0 for help"


def test_pooled_embedding(encoder, prompt):
    audio, _ = prompt
    padded = Pcm(np.pad(audio.samples, (8_000, 8_000)), audio.rate)  # centred zero padding is ignored
    batch = encoder.prepare(encoder.preprocessor()([audio, padded]))
    at_16k = round(len(audio.samples) * 16_000 / audio.rate)
    assert batch["frames"][0] == batch["frames"][1] == int(np.ceil(at_16k / 320))
    feats = encoder.encode(batch)
    assert feats.shape == (2, 384) and encoder.dim == 384 and encoder.sample_rate == 16_000
    assert torch.allclose(feats[0], feats[1], atol=1e-4)
    assert encoder.digest().startswith("sha256:") and encoder.modules() == []


def test_other_modalities_are_refused():
    with pytest.raises(EncoderError, match="audio"):
        whisper.build("text", AudioConfig(encoder="pipeline.encoders.whisper:build"))
