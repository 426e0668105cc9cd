"""Keyframe-seeking video decode: the same frames as decoding every frame, fewer frames decoded.

The clips are H.264 built here with PyAV (B-frames, so decode order is not presentation
order); the reference decodes every frame with PyAV and takes the uniformly spread indices.
"""

from __future__ import annotations

import io
from dataclasses import replace

import numpy as np
import pytest

from pipeline.core.manifest import VideoConfig
from pipeline.ingest.decode import DecodeError, decode_video
from pipeline.ingest.decode import video as vid
from tests.pipeline.ingest.test_decode import _NoSeek

av = pytest.importorskip("av")
if "libx264" not in av.codecs_available:
    pytest.skip("no libx264 encoder in this PyAV", allow_module_level=True)

SIZE = 48


def h264(frames: int, gop: int, bframes: int = 2, fmt: str = "mp4", rate: int = 25) -> bytes:
    """An H.264 clip with a keyframe every ``gop`` frames; frame ``i`` is a moving texture
    (so P/B-frames carry real residuals) with a corner block at grey level ``i``."""
    rng = np.random.default_rng(frames + gop)
    texture = rng.integers(0, 256, (SIZE, 4 * SIZE, 3), dtype=np.uint8)
    out = _NoSeek() if fmt == "matroska" else io.BytesIO()  # matroska to a pipe: no duration, no count
    with av.open(out, mode="w", format=fmt) as mux:
        stream = mux.add_stream("libx264", rate=rate, options={
            "g": str(gop), "bf": str(bframes), "crf": "28", "preset": "medium",
            "x264-params": f"keyint={gop}:min-keyint={gop}:scenecut=0"})
        stream.width = stream.height = SIZE
        stream.pix_fmt = "yuv420p"
        for i in range(frames):
            img = np.roll(texture, 2 * i, axis=1)[:, :SIZE].copy()
            img[:12, :12] = i % 256
            mux.mux(stream.encode(av.VideoFrame.from_ndarray(img, format="rgb24")))
        mux.mux(stream.encode())
    return bytes(out.buf) if isinstance(out, _NoSeek) else out.getvalue()


def reference(data: bytes, count: int) -> np.ndarray:
    """Every frame decoded, then ``np.linspace(0, n - 1, count).round()`` of them."""
    with av.open(io.BytesIO(data)) as container:
        frames = [f.to_ndarray(format="rgb24") for f in container.decode(video=0)]
    return np.stack([frames[i] for i in np.linspace(0, len(frames) - 1, count).round().astype(int)])


def packets(data: bytes) -> list[tuple[int, bool]]:
    with av.open(io.BytesIO(data)) as container:
        return [(p.pts, p.is_keyframe) for p in container.demux(video=0) if p.size]


CFG = VideoConfig(encoder="x", frames=8)


