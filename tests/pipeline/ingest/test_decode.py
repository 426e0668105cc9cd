from __future__ import annotations

import io
from dataclasses import replace

import numpy as np
import pytest

from pipeline.core.manifest import AudioConfig, ImageConfig, PointsConfig, TextConfig, VideoConfig
from pipeline.ingest.decode import (
    DecodeError,
    decode_audio,
    decode_image,
    decode_member,
    decode_points,
    decode_video,
)
from tests.conftest import jpeg_bytes, mp4_bytes, npy_bytes, ply_bytes, wav_bytes

IMG = ImageConfig(encoder="x")
TXT = TextConfig(encoder="x")


def status_of(sample, modality, cfg, **kw):
    with pytest.raises(DecodeError) as exc:
        decode_member({"__key__": "k", **sample}, modality, cfg, **kw)
    return exc.value.status


def test_image_decodes_to_rgb_and_limits():
    img = decode_member({"__key__": "k", "jpg": jpeg_bytes(0, 40)}, "image", IMG)
    assert img.mode == "RGB" and img.size == (40, 40)
    assert status_of({"jpg": jpeg_bytes(0, 40)}, "image", replace(IMG, max_pixels=1000)) == "error"
    assert status_of({"jpg": b"\xff\xd8 not a jpeg"}, "image", IMG) == "corrupt"
    assert status_of({"txt": b"x"}, "image", IMG) == "missing"


def test_text_utf8_and_limits():
    assert decode_member({"__key__": "k", "txt": b" a cat \n"}, "text", TXT) == "a cat"
    assert status_of({"txt": b"\xff\xfe\xfa"}, "text", TXT) == "corrupt"
    assert status_of({"txt": b"x" * 50}, "text", replace(TXT, max_chars=10)) == "error"


def test_video_samples_frames_uniformly():
    cfg = VideoConfig(encoder="x", frames=4)
    clip = decode_video(mp4_bytes(1, frames=10, size=32), "mp4", cfg)
    assert clip.shape == (4, 32, 32, 3) and clip.dtype == np.uint8
    assert decode_video(mp4_bytes(1, frames=2), "mp4", cfg).shape[0] == 4  # short clips repeat frames
    assert status_of({"mp4": mp4_bytes(1)}, "video", replace(cfg, max_seconds=0.1)) == "error"
    assert status_of({"mp4": mp4_bytes(1)}, "video", replace(cfg, max_pixels=100)) == "error"
    assert status_of({"mp4": b"\x00\x00\x00\x18ftypmp42 broken"}, "video", cfg) == "corrupt"


def test_audio_is_pcm_at_the_source_rate_centre_cropped_with_the_filter_margin():
    from pipeline.ingest.decode.audio import FILTER_TAPS

    FILTER_MARGIN = FILTER_TAPS + 1  # the resampling filter's reach, kept each side when the rate goes down

    cfg = AudioConfig(encoder="x", seconds=0.25)
    whole = wav_bytes(0, seconds=0.4, rate=22050)
    pcm = decode_audio(whole, "wav", cfg, 16000)  # the encoder's rate is applied on the device
    assert pcm.rate == 22050 and pcm.cropped and pcm.samples.dtype == np.float32
    want = round(0.25 * 22050)
    centre = (round(0.4 * 22050) - want) // 2
    assert pcm.keep == FILTER_MARGIN and len(pcm.samples) == want + 2 * FILTER_MARGIN
    import soundfile as sf

    ref = sf.read(io.BytesIO(whole), dtype="float32")[0]
    np.testing.assert_array_equal(pcm.samples, ref[centre - FILTER_MARGIN:centre + want + FILTER_MARGIN])
    short = decode_audio(wav_bytes(0, seconds=0.1, rate=16000), "wav", cfg, 16000)
    assert short.rate == 16000 and not short.cropped and short.keep == 0 and len(short.samples) == 1600
    assert status_of({"wav": b"RIFF junk"}, "audio", cfg, sample_rate=16000) == "corrupt"
    assert status_of({"flac": wav_bytes(0)}, "audio", replace(cfg, max_seconds=0.1), sample_rate=16000) == "error"


