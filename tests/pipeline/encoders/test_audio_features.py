"""Audio on the device: batched torch resampling and features against per-clip NumPy references.

The references are the per-clip algorithms written here in NumPy (the resampler the decoder ran
before, a framed-FFT spectrogram) and transformers' own feature extractors; the clips are real
recordings of the demo (8, 22.05 and 44.1 kHz, 0.5-10 s) batched together, so rows of several
rates and lengths share one batch.
"""

from __future__ import annotations

import io
import tarfile
from pathlib import Path

import numpy as np
import pytest
import soundfile as sf
import torch

from pipeline.core.manifest import AudioConfig
from pipeline.encoders import aisfx, audio_features, whisper
from pipeline.encoders.audio_features import FILTER_TAPS, PcmCollate, clip_waves, resample, unpack
from pipeline.encoders.base import Pcm
from pipeline.encoders.hf_audio import device_extractor
from pipeline.ingest.decode import decode_audio

DEMO = Path(__file__).resolve().parents[3] / "data" / "demo"


@pytest.fixture(scope="module")
def recordings() -> list[tuple[str, bytes]]:
    """Two demo members of every rate there is: (extension, bytes)."""
    out, rates = [], {}
    for shard in sorted(DEMO.glob("demo-*.tar")):
        with tarfile.open(shard) as tar:
            for m in tar.getmembers():
                if m.name.endswith((".ogg", ".flac")):
                    data = tar.extractfile(m).read()
                    rate = sf.info(io.BytesIO(data)).samplerate
                    if rates.get(rate, 0) < 2:
                        rates[rate] = rates.get(rate, 0) + 1
                        out.append((m.name.rsplit(".", 1)[1], data))
    assert {8000, 22050, 44100} <= set(rates)  # and the odd 5, 11.025 and 22.254 kHz recordings
    return out


def np_resample(x: np.ndarray, rate: int, target: int) -> np.ndarray:
    """The decoder's per-clip resampler, in NumPy: Hann-windowed sinc low-pass (going down), then
    linear interpolation at PyTorch's align_corners=False source positions."""
    if rate == target:
        return x
    if target < rate:
        c = target / rate
        t = np.arange(-FILTER_TAPS, FILTER_TAPS + 1)
        k = c * np.sinc(c * t) * np.hanning(2 * FILTER_TAPS + 1)
        x = np.convolve(x, k / k.sum(), mode="same")
    n_out = int(round(len(x) * target / rate))
    src = np.maximum((np.arange(n_out) + 0.5) * (len(x) / n_out) - 0.5, 0)
    return np.interp(src, np.arange(len(x)), x)


