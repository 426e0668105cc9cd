"""transformers audio feature extractors re-expressed as batched torch ops on the encoder's device.

:data:`TORCH_EXTRACTORS` maps an extractor's class (its exact name, never a model name) to a
builder of :class:`DeviceExtractor`: a callable from clips (B, n) at the extractor's rate to the
model's inputs, equal within float32 error to what the extractor's NumPy code gives for the same
clips, clip by clip (the tests check each against the extractor itself):

* ``ASTFeatureExtractor`` -- Kaldi-style fbank as its NumPy path computes it (25 ms Hann frames
  every 10 ms without centring, DC removed, pre-emphasis 0.97, |rfft(512)|^2, the extractor's
  Kaldi mel bank, ``log(max(x, eps))``), cut or zero-padded to ``max_length`` frames, then
  ``(x - mean) / (2 * std)``;
* ``WhisperFeatureExtractor`` -- zero-padded to ``n_samples``, centred reflect-padded STFT, the
  last frame dropped, the extractor's mel bank, ``log10`` clamped at 1e-10 and at each clip's max
  - 8, ``(x + 4) / 4``;
* ``Wav2Vec2FeatureExtractor`` -- raw samples, zero-mean unit-variance per clip when ``do_normalize``,
  and an all-ones ``attention_mask`` when the extractor returns one (every clip has ``n`` samples).

Any other extractor stays in the worker (:class:`pipeline.encoders.hf.AudioPreprocessor`).
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import numpy as np
import torch

from pipeline.encoders.base import Batch

DeviceExtractor = Callable[[torch.Tensor], Batch]


def _ast(ext: Any) -> DeviceExtractor:
    from transformers.audio_utils import mel_filter_bank, window_function

    # the filter bank and window the extractor's NumPy path builds (it keeps none when torchaudio is there)
    mel = torch.from_numpy(mel_filter_bank(num_frequency_bins=257, num_mel_filters=ext.num_mel_bins, min_frequency=20,
                                           max_frequency=ext.sampling_rate // 2, sampling_rate=ext.sampling_rate,
                                           norm=None, mel_scale="kaldi", triangularize_in_mel_space=True)).float()
    window = torch.from_numpy(window_function(400, "hann", periodic=False)).float()
    floor, max_length = 1.192092955078125e-07, int(ext.max_length)
    mean, std, normalize = float(ext.mean), float(ext.std), bool(ext.do_normalize)

    def extract(waves: torch.Tensor) -> Batch:
        frames = waves.unfold(1, 400, 160)  # (B, T, 400): center=False, hop 10 ms
        frames = frames - frames.mean(dim=-1, keepdim=True)
        frames = torch.cat([frames[..., :1] * (1 - 0.97), frames[..., 1:] - 0.97 * frames[..., :-1]], dim=-1)
        power = torch.fft.rfft(frames * window.to(waves.device), n=512).abs() ** 2  # (B, T, 257)
        fbank = (power @ mel.to(waves.device)).clamp(min=floor).log()  # (B, T, mel)
        t = fbank.shape[1]
        fbank = fbank[:, :max_length] if t >= max_length else torch.nn.functional.pad(fbank, (0, 0, 0, max_length - t))
        return {"input_values": (fbank - mean) / (std * 2) if normalize else fbank}

    return extract


def _whisper(ext: Any) -> DeviceExtractor:
    mel = torch.from_numpy(np.asarray(ext.mel_filters, dtype=np.float32))  # (n_fft // 2 + 1, n_mels)
    n_fft, hop, n_samples = int(ext.n_fft), int(ext.hop_length), int(ext.n_samples)

    def extract(waves: torch.Tensor) -> Batch:
        y = torch.nn.functional.pad(waves[:, :n_samples], (0, max(0, n_samples - waves.shape[1])))
        stft = torch.stft(y, n_fft, hop, window=torch.hann_window(n_fft, device=y.device), return_complex=True)
        log_spec = (mel.T.to(y.device) @ (stft[..., :-1].abs() ** 2)).clamp(min=1e-10).log10()
        log_spec = torch.maximum(log_spec, log_spec.amax(dim=(1, 2), keepdim=True) - 8.0)
        return {"input_features": (log_spec + 4.0) / 4.0}

    return extract


def _wav2vec2(ext: Any) -> DeviceExtractor:
    normalize, mask = bool(ext.do_normalize), bool(ext.return_attention_mask)

    def extract(waves: torch.Tensor) -> Batch:
        x = waves
        if normalize:
            x = (x - x.mean(dim=1, keepdim=True)) / torch.sqrt(x.var(dim=1, unbiased=False, keepdim=True) + 1e-7)
        out = {"input_values": x}
        if mask:
            out["attention_mask"] = torch.ones(x.shape, dtype=torch.int32, device=x.device)
        return out

    return extract


TORCH_EXTRACTORS: dict[str, Callable[[Any], DeviceExtractor]] = {
    "ASTFeatureExtractor": _ast,
    "WhisperFeatureExtractor": _whisper,
    "Wav2Vec2FeatureExtractor": _wav2vec2,
}


def device_extractor(ext: Any) -> DeviceExtractor | None:
    """The torch version of ``ext`` (a transformers feature extractor), or None when there is none."""
    build = TORCH_EXTRACTORS.get(type(ext).__name__)
    if build is None or getattr(ext, "dither", 0.0):
        return None
    return build(ext)