def test_points_from_npy_npz_ply_in_the_unit_sphere():
    cfg = PointsConfig(encoder="x", points=128)
    buf = io.BytesIO()
    np.savez(buf, pts=np.random.default_rng(0).standard_normal((50, 6)) * 10 + 3)
    for ext, data in (("npy", npy_bytes(0)), ("npz", buf.getvalue()), ("ply", ply_bytes(0))):
        pts = decode_points(data, ext, cfg)
        assert pts.shape[0] == 128 and pts.shape[1] in (3, 6) and pts.dtype == np.float32
        r = np.linalg.norm(pts[:, :3], axis=1)
        assert r.max() == pytest.approx(1.0, abs=1e-5)
    assert np.array_equal(decode_points(npy_bytes(0), "npy", cfg, seed=3), decode_points(npy_bytes(0), "npy", cfg, seed=3))
    assert status_of({"npy": b"\x93NUMPY garbage"}, "points", cfg) == "corrupt"
    assert status_of({"npy": npy_bytes(0, n=500)}, "points", replace(cfg, max_points=100)) == "error"


def test_binary_ply_with_colours():
    n = 20
    dtype = np.dtype([("x", "<f4"), ("y", "<f4"), ("z", "<f4"), ("red", "u1"), ("green", "u1"), ("blue", "u1")])
    arr = np.zeros(n, dtype)
    arr["x"] = np.arange(n)
    arr["red"] = 255
    head = ("ply\nformat binary_little_endian 1.0\nelement vertex 20\nproperty float x\nproperty float y\n"
            "property float z\nproperty uchar red\nproperty uchar green\nproperty uchar blue\nend_header\n")
    pts = decode_points(head.encode() + arr.tobytes(), "ply", PointsConfig(encoder="x", points=20))
    assert pts.shape == (20, 6) and np.allclose(pts[:, 3], 1.0)


def test_video_frames_are_the_uniformly_chosen_ones():
    """Frame i of the clip is filled with grey level 20*i: the sampled frames' levels show which were taken."""
    import av

    buf = io.BytesIO()
    with av.open(buf, mode="w", format="mp4") as out:
        stream = out.add_stream("mpeg4", rate=10)
        stream.width = stream.height = 32
        stream.pix_fmt = "yuv420p"
        for i in range(10):
            frame = av.VideoFrame.from_ndarray(np.full((32, 32, 3), 20 * i, np.uint8), format="rgb24")
            for packet in stream.encode(frame):
                out.mux(packet)
        for packet in stream.encode():
            out.mux(packet)
    clip = decode_video(buf.getvalue(), "mp4", VideoConfig(encoder="x", frames=4))
    levels = clip.reshape(4, -1).mean(1) / 20
    np.testing.assert_allclose(levels, [0, 3, 6, 9], atol=0.3)


class _NoSeek(io.RawIOBase):
    """A write-only stream: a muxer cannot go back to fill in the duration."""

    def __init__(self):
        self.buf = bytearray()

    def writable(self):
        return True

    def seekable(self):
        return False

    def write(self, b):
        self.buf += bytes(b)
        return len(b)


def webm_without_duration(frames: int, rate: int = 25) -> bytes:
    """A VP8 webm whose headers give no duration nor frame count; frame i is flat grey 2*i."""
    import av

    out = _NoSeek()
    with av.open(out, mode="w", format="webm") as mux:
        s = mux.add_stream("libvpx", rate=rate)
        s.width = s.height = 32
        s.pix_fmt = "yuv420p"
        for i in range(frames):
            f = av.VideoFrame.from_ndarray(np.full((32, 32, 3), 2 * i, np.uint8), format="rgb24")
            mux.mux(s.encode(f))
        mux.mux(s.encode())
    return bytes(out.buf)


