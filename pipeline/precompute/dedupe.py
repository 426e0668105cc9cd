"""Each key once per store: a post-pass over every finished part, in the manifest's shard order.

The rule: a key belongs to the shard where it occurs first, in the order the shard pattern
lists the shards (within a shard the reader already marks a key that comes back as a
``duplicate``). Every occurrence in a later shard, in every modality, is a ``duplicate``
status row naming that first shard; its vector, status row and metadata row go. The rule
depends only on the shard order and the shards' contents, not on which rank or worker wrote a
part or on how many runs it took: a run that adds an earlier shard later demotes the later
copy then, and a rerun of a finished store changes nothing.

The pass runs on rank 0 after every rank has written its parts. It holds one 64-bit hash and
one shard index per key (16 bytes; a hash match is confirmed on the keys themselves), reads
only key columns unless a part has to change, and is skipped when no part changed since its
last run (``layout.dedupe_marker``).

Crash safety: a part pair is rewritten status first, then embeddings (each atomically). If the
run dies between the two, the status part already holds the demoted row; the next pass sees a
vector whose key already has a ``duplicate`` row naming an earlier shard and drops the vector
without adding a second row.
"""

from __future__ import annotations

import json
import logging
import re
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from pipeline.core.layout import OutputLayout
from pipeline.core.samples import write_metadata
from pipeline.core.store import atomic_write_table, atomic_write_text, list_parts, read_table, write_status

log = logging.getLogger(__name__)

MESSAGE = "duplicate key {key!r}: first seen in shard {shard}"
_NAMED = re.compile(r"^duplicate key .*: first seen in shard (\S+)$")


def duplicate_row(key: str, first_shard: str) -> tuple[str, str, str]:
    return key, "duplicate", MESSAGE.format(key=key, shard=first_shard)


class _Owners:
    """key hash -> index of the shard where the key was first seen, for every key seen so far."""

    def __init__(self) -> None:
        self.hashes, self.owners = np.zeros(0, np.int64), np.zeros(0, np.int32)
        self.new_hashes: list[np.ndarray] = []
        self.new_owners: list[np.ndarray] = []

    def _merge(self) -> None:
        if self.new_hashes:
            hashes = np.concatenate([self.hashes, *self.new_hashes])
            owners = np.concatenate([self.owners, *self.new_owners])
            order = np.argsort(hashes, kind="stable")
            self.hashes, self.owners = hashes[order], owners[order]
            self.new_hashes, self.new_owners = [], []

    def lookup(self, hashes: np.ndarray) -> np.ndarray:
        """The owner of each hash, -1 where none."""
        self._merge()
        pos = np.minimum(np.searchsorted(self.hashes, hashes), max(0, len(self.hashes) - 1))
        hit = (self.hashes[pos] == hashes) if len(self.hashes) else np.zeros(len(hashes), bool)
        return np.where(hit, self.owners[pos] if len(self.owners) else -1, -1)

    def add(self, hashes: np.ndarray, owner: int) -> None:
        self.new_hashes.append(hashes)
        self.new_owners.append(np.full(len(hashes), owner, np.int32))


def _hashes(keys: list[str]) -> np.ndarray:
    return np.fromiter((hash(k) for k in keys), np.int64, len(keys))  # one process: hash() is stable here


@dataclass
class _Shard:
    """One (shard, modality) part pair as read: kept keys and status rows."""

    shard: str
    emb_keys: list[str]
    status: list[tuple[str, str, str]]

    def primary(self) -> list[str]:
        """Each key's own occurrence (a vector or a non-duplicate status row), in part order."""
        return self.emb_keys + [k for k, s, _ in self.status if s != "duplicate"]


