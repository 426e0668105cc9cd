"""ImageBind's audio preprocessing in torch (its ``data.py`` needs torchaudio and torchvision).

For each recording (mono float32 at 16 kHz):

1. clips: ``clips_per_video = 3`` windows of ``clip_duration = 2`` s whose starts are evenly
   spaced over the recording (pytorchvideo's ``ConstantClipsPerVideoSampler``: start ``i * max(d - 2, 0) / 2``
   in exact fractions; a recording shorter than 2 s gives three copies of itself);
2. per clip: subtract its mean, then Kaldi's log mel filterbank as
   ``torchaudio.compliance.kaldi.fbank(htk_compat=True, use_energy=False, window_type="hanning",
   num_mel_bins=128, dither=0, frame_length=25, frame_shift=10)``;
3. transpose to ``(128, frames)``, zero-pad or cut to ``target_length = 204`` frames;
4. ImageBind's normalisation ``(x - (-4.268)) / 9.138``.

The result per recording is ``(3, 1, 128, 204)``. :func:`kaldi_fbank` follows Kaldi /
torchaudio step by step: frames of 400 samples every 160 (``snip_edges``), DC offset removed,
pre-emphasis 0.97 (the first sample against itself), a symmetric Hann window, zero-padded to
512, power spectrum, 128 triangular filters on Kaldi's mel scale ``1127 ln(1 + f / 700)``
from 20 Hz to Nyquist, ``log(max(energy, eps))``.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from fractions import Fraction

import numpy as np
import torch

MEL_MEAN, MEL_STD = -4.268, 9.138


def _mel(f: torch.Tensor | float):
    return 1127.0 * (torch.log1p(f / 700.0) if isinstance(f, torch.Tensor) else math.log1p(f / 700.0))


def mel_banks(num_bins: int, padded: int, rate: float, low: float = 20.0, high: float = 0.0) -> torch.Tensor:
    """Kaldi's triangular mel filters, (num_bins, padded // 2 + 1) with a zero last column (as torchaudio)."""
    nyquist = 0.5 * rate
    high = high if high > 0 else nyquist + high
    fft_bins = padded // 2
    mel_low, mel_high = _mel(low), _mel(high)
    delta = (mel_high - mel_low) / (num_bins + 1)
    b = torch.arange(num_bins, dtype=torch.float32).unsqueeze(1)
    left, center, right = mel_low + b * delta, mel_low + (b + 1) * delta, mel_low + (b + 2) * delta
    mel = _mel(rate / padded * torch.arange(fft_bins, dtype=torch.float32)).unsqueeze(0)
    up, down = (mel - left) / (center - left), (right - mel) / (right - center)
    banks = torch.clamp(torch.minimum(up, down), min=0.0)
    return torch.nn.functional.pad(banks, (0, 1))


def kaldi_fbank(wave: torch.Tensor, rate: int = 16000, num_bins: int = 128, frame_ms: float = 25.0,
                shift_ms: float = 10.0, preemphasis: float = 0.97) -> torch.Tensor:
    """(frames, num_bins) log mel energies of a 1-D waveform (see the module docstring)."""
    size, shift = int(rate * frame_ms / 1000), int(rate * shift_ms / 1000)
    if wave.numel() < size:
        return torch.zeros(0, num_bins)
    frames = wave.float().unfold(0, size, shift)  # snip_edges: only whole frames
    frames = frames - frames.mean(dim=1, keepdim=True)
    previous = torch.cat([frames[:, :1], frames[:, :-1]], dim=1)
    frames = (frames - preemphasis * previous) * torch.hann_window(size, periodic=False)
    padded = 1 << (size - 1).bit_length()
    power = torch.fft.rfft(frames, n=padded).abs().pow(2.0)
    energies = power @ mel_banks(num_bins, padded, float(rate)).T
    return torch.log(torch.clamp(energies, min=torch.finfo(torch.float32).eps))


def clip_bounds(samples: int, rate: int, clip_seconds: float, clips: int) -> list[tuple[int, int]]:
    """Sample ranges of the clips (``ConstantClipsPerVideoSampler``, exact fractions as pytorchvideo)."""
    duration, length = samples / rate, Fraction(clip_seconds)
    max_start = Fraction(max(duration - length, 0))
    step = Fraction(max_start, max(clips - 1, 1))
    return [(int(step * i * rate), int((step * i + length) * rate)) for i in range(clips)]


@dataclass(frozen=True)
class ImageBindAudioPreprocessor:
    """Picklable: a list of mono 16 kHz recordings -> ``{"input": (B, clips, 1, bins, target_length)}``."""

    rate: int = 16000
    num_bins: int = 128
    target_length: int = 204
    clip_seconds: float = 2.0
    clips: int = 3

    def clip_features(self, wave: np.ndarray) -> torch.Tensor:
        x = torch.from_numpy(np.ascontiguousarray(wave, dtype=np.float32))
        out = []
        for start, end in clip_bounds(len(x), self.rate, self.clip_seconds, self.clips):
            clip = x[start:end]
            fbank = kaldi_fbank(clip - clip.mean(), self.rate, self.num_bins).T  # (bins, frames)
            gap = self.target_length - fbank.shape[1]
            fbank = torch.nn.functional.pad(fbank, (0, gap)) if gap > 0 else fbank[:, :self.target_length]
            out.append(((fbank - MEL_MEAN) / MEL_STD).unsqueeze(0))
        return torch.stack(out)

    def __call__(self, waves: list[np.ndarray]) -> dict[str, torch.Tensor]:
        return {"input": torch.stack([self.clip_features(w) for w in waves])}
