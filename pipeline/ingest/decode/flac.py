"""FLAC through libFLAC 1.4 directly (ctypes), for the audio worker's hottest decode.

Why: an audio tower on a GPU leaves the worker under 2 ms per clip (issue 17), and a 5 s 44.1 kHz
FLAC clip costs ~2.4 ms through soundfile (its bundled libsndfile's FLAC path) but ~1.5 ms
through libFLAC 1.4's own decoder. The PCM is the same: integers scaled by ``2^-(bits - 1)``,
exact in float32, multi-channel windows mixed down as the soundfile path does.

The library is the libFLAC 1.4 that the ``pyflac`` wheel ships (``pyflac/libraries/<platform>/``,
found without importing pyflac), else a system ``libFLAC`` of version 1.4 or newer; without
either, :func:`read_flac_window` returns None and the caller keeps the soundfile path. It also
returns None for what it does not handle the same way (no total length in STREAMINFO), so the
caller's path decides those, and for a window over :data:`MAX_SAMPLES_AT_ONCE` (read block by block
there). Everything libFLAC reports as an error (a lost sync, a bad CRC, a truncated stream, a failed
seek), and a frame whose channel count or bit depth is not the header's (its samples would be
scaled wrongly), is a ``corrupt`` :class:`~pipeline.ingest.decode.base.DecodeError`.

The decoder reads the bytes in memory through read/seek/tell/length/eof callbacks, seeks to the
window's first frame (``FLAC__stream_decoder_seek_absolute`` trims the first frame to it) and
decodes frame by frame until the window is full, copying each frame's channels into one
preallocated int32 buffer; no callback raises (a failure sets a flag and aborts).
"""

from __future__ import annotations

import ctypes as C
import ctypes.util
import functools
import importlib.util
import logging
import platform
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from pipeline.ingest.decode.base import DecodeError

log = logging.getLogger(__name__)

FLAC_MAGIC = b"fLaC"
MAX_SAMPLES_AT_ONCE = 1 << 22  # frames x channels decoded in one buffer (16 MB int32); larger windows: soundfile
P = C.c_void_p
_READ = C.CFUNCTYPE(C.c_int, P, P, C.POINTER(C.c_size_t), P)
_SEEK = C.CFUNCTYPE(C.c_int, P, C.c_uint64, P)
_TELL = C.CFUNCTYPE(C.c_int, P, C.POINTER(C.c_uint64), P)
_LENGTH = C.CFUNCTYPE(C.c_int, P, C.POINTER(C.c_uint64), P)
_EOF = C.CFUNCTYPE(C.c_int, P, P)
_WRITE = C.CFUNCTYPE(C.c_int, P, P, P, P)
_METADATA = C.CFUNCTYPE(None, P, P, P)
_ERROR = C.CFUNCTYPE(None, P, C.c_int, P)
READ_CONTINUE, READ_END = 0, 1
WRITE_CONTINUE, WRITE_ABORT = 0, 1


class _StreamInfo(C.Structure):
    """``FLAC__StreamMetadata`` up to STREAMINFO's total_samples (type, is_last, length, then the union,
    which holds 64-bit members and so starts 8-aligned)."""

    _fields_ = [("type", C.c_int), ("is_last", C.c_int), ("length", C.c_uint32), ("_union_pad", C.c_uint32),
                ("min_blocksize", C.c_uint32),
                ("max_blocksize", C.c_uint32), ("min_framesize", C.c_uint32), ("max_framesize", C.c_uint32),
                ("sample_rate", C.c_uint32), ("channels", C.c_uint32), ("bits_per_sample", C.c_uint32),
                ("total_samples", C.c_uint64)]


_u32, _ptr = C.c_uint32.from_address, C.c_void_p.from_address  # FLAC__FrameHeader: blocksize @0, channels @8
_PTR_SIZE = C.sizeof(C.c_void_p)


def _platform_dir() -> str:
    system = {"Linux": "linux", "Darwin": "darwin", "Windows": "windows"}.get(platform.system(), "")
    machine = {"x86_64": "x86_64", "amd64": "x86_64", "aarch64": "arm64", "arm64": "arm64"}.get(
        platform.machine().lower(), "")
    return f"{system}-{machine}"


def _candidates() -> list[str]:
    out = []
    spec = importlib.util.find_spec("pyflac")
    if spec is not None and spec.origin:
        folder = Path(spec.origin).parent / "libraries" / _platform_dir()
        out += [str(p) for p in sorted(folder.glob("*FLAC*")) if p.suffix in (".so", ".dylib", ".dll")]
    system = ctypes.util.find_library("FLAC")
    return out + ([system] if system else [])


