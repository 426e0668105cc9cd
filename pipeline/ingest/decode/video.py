"""Video: PyAV, ``frames`` frames sampled uniformly, held to ``max_seconds`` while decoding.

Decoding is what a clip costs; demuxing its packets is cheap. So the stream is demuxed once
(each packet gives its presentation timestamp and whether it is a keyframe), the frames to
sample are chosen by presentation order (B-frames make it differ from decode order), and only
the packets that lead to them are decoded: for each chosen frame, from the last keyframe at or
before it up to it. When that keyframe is not past what is already decoded, decoding goes on
(no jump), so a short GOP decodes a few frames per chosen frame and a single-keyframe clip
decodes no more than a sequential decode would. On the way, a frame that is neither chosen nor
a reference of another (a non-reference B-frame of H.264, a B-VOP of MPEG-4, a VP8 frame that
updates no reference) is skipped (``skip_frame = NONREF``): nothing else is predicted from it.
The frames are the same as a sequential decode's, bit for bit.
"""

from __future__ import annotations

import bisect
import io
from typing import Any

import numpy as np

from pipeline.ingest.decode.base import DecodeError

# decoders whose NONREF skip drops only frames nothing refers to (HEVC's "sub-layer non-reference"
# pictures can still be referenced from a higher temporal layer: not skipped)
SKIPS_NONREF = frozenset({"h264", "mpeg4", "vp8"})


def decode_video(data: bytes, ext: str, cfg: Any) -> np.ndarray:
    """``cfg.frames`` frames sampled uniformly over the clip, uint8 (T, H, W, 3)."""
    return _decode(data, cfg)[0]


def _decode(data: bytes, cfg: Any, seek: bool = True) -> tuple[np.ndarray, int]:
    """The sampled frames and how many frames the decoder produced to get them.

    ``seek=False`` decodes sequentially from the first packet (the reference the seek path is
    held to, and the fallback for a stream whose packets give no usable timestamps).

    Why decoding a subset of the demuxed packets rather than ``container.seek``: after the one
    demux the packets are in memory, so a jump to a keyframe is a list index and
    ``flush_buffers()``, exact whatever the container's index says (a WebM written to a pipe has
    no cues to seek by), with no second read of the container. Measured (30 s 320x240 H.264,
    GOP 30 / 250, 8 frames, without the NONREF skip so that both decode the same frames):
    18.5 / 52.8 ms against 19.1 / 55.7 ms for ``container.seek(..., backward=True,
    any_frame=False)`` on the keyframe; with the skip 16.5 / 33.6 ms; sequential 86-129 ms.
    """
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
            ctx = stream.codec_context
            if not seek:
                counted = _Counted(container.decode(stream))
                frames = _sample_frames(_within(counted, cfg.max_seconds), total, cfg.frames)
                return _stacked(frames), counted.n
            packets = _demux(container, stream, cfg.max_seconds)
            order = _presentation(packets)
            frames, n = (None, 0) if order is None else _decode_chosen(
                ctx, packets, order, _chosen(total, len(order), cfg.frames))
            if frames is None:  # timestamps unusable or a chosen frame never came out: decode it all
                ctx.flush_buffers()
                counted = _Counted(f for packet in packets for f in ctx.decode(packet))
                frames = _sample_frames(_within(counted, cfg.max_seconds), total, cfg.frames)
                n += counted.n
            return _stacked(frames), n
    except DecodeError:
        raise
    except Exception as exc:
        raise DecodeError("corrupt", f"video: cannot decode: {exc}") from None


def _stacked(frames: list[np.ndarray]) -> np.ndarray:
    if not frames:
        raise DecodeError("corrupt", "video: no frames")
    return np.stack(frames)


class _Counted:
    """An iterator of frames that counts them (``n``): what the decoder produced."""

    def __init__(self, frames):
        self.frames, self.n = iter(frames), 0

    def __iter__(self):
        return self

    def __next__(self):
        frame = next(self.frames)
        self.n += 1
        return frame