@pytest.mark.parametrize("frames,gop,bframes", [
    (60, 5, 2),     # short GOP
    (60, 1000, 3),  # long GOP: the first frame is the only keyframe
    (61, 7, 3),     # GOP and sampling out of step
    (40, 5, 0),     # no B-frames
    (4, 5, 2),      # fewer frames than sampled: frames repeat
])
@pytest.mark.parametrize("count", [8, 3, 1])
def test_seek_returns_the_reference_frames(frames, gop, bframes, count):
    data = h264(frames, gop, bframes)
    pts = [t for t, _ in packets(data)]
    keys = sum(k for _, k in packets(data))
    assert keys == -(-frames // gop)  # the GOP asked for
    if bframes and frames > 4:
        assert pts != sorted(pts)  # B-frames: decode order is not presentation order
    cfg = replace(CFG, frames=count)
    clip = decode_video(data, "mp4", cfg)
    assert clip.dtype == np.uint8 and clip.shape == (count, SIZE, SIZE, 3)
    np.testing.assert_array_equal(clip, reference(data, count))
    sequential, _ = vid._decode(data, cfg, seek=False)  # today's decode
    np.testing.assert_array_equal(clip, sequential)


@pytest.mark.parametrize("frames", [30, 200])  # exactly uniform (<= 4 * count frames) / the stride fallback
@pytest.mark.parametrize("gop", [5, 1000])
def test_seek_without_count_or_duration_keeps_the_fallback(frames, gop):
    data = h264(frames, gop, 2, fmt="matroska")
    with av.open(io.BytesIO(data)) as c:
        assert c.duration is None and not c.streams.video[0].frames and not c.streams.video[0].duration
    clip, decoded = vid._decode(data, CFG)
    sequential, everything = vid._decode(data, CFG, seek=False)
    np.testing.assert_array_equal(clip, sequential)  # the same frames the stride fallback picks
    assert everything == frames and decoded <= everything
    if frames <= 4 * CFG.frames:
        np.testing.assert_array_equal(clip, reference(data, CFG.frames))
    if gop == 5 and frames == 200:
        assert decoded < frames / 3


def test_seek_decodes_fewer_frames_on_a_long_short_gop_clip():
    data = h264(300, 5, 2)
    clip, decoded = vid._decode(data, CFG)
    sequential, everything = vid._decode(data, CFG, seek=False)
    np.testing.assert_array_equal(clip, sequential)
    assert everything == 300
    assert decoded <= 8 * 5  # at most a GOP per sampled frame
    long_gop, decoded_long = vid._decode(h264(120, 1000, 3), CFG)
    assert decoded_long <= 120  # one keyframe: never more than the sequential decode


def test_unusable_timestamps_fall_back_to_the_sequential_decode(monkeypatch):
    data = h264(60, 5, 2)
    want, _ = vid._decode(data, CFG, seek=False)
    real = vid._presentation
    monkeypatch.setattr(vid, "_presentation", lambda packets: None)
    clip, decoded = vid._decode(data, CFG)
    np.testing.assert_array_equal(clip, want)
    assert decoded == 60
    # a chosen frame that never comes out of the decoder (here: the frames' timestamps all look
    # unknown): the seek path decodes to the end, then the clip is decoded again from the start
    class Unmatched(list):
        def __iter__(self):
            return (t + 1 for t in list.__iter__(self))

    monkeypatch.setattr(vid, "_presentation", lambda packets: Unmatched(real(packets)))
    clip, decoded = vid._decode(data, CFG)
    np.testing.assert_array_equal(clip, want)
    assert decoded > 60


def test_bad_inputs_keep_their_status():
    data = h264(60, 5, 2)
    with pytest.raises(DecodeError) as exc:
        decode_video(data, "mp4", replace(CFG, max_seconds=1.0))  # 2.4 s in the header
    assert exc.value.status == "error"
    with pytest.raises(DecodeError) as exc:
        decode_video(data, "mp4", replace(CFG, max_pixels=SIZE * SIZE - 1))
    assert exc.value.status == "error"
    endless = h264(100, 5, 2, fmt="matroska")  # 4 s, no duration anywhere: held while demuxing
    with pytest.raises(DecodeError) as exc:
        decode_video(endless, "mkv", replace(CFG, max_seconds=2.0))
    assert exc.value.status == "error" and "max_seconds" in str(exc.value)
    for broken in (b"\x00\x00\x00\x18ftypmp42 broken", data[:200], data[:48] + bytes(len(data) - 48)):
        with pytest.raises(DecodeError) as exc:
            decode_video(broken, "mp4", CFG)
        assert exc.value.status == "corrupt"


def test_demux_holds_the_spread_of_timestamps_to_max_seconds():
    """The limit is on the spread of presentation times, whatever order the packets come in."""
    from fractions import Fraction
    from types import SimpleNamespace

    def run(pts):
        packets = [SimpleNamespace(pts=t, size=1) for t in pts]
        container = SimpleNamespace(demux=lambda stream: iter(packets))
        return vid._demux(container, SimpleNamespace(time_base=Fraction(1, 10)), max_seconds=5.0)

    assert len(run([0, 30, 10, 50])) == 4  # 5.0 s apart at most
    for late_early in ([100, 0], [20, 70, 10]):  # the earliest frame comes last
        with pytest.raises(DecodeError) as exc:
            run(late_early)
        assert exc.value.status == "error"


@pytest.mark.parametrize("seen", [1, 3, 8, 33, 100, 257, 1000])
@pytest.mark.parametrize("count", [1, 4, 8])
def test_chosen_indices_are_those_the_sequential_sampler_takes(seen, count):
    """Worked out on indices before decoding, for a right, an overstated, an understated and no count."""
    from types import SimpleNamespace

    def frames():
        return (SimpleNamespace(to_ndarray=lambda format, i=i: i) for i in range(seen))

    for total in (seen, seen + 7, max(1, seen // 2), 0):
        assert vid._chosen(total, seen, count) == vid._sample_frames(frames(), total, count), total
