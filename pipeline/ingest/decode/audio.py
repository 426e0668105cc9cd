"""Audio: soundfile or PyAV to mono float32 at the encoder's rate, centre-cropped to ``seconds``."""

from __future__ import annotations

import io
from typing import Any

import numpy as np

from pipeline.ingest.decode.base import DecodeError


def _read_audio(data: bytes, max_seconds: float) -> tuple[np.ndarray, int]:
    """(samples, channels) float32 and the rate; soundfile first, PyAV for what it cannot read.
    PyAV decoding stops with an ``error`` status once past ``max_seconds`` (its header may not say)."""
    import soundfile as sf

    try:
        wav, rate = sf.read(io.BytesIO(data), dtype="float32", always_2d=True)
        return wav, rate
    except Exception:
        pass
    import av

    with av.open(io.BytesIO(data)) as container:
        stream = container.streams.audio[0]
        rate = stream.rate
        chunks, samples = [], 0
        for frame in container.decode(stream):
            samples += frame.samples
            if samples > max_seconds * rate:
                raise DecodeError("error", f"audio: longer than max_seconds={max_seconds} "
                                           f"({samples / rate:.1f} s decoded)")
            chunks.append(frame.to_ndarray().astype(np.float32))
    if not chunks:
        raise ValueError("no audio frames")
    planar = [c if c.ndim == 2 else c[None] for c in chunks]
    wav = np.concatenate(planar, axis=1)  # (channels, samples) for planar formats
    return wav.T, rate


def resample(wav: np.ndarray, rate: int, target: int) -> np.ndarray:
    """Band-limited (windowed-sinc) resampling of a mono signal."""
    if rate == target or len(wav) == 0:
        return wav
    import torch
    import torch.nn.functional as F

    n_out = int(round(len(wav) * target / rate))
    x = torch.from_numpy(np.ascontiguousarray(wav, dtype=np.float32))
    if target < rate:  # low-pass at the new Nyquist before interpolating
        cutoff = target / rate
        taps = 32
        t = torch.arange(-taps, taps + 1, dtype=torch.float32)
        kernel = cutoff * torch.sinc(cutoff * t) * torch.hann_window(2 * taps + 1, periodic=False)
        x = F.conv1d(x[None, None], (kernel / kernel.sum())[None, None], padding=taps)[0, 0]
    y = F.interpolate(x[None, None], size=n_out, mode="linear", align_corners=False)[0, 0]
    return y.numpy()


def decode_audio(data: bytes, ext: str, cfg: Any, sample_rate: int) -> np.ndarray:
    """Mono float32 at ``sample_rate``, centre-cropped or zero-padded to ``cfg.seconds``."""
    try:
        import soundfile as sf

        info = sf.info(io.BytesIO(data))  # header only: an over-long recording is never decoded
        if info.duration > cfg.max_seconds:
            raise DecodeError("error", f"audio: {info.duration:.1f} s exceeds max_seconds={cfg.max_seconds}")
    except DecodeError:
        raise
    except Exception:
        pass  # not a soundfile format (mp3/m4a on old libsndfile, ...): PyAV decodes it below
    try:
        wav, rate = _read_audio(data, cfg.max_seconds)
    except DecodeError:
        raise
    except Exception as exc:
        raise DecodeError("corrupt", f"audio: cannot decode: {exc}") from None
    if wav.size == 0:
        raise DecodeError("corrupt", "audio: no samples")
    if len(wav) / rate > cfg.max_seconds:
        raise DecodeError("error", f"audio: {len(wav) / rate:.1f} s exceeds max_seconds={cfg.max_seconds}")
    mono = wav.mean(axis=1)
    mono = resample(mono, rate, sample_rate)
    n = int(round(cfg.seconds * sample_rate))
    if len(mono) > n:
        start = (len(mono) - n) // 2
        mono = mono[start:start + n]
    elif len(mono) < n:
        pad = n - len(mono)
        mono = np.pad(mono, (pad // 2, pad - pad // 2))
    return np.ascontiguousarray(mono, dtype=np.float32)
