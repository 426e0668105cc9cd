"""Audio: mono float32 PCM at the source's rate, centre-cropped to ``seconds``; only that window is decoded.

Resampling, the centre crop inside the window and the padding run batched on the encoder's
device (:mod:`pipeline.encoders.audio_features`); the worker hands over :class:`Pcm`.

Bounded before it allocates: the length (frames at the source rate) is known before any
sample is kept, from the soundfile header or, for what soundfile cannot read or a header that
does not say (streamed FLAC records 0 samples), from a pass over the packets that decodes
nothing. The centre window of ``seconds`` (plus the resampling filter's margin) is then the
only part decoded and kept (in one read when mono or small, else block by block, each block
down-mixed to mono at once); its size in ``frames x channels`` at the source rate must fit
:data:`MAX_WINDOW_SAMPLES`. So neither a 1 Hz WAV nor a 30-minute 8-channel FLAC is ever
decoded, resampled or held whole.
"""

from __future__ import annotations

import io
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

import numpy as np

from pipeline.encoders.base import Pcm
from pipeline.ingest.decode.base import DecodeError
from pipeline.ingest.decode.flac import read_flac_window

MAX_WINDOW_SAMPLES = 1 << 25  # frames x channels decoded for one clip at the source rate (128 MB as float32)
BLOCK_FRAMES = 1 << 16  # frames per soundfile read
ONE_READ_SAMPLES = 1 << 22  # a multi-channel window up to this many samples (16 MB float32) is read at once
FILTER_TAPS = 32  # half-width of the low-pass kernel, in source samples
UNKNOWN_FRAMES = 1 << 62  # libsndfile reports SF_COUNT_MAX frames when a header does not say


@dataclass(frozen=True)
class Window:
    """Source frames ``[start, stop)`` to decode, of which ``[keep, keep + frames)`` is the clip."""

    start: int
    stop: int
    keep: int
    frames: int
    cropped: bool


def plan_window(total: int, rate: int, channels: int, cfg: Any, target: int) -> Window:
    """The centre ``cfg.seconds`` of ``total`` frames, with the margin the resampler reads around it."""
    if rate <= 0 or channels <= 0:
        raise DecodeError("corrupt", f"audio: header gives {rate} Hz and {channels} channels")
    if total / rate > cfg.max_seconds:
        raise DecodeError("error", f"audio: {total / rate:.1f} s exceeds max_seconds={cfg.max_seconds}")
    want = max(1, round(cfg.seconds * rate))
    margin = FILTER_TAPS + 1 if target < rate else 2
    if total > want:
        centre = (total - want) // 2
        start, stop = max(0, centre - margin), min(total, centre + want + margin)
        window = Window(start, stop, centre - start, want, True)
    else:
        window = Window(0, total, 0, total, False)
    size = (window.stop - window.start) * channels
    if size > MAX_WINDOW_SAMPLES:
        raise DecodeError("error", f"audio: the kept window is {window.stop - window.start} frames x {channels} "
                                   f"channels at {rate} Hz = {size} samples, over the decoder's budget of "
                                   f"{MAX_WINDOW_SAMPLES}; lower modalities.audio.seconds")
    return window


def _keep(blocks: Iterator[np.ndarray], first: int, start: int, stop: int) -> np.ndarray:
    """The samples ``[start, stop)`` of consecutive mono blocks, the first block starting at ``first``."""
    out, pos = [], first
    for mono in blocks:
        lo, hi = max(start, pos), min(stop, pos + len(mono))
        if lo < hi:
            out.append(mono[lo - pos:hi - pos])
        pos += len(mono)
        if pos >= stop:
            break
    return np.concatenate(out).astype(np.float32) if out else np.zeros(0, np.float32)


def _soundfile(data: bytes):
    """An open soundfile with a known length, or None (not a soundfile format, or no length)."""
    import soundfile as sf

    try:
        f = sf.SoundFile(io.BytesIO(data))
    except Exception:
        return None
    if not 0 < f.frames < UNKNOWN_FRAMES:
        f.close()
        return None
    return f


