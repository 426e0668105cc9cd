"""Video: PyAV, ``frames`` frames sampled uniformly, held to ``max_seconds`` while decoding."""

from __future__ import annotations

import io
from typing import Any

import numpy as np

from pipeline.ingest.decode.base import DecodeError


def decode_video(data: bytes, ext: str, cfg: Any) -> np.ndarray:
    """``cfg.frames`` frames sampled uniformly over the clip, uint8 (T, H, W, 3)."""
    import av

    try:
        with av.open(io.BytesIO(data)) as container:
            stream = container.streams.video[0]
            seconds = float(stream.duration * stream.time_base) if stream.duration else None
            if seconds is None and container.duration:
                seconds = container.duration / 1_000_000
            if seconds is not None and seconds > cfg.max_seconds:
                raise DecodeError("error", f"video: {seconds:.1f} s exceeds max_seconds={cfg.max_seconds}")
            if stream.width * stream.height > cfg.max_pixels:
                raise DecodeError("error", f"video: {stream.width}x{stream.height} exceeds max_pixels={cfg.max_pixels}")
            total = stream.frames or (int(seconds * float(stream.average_rate)) if seconds and stream.average_rate
                                      else 0)
            frames = _sample_frames(_within(container.decode(stream), cfg.max_seconds), total, cfg.frames)
    except DecodeError:
        raise
    except Exception as exc:
        raise DecodeError("corrupt", f"video: cannot decode: {exc}") from None
    if not frames:
        raise DecodeError("corrupt", "video: no frames")
    return np.stack(frames)


def _within(frames, max_seconds: float):
    """Decoded video frames, ending in an ``error`` status at the first frame past ``max_seconds``
    from the first: a clip whose header gives no duration is held to the limit while it decodes."""
    start = None
    for frame in frames:
        if frame.time is not None:
            start = frame.time if start is None else start
            if frame.time - start > max_seconds:
                raise DecodeError("error", f"video: longer than max_seconds={max_seconds} "
                                           f"(a frame at {frame.time - start:.1f} s)")
        yield frame


def _sample_frames(decoded, total: int, count: int) -> list[np.ndarray]:
    """``count`` frames spread uniformly over the clip, converting only the chosen ones.

    With a known frame count only the chosen frames are kept, so a long clip never sits in
    memory; if the container overstated the count, the last frame decoded stands in for the
    frames past the end. Without a count, every ``stride``-th frame is kept, the stride
    doubling whenever more than ``4 * count`` are held, and the frames nearest to a uniform
    spread are taken at the end (exactly the uniform ones for clips of up to ``4 * count`` frames).
    """
    if total <= 0:
        kept: list[tuple[int, np.ndarray]] = []
        stride, seen = 1, 0
        for i, frame in enumerate(decoded):
            seen = i + 1
            if i % stride == 0:
                kept.append((i, frame.to_ndarray(format="rgb24")))
                if len(kept) > 4 * count:
                    kept, stride = kept[::2], stride * 2
        if not kept:
            return []
        index = np.array([i for i, _ in kept])
        wanted = np.linspace(0, seen - 1, count).round().astype(int)
        return [kept[int(np.abs(index - w).argmin())][1] for w in wanted]
    wanted = np.linspace(0, total - 1, count).round().astype(int)
    want = set(wanted.tolist())
    picks: dict[int, np.ndarray] = {}
    last = None
    for i, frame in enumerate(decoded):
        if i in want:
            picks[i] = frame.to_ndarray(format="rgb24")
        last = frame
        if i >= wanted[-1]:
            break
    if last is None:
        return []
    tail = last.to_ndarray(format="rgb24") if len(picks) < len(want) else None
    return [picks.get(int(i), tail) for i in wanted]
