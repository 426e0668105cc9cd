"""Reading WebDataset shards: brace patterns, local paths and ``pipe:`` URLs, split by rank and worker.

A shard is a tar whose members are grouped into samples by key: the member name up to the
first dot of its basename (``dir/abc.jpg`` and ``dir/abc.txt`` are sample ``dir/abc``), as
WebDataset does. A fault while reading (a truncated tar, a failing ``pipe:`` command) does not
lose the samples read before it: :func:`iter_samples` yields them, then yields one
:class:`ShardFault` that names the fault and the key of the sample that was being assembled.

A ``pipe:`` URL runs its command through the shell (the WebDataset convention): a manifest
that names one runs that command. Reading is bounded in memory whatever the tar says
(:mod:`pipeline.ingest.tarstream`): a member larger than the member limit is never read (it
stands in the sample as a :class:`SkippedMember`, which its decoder turns into a status row),
and a key that comes back after other keys in the same shard is marked as a duplicate.
"""

from __future__ import annotations

import logging
import os
import subprocess
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

from braceexpand import braceexpand

from pipeline.core.manifest import ManifestError, PrecomputeConfig
from pipeline.ingest.tarstream import MemberTooLarge, TarStream, TrailingData

log = logging.getLogger(__name__)

METADATA_EXT = "json"
DUPLICATE = "__duplicate_of__"  # sample entry: the shard where a repeated key was first seen
DEFAULT_MAX_MEMBER_BYTES = int(PrecomputeConfig.max_member_mb * 2**20)


@dataclass(frozen=True)
class Shard:
    url: str  # a local path or a `pipe:` command
    shard_id: str  # names the shard's parts: part-<shard_id>.parquet


@dataclass
class ShardFault:
    """A read fault: samples before it were yielded; ``partial_key`` was being read when it hit."""

    error: str
    partial_key: str | None


@dataclass(frozen=True)
class SkippedMember:
    """A member that was not read (over the member limit, or no memory to hold it): the reason."""

    name: str
    reason: str


TAR_SUFFIXES = (".tar.gz", ".tgz", ".tar.bz2", ".tar.xz", ".tar")


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


def safe_name(name: str) -> str:
    """A member name as valid UTF-8 text: bytes that are not UTF-8 (kept by tarfile as surrogate
    escapes) become ``\\xNN``, so such a key can be stored instead of crashing the writer."""
    return name.encode("utf-8", "surrogateescape").decode("utf-8", "backslashreplace")


def split_member(name: str) -> tuple[str, str] | None:
    """(key, extension) of a tar member, or None for members outside any sample (no extension,
    a hidden file, or an extension like ``__key__`` that would overwrite the sample's own fields)."""
    dirname, base = os.path.split(safe_name(name))
    if "." not in base or base.startswith("."):
        return None
    stem, ext = base.split(".", 1)
    if ext.startswith("__"):
        return None
    key = f"{dirname}/{stem}" if dirname else stem
    return key, ext.lower()


class _Samples:
    """Groups a shard's members into samples; remembers every key, so a key that comes back
    after another key (``a.txt, b.txt, a.jpg``) is marked with :data:`DUPLICATE`."""

    def __init__(self, shard_id: str):
        self.shard_id, self.current, self.seen = shard_id, None, set()

    def add(self, key: str, ext: str, data: bytes | SkippedMember) -> dict | None:
        """Add a member; return the previous sample when this member starts a new one."""
        done = None
        if self.current is not None and self.current["__key__"] != key:
            done, self.current = self.current, None
        if self.current is None:
            self.current = {"__key__": key}
            if key in self.seen:
                self.current[DUPLICATE] = self.shard_id
            self.seen.add(key)
        self.current[ext] = data
        return done


def iter_samples(url: str, max_member_bytes: int = DEFAULT_MAX_MEMBER_BYTES
                 ) -> Iterator[dict[str, bytes | str | SkippedMember] | ShardFault]:
    """Samples ``{"__key__": key, ext: bytes, ...}`` of one shard, then a ShardFault if reading failed."""
    samples = _Samples(_shard_id(url))
    try:
        stream, close = _open(url)
    except OSError as exc:
        yield ShardFault(f"cannot open shard {url!r}: {exc}", None)
        return
    fault: str | None = None
    try:
        tar = TarStream(stream)
        for member in tar.members():
            parts = split_member(member.name)
            if parts is None:
                continue
            try:
                data: bytes | SkippedMember = tar.read(member, max_member_bytes)
            except MemberTooLarge as exc:
                data = SkippedMember(member.name, str(exc))
            done = samples.add(*parts, data)
            if done is not None:
                yield done
        tar.check_end()
    except TrailingData as exc:  # the last sample was read whole: it is kept, the fault still recorded
        fault, complete = f"{type(exc).__name__}: {exc}", True
    except Exception as exc:  # noqa: BLE001 - any failure of a hostile tar is a fault, never a crash
        fault, complete = f"{type(exc).__name__}: {exc}", False
    else:
        complete = True
    finally:
        closed = close()
    fault = fault or closed
    current = samples.current
    if complete and current is not None and not closed:
        yield current
        current = None
    if fault is None:
        return
    partial = str(current["__key__"]) if current is not None else None
    log.warning("shard %s: read fault after the last complete sample (%s)", url, fault)
    yield ShardFault(fault, partial)
