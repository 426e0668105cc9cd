"""Reading WebDataset shards: brace patterns, local paths and ``pipe:`` URLs, split by rank and worker.

A shard is a tar whose members are grouped into samples by key: the member name up to the
first dot of its basename (``dir/abc.jpg`` and ``dir/abc.txt`` are sample ``dir/abc``), as
WebDataset does. A fault while reading (a truncated tar, a failing ``pipe:`` command) does not
lose the samples read before it: :func:`iter_samples` yields them, then yields one
:class:`ShardFault` that names the fault and the key of the sample that was being assembled.
"""

from __future__ import annotations

import logging
import os
import subprocess
import tarfile
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

from braceexpand import braceexpand

from pipeline.core.manifest import ManifestError

log = logging.getLogger(__name__)

METADATA_EXT = "json"


@dataclass(frozen=True)
class Shard:
    url: str  # a local path or a `pipe:` command
    shard_id: str  # names the shard's parts: part-<shard_id>.parquet


@dataclass
class ShardFault:
    """A read fault: samples before it were yielded; ``partial_key`` was being read when it hit."""

    error: str
    partial_key: str | None


TAR_SUFFIXES = (".tar.gz", ".tgz", ".tar")


def _shard_id(url: str) -> str:
    """The shard's file name without its tar suffix. For a ``pipe:`` command, the last token
    naming a tar (a ``?query`` dropped): ``pipe:aws s3 cp s3://b/s-000.tar -`` is ``s-000``."""
    if url.startswith("pipe:"):
        tokens = [t.split("?", 1)[0].strip("'\"").rstrip("/") for t in url[len("pipe:"):].split()]
        tars = [t for t in tokens if t.endswith(TAR_SUFFIXES)]
        tail = tars[-1] if tars else (tokens[-1] if tokens else "")
    else:
        tail = url.rstrip("/")
    name = Path(tail).name
    for suffix in TAR_SUFFIXES:
        if name.endswith(suffix):
            return name[: -len(suffix)]
    return name


def expand_shards(pattern: str) -> list[Shard]:
    """Every shard a brace pattern names, in order. Shard ids must be unique."""
    urls = [u for part in pattern.split("::") for u in braceexpand(part.strip())]
    shards = [Shard(u, _shard_id(u)) for u in urls]
    seen: dict[str, str] = {}
    for s in shards:
        if s.shard_id in seen:
            raise ManifestError(
                f"dataset.shards: {seen[s.shard_id]!r} and {s.url!r} give the same part name "
                f"part-{s.shard_id}.parquet; give shards distinct file names")
        seen[s.shard_id] = s.url
    return shards


def split_by(items: list, index: int, count: int) -> list:
    """Round-robin share ``index`` of ``count`` (ranks, then DataLoader workers within a rank)."""
    return items[index::count]


def _open(url: str):
    """A readable binary stream for a shard, and a closer that reports a failing pipe."""
    if url.startswith("pipe:"):
        proc = subprocess.Popen(url[len("pipe:"):], shell=True, stdout=subprocess.PIPE)

        def close() -> str | None:
            proc.stdout.close()
            rc = proc.wait()
            return f"pipe command exited with status {rc}" if rc != 0 else None

        return proc.stdout, close
    stream = open(os.path.expanduser(url), "rb")  # noqa: SIM115 - closed by the returned closer

    def close_file() -> None:
        stream.close()

    return stream, close_file


class _TailReader:
    """A read-through stream that remembers its last 512 bytes: a complete tar ends in zero blocks.

    tarfile ends quietly when a tar is cut exactly at a member boundary; the missing
    end-of-archive blocks are how such a cut is still seen.
    """

    def __init__(self, stream):
        self.stream, self.tail = stream, b""

    def read(self, n: int = -1) -> bytes:
        data = self.stream.read(n)
        if data:
            self.tail = (self.tail + data)[-512:]
        return data


def safe_name(name: str) -> str:
    """A member name as valid UTF-8 text: bytes that are not UTF-8 (kept by tarfile as surrogate
    escapes) become ``\\xNN``, so such a key can be stored instead of crashing the writer."""
    return name.encode("utf-8", "surrogateescape").decode("utf-8", "backslashreplace")


def split_member(name: str) -> tuple[str, str] | None:
    """(key, extension) of a tar member, or None for members outside any sample."""
    dirname, base = os.path.split(safe_name(name))
    if "." not in base or base.startswith("."):
        return None
    stem, ext = base.split(".", 1)
    key = f"{dirname}/{stem}" if dirname else stem
    return key, ext.lower()


def iter_samples(url: str) -> Iterator[dict[str, bytes | str] | ShardFault]:
    """Samples ``{"__key__": key, ext: bytes, ...}`` of one shard, then a ShardFault if reading failed."""
    current: dict[str, bytes | str] | None = None
    try:
        stream, close = _open(url)
    except OSError as exc:
        yield ShardFault(f"cannot open shard {url!r}: {exc}", None)
        return
    fault: str | None = None
    try:
        reader = _TailReader(stream)
        with tarfile.open(fileobj=reader, mode="r|*", encoding="utf-8", errors="surrogateescape") as tar:
            for member in tar:
                if not member.isfile():
                    continue
                parts = split_member(member.name)
                if parts is None:
                    continue
                key, ext = parts
                if current is not None and current["__key__"] != key:
                    yield current
                    current = None
                if current is None:
                    current = {"__key__": key}
                data = tar.extractfile(member).read()
                if len(data) != member.size:
                    raise tarfile.ReadError(f"member {member.name!r} truncated: {len(data)} of {member.size} bytes")
                current[ext] = data
        if getattr(tar.fileobj, "comptype", "tar") == "tar" and reader.tail.strip(b"\0"):
            raise tarfile.ReadError("tar ends without its end-of-archive blocks (cut at a member boundary)")
    except (tarfile.TarError, OSError, EOFError) as exc:
        fault = f"{type(exc).__name__}: {exc}"
    finally:
        closed = close()
    fault = fault or closed
    if fault is None:
        if current is not None:
            yield current
        return
    partial = str(current["__key__"]) if current is not None else None
    log.warning("shard %s: read fault after the last complete sample (%s)", url, fault)
    yield ShardFault(fault, partial)

