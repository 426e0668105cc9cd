"""FLAC through libFLAC 1.4 (ctypes) against libsndfile's decode of the same bytes (soundfile), and
its failures as status rows."""

from __future__ import annotations

import io
from dataclasses import replace

import numpy as np
import pytest
import soundfile as sf

from pipeline.core.manifest import AudioConfig
from pipeline.ingest.decode import DecodeError, flac
from pipeline.ingest.decode.audio import decode_audio, plan_window

CFG = AudioConfig(encoder="x", seconds=2.0)


def flac_bytes(channels: int, subtype: str, seconds: float, rate: int = 44_100, seed: int = 0) -> bytes:
    rng = np.random.default_rng(seed)
    buf = io.BytesIO()
    sf.write(buf, rng.uniform(-0.9, 0.9, (int(seconds * rate), channels)).astype(np.float32), rate,
             format="FLAC", subtype=subtype)
    return buf.getvalue()


def reference(data: bytes, cfg: AudioConfig, target: int) -> tuple[np.ndarray, object]:
    """libsndfile's whole decode, cut to the planned window and mixed down in float64."""
    pcm, rate = sf.read(io.BytesIO(data), dtype="float32", always_2d=True)
    window = plan_window(len(pcm), rate, pcm.shape[1], cfg, target)
    cut = pcm[window.start:window.stop]
    return cut.mean(axis=1, dtype=np.float64).astype(np.float32) if pcm.shape[1] > 1 else cut[:, 0], window


def test_the_library_is_there():
    """pyflac is a dependency for its libFLAC; without it the fast path would silently be off."""
    lib = flac.library()
    assert lib is not None and flac._version(lib) >= (1, 4)


@pytest.mark.parametrize(("channels", "subtype", "seconds"), [
    (1, "PCM_16", 5.0), (2, "PCM_16", 5.0), (2, "PCM_24", 3.0), (6, "PCM_16", 4.0), (1, "PCM_S8", 3.0),
    (1, "PCM_16", 1.5)])  # the last is shorter than the window: no seek, all of it
def test_the_window_equals_libsndfiles_decode(channels, subtype, seconds):
    data = flac_bytes(channels, subtype, seconds)
    mono, window, rate = flac.read_flac_window(data, lambda t, r, c: plan_window(t, r, c, CFG, 16_000))
    want, want_window = reference(data, CFG, 16_000)
    assert rate == 44_100 and window == want_window
    np.testing.assert_array_equal(mono, want)


@pytest.mark.parametrize("bits", [8, 12, 16, 20, 24, 32])
@pytest.mark.parametrize("channels", [1, 2, 3, 4, 5, 6, 7, 8])
def test_the_mix_down_equals_the_float64_mean_of_float32_samples(bits, channels):
    """Every branch of the integer mix-down against the soundfile path's arithmetic, written here:
    each sample to float32, the mean over channels in float64, then float32; full-scale extremes
    included (the sums that would overflow a narrower integer or float32's significand)."""
    rng = np.random.default_rng(bits * 10 + channels)
    low, high = -(2 ** (bits - 1)), 2 ** (bits - 1) - 1
    pcm = rng.integers(low, high, (channels, 4096), endpoint=True, dtype=np.int64).astype(np.int32)
    pcm[:, :3] = [low, high, 1]  # all channels at the negative and positive extremes, and at one step
    want = (pcm.T.astype(np.float32) * np.float32(2.0 ** -(bits - 1))).mean(axis=1, dtype=np.float64)
    got = flac._to_mono(pcm, bits)
    assert got.dtype == np.float32
    np.testing.assert_array_equal(got, want.astype(np.float32))


def test_decode_audio_gives_the_same_pcm_without_the_library(monkeypatch):
    data = flac_bytes(2, "PCM_16", 5.0)
    native = decode_audio(data, "flac", CFG, 16_000)
    monkeypatch.setattr(flac, "library", lambda: None)
    fallback = decode_audio(data, "flac", CFG, 16_000)
    assert (native.rate, native.keep, native.cropped) == (fallback.rate, fallback.keep, fallback.cropped)
    np.testing.assert_array_equal(native.samples, fallback.samples)


def test_a_truncated_flac_is_corrupt():
    data = flac_bytes(1, "PCM_16", 5.0)
    with pytest.raises(DecodeError) as err:
        decode_audio(data[: len(data) // 2], "flac", replace(CFG, seconds=10.0), 16_000)
    assert err.value.status == "corrupt"


def test_a_flac_with_a_damaged_frame_is_corrupt():
    data = bytearray(flac_bytes(1, "PCM_16", 5.0))
    for i in range(len(data) // 2, len(data) // 2 + 64):  # garble bytes in the middle of the audio
        data[i] ^= 0x5A
    with pytest.raises(DecodeError) as err:
        decode_audio(bytes(data), "flac", replace(CFG, seconds=10.0), 16_000)
    assert err.value.status == "corrupt"


def test_a_header_without_a_length_is_left_to_the_caller():
    data = bytearray(flac_bytes(1, "PCM_16", 3.0))
    info = int.from_bytes(data[21:26], "big") & ~((1 << 36) - 1)  # STREAMINFO total samples := 0
    streamed = bytes(data[:21] + info.to_bytes(5, "big") + data[26:])
    assert flac.read_flac_window(streamed, lambda t, r, c: plan_window(t, r, c, CFG, 16_000)) is None


def test_not_flac_is_left_to_the_caller():
    buf = io.BytesIO()
    sf.write(buf, np.zeros(1000, np.float32), 16_000, format="WAV")
    assert flac.read_flac_window(buf.getvalue(), lambda t, r, c: plan_window(t, r, c, CFG, 16_000)) is None


def test_a_window_filled_by_the_first_frame_after_the_seek_decodes():
    """The seek's trimmed first frame fills a 0.1 s window: the write callback's stop is not a failed seek."""
    data = flac_bytes(1, "PCM_16", 5.0, rate=16_000)
    cfg = replace(CFG, seconds=0.1)
    mono, window, _ = flac.read_flac_window(data, lambda t, r, c: plan_window(t, r, c, cfg, 16_000))
    want, want_window = reference(data, cfg, 16_000)
    assert window == want_window and window.start > 0
    np.testing.assert_array_equal(mono, want)


def test_frames_of_another_bit_depth_than_the_header_are_corrupt():
    """A header claiming 24 bits over 16-bit frames would scale every sample 256 times too small."""
    data = bytearray(flac_bytes(1, "PCM_16", 3.0))
    fields = int.from_bytes(data[18:26], "big")  # rate (20 bits), channels - 1 (3), bits - 1 (5), total (36)
    fields = (fields & ~(0x1F << 36)) | (23 << 36)  # bits - 1 := 23
    data[18:26] = fields.to_bytes(8, "big")
    with pytest.raises(DecodeError) as err:
        decode_audio(bytes(data), "flac", CFG, 16_000)
    assert err.value.status == "corrupt"
