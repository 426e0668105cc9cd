"""``aisfx``: the pretrained sound-effects CNN of the ``aisfx`` package (audio, 512-d).

Weights: ``aisfx/models/checkpoint.pth`` (the ISMIR 2022 "X-Sequential-CE" model, loaded with
``torch.load(weights_only=False)``: it pickles ``(state_dict, ds_dict)``), network from
``aisfx/models/cnn2d.py`` (``CrossNet(EmbeddingNet('max', 3, 1, 64), ds_dict)``); only the
embedding net is kept. The package is installed without its dependencies, so librosa is
absent; the spectrogram is recomputed here with ``torch.stft`` and a mel filterbank built in
numpy. How it matches ``aisfx.inference`` + ``spectrogram_librosa.compute_spectrogram``
(librosa 0.9):

* audio resampled to 44,100 Hz (``SAMPLE_RATE``) on the encoder's device
  (:mod:`pipeline.encoders.audio_features`), then peak-normalised (``y / max|y|``);
* STFT: n_fft = win_length = 2048, hop 1024, periodic Hann window, centred with zero padding
  (librosa 0.9's ``pad_mode="constant"``), power 2;
* mel: 96 bands, 0-22,050 Hz, HTK mel scale, triangles normalised to unit sum (librosa
  ``norm=1`` = essentia's ``unit_sum``, what the ISMIR paper used);
* compression ``log10(10000 * mel + 1)``, then the package's "original" min-max
  normalisation (divide by 9.4578);
* time-major ``(frames, 96)`` spectrogram (the essentia layout the network was trained on),
  cut into blocks of 100 frames (about 2.3 s) with a hop of 50, the last partial block
  dropped (aisfx's defaults); each block gives a 512-d embedding.

bindery pools a clip to one vector: the mean of its blocks' embeddings. Audio longer than
``[modalities.audio] seconds`` is centre-cropped to it first, and leading/trailing exact zeros (the
centred padding of short clips to ``seconds``) are trimmed so padding does not dilute the mean.
Everything after the decode runs batched in :meth:`AisfxEncoder.prepare` on the encoder's device.
"""

from __future__ import annotations

import logging
import math
from collections.abc import Callable
from functools import lru_cache
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F

from pipeline.encoders.audio_features import PcmCollate, clip_waves, left_align, trimmed_lengths
from pipeline.encoders.base import Batch, Encoder, EncoderError, package_folder

log = logging.getLogger(__name__)

SAMPLE_RATE = 44_100
N_FFT, HOP = 2048, 1024
N_MELS, F_MIN, F_MAX = 96, 0.0, 22_050.0
SPEC_MAX = 9.457798957824707  # aisfx.preprocessing.spectrogram_normalize('original')
BLOCK, BLOCK_HOP = 100, 50  # EMB_BLOCK_LENGTH and its 0.5 hop multiplier
DIM = 512


def hz_to_mel(f: np.ndarray, htk: bool) -> np.ndarray:
    """librosa.hz_to_mel: the HTK formula, or Slaney's (linear below 1 kHz, log above)."""
    f = np.asarray(f, dtype=np.float64)
    if htk:
        return 2595.0 * np.log10(1.0 + f / 700.0)
    linear = f / (200.0 / 3)
    logstep = np.log(6.4) / 27.0
    return np.where(f >= 1000.0, 15.0 + np.log(np.maximum(f, 1e-10) / 1000.0) / logstep, linear)


def mel_to_hz(m: np.ndarray, htk: bool) -> np.ndarray:
    m = np.asarray(m, dtype=np.float64)
    if htk:
        return 700.0 * (10.0 ** (m / 2595.0) - 1.0)
    logstep = np.log(6.4) / 27.0
    return np.where(m >= 15.0, 1000.0 * np.exp(logstep * (m - 15.0)), m * (200.0 / 3))


