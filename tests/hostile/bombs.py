"""Hostile inputs, built small: archives and media whose headers promise what their bytes do not.

Every builder returns bytes (a member or a whole shard) and is fast: the gigabytes are in
what the headers claim or in deflate pieces of zeros (:mod:`tests.hostile.deflate`), never in
memory. :func:`shard` writes a tar of good samples around the hostile one, so a test can
check that nothing good is lost beside it.
"""

from __future__ import annotations

import io
import struct
import tarfile
import zlib
from pathlib import Path

import numpy as np

from tests.conftest import jpeg_bytes, npy_bytes, wav_bytes
from tests.hostile import deflate

GiB = 1 << 30
BLOCK = tarfile.BLOCKSIZE


# ----------------------------------------------------------------------------- tar pieces


def _pad(data: bytes) -> bytes:
    return data + bytes(-len(data) % BLOCK)


def _header(name: str, size: int, typeflag: bytes = tarfile.REGTYPE) -> bytearray:
    info = tarfile.TarInfo(name)
    info.size, info.mtime, info.type = size, 0, typeflag
    return bytearray(info.tobuf(format=tarfile.GNU_FORMAT))


def _rechecksum(header: bytearray) -> bytes:
    header[148:156] = b" " * 8
    header[148:156] = b"%06o\0 " % sum(header)
    return bytes(header)


def member(name: str, data: bytes) -> bytes:
    """One regular tar member: header and data padded to whole blocks."""
    return _rechecksum(_header(name, len(data))) + _pad(data)


def sparse_member(name: str, real_size: int, tail: bytes = b"x" * BLOCK) -> bytes:
    """An old-GNU sparse member of ``real_size`` (< 8 GiB: 11 octal digits) bytes that stores only
    ``tail`` (at its very end)."""
    assert real_size < 8 * GiB
    header = _header(name, len(tail), tarfile.GNUTYPE_SPARSE)
    header[386:398] = b"%011o\0" % (real_size - len(tail))  # the one data region: offset, length
    header[398:410] = b"%011o\0" % len(tail)
    header[482] = 0  # no extension blocks
    header[483:495] = b"%011o\0" % real_size
    return _rechecksum(header) + _pad(tail)


END = bytes(2 * BLOCK)  # end-of-archive


def samples(items: list[tuple[str, dict[str, bytes]]]) -> bytes:
    return b"".join(member(f"{key}.{ext}", data) for key, members in items for ext, data in members.items())


def write(path: Path, data: bytes) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(data)
    return path


def good(key: str, seed: int) -> tuple[str, dict[str, bytes]]:
    """A sample every decoder accepts: image, caption, audio and points."""
    return key, {"jpg": jpeg_bytes(seed, 24), "txt": f"good sample {seed}".encode(), "wav": wav_bytes(seed, 0.3),
                 "npy": npy_bytes(seed, 64)}


def shard(prefix: str, bad: bytes) -> bytes:
    """A plain tar: two good samples, the hostile bytes (whole members), one good sample, the end;
    every key starts with ``prefix/``."""
    return samples([good(f"{prefix}/good-0", 0), good(f"{prefix}/good-1", 1)]) + bad \
        + samples([good(f"{prefix}/good-2", 2)]) + END


# ----------------------------------------------------------------------------- compressed bombs


def gzip_of(pieces: list[tuple[bytes, int | None]]) -> bytes:
    """A gzip file of literal byte strings and runs of zeros: ``(data, None)`` or ``(b"", n_zeros)``."""
    body, crc, size = [], 0, 0
    for data, zeros in pieces:
        if zeros is None:
            body.append(deflate.piece(data))
            crc, size = zlib.crc32(data, crc), size + len(data)
        else:
            body.append(deflate.zeros(zeros))
            crc, size = deflate.crc32_zeros(zeros, crc), size + zeros
    head = b"\x1f\x8b\x08\x00\x00\x00\x00\x00\x00\xff"
    return head + b"".join(body) + deflate.final() + struct.pack("<II", crc, size & 0xFFFFFFFF)


def targz_with_zero_member(prefix: str, name: str, size: int) -> bytes:
    """A .tar.gz of good samples around one member of ``size`` zero bytes (a few MB for 2 GiB)."""
    before = samples([good(f"{prefix}/good-0", 0), good(f"{prefix}/good-1", 1)]) + _rechecksum(_header(name, size))
    after = bytes(-size % BLOCK) + samples([good(f"{prefix}/good-2", 2)]) + END
    return gzip_of([(before, None), (b"", size), (after, None)])


def targz_with_pax_header(prefix: str, size: int) -> bytes:
    """A .tar.gz whose third member is a pax extended header of ``size`` bytes (zeros)."""
    before = samples([good(f"{prefix}/good-0", 0), good(f"{prefix}/good-1", 1)]) \
        + _rechecksum(_header(f"{prefix}/pax", size, tarfile.XHDTYPE))
    after = bytes(-size % BLOCK) + samples([good(f"{prefix}/good-2", 2)]) + END
    return gzip_of([(before, None), (b"", size), (after, None)])


def npy_header(shape: tuple[int, ...], dtype: str = "<f4") -> bytes:
    buf = io.BytesIO()
    np.lib.format.write_array_header_1_0(buf, {"descr": dtype, "fortran_order": False, "shape": shape})
    return buf.getvalue()