def _version(lib: C.CDLL) -> tuple[int, ...]:
    try:
        text = C.c_char_p.in_dll(lib, "FLAC__VERSION_STRING").value or b""
    except ValueError:
        return ()
    return tuple(int(p) for p in text.decode().split(".")[:2] if p.isdigit())


@functools.cache
def library() -> C.CDLL | None:
    """libFLAC >= 1.4 with its decoder prototypes set, or None (then the soundfile path decodes)."""
    for path in _candidates():
        try:
            lib = C.CDLL(path)
        except OSError:
            continue
        if _version(lib) < (1, 4):
            continue
        d = "FLAC__stream_decoder_"
        getattr(lib, d + "new").restype = P
        getattr(lib, d + "init_stream").argtypes = [P, _READ, _SEEK, _TELL, _LENGTH, _EOF, _WRITE, _METADATA, _ERROR, P]
        for name in ("delete", "process_until_end_of_stream", "process_until_end_of_metadata"):
            getattr(lib, d + name).argtypes = [P]
        getattr(lib, d + "seek_absolute").argtypes = [P, C.c_uint64]
        getattr(lib, d + "set_md5_checking").argtypes = [P, C.c_int]
        log.debug("FLAC: libFLAC %s from %s", ".".join(map(str, _version(lib))), path)
        return lib
    return None


@dataclass
class _Session:
    """The state the callbacks share: the source bytes, the stream's header and the output buffer."""

    data: bytes
    pos: int = 0
    info: dict[str, int] = field(default_factory=dict)
    out: np.ndarray | None = None  # (channels, frames) int32
    bases: list[int] = field(default_factory=list)  # each channel row's address in ``out``
    bits: int = 0  # the header's bits per sample: every frame must have it (the scaling assumes it)
    need: int = 0
    filled: int = 0
    failed: str = ""

    def read(self, _d, buffer, size, _c) -> int:
        n = min(size[0], len(self.data) - self.pos)
        if n <= 0:
            size[0] = 0
            return READ_END
        C.memmove(buffer, self._src + self.pos, n)
        self.pos += n
        size[0] = n
        return READ_CONTINUE

    def seek(self, _d, offset, _c) -> int:
        if offset > len(self.data):
            return 1
        self.pos = int(offset)
        return 0

    def tell(self, _d, offset, _c) -> int:
        offset[0] = self.pos
        return 0

    def length(self, _d, size, _c) -> int:
        size[0] = len(self.data)
        return 0

    def eof(self, _d, _c) -> int:
        return int(self.pos >= len(self.data))

    def metadata(self, _d, block, _c) -> None:
        meta = C.cast(block, C.POINTER(_StreamInfo))[0]
        if meta.type == 0:  # STREAMINFO
            self.info = {"rate": meta.sample_rate, "channels": meta.channels, "bits": meta.bits_per_sample,
                         "total": meta.total_samples}

    def write(self, _d, frame, buffers, _c) -> int:
        try:  # the hot path: one call per frame (4,096 samples), so nothing here allocates much
            blocksize, channels = _u32(frame).value, _u32(frame + 8).value
            if channels != len(self.bases) or _u32(frame + 16).value != self.bits:  # bits_per_sample @16
                self.failed = "a frame's channel count or bit depth differs from the stream header's"
                return WRITE_ABORT
            n = min(blocksize, self.need - self.filled)
            at = 4 * self.filled
            for ch, base in enumerate(self.bases):
                C.memmove(base + at, _ptr(buffers + ch * _PTR_SIZE).value, 4 * n)
            self.filled += n
            return WRITE_ABORT if self.filled >= self.need else WRITE_CONTINUE  # the window is full: stop
        except Exception as exc:  # never raise through libFLAC
            self.failed = f"{type(exc).__name__}: {exc}"
            return WRITE_ABORT

    def error(self, _d, status, _c) -> None:
        self.failed = self.failed or f"libFLAC error status {status}"

    def __post_init__(self) -> None:
        # the bytes object's own buffer (immutable, alive as long as self.data): no copy
        self._src = C.cast(C.c_char_p(self.data), C.c_void_p).value