def np_fit(y: np.ndarray, n: int) -> np.ndarray:
    if len(y) > n:
        start = (len(y) - n) // 2
        return y[start:start + n]
    pad = n - len(y)
    return np.pad(y, (pad // 2, pad - pad // 2))


def test_batched_resampling_matches_the_per_clip_resampler():
    rng = np.random.default_rng(0)
    for rate, target in ((8000, 16000), (22050, 16000), (48000, 44100), (44100, 16000), (16000, 16000)):
        clips = [rng.normal(size=n).astype(np.float32) for n in (rate // 3, rate, 1234)]
        batch = PcmCollate(rate)(clips)
        y, lengths = resample(unpack(batch), batch["pcm_length"], rate, target)
        for i, clip in enumerate(clips):
            ref = np_resample(clip.astype(np.float64), rate, target)
            assert int(lengths[i]) == len(ref)
            np.testing.assert_allclose(y[i, :len(ref)].numpy(), ref, atol=2e-5)
            assert not y[i, len(ref):].any()  # past a row's length: zeros


def test_clips_of_many_rates_in_one_batch_equal_the_per_clip_decoder(recordings):
    cfg = AudioConfig(encoder="x", seconds=2.0)
    pcms = [decode_audio(data, ext, cfg, 16000) for ext, data in recordings]
    assert any(p.cropped for p in pcms) and any(not p.cropped for p in pcms)
    waves = clip_waves(PcmCollate(16000)(pcms), 16000, cfg.seconds).numpy()
    assert waves.shape == (len(pcms), 32000)
    for p, row in zip(pcms, waves, strict=True):
        y = np_resample(p.samples.astype(np.float64), p.rate, 16000)
        if p.cropped:  # the clip starts `keep` source samples into the decoded window
            skip = int(round(p.keep * 16000 / p.rate))
            y = y[skip:skip + 32000]
        np.testing.assert_allclose(row, np_fit(y, 32000), atol=2e-5)


def test_a_cropped_window_matches_resampling_the_whole_recording(recordings):
    """The window with its filter margin against the old way (whole file resampled, then cropped):
    the same signal, shifted by the crop's rounding (at most 2 samples, 0.125 ms) and resampled at a
    phase that differs by under one sample, so the difference is bounded by the steepest slope."""
    ext, data = max(recordings, key=lambda r: sf.info(io.BytesIO(r[1])).duration)
    cfg = AudioConfig(encoder="x", seconds=1.0)
    pcm = decode_audio(data, ext, cfg, 16000)
    whole, rate = sf.read(io.BytesIO(data), dtype="float32", always_2d=True)
    old = np_fit(np_resample(whole.mean(axis=1).astype(np.float64), rate, 16000), 16000)
    new = clip_waves(PcmCollate(16000)([pcm]), 16000, 1.0)[0].numpy()
    slope = np.abs(np.diff(old)).max()
    inner = slice(8, -8)
    diffs = {lag: np.abs(np.roll(new, lag)[inner] - old[inner]).max() for lag in range(-2, 3)}
    lag = min(diffs, key=diffs.get)
    assert pcm.cropped and diffs[lag] <= slope + 1e-4, diffs


def test_zero_padding_is_trimmed_as_the_per_clip_code_did():
    w = torch.zeros(3, 10)
    w[0, 2:5] = torch.tensor([1.0, 0.0, 2.0])
    w[1, :] = 1.0
    first, end = audio_features.trimmed_lengths(w)
    assert first.tolist() == [2, 0, 0] and end.tolist() == [5, 10, 1]
    y, lengths = audio_features.left_align(w, first, end)
    assert lengths.tolist() == [3, 10, 1] and y[0, :3].tolist() == [1.0, 0.0, 2.0] and not y[0, 3:].any()


def np_aisfx_blocks(clip: np.ndarray) -> np.ndarray:
    """aisfx's spectrogram blocks of one 44.1 kHz clip, in NumPy (framed rfft, periodic Hann)."""
    clip = clip[np.flatnonzero(clip)[0]:np.flatnonzero(clip)[-1] + 1] / np.abs(clip).max()
    clip = np.pad(clip, (0, max(0, aisfx.N_FFT // 2 + 1 - len(clip))))
    padded = np.pad(clip, aisfx.N_FFT // 2)
    n = 1 + len(clip) // aisfx.HOP
    window = np.hanning(aisfx.N_FFT + 1)[:-1]
    frames = np.stack([padded[i * aisfx.HOP:i * aisfx.HOP + aisfx.N_FFT] * window for i in range(n)])
    power = np.abs(np.fft.rfft(frames, axis=1)) ** 2
    spec = np.log10(power @ aisfx.mel_filterbank().numpy().T.astype(np.float64) * 1e4 + 1) / aisfx.SPEC_MAX
    from aisfx.preprocessing import blocking

    return blocking(spec, block_size=aisfx.BLOCK, hop_size=aisfx.BLOCK_HOP, drop_partial_block=True)


def test_aisfx_blocks_on_the_device_equal_a_per_clip_numpy_spectrogram(recordings):
    encoder = aisfx.AisfxEncoder.__new__(aisfx.AisfxEncoder)  # the preprocessing only, no weights needed
    encoder.seconds = 4.0
    pcms = [decode_audio(data, ext, AudioConfig(encoder="x", seconds=4.0), 44100) for ext, data in recordings]
    batch = encoder.prepare(encoder.preprocessor()(pcms))
    waves = clip_waves(PcmCollate(44100)(pcms), 44100, 4.0).numpy().astype(np.float64)
    for i, wave in enumerate(waves):
        ref = np_aisfx_blocks(wave)
        got = batch["blocks"][i][batch["mask"][i]].numpy()
        assert got.shape == ref.shape
        np.testing.assert_allclose(got, ref, atol=2e-4)
        assert not batch["blocks"][i][~batch["mask"][i]].any()


def test_whisper_features_on_the_device_equal_transformers_numpy_extractor(recordings):
    from transformers import WhisperFeatureExtractor

    fe = WhisperFeatureExtractor(feature_size=80, sampling_rate=16_000, hop_length=160, chunk_length=30, n_fft=400)
    encoder = whisper.WhisperEncoder.__new__(whisper.WhisperEncoder)  # the front end only
    encoder.seconds = 10.0
    pcms = [decode_audio(data, ext, AudioConfig(encoder="x"), 16000) for ext, data in recordings[:6]]
    mel = encoder.prepare(encoder.preprocessor()(pcms))["mel"].numpy()
    waves = clip_waves(PcmCollate(16000)(pcms), 16000, 10.0).numpy()
    for i, w in enumerate(waves):
        nz = np.flatnonzero(w)
        clip = np.pad(w[nz[0]:nz[-1] + 1], (0, 480_000 - (nz[-1] + 1 - nz[0])))
        ref = fe._np_extract_fbank_features(clip[None].astype(np.float32), "cpu")[0]
        np.testing.assert_allclose(mel[i], ref, atol=2e-4)


def _hf_reference(ext, waves: np.ndarray, key: str) -> np.ndarray:
    return np.stack([ext([w], sampling_rate=ext.sampling_rate, return_tensors="np")[key][0] for w in waves])


def test_ast_fbank_on_the_device_equals_the_extractor(recordings):
    from transformers import ASTFeatureExtractor

    ext = ASTFeatureExtractor(num_mel_bins=64, max_length=300)
    extract = device_extractor(ext)
    pcms = [decode_audio(data, e, AudioConfig(encoder="x", seconds=3.0), 16000) for e, data in recordings]
    waves = clip_waves(PcmCollate(16000)(pcms), 16000, 3.0)
    got = extract(waves)["input_values"].numpy()
    ref = _hf_reference(ext, waves.numpy(), "input_values")
    assert got.shape == ref.shape == (len(pcms), 300, 64)
    np.testing.assert_allclose(got, ref, atol=2e-3)  # log of float32 power against float64: < 0.05 % of the range


def test_wav2vec2_and_whisper_extractors_on_the_device(tiny_audio, recordings):
    from transformers import AutoFeatureExtractor, WhisperFeatureExtractor

    pcms = [decode_audio(data, e, AudioConfig(encoder="x", seconds=2.0), 16000) for e, data in recordings]
    waves = clip_waves(PcmCollate(16000)(pcms), 16000, 2.0)
    w2v = AutoFeatureExtractor.from_pretrained(tiny_audio)
    np.testing.assert_allclose(device_extractor(w2v)(waves)["input_values"].numpy(),
                               _hf_reference(w2v, waves.numpy(), "input_values"), atol=1e-4)
    wh = WhisperFeatureExtractor()
    np.testing.assert_allclose(device_extractor(wh)(waves)["input_features"].numpy(),
                               _hf_reference(wh, waves.numpy(), "input_features"), atol=2e-4)


def test_an_extractor_without_a_torch_version_stays_in_the_worker(recordings):
    from transformers import ASTFeatureExtractor

    from pipeline.encoders.hf import AudioPreprocessor, _audio_steps

    class OtherExtractor(ASTFeatureExtractor):  # a class hf_audio does not know
        pass

    ext = OtherExtractor(num_mel_bins=32, max_length=200)
    pre, on_device = _audio_steps(ext, 16000, 2.0)
    assert isinstance(pre, AudioPreprocessor) and on_device is None
    pcms = [decode_audio(data, e, AudioConfig(encoder="x", seconds=2.0), 16000) for e, data in recordings[:4]]
    waves = clip_waves(PcmCollate(16000)(pcms), 16000, 2.0).numpy()
    np.testing.assert_allclose(pre(pcms)["input_values"].numpy(), _hf_reference(ext, waves, "input_values"),
                               atol=1e-6)


def test_a_plain_array_is_pcm_at_the_encoders_rate():
    batch = PcmCollate(16000)([np.ones(100, np.float32), Pcm(np.ones(50, np.float32), 8000)])
    assert batch["pcm_rate"].tolist() == [16000, 8000] and batch["pcm_length"].tolist() == [100, 50]
    assert clip_waves(batch, 16000, 0.01).shape == (2, 160)


def test_the_batch_holds_the_clips_end_to_end_and_unpacks_to_zero_padded_rows():
    rng = np.random.default_rng(3)
    clips = [rng.standard_normal(n).astype(np.float32) for n in (7, 0, 12, 3)]
    batch = PcmCollate(16000)([Pcm(c, 16000) for c in clips])
    assert batch["pcm"].shape == (22,)  # no padding travels
    padded = np.zeros((4, 12), np.float32)
    for i, c in enumerate(clips):
        padded[i, :len(c)] = c
    np.testing.assert_array_equal(unpack(batch).numpy(), padded)
    np.testing.assert_array_equal(unpack(batch, torch.tensor([3, 0])).numpy(), padded[[3, 0], :7])
