"""A tar read as one forward stream, in memory bounded whatever its headers claim.

tarfile's stream mode trusts the archive: it decompresses a whole chunk at once (a bzip2 or
xz chunk of zeros can expand to gigabytes), reads a long-name or pax header of any declared
size in one call, collects sparse maps without end, keeps every member it has seen, and ends
quietly at a cut or an unreadable header. :class:`TarStream` closes each of these:

* decompression (gzip, bzip2, xz, told apart by their magic bytes) is done here, ``CHUNK``
  bytes at a time, so tarfile only ever sees a plain tar;
* header processing (long names, pax records, GNU sparse maps) may read at most
  ``HEADER_BUDGET`` bytes per member;
* a member is read in ``CHUNK``-byte pieces into a buffer of its declared size, and only when
  that size (for a sparse member, its expanded size) is within the caller's limit;
* the end: the block where tarfile stopped and every byte after it must be zeros, else the
  tar was cut or holds an unreadable header, and that is a fault, not a quiet end.
"""

from __future__ import annotations

import bz2
import gzip
import lzma
import tarfile

CHUNK = 1 << 20  # bytes per read of member data
BUFSIZE = 64 << 10  # tarfile's read size from the decompressed stream
HEADER_BUDGET = 1 << 20  # bytes one member's headers (long names, pax records, sparse maps) may take
WINDOW = 4 * BUFSIZE  # the last bytes kept to check the block where tarfile stopped
BLOCK = tarfile.BLOCKSIZE
MAGIC = ((b"\x1f\x8b", lambda raw: gzip.GzipFile(fileobj=raw, mode="rb")), (b"BZh", bz2.BZ2File),
         (b"\xfd7zXZ\x00", lzma.LZMAFile))


class TrailingData(tarfile.ReadError):
    """Bytes after a valid end-of-archive: every member before it was read whole."""


class MemberTooLarge(Exception):
    """A member that is not read: its size is over the limit, or there is no memory to hold it."""


class _Prepend:
    """A stream with bytes already read from it put back in front."""

    def __init__(self, head: bytes, stream):
        self.head, self.stream = head, stream

    def read(self, n: int = -1) -> bytes:
        if self.head:
            out, self.head = (self.head, b"") if n < 0 or n >= len(self.head) else (self.head[:n], self.head[n:])
            return out
        return self.stream.read(n)


def _decompressed(stream):
    """The plain tar bytes of a stream that may be gzip, bzip2 or xz compressed."""
    head = b""
    while len(head) < 6:
        more = stream.read(6 - len(head))
        if not more:
            break
        head += more
    raw = _Prepend(head, stream)
    for magic, opener in MAGIC:
        if head.startswith(magic):
            return opener(raw)
    return raw


class _Counted:
    """The tar bytes as tarfile reads them: their position, the last ``WINDOW`` of them, and a
    budget enforced while a member's headers are processed."""

    def __init__(self, raw):
        self.raw, self.pos, self.window = raw, 0, bytearray()
        self.budget: int | None = None

    def read(self, n: int = -1) -> bytes:
        data = self.raw.read(BUFSIZE if n is None or n < 0 else n)
        if self.budget is not None:
            self.budget -= len(data)
            if self.budget < 0:
                raise tarfile.ReadError(f"a member's headers take more than {HEADER_BUDGET} bytes "
                                        "(long name, pax records or sparse map)")
        self.pos += len(data)
        self.window += data
        if len(self.window) > 2 * WINDOW:
            del self.window[:len(self.window) - WINDOW]
        return data

    def since(self, offset: int) -> bytes | None:
        """The bytes from ``offset`` to the current position, if still in the window."""
        start = self.pos - len(self.window)
        return bytes(self.window[offset - start:]) if start <= offset <= self.pos else None


class _BoundedInfo(tarfile.TarInfo):
    """TarInfo whose header processing reads at most ``HEADER_BUDGET`` bytes."""

    def _proc_member(self, tar):
        counted = tar.fileobj.fileobj
        outer = counted.budget is None  # a pax header processes the header after it inside this call
        if outer:
            counted.budget = HEADER_BUDGET
        try:
            return super()._proc_member(tar)
        finally:
            if outer:
                counted.budget = None


class TarStream:
    """Regular members of a tar stream, read within limits; :meth:`check_end` after the last."""

    def __init__(self, stream):
        self.data = _Counted(_decompressed(stream))
        self.tar = tarfile.open(fileobj=self.data, mode="r|", bufsize=BUFSIZE, encoding="utf-8",
                                errors="surrogateescape", tarinfo=_BoundedInfo)

    def members(self):
        while (member := self.tar.next()) is not None:
            self.tar.members.clear()  # stream mode keeps every TarInfo otherwise
            if member.isfile():
                yield member

    def read(self, member: tarfile.TarInfo, limit: int) -> bytes:
        """The member's bytes, read in chunks; MemberTooLarge when its size is over ``limit``."""
        size = member.size
        if size < 0:
            raise tarfile.ReadError(f"member {member.name!r} declares a negative size")
        if size > limit:
            sparse = " once its sparse holes are filled" if member.issparse() else ""
            raise MemberTooLarge(f"member {member.name!r} is {size} bytes{sparse}, over the member limit of "
                                 f"{limit} bytes (precompute.max_member_mb); it was not read")
        try:
            buf = bytearray(size)
        except MemoryError:
            raise MemberTooLarge(f"member {member.name!r} ({size} bytes): no memory to hold it") from None
        got, view, source = 0, memoryview(buf), self.tar.extractfile(member)
        while got < size:
            n = source.readinto(view[got:got + CHUNK])
            if not n:
                break
            got += n
        view.release()
        if got != size:
            raise tarfile.ReadError(f"member {member.name!r} truncated: {got} of {size} bytes")
        try:
            return bytes(buf)
        except MemoryError:
            raise MemberTooLarge(f"member {member.name!r} ({size} bytes): no memory to hold it") from None

    def check_end(self) -> None:
        """tarfile ends quietly at a cut, at an unreadable header and at a missing end block: the
        block where it stopped, and everything after it, must be zeros."""
        offset = self.tar.offset
        seen = self.data.since(offset)  # tarfile read the block at offset, and maybe some bytes after it
        if seen is None or len(seen) < BLOCK:
            raise tarfile.ReadError("tar ends without its end-of-archive blocks (cut at a member boundary)")
        if seen[:BLOCK].strip(b"\0"):
            raise tarfile.ReadError(f"unreadable tar header at byte {offset}; the members after it are lost")
        if seen[BLOCK:].strip(b"\0") or not self._rest_is_zero():
            raise TrailingData("data after the end-of-archive blocks")

    def _rest_is_zero(self) -> bool:
        while chunk := self.data.read(CHUNK):
            if chunk.strip(b"\0"):
                return False
        return True