def read_flac_window(data: bytes, plan) -> tuple[np.ndarray, Any, int] | None:
    """``(mono float32, window, rate)`` of a FLAC file's planned window, or None when libFLAC 1.4 is not
    there, the header gives no length or the window is over :data:`MAX_SAMPLES_AT_ONCE` (the caller's
    path decodes those). ``plan(total, rate, channels)``
    is the caller's window planner (it raises for what is over its limits)."""
    lib = library()
    if lib is None or not data.startswith(FLAC_MAGIC):
        return None
    s = _Session(bytes(data))  # bytes: its buffer neither moves nor changes while libFLAC reads it
    callbacks = (_READ(s.read), _SEEK(s.seek), _TELL(s.tell), _LENGTH(s.length), _EOF(s.eof), _WRITE(s.write),
                 _METADATA(s.metadata), _ERROR(s.error))
    d = "FLAC__stream_decoder_"
    dec = getattr(lib, d + "new")()
    if not dec:
        raise DecodeError("error", "audio: libFLAC could not allocate a decoder")
    try:
        getattr(lib, d + "set_md5_checking")(dec, 0)
        if getattr(lib, d + "init_stream")(dec, *callbacks, None) != 0:
            raise DecodeError("corrupt", "audio: libFLAC refused the stream")
        if not getattr(lib, d + "process_until_end_of_metadata")(dec) or not s.info:
            raise DecodeError("corrupt", f"audio: FLAC header unreadable{f' ({s.failed})' if s.failed else ''}")
        if not s.info["total"]:
            return None  # a streamed FLAC without its length: the caller counts it first
        window = plan(int(s.info["total"]), int(s.info["rate"]), int(s.info["channels"]))
        s.need = window.stop - window.start
        if s.need * s.info["channels"] > MAX_SAMPLES_AT_ONCE:
            return None  # the caller's path reads a window this large block by block
        s.out = np.empty((s.info["channels"], s.need), np.int32)  # every frame of it is written, or this raises
        s.bases, s.bits = [s.out[ch].ctypes.data for ch in range(s.out.shape[0])], int(s.info["bits"])
        seeked = not window.start or getattr(lib, d + "seek_absolute")(dec, window.start)
        # a seek whose first (trimmed) frame already fills the window ends in the write callback's
        # abort, which libFLAC reports as a failed seek
        if not seeked and (s.failed or s.filled < s.need):
            raise DecodeError("corrupt", f"audio: FLAC seek to frame {window.start} failed"
                                         f"{f' ({s.failed})' if s.failed else ''}")
        if s.filled < s.need and not s.failed:  # a seek may have filled a short window already
            getattr(lib, d + "process_until_end_of_stream")(dec)  # ends at the stream's end or a full window
        if s.failed or s.filled < s.need:
            why = s.failed or f"{s.filled} of {s.need} frames before the stream ended"
            raise DecodeError("corrupt", f"audio: FLAC decode failed: {why}")
    finally:
        getattr(lib, d + "delete")(dec)
    return _to_mono(s.out, s.info["bits"]), window, int(s.info["rate"])


def _to_mono(pcm: np.ndarray, bits: int) -> np.ndarray:
    """float32 PCM scaled by ``2^-(bits - 1)``, channels averaged: the same values as the soundfile path's
    (each sample to float32, then the mean in float64, then float32), computed from the integers.

    Why it is the same: for ``bits <= 24`` each scaled sample is exact in float32 and the channels'
    sum is exact in int32 (at most 8 channels of 24 bits), so the float64 mean is one correctly rounded
    division of that exact sum by ``channels * 2^(bits - 1)``, done here directly (half the work of
    the strided float64 mean). When ``channels`` is a power of two and the sum fits float32's 24-bit
    significand, that quotient is exact, so float32 arithmetic gives it too (a quarter of the work).
    Deeper samples keep the soundfile path's own arithmetic."""
    channels, scale = pcm.shape[0], 2.0 ** -(bits - 1)
    if channels == 1:  # one pass: cast and scale into the output (the same float32 values)
        return np.multiply(pcm[0], np.float32(scale), dtype=np.float32, casting="unsafe")
    if bits > 24:
        return np.multiply(pcm.T, np.float32(scale), dtype=np.float32, casting="unsafe").mean(
            axis=1, dtype=np.float64).astype(np.float32)
    total, divisor = pcm.sum(axis=0, dtype=np.int32), channels / scale
    if channels & (channels - 1) == 0 and bits + channels.bit_length() - 1 <= 24:
        return np.divide(total, np.float32(divisor), dtype=np.float32)
    return np.divide(total, divisor).astype(np.float32)