def npz_of_zeros(points: int, declared: int | None = None) -> bytes:
    """An .npz whose one member, ``arr_0.npy``, is ``points`` x 3 float32 zeros (deflated; < 4 GiB);
    its header may declare another number of points (``declared``)."""
    head, zeros = npy_header((points if declared is None else declared, 3)), points * 12
    data = deflate.piece(head) + deflate.zeros(zeros) + deflate.final()
    crc, size = deflate.crc32_zeros(zeros, zlib.crc32(head)), len(head) + zeros
    name = b"arr_0.npy"
    fields = struct.pack("<HHHHHIII", 20, 0, 8, 0, 0x21, crc, len(data), size)
    local = b"PK\x03\x04" + fields + struct.pack("<HH", len(name), 0) + name
    central = (b"PK\x01\x02" + struct.pack("<H", 20) + fields + struct.pack("<HHHHHII", len(name), 0, 0, 0, 0, 0, 0)
               + name)
    end = b"PK\x05\x06" + struct.pack("<HHHHIIH", 0, 0, 1, 1, len(central), len(local) + len(data), 0)
    return local + data + central + end


# ----------------------------------------------------------------------------- media


def wav_at(rate: int, frames: int) -> bytes:
    """A 16-bit mono WAV at ``rate`` Hz (1 Hz: 3,500 frames are 7 KB and 58 minutes)."""
    import soundfile as sf

    buf = io.BytesIO()
    t = np.arange(frames)
    sf.write(buf, (0.3 * np.sin(t / 3.0)).astype(np.float32), rate, format="WAV", subtype="PCM_16")
    return buf.getvalue()


_CRC8 = [0] * 256
_CRC16 = [0] * 256
for _i in range(256):
    _c8, _c16 = _i, _i << 8
    for _ in range(8):
        _c8 = ((_c8 << 1) ^ 0x07 if _c8 & 0x80 else _c8 << 1) & 0xFF
        _c16 = ((_c16 << 1) ^ 0x8005 if _c16 & 0x8000 else _c16 << 1) & 0xFFFF
    _CRC8[_i], _CRC16[_i] = _c8, _c16


def _crc8(data: bytes) -> int:
    c = 0
    for b in data:
        c = _CRC8[c ^ b]
    return c


def _crc16(data: bytes) -> int:
    c = 0
    for b in data:
        c = ((c << 8) & 0xFFFF) ^ _CRC16[(c >> 8) ^ b]
    return c


def _utf8_number(n: int) -> bytes:
    """FLAC's UTF-8-like frame number coding."""
    if n < 0x80:
        return bytes([n])
    for length, limit in ((2, 0x800), (3, 0x10000), (4, 0x200000), (5, 0x4000000), (6, 0x80000000)):
        if n < limit:
            out = [0x80 | (n >> 6 * i) & 0x3F for i in range(length - 1)][::-1]
            return bytes([(0xFF << 8 - length) & 0xFF | n >> 6 * (length - 1)] + out)
    raise ValueError(n)


RATE_CODES = {8000: 0b0100, 16000: 0b0101, 22050: 0b0110, 44100: 0b1001, 48000: 0b1010}


def flac_silence(seconds: float, rate: int = 48000, channels: int = 8, declared: int | None = None,
                 blocksize: int = 4096) -> bytes:
    """A valid 16-bit FLAC of digital silence: every frame is ``channels`` CONSTANT subframes.

    30 minutes of 8 channels at 48 kHz are 0.7 MB. ``declared`` overrides the STREAMINFO total
    (0 is what a streamed FLAC, written before its length was known, records)."""
    total = int(round(seconds * rate))
    declared = total if declared is None else declared
    info = struct.pack(">HH", blocksize, blocksize) + bytes(6)  # min/max block; frame sizes unknown
    info += ((rate << 44) | ((channels - 1) << 41) | (15 << 36) | declared).to_bytes(8, "big") + bytes(16)
    out = [b"fLaC", bytes([0x80, 0, 0, len(info)]), info]
    subframes = b"\x00\x00\x00" * channels  # CONSTANT subframe, value 0
    done, number = 0, 0
    while done < total:
        n = min(blocksize, total - done)
        code, extra = (0b1100, b"") if n == 4096 else (0b0111, struct.pack(">H", n - 1))
        head = bytes([0xFF, 0xF8, code << 4 | RATE_CODES[rate], (channels - 1) << 4 | 0b100 << 1])
        head += _utf8_number(number) + extra
        frame = head + bytes([_crc8(head)]) + subframes
        out.append(frame + struct.pack(">H", _crc16(frame)))
        done, number = done + n, number + 1
    return b"".join(out)


def jpeg_claiming(width: int, height: int) -> bytes:
    """A 16x16 JPEG whose frame header is rewritten to claim ``width`` x ``height`` (under 1 KB)."""
    data = bytearray(jpeg_bytes(3, 16))
    sof = data.index(b"\xff\xc0")
    data[sof + 5:sof + 9] = struct.pack(">HH", height, width)
    return bytes(data)


EPS = (b"%!PS-Adobe-3.0 EPSF-3.0\n%%BoundingBox: 0 0 16 16\n%%EndComments\n"
       b"newpath 0 0 moveto 16 16 lineto stroke\nshowpage\n%%EOF\n")


def npy_of(arr: np.ndarray) -> bytes:
    buf = io.BytesIO()
    np.save(buf, arr)
    return buf.getvalue()
