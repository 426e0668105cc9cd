"""Class 4, decoders that believe what files say: each claim is checked against the bytes."""

from __future__ import annotations

import io
from dataclasses import replace

import numpy as np
import pytest

from pipeline.core.manifest import AudioConfig, ImageConfig, PointsConfig
from pipeline.ingest import decode as decoders
from pipeline.ingest.decode import DecodeError, decode_audio, decode_member, decode_points
from tests.hostile import bombs

IMG, PTS = ImageConfig(encoder="x"), PointsConfig(encoder="x", points=64)


def failure(sample: dict, modality: str, cfg) -> DecodeError:
    with pytest.raises(DecodeError) as exc:
        decode_member({"__key__": "k", **sample}, modality, cfg, 16_000)
    return exc.value


def test_a_jpeg_whose_data_ends_before_its_declared_size_is_corrupt():
    err = failure({"jpg": bombs.jpeg_claiming(7999, 7999)}, "image", IMG)
    assert err.status == "corrupt" and "ends before its declared 7999x7999" in str(err)
    honest = bombs.jpeg_claiming(16, 16)  # the same bytes with their true size decode
    assert decode_member({"__key__": "k", "jpg": honest}, "image", IMG).size == (16, 16)


@pytest.mark.parametrize(("width", "height"), [(9000, 8000), (20000, 20000)], ids=["bindery-limit", "pillow-limit"])
def test_max_pixels_governs_whichever_check_fires(width, height):
    """9000x8000 passes Pillow's own bomb check and fails bindery's; 20000x20000 fails Pillow's (it
    is set from max_pixels): one status and one message either way."""
    err = failure({"jpg": bombs.jpeg_claiming(width, height)}, "image", IMG)
    assert err.status == "error" and str(err).startswith("image: exceeds max_pixels=64000000 (")


def test_max_pixels_can_be_raised_above_pillows_default_limit():
    # 15000x12000 = 180 MP is past twice Pillow's default (2 x 89.5 MP): with max_pixels = 200 MP the
    # header is read, and what fails is the data's length, not a bomb limit
    err = failure({"jpg": bombs.jpeg_claiming(15000, 12000)}, "image", replace(IMG, max_pixels=200_000_000))
    assert err.status == "corrupt" and "ends before its declared 15000x12000" in str(err)


@pytest.mark.parametrize("ext", ["jpg", "png", "webp"])
def test_eps_is_never_opened_whatever_its_member_is_called(ext, monkeypatch):
    from PIL import EpsImagePlugin

    opened = []
    monkeypatch.setattr(EpsImagePlugin.EpsImageFile, "_open", lambda self: opened.append(self))
    err = failure({ext: bombs.EPS}, "image", IMG)
    allowed = {"jpg": "JPEG", "png": "PNG", "webp": "WEBP"}[ext]
    assert err.status == "corrupt" and f"cannot read a {allowed} header from the .{ext} member" in str(err)
    assert opened == []  # the EPS plugin (and so Ghostscript) was never tried


def test_a_png_named_png_still_decodes():
    from PIL import Image

    buf = io.BytesIO()
    Image.new("RGB", (5, 3), (10, 20, 30)).save(buf, "PNG")
    assert decode_member({"__key__": "k", "png": buf.getvalue()}, "image", IMG).getpixel((0, 0)) == (10, 20, 30)


def test_a_streamed_flac_without_a_length_decodes_like_the_same_flac_with_one():
    cfg = AudioConfig(encoder="x", seconds=1.0)
    rng = np.random.default_rng(0)
    import soundfile as sf

    buf = io.BytesIO()
    sf.write(buf, (0.3 * rng.standard_normal((48000 * 3, 2))).astype(np.float32), 48000, format="FLAC")
    data = bytearray(buf.getvalue())
    info = int.from_bytes(data[21:26], "big") & ~((1 << 36) - 1)  # STREAMINFO total samples := 0
    streamed = bytes(data[:21] + info.to_bytes(5, "big") + data[26:])
    assert sf.info(io.BytesIO(streamed)).frames > 2**62  # what libsndfile reports for "unknown"
    a, b = decode_audio(streamed, "flac", cfg, 16000), decode_audio(bytes(data), "flac", cfg, 16000)
    assert (a.rate, a.keep, a.cropped) == (b.rate, b.keep, b.cropped)  # the same window of PCM
    np.testing.assert_array_equal(a.samples, b.samples)


def test_audio_with_nan_samples_is_corrupt():
    import soundfile as sf

    wav = np.full(4000, np.nan, np.float32)
    buf = io.BytesIO()
    sf.write(buf, wav, 16000, format="WAV", subtype="FLOAT")
    err = failure({"wav": buf.getvalue()}, "audio", AudioConfig(encoder="x", seconds=0.25))
    assert err.status == "corrupt" and "non-finite" in str(err)


@pytest.mark.parametrize("arr", [np.ones((50, 3), np.complex64), np.ones((50, 3), bool),
                                 np.zeros(50, dtype=[("x", "<f4"), ("y", "<f4"), ("z", "<f4")])],
                         ids=["complex", "bool", "structured"])
def test_points_must_be_a_real_number_type(arr):
    err = failure({"npy": bombs.npy_of(arr)}, "points", PTS)
    assert err.status == "corrupt" and "expected a real floating or integer array" in str(err)


def test_huge_finite_coordinates_normalise_in_float64():
    rng = np.random.default_rng(1)
    cloud = (rng.standard_normal((64, 3)) * 1e38).astype(np.float32)  # all 64 points are kept (points = 64)
    out = decode_points(bombs.npy_of(cloud), "npy", PTS)
    ref = cloud.astype(np.float64) - cloud.astype(np.float64).mean(axis=0)
    ref /= np.linalg.norm(ref, axis=1).max()
    assert np.isfinite(out).all()
    np.testing.assert_allclose(out, ref, atol=1e-6)
    assert np.linalg.norm(out, axis=1).max() == pytest.approx(1.0, abs=1e-6)


def test_integer_points_are_a_cloud_and_nan_points_are_corrupt():
    grid = np.arange(64 * 3, dtype=np.int16).reshape(64, 3)
    assert np.linalg.norm(decode_points(bombs.npy_of(grid), "npy", PTS), axis=1).max() == pytest.approx(1.0)
    cloud = np.ones((64, 3), np.float32)
    cloud[3, 1] = np.nan
    assert failure({"npy": bombs.npy_of(cloud)}, "points", PTS).status == "corrupt"


def test_a_memory_error_while_decoding_is_that_samples_status_row(monkeypatch):
    def exhausted(data, ext, cfg, ctx):
        raise MemoryError

    monkeypatch.setitem(decoders.DECODERS, "image", exhausted)
    err = failure({"jpg": b"whatever"}, "image", IMG)
    assert err.status == "error" and "out of memory while decoding the jpg member" in str(err)
