"""[modalities.audio] pad: shorter audio zero-padded to `seconds` (default) or kept at its real length,
for a preprocessor that takes arrays (the PCM is resampled for it in the worker by WaveAdapter)."""

import numpy as np

from pipeline.core.manifest import AudioConfig
from pipeline.encoders.audio_features import waves_for
from pipeline.ingest.decode.audio import decode_audio
from tests.conftest import wav_bytes


def test_pad_false_keeps_the_real_length():
    pcm = decode_audio(wav_bytes(0, seconds=0.4, rate=16000), "wav", AudioConfig(encoder="x", seconds=2.0), 16000)
    (padded,) = waves_for([pcm], 16000, 2.0, pad=True)
    (kept,) = waves_for([pcm], 16000, 2.0, pad=False)
    assert len(padded) == 32000 and len(kept) == 6400
    start = (32000 - 6400) // 2
    assert np.allclose(padded[start:start + 6400], kept) and not padded[:start].any()
    longer = decode_audio(wav_bytes(1, seconds=3.0, rate=16000), "wav", AudioConfig(encoder="x", seconds=2.0), 16000)
    assert len(waves_for([longer], 16000, 2.0, pad=False)[0]) == 32000  # still centre-cropped to `seconds`
