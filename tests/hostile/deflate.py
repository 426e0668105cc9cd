"""Gigabytes of zeros in a few kilobytes: raw deflate pieces and their CRC-32, without touching the bytes.

A deflate piece flushed with ``Z_FULL_FLUSH`` ends on a byte boundary and refers to nothing
before it, so one compressed MiB of zeros repeated ``q`` times is a valid stream of ``q`` MiB.
The CRC-32 of ``n`` zeros comes from zlib's ``crc32_combine`` (GF(2) matrix powers), not from
hashing ``n`` bytes: a 2 GiB bomb is built in milliseconds.
"""

from __future__ import annotations

import zlib

CHUNK = 1 << 20
POLY = 0xEDB88320


def piece(data: bytes) -> bytes:
    """``data`` as a self-contained, byte-aligned, non-final raw deflate piece."""
    c = zlib.compressobj(9, zlib.DEFLATED, -15)
    return c.compress(data) + c.flush(zlib.Z_FULL_FLUSH)


def final() -> bytes:
    """The final (empty) deflate block."""
    return zlib.compressobj(9, zlib.DEFLATED, -15).flush()


def zeros(n: int) -> bytes:
    """Non-final raw deflate pieces that inflate to ``n`` zero bytes."""
    q, r = divmod(n, CHUNK)
    return piece(bytes(CHUNK)) * q + (piece(bytes(r)) if r else b"")


def _times(mat: list[int], vec: int) -> int:
    out, i = 0, 0
    while vec:
        if vec & 1:
            out ^= mat[i]
        vec, i = vec >> 1, i + 1
    return out


def _square(mat: list[int]) -> list[int]:
    return [_times(mat, mat[n]) for n in range(32)]


def crc32_combine(crc1: int, crc2: int, len2: int) -> int:
    """CRC-32 of ``A + B`` from ``crc(A)``, ``crc(B)`` and ``len(B)`` (zlib's algorithm)."""
    mat = _square(_square([POLY] + [1 << n for n in range(31)]))  # the operator of 4 zero bits
    while len2 > 0:
        mat = _square(mat)  # of 1, 2, 4, ... zero bytes
        if len2 & 1:
            crc1 = _times(mat, crc1)
        len2 >>= 1
    return crc1 ^ crc2


def crc32_zeros(n: int, crc: int = 0) -> int:
    """CRC-32 of ``n`` zero bytes appended to data whose CRC-32 is ``crc``."""
    q, r = divmod(n, CHUNK)
    power, length = zlib.crc32(bytes(CHUNK)), CHUNK  # the CRC of 2^k MiB of zeros, and 2^k MiB
    while q:
        if q & 1:
            crc = crc32_combine(crc, power, length)
        power, length, q = crc32_combine(power, power, length), 2 * length, q >> 1
    return zlib.crc32(bytes(r), crc)