@lru_cache(maxsize=4)
def mel_filterbank(sr: int = SAMPLE_RATE, n_fft: int = N_FFT, n_mels: int = N_MELS,
                   fmin: float = F_MIN, fmax: float = F_MAX, htk: bool = True,
                   norm: str = "unit_sum") -> torch.Tensor:
    """(n_mels, 1 + n_fft // 2) mel triangles as librosa.filters.mel builds them.

    aisfx: ``htk=True, norm="unit_sum"`` (librosa ``norm=1``: each row sums to 1);
    Whisper: ``htk=False, norm="slaney"`` (librosa's defaults: constant energy per band)."""
    fft_freqs = np.linspace(0, sr / 2, 1 + n_fft // 2)
    mel_f = mel_to_hz(np.linspace(hz_to_mel(fmin, htk), hz_to_mel(fmax, htk), n_mels + 2), htk)
    fdiff = np.diff(mel_f)
    ramps = mel_f[:, None] - fft_freqs[None, :]
    lower = -ramps[:-2] / fdiff[:-1, None]
    upper = ramps[2:] / fdiff[1:, None]
    weights = np.maximum(0.0, np.minimum(lower, upper))
    if norm == "slaney":
        weights *= (2.0 / (mel_f[2:n_mels + 2] - mel_f[:n_mels]))[:, None]
    else:
        weights /= np.maximum(weights.sum(axis=1, keepdims=True), np.finfo(np.float64).tiny)
    return torch.from_numpy(weights.astype(np.float32))


def spectrograms(y: torch.Tensor, lengths: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Rows of mono 44.1 kHz audio (B, L), row i holding ``lengths[i]`` samples from its start ->
    (B, frames, 96) normalised log-mel spectrograms (frames past a row's own are zero) and each
    row's frame count. Batched on ``y``'s device; each row as a clip of its own would give."""
    peak = y.abs().amax(dim=1, keepdim=True)
    y = y / torch.where(peak > 0, peak, torch.ones_like(peak))
    lengths = lengths.clamp(min=N_FFT // 2 + 1)  # centred STFT needs pad < length
    if y.shape[1] < int(lengths.max()):
        y = F.pad(y, (0, int(lengths.max()) - y.shape[1]))
    stft = torch.stft(y, N_FFT, hop_length=HOP, win_length=N_FFT, window=torch.hann_window(N_FFT, device=y.device),
                      center=True, pad_mode="constant", return_complex=True)
    power = stft.abs() ** 2  # (B, 1 + n_fft // 2, frames)
    mel = mel_filterbank().to(y.device) @ power
    spec = (torch.log10(mel * 10000.0 + 1.0) / SPEC_MAX).transpose(1, 2)
    frames = 1 + lengths // HOP
    keep = torch.arange(spec.shape[1], device=y.device)[None] < frames[:, None]
    return spec * keep[..., None], frames


def spectrogram(audio: np.ndarray) -> torch.Tensor:
    """One clip of mono float audio at 44.1 kHz -> (frames, 96) normalised log-mel spectrogram."""
    y = torch.as_tensor(np.asarray(audio, dtype=np.float32)).reshape(1, -1)
    spec, frames = spectrograms(y, torch.tensor([y.shape[1]]))
    return spec[0, :int(frames[0])].contiguous()


def block_count(frames: int) -> int:
    """Blocks of a spectrogram of ``frames`` frames, as aisfx.preprocessing.blocking(drop_partial_block=True)."""
    n = math.ceil((frames - BLOCK) / BLOCK_HOP + 1)
    if (frames - BLOCK) % BLOCK_HOP != 0:
        n -= 1
    return max(n, 1)


def block_batch(spec: torch.Tensor, frames: torch.Tensor) -> Batch:
    """(B, T, 96) spectrograms with each row's frame count -> {"blocks": (B, most, 100, 96), "mask": (B, most)}."""
    counts = torch.tensor([block_count(int(f)) for f in frames.tolist()], device=spec.device)
    most = int(counts.max())
    need = (most - 1) * BLOCK_HOP + BLOCK
    if spec.shape[1] < need:  # blocks past a short spectrogram's end read zeros, as aisfx's padding does
        spec = F.pad(spec, (0, 0, 0, need - spec.shape[1]))
    blocks = spec[:, :need].unfold(1, BLOCK, BLOCK_HOP).transpose(2, 3)  # (B, most, 100, 96)
    mask = torch.arange(most, device=spec.device)[None] < counts[:, None]
    return {"blocks": blocks * mask[:, :, None, None], "mask": mask}


def blocks(spec: torch.Tensor) -> torch.Tensor:
    """(frames, 96) -> (n_blocks, 100, 96), as aisfx.preprocessing.blocking(drop_partial_block=True)."""
    out = block_batch(spec[None], torch.tensor([spec.shape[0]]))
    return out["blocks"][0, out["mask"][0]]


def checkpoint_path() -> Path:
    return package_folder("aisfx", "aisfx", "aisfx") / "models" / "checkpoint.pth"


def load_embedding_net() -> torch.nn.Module:
    """aisfx's EmbeddingNet with the pretrained weights (the classifier heads are dropped)."""
    from aisfx.models.cnn2d import CrossNet, EmbeddingNet

    weights, ds_dict = torch.load(checkpoint_path(), map_location="cpu", weights_only=False)
    model = CrossNet(EmbeddingNet("max", 3, 1, 64), ds_dict, "cpu")
    model.load_state_dict(weights)
    return model.embedding_net.eval().requires_grad_(False)


class AisfxEncoder(Encoder):
    dim = DIM
    takes_pcm = True
    sample_rate = SAMPLE_RATE

    def __init__(self, modality: str = "audio", name: str = "aisfx", seconds: float = 10.0) -> None:
        self.modality, self.name, self.seconds = modality, name, seconds
        self.net = load_embedding_net()

    def preprocessor(self) -> Callable[[list[Any]], Batch]:
        return PcmCollate(SAMPLE_RATE)

    def prepare(self, batch: Batch) -> Batch:
        """PCM -> 44.1 kHz clips of ``seconds``, their zero padding trimmed -> spectrogram blocks, batched."""
        waves = clip_waves(batch, SAMPLE_RATE, self.seconds)
        y, lengths = left_align(waves, *trimmed_lengths(waves))
        return block_batch(*spectrograms(y, lengths))

    @torch.no_grad()
    def encode(self, batch: Batch) -> torch.Tensor:
        x, mask = batch["blocks"], batch["mask"]
        b, n = mask.shape
        emb = self.net(x.reshape(b * n, BLOCK, N_MELS)).reshape(b, n, DIM)
        m = mask.unsqueeze(-1).to(emb.dtype)
        return (emb * m).sum(1) / m.sum(1).clamp(min=1.0)

    def modules(self) -> list[torch.nn.Module]:
        return [self.net]

    def provenance(self) -> dict[str, Any]:
        return {"weights": "aisfx 0.1.2 checkpoint.pth (X-Sequential-CE)", "sample_rate": SAMPLE_RATE,
                "n_fft": N_FFT, "hop": HOP, "n_mels": N_MELS, "mel": "htk, unit-sum", "fmax": F_MAX,
                "compression": "log10(10000*x+1)/9.4578", "block_frames": BLOCK, "block_hop": BLOCK_HOP,
                "pooling": "mean of block embeddings", "seconds": self.seconds}


def build(modality: str, config: Any) -> Encoder:
    if modality != "audio":
        raise EncoderError(f"aisfx encodes audio, not {modality!r}")
    return AisfxEncoder(modality, getattr(config, "encoder", "aisfx"), float(getattr(config, "seconds", 10.0)))
