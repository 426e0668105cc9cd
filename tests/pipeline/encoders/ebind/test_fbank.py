"""ImageBind's audio preprocessing against a NumPy transcription of Kaldi's fbank (torchaudio's)."""

import math

import numpy as np

from pipeline.encoders.ebind.fbank import ImageBindAudioPreprocessor, clip_bounds, kaldi_fbank


def numpy_kaldi_fbank(wave: np.ndarray, rate=16000, bins=128) -> np.ndarray:
    """Frame by frame, as kaldi's compute-fbank-feats does it (float64)."""
    size, shift, padded = 400, 160, 512
    n_frames = 1 + (len(wave) - size) // shift
    n = np.arange(size)
    window = 0.5 - 0.5 * np.cos(2 * math.pi * n / (size - 1))
    mel = lambda f: 1127.0 * np.log(1.0 + f / 700.0)  # noqa: E731
    lo, hi = mel(20.0), mel(rate / 2)
    step = (hi - lo) / (bins + 1)
    fft_mel = mel(np.arange(padded // 2) * rate / padded)
    banks = np.zeros((bins, padded // 2 + 1))
    for b in range(bins):
        left, center, right = lo + b * step, lo + (b + 1) * step, lo + (b + 2) * step
        for k, m in enumerate(fft_mel):
            if left < m < right:
                banks[b, k] = (m - left) / (center - left) if m <= center else (right - m) / (right - center)
    out = np.zeros((n_frames, bins))
    for i in range(n_frames):
        frame = wave[i * shift:i * shift + size].astype(np.float64)
        frame = frame - frame.mean()
        emph = frame.copy()
        emph[1:] -= 0.97 * frame[:-1]
        emph[0] -= 0.97 * frame[0]
        spec = np.abs(np.fft.rfft(emph * window, n=padded)) ** 2
        out[i] = np.log(np.maximum(banks @ spec, np.finfo(np.float32).eps))
    return out


def test_fbank_matches_the_numpy_transcription():
    rng = np.random.default_rng(0)
    t = np.arange(16000 // 2) / 16000
    wave = (0.3 * np.sin(2 * math.pi * 440 * t) + 0.05 * rng.standard_normal(len(t))).astype(np.float32)
    import torch

    got = kaldi_fbank(torch.from_numpy(wave)).numpy()
    want = numpy_kaldi_fbank(wave)
    assert got.shape == want.shape == (1 + (len(wave) - 400) // 160, 128)
    assert np.allclose(got, want, atol=2e-3), np.abs(got - want).max()


def test_clip_bounds_spread_three_two_second_clips():
    assert clip_bounds(16000 * 10, 16000, 2.0, 3) == [(0, 32000), (64000, 96000), (128000, 160000)]
    assert clip_bounds(16000, 16000, 2.0, 3) == [(0, 32000)] * 3  # shorter than a clip: three times itself


def test_preprocessor_shapes_and_normalisation():
    pre = ImageBindAudioPreprocessor()
    rng = np.random.default_rng(1)
    out = pre([rng.standard_normal(16000 * 3).astype(np.float32), np.zeros(200, np.float32)])["input"]
    assert out.shape == (2, 3, 1, 128, 204)
    # the 2 s clips give 198 frames, then zero padding, normalised with ImageBind's mean and std
    assert np.allclose(out[0, 0, 0, :, 198:].numpy(), (0 + 4.268) / 9.138)
    clip = rng.standard_normal(16000 * 3).astype(np.float32)
    first = pre([clip])["input"][0, 0, 0, :, :198].numpy()
    want = (numpy_kaldi_fbank(clip[:32000] - clip[:32000].mean()).T + 4.268) / 9.138
    assert np.allclose(first, want, atol=1e-3)