def _soundfile_window(f, cfg: Any, target: int) -> tuple[np.ndarray, Window, int]:
    window = plan_window(f.frames, f.samplerate, f.channels, cfg, target)
    if window.start:  # a file just opened is at frame 0: seeking there costs a decoder reset
        f.seek(window.start)
    frames = window.stop - window.start
    if f.channels == 1:  # mono: the window in one read, straight into float32 (no mix-down to do)
        return f.read(frames, dtype="float32"), window, f.samplerate
    if frames * f.channels <= ONE_READ_SAMPLES:  # a small window: one read, one mix-down (the same sums)
        mono = f.read(frames, dtype="float32", always_2d=True).mean(axis=1, dtype=np.float64)
        return mono.astype(np.float32), window, f.samplerate
    blocks = (b.mean(axis=1, dtype=np.float64) for b in
              f.blocks(blocksize=BLOCK_FRAMES, frames=frames, dtype="float32", always_2d=True))
    return _keep(blocks, window.start, window.start, window.stop), window, f.samplerate


def _pyav_length(data: bytes, max_seconds: float) -> tuple[int, int, int]:
    """(rate, channels, frames) from the packets' durations, decoding only when a packet has none;
    an ``error`` status as soon as the count passes ``max_seconds``."""
    import av

    with av.open(io.BytesIO(data)) as container:
        stream = container.streams.audio[0]
        ctx = stream.codec_context
        rate, channels = ctx.sample_rate, ctx.layout.nb_channels
        total, exact = 0, True
        for packet in container.demux(stream):
            if packet.size and not packet.duration:
                exact = False
                break
            total += round(float((packet.duration or 0) * stream.time_base) * rate)
            if rate and total > max_seconds * rate:
                raise DecodeError("error", f"audio: longer than max_seconds={max_seconds} ({total / rate:.1f} s "
                                           "counted before decoding)")
    if exact:
        return rate, channels, total
    total = 0
    for mono in _pyav_blocks(data):
        total += len(mono)
        if rate and total > max_seconds * rate:
            raise DecodeError("error", f"audio: longer than max_seconds={max_seconds} ({total / rate:.1f} s decoded)")
    return rate, channels, total


def _pyav_blocks(data: bytes) -> Iterator[np.ndarray]:
    """Mono float64 blocks, one per decoded frame, converted to interleaved float by libswresample
    (interleaved: PyAV's planar to_ndarray crashes on some many-channel frames)."""
    import av

    with av.open(io.BytesIO(data)) as container:
        stream = container.streams.audio[0]
        packed = av.AudioResampler(format="flt")
        for frame in container.decode(stream):
            for f in packed.resample(frame):
                channels = f.layout.nb_channels
                yield f.to_ndarray().reshape(-1, channels).mean(axis=1, dtype=np.float64)


def _pyav_window(data: bytes, cfg: Any, target: int) -> tuple[np.ndarray, Window, int]:
    rate, channels, total = _pyav_length(data, cfg.max_seconds)
    window = plan_window(total, rate, channels, cfg, target)
    return _keep(_pyav_blocks(data), 0, window.start, window.stop), window, rate


def _read_window(data: bytes, cfg: Any, target: int) -> tuple[np.ndarray, Window, int]:
    """FLAC through libFLAC 1.4 where it is there (:mod:`pipeline.ingest.decode.flac`), else soundfile,
    else PyAV."""
    f = None
    try:
        native = read_flac_window(data, lambda total, rate, channels: plan_window(total, rate, channels, cfg, target))
        if native is not None:  # None: not FLAC, or not a FLAC the libFLAC path takes
            return native
        f = _soundfile(data)
        mono, window, rate = _soundfile_window(f, cfg, target) if f is not None else _pyav_window(data, cfg, target)
    except DecodeError:
        raise
    except Exception as exc:
        raise DecodeError("corrupt", f"audio: cannot decode: {type(exc).__name__}: {exc}") from None
    finally:
        if f is not None:
            f.close()
    if not np.isfinite(mono).all():  # float sources only: PCM from libFLAC's integers is finite by construction
        raise DecodeError("corrupt", "audio: non-finite samples")
    return mono, window, rate


def decode_audio(data: bytes, ext: str, cfg: Any, sample_rate: int) -> Pcm:
    """Mono float32 PCM at the source's rate: the centre ``cfg.seconds`` of a longer recording with the
    resampling filter's margin around it (``keep`` says where the clip starts), all of a shorter one.
    ``sample_rate`` (the encoder's) sizes the margin; it is applied on the device."""
    mono, window, rate = _read_window(data, cfg, sample_rate)
    if mono.size == 0:
        raise DecodeError("corrupt", "audio: no samples")
    return Pcm(np.ascontiguousarray(mono, dtype=np.float32), int(rate), window.keep, window.cropped)
