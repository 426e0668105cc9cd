"""aisfx: the pretrained sound-effects CNN on a torch re-implementation of its spectrogram."""

import io
import tarfile
from pathlib import Path

import numpy as np
import pytest
import soundfile as sf
import torch
import torch.nn.functional as F

from pipeline.core.manifest import AudioConfig
from pipeline.encoders import aisfx
from pipeline.encoders.base import EncoderError

DEMO = Path(__file__).resolve().parents[3] / "data" / "demo"
# real tuxpaint sound effects shipped in the demo (distinct recordings, 3.8-10 s long)
SOUNDS = ["stamp-vehicles-emergency-firetruck", "stamp-hobbies-music-wind-bassoon", "stamp-animals-birds-blackbird",
          "stamp-animals-mammals-cats-tiger", "stamp-hobbies-music-string-cello", "stamp-animals-birds-seagull",
          "stamp-hobbies-music-percussion-drumkit"]


@pytest.fixture(scope="module")
def encoder():
    return aisfx.build("audio", AudioConfig(encoder="aisfx", seconds=6.0))  # shorter = faster test


@pytest.fixture(scope="module")
def sounds():
    out = {}
    for shard in sorted(DEMO.glob("demo-*.tar")):
        with tarfile.open(shard) as tar:
            for m in tar.getmembers():
                if m.name.endswith(".ogg") and m.name[:-4] in SOUNDS:
                    audio, rate = sf.read(io.BytesIO(tar.extractfile(m).read()), dtype="float32")
                    assert rate == aisfx.SAMPLE_RATE
                    out[m.name[:-4]] = audio.mean(axis=1) if audio.ndim > 1 else audio
    assert sorted(out) == sorted(SOUNDS)
    return out


def embed(encoder, clips):
    return F.normalize(encoder.features(clips), dim=-1)


def test_two_crops_of_a_sound_are_closer_than_other_sounds(encoder, sounds):
    heads = embed(encoder, [sounds[n][: int(len(sounds[n]) * 0.6)] for n in SOUNDS])
    tails = embed(encoder, [sounds[n][int(len(sounds[n]) * 0.4):] for n in SOUNDS])
    sims = heads @ tails.T  # row i: the head of sound i against every sound's tail
    for i, name in enumerate(SOUNDS):
        others = torch.cat([sims[i, :i], sims[i, i + 1:]])
        assert sims[i, i] > others.max(), (name, sims[i].tolist())


def test_shape_determinism_and_padding(encoder, sounds):
    clip = sounds["stamp-animals-birds-blackbird"]
    short = sounds["stamp-animals-birds-seagull"][: aisfx.SAMPLE_RATE // 2]
    one = encoder.features([clip])
    assert one.shape == (1, 512) and encoder.dim == 512 and encoder.sample_rate == 44_100
    assert torch.equal(one, encoder.features([clip]))
    both = encoder.features([clip, short])  # the short clip's blocks are masked
    assert torch.allclose(both[0], one[0], atol=1e-5)
    padded = np.pad(short, (44_100, 44_100))  # the decoder's centred zero padding is trimmed
    assert torch.allclose(encoder.features([padded]), both[1:], atol=1e-5)


def test_blocks_match_aisfx_blocking():
    from aisfx.preprocessing import blocking

    rng = np.random.default_rng(0)
    for frames in (1, 99, 100, 149, 150, 151, 431):
        spec = rng.random((frames, aisfx.N_MELS)).astype(np.float32)
        ours = aisfx.blocks(torch.from_numpy(spec)).numpy()
        theirs = blocking(spec, block_size=100, hop_size=50, drop_partial_block=True)
        assert ours.shape == theirs.shape and np.allclose(ours, theirs)


def test_mel_filterbank_is_htk_unit_sum():
    fb = aisfx.mel_filterbank().numpy()
    assert fb.shape == (96, 1025)
    assert np.allclose(fb.sum(axis=1), 1.0, atol=1e-5)
    freqs = np.linspace(0, 22_050, 1025)
    peaks = freqs[fb.argmax(axis=1)]
    assert np.all(np.diff(peaks) >= 0) and peaks[-1] > 15_000
    # HTK mel: band 48's centre lies at mel(22050) * 49/97 on the 2595*log10(1+f/700) scale
    centre = 700 * (10 ** (2595 * np.log10(1 + 22_050 / 700) * 49 / 97 / 2595) - 1)
    assert abs(peaks[48] - centre) < 2 * 22_050 / 1024


def test_spectrogram_frames_and_range():
    t = np.arange(aisfx.SAMPLE_RATE) / aisfx.SAMPLE_RATE
    tone = (0.1 * np.sin(2 * np.pi * 1000 * t)).astype(np.float32)
    spec = aisfx.spectrogram(tone)
    assert spec.shape == (1 + aisfx.SAMPLE_RATE // aisfx.HOP, 96)  # centred STFT frames
    band = aisfx.mel_filterbank()[:, 1000 * 2048 // aisfx.SAMPLE_RATE].argmax()
    assert spec[5:-5].mean(0).argmax() == band  # energy sits in the band holding 1 kHz
    assert float(spec.min()) >= 0 and float(spec.max()) < 1.5  # peak-normalised, scaled by 9.46


def test_other_modalities_are_refused():
    with pytest.raises(EncoderError, match="audio"):
        aisfx.build("image", AudioConfig(encoder="aisfx"))