class Deduper:
    """The post-pass for one modality over ``shard_ids`` in manifest order."""

    def __init__(self, layout: OutputLayout, modality: str, shard_ids: Sequence[str]):
        self.layout, self.modality, self.shard_ids = layout, modality, list(shard_ids)
        self.owners = _Owners()
        self.demoted = 0

    def _read(self, shard: str) -> _Shard | None:
        emb, status = self.layout.embedding_part(self.modality, shard), self.layout.status_part(self.modality, shard)
        if not (emb.exists() and status.exists()):
            return None
        keys = read_table(emb, ["key"]).column("key").to_pylist()
        rows = [(r["key"], r["status"], r["error"]) for r in read_table(status).to_pylist()]
        return _Shard(shard, keys, rows)

    def _confirmed_owner(self, key: str, owner: int, cache: dict[int, set[str]]) -> bool:
        """A hash match is a duplicate only if the owner shard holds the key itself."""
        if owner not in cache:
            part = self._read(self.shard_ids[owner])
            cache.clear()  # hold one owner's keys at a time
            cache[owner] = set(part.primary()) if part else set()
        return key in cache[owner]

    def run(self) -> dict[str, set[str]]:
        """Demote every later occurrence; {shard: keys first seen in an earlier shard} (for metadata)."""
        later: dict[str, set[str]] = {}
        cache: dict[int, set[str]] = {}
        for index, shard in enumerate(self.shard_ids):
            part = self._read(shard)
            if part is None:
                continue
            keys = part.primary() + [k for k, s, _ in part.status if s == "duplicate"]
            owners = self.owners.lookup(_hashes(keys))
            first = {k: self.shard_ids[o] for k, o in zip(keys, owners, strict=True)
                     if o >= 0 and o != index and self._confirmed_owner(k, int(o), cache)}
            if first:
                self._rewrite(part, first)
                later[shard] = set(first)
            new = [k for k in dict.fromkeys(part.primary()) if k not in first]
            self.owners.add(_hashes(new), index)
        return later

    def _rewrite(self, part: _Shard, first: dict[str, str]) -> None:
        """Every occurrence of a key in ``first`` (key -> its owner shard) becomes a duplicate row."""
        def names_owner(key: str, error: str) -> bool:
            match = _NAMED.match(error)
            return match is not None and match.group(1) == first[key]

        # a vector whose key already has a row naming its owner was demoted by a pass that died before
        # rewriting the embeddings: it goes without a second row
        demoted_before = {k for k, s, e in part.status if s == "duplicate" and k in first and names_owner(k, e)}
        status = [duplicate_row(k, first[k]) if k in first else (k, s, e) for k, s, e in part.status]
        dropped = [k for k in part.emb_keys if k in first]
        status += [duplicate_row(k, first[k]) for k in dropped if k not in demoted_before]
        if status == part.status and not dropped:
            return  # demoted by an earlier pass
        self.demoted += len(dropped) + sum(1 for k, s, _ in part.status if k in first and s != "duplicate")
        write_status(self.layout.status_part(self.modality, part.shard), status)  # first: see the module doc
        if dropped:
            path = self.layout.embedding_part(self.modality, part.shard)
            table = read_table(path)
            keep = pc.invert(pc.is_in(table.column("key"), value_set=pa.array(dropped, pa.string())))
            atomic_write_table(table.filter(keep), path)
        log.info("%s: shard %s repeats %d key(s) first seen in earlier shards", self.modality, part.shard, len(first))


def _metadata(layout: OutputLayout, later: dict[str, set[str]]) -> None:
    """Drop the metadata rows of keys whose sample belongs to an earlier shard."""
    for shard, keys in later.items():
        path = layout.metadata_part(shard)
        if path.exists():
            rows = [(r["key"], r["json"], r.get("sha256") or "{}") for r in read_table(path).to_pylist()]
            kept = [r for r in rows if r[0] not in keys]
            if len(kept) != len(rows):
                write_metadata(layout, shard, kept)


def _fingerprint(layout: OutputLayout, modalities: Sequence[str], shard_ids: Sequence[str]) -> dict:
    folders = [layout.embeddings(m) for m in modalities] + [layout.status(m) for m in modalities] + [layout.metadata]
    return {"shards": list(shard_ids),
            "parts": [[str(p.relative_to(layout.root)), p.stat().st_size] for f in folders for p in list_parts(f)]}


def dedupe(layout: OutputLayout, modalities: Sequence[str], shard_ids: Sequence[str]) -> dict[str, int]:
    """Enforce each key once over the stores of ``modalities``; per modality, the occurrences demoted."""
    marker = layout.dedupe_marker
    before = _fingerprint(layout, modalities, shard_ids)
    if marker.is_file() and json.loads(marker.read_text()) == before:
        return dict.fromkeys(modalities, 0)
    demoted, later = {}, {}
    for m in modalities:
        deduper = Deduper(layout, m, shard_ids)
        for shard, keys in deduper.run().items():
            later.setdefault(shard, set()).update(keys)
        demoted[m] = deduper.demoted
    _metadata(layout, later)
    atomic_write_text(marker, json.dumps(_fingerprint(layout, modalities, shard_ids)))
    return demoted