def _demux(container, stream, max_seconds: float) -> list:
    """Every packet of ``stream`` in decode order (the trailing empty one flushes the decoder),
    ending in an ``error`` status as soon as two packets are presented more than ``max_seconds``
    apart: as :func:`_within`, without decoding, so a clip whose header gives no duration is
    held to the limit before any frame is decoded. The packets are the compressed clip."""
    packets, first, last = [], None, None
    tb = float(stream.time_base) if stream.time_base else None
    for packet in container.demux(stream):
        if packet.pts is not None and tb is not None and packet.size:
            t = packet.pts * tb
            first, last = (t, t) if first is None else (min(first, t), max(last, t))
            if last - first > max_seconds:
                raise DecodeError("error", f"video: longer than max_seconds={max_seconds} "
                                           f"(a frame at {last - first:.1f} s)")
        packets.append(packet)
    return packets


def _presentation(packets: list) -> list[int] | None:
    """The presentation timestamps of the frames the packets decode to, in presentation order
    (frame ``i`` of a sequential decode has the ``i``-th); None where they cannot say (a packet
    without a timestamp, two with the same one): then the clip is decoded sequentially."""
    pts = [p.pts for p in packets if p.size and not p.is_discard]
    if not pts or any(t is None for t in pts) or len(set(pts)) != len(pts):
        return None
    return sorted(pts)


def _chosen(total: int, seen: int, count: int) -> list[int]:
    """The frame indices (presentation order) :func:`_sample_frames` takes from a clip of
    ``seen`` frames whose header says ``total``: worked out on indices, before decoding."""
    if total > 0:  # an overstated count: the last frame stands in for those past the end
        return [min(int(i), seen - 1) for i in np.linspace(0, total - 1, count).round()]
    kept: list[int] = []
    stride = 1
    for i in range(0, seen):
        if i % stride == 0:
            kept.append(i)
            if len(kept) > 4 * count:
                kept, stride = kept[::2], stride * 2
    index = np.array(kept)
    return [kept[int(np.abs(index - w).argmin())] for w in np.linspace(0, seen - 1, count).round()]


def _decode_chosen(ctx, packets: list, order: list[int], chosen: list[int]) -> tuple[list | None, int]:
    """The ``chosen`` frames (presentation indices into ``order``), decoding from each one's
    keyframe only when that keyframe is past the packets already decoded; with the number of
    frames decoded. None for the frames if a chosen one never came out of the decoder."""
    index_of = {t: i for i, t in enumerate(order)}
    where = {p.pts: k for k, p in enumerate(packets) if p.size and not p.is_discard}
    keys = [k for k, p in enumerate(packets) if p.is_keyframe and p.size and p.pts is not None]
    want = set(chosen)
    shown = {order[i] for i in want}
    picks: dict[int, np.ndarray] = {}
    pos = n = 0  # the next packet to decode; frames decoded
    skips = ctx.name in SKIPS_NONREF
    skip = ctx.skip_frame
    try:
        for w in sorted(want):
            if w in picks:
                continue
            t = order[w]
            if t not in where:
                return None, n
            j = bisect.bisect_right(keys, where[t]) - 1
            while j >= 0 and packets[keys[j]].pts > t:  # a frame shown before its keyframe (open GOP)
                j -= 1
            start = keys[j] if j >= 0 else 0
            if start > pos:  # the keyframe is ahead: jump to it
                ctx.flush_buffers()
                pos = start
            while w not in picks:
                if pos >= len(packets):
                    return None, n
                packet = packets[pos]
                mode = "DEFAULT" if not skips or packet.pts in shown or not packet.size else "NONREF"
                if mode != skip:  # a frame no other frame refers to is skipped unless it is chosen
                    ctx.skip_frame = skip = mode
                for frame in ctx.decode(packet):
                    n += 1
                    i = index_of.get(frame.pts)
                    if i in want and i not in picks:
                        picks[i] = frame.to_ndarray(format="rgb24")
                pos += 1
    finally:
        ctx.skip_frame = "DEFAULT"
    return [picks[i] for i in chosen], n


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