def test_video_without_duration_is_held_to_max_seconds_and_sampled():
    import av

    long = webm_without_duration(100)  # 4 s
    with av.open(io.BytesIO(long)) as c:
        assert c.duration is None and not c.streams.video[0].frames  # no header shortcut
    cfg = VideoConfig(encoder="x", frames=4, max_seconds=2.0)
    assert status_of({"webm": long}, "video", cfg) == "error"
    clip = decode_video(long, "webm", replace(cfg, max_seconds=10.0))
    assert clip.shape == (4, 32, 32, 3)
    grey = clip.reshape(4, -1).mean(axis=1) / 2  # ~ the frame index each pick came from
    np.testing.assert_allclose(grey, [0, 33, 66, 99], atol=5)


def test_pyav_audio_stops_at_max_seconds():
    import av

    out = _NoSeek()
    with av.open(out, mode="w", format="webm") as mux:
        s = mux.add_stream("libopus", rate=48000)
        for i in range(150):  # 3 s of 20 ms frames
            f = av.AudioFrame.from_ndarray(np.zeros((1, 960), np.float32), format="flt", layout="mono")
            f.sample_rate, f.pts = 48000, i * 960
            mux.mux(s.encode(f))
        mux.mux(s.encode())
    data = bytes(out.buf)
    with pytest.raises(DecodeError) as exc:
        decode_audio(data, "webm", AudioConfig(encoder="x", max_seconds=1.0), 16000)
    assert exc.value.status == "error" and "max_seconds" in str(exc.value)
    assert status_of({"ogg": data}, "audio", AudioConfig(encoder="x", max_seconds=1.0), sample_rate=16000) == "error"
    pcm = decode_audio(data, "webm", AudioConfig(encoder="x", seconds=0.25), 16000)
    assert pcm.rate == 48000 and pcm.cropped and len(pcm.samples) - 2 * pcm.keep == 12000


def _png(img) -> bytes:
    import io

    buf = io.BytesIO()
    img.save(buf, format="PNG")
    return buf.getvalue()


@pytest.mark.parametrize("background, rgb", [("white", (255, 255, 255)), ("#102030", (16, 32, 48))])
def test_transparency_is_composited_onto_the_background(background, rgb):
    """RGBA, LA and palette-with-transparency PNGs: a fully transparent pixel takes the background, an
    opaque one keeps its colour, a half-transparent one blends (alpha-composite formula in NumPy)."""
    from PIL import Image

    from pipeline.core.manifest import ImageConfig

    cfg = ImageConfig(encoder="x", background=background)
    rgba = np.zeros((2, 2, 4), np.uint8)
    rgba[0, 0] = (200, 10, 10, 255)  # opaque red
    rgba[0, 1] = (0, 0, 0, 0)  # transparent black: convert("RGB") would show black
    rgba[1, 0] = (0, 0, 200, 128)  # half blue
    out = np.asarray(decode_image(_png(Image.fromarray(rgba, "RGBA")), "png", cfg), np.int64)
    bg = np.array(rgb)
    assert out[0, 0].tolist() == [200, 10, 10] and out[0, 1].tolist() == list(rgb)
    blend = np.round(np.array([0, 0, 200]) * 128 / 255 + bg * (1 - 128 / 255))
    assert np.abs(out[1, 0] - blend).max() <= 1
    la = Image.fromarray(np.array([[[90, 255], [90, 0]]], np.uint8), "LA")
    assert np.asarray(decode_image(_png(la), "png", cfg))[0].tolist() == [[90, 90, 90], list(rgb)]
    pal = Image.new("P", (2, 1))
    pal.putpalette([0, 0, 0, 10, 200, 10] + [0] * 762)
    pal.putpixel((0, 0), 0)
    pal.putpixel((1, 0), 1)
    pal.info["transparency"] = 0  # palette index 0 is transparent
    assert np.asarray(decode_image(_png(pal), "png", cfg))[0].tolist() == [list(rgb), [10, 200, 10]]


def test_background_must_be_a_colour(tmp_path):
    from pipeline.core.manifest import ManifestError, from_dict

    raw = {"dataset": {"name": "x", "shards": "a.tar", "output": str(tmp_path)},
           "modalities": {"image": {"encoder": "mobilenet-v2", "background": "not-a-colour"}}}
    with pytest.raises(ManifestError, match="modalities.image.background"):
        from_dict(raw)
