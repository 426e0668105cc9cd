"""What one rank did and how long it took, and the ranks merged for ``precompute.json``.

The timings split the main loop into disjoint intervals: ``wait_s`` (waiting for the next
message), ``encode_s`` (device forward + normalise) and ``write_s`` (Parquet writes), all
inside ``loop_s`` (first read to last write), itself inside ``wall_s`` (models loaded too).
``read_s`` is summed over the DataLoader workers, which run beside the loop.
"""

from __future__ import annotations

import dataclasses
from collections import Counter
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from typing import Any

# the keys of precompute.json's per-modality counts: rows in the store, then in the status table
COUNTED = ("ok", "missing", "corrupt", "error", "duplicate")
TIMINGS = ("read_s", "wait_s", "encode_s", "write_s")  # summed over ranks in precompute.json


@dataclass
class RankStats:
    """One rank's figures; serialised (field order kept) as an entry of ``precompute.json``'s ``ranks``."""

    rank: int
    device: str
    shards: list[str] = field(default_factory=list)  # shards this rank read, in order
    parts_written: int = 0  # (shard, modality) parts
    samples_read: int = 0  # complete samples read
    counts: dict[str, Counter] = field(default_factory=dict)  # modality -> status ("ok" = stored) -> rows
    faults: dict[str, str] = field(default_factory=dict)  # shard -> read fault, this run
    read_s: float = 0.0
    wait_s: float = 0.0
    encode_s: float = 0.0
    write_s: float = 0.0
    loop_s: float = 0.0
    encode_s_by_modality: dict[str, float] = field(default_factory=dict)
    wall_s: float = 0.0
    cores: dict[str, Any] = field(default_factory=dict)  # the split of CPU cores (precompute.cores.CoreSplit)
    decode: dict[str, str] = field(default_factory=dict)  # image modality -> "device" | "cpu" (its JPEG decode path)

    @classmethod
    def start(cls, rank: int, device: str, modalities: Iterable[str]) -> RankStats:
        return cls(rank, device, counts={m: Counter() for m in modalities})

    def add_encode(self, modality: str, seconds: float) -> None:
        self.encode_s += seconds
        self.encode_s_by_modality[modality] = self.encode_s_by_modality.get(modality, 0.0) + seconds

    def add_part(self, modality: str, stored: int, statuses: Iterable[str]) -> None:
        """One (shard, modality) part pair written: ``stored`` vectors, a status row per entry of ``statuses``."""
        self.parts_written += 1
        self.counts[modality]["ok"] += stored
        self.counts[modality].update(statuses)

    def absorb(self, other: RankStats) -> None:
        """Add ``other``'s figures (one part, under the ray engine) to this worker's."""
        self.device = other.device or self.device
        self.shards.extend(other.shards)
        self.parts_written += other.parts_written
        self.samples_read += other.samples_read
        for m, counts in other.counts.items():
            self.counts.setdefault(m, Counter()).update(counts)
        self.faults.update(other.faults)
        self.decode.update(other.decode)
        for name in ("read_s", "wait_s", "encode_s", "write_s", "loop_s", "wall_s"):
            setattr(self, name, getattr(self, name) + getattr(other, name))
        for m, seconds in other.encode_s_by_modality.items():
            self.encode_s_by_modality[m] = self.encode_s_by_modality.get(m, 0.0) + seconds

    def to_json(self) -> dict[str, Any]:
        out = {f.name: getattr(self, f.name) for f in dataclasses.fields(self)}
        return {**out, "shards": list(self.shards), "counts": {m: dict(c) for m, c in self.counts.items()},
                "faults": dict(self.faults), "encode_s_by_modality": dict(self.encode_s_by_modality),
                "cores": dict(self.cores), "decode": dict(self.decode)}

    @staticmethod
    def merge(ranks: Sequence[RankStats]) -> RunStats:
        return RunStats(tuple(sorted(ranks, key=lambda r: r.rank)))


@dataclass(frozen=True)
class RunStats:
    """Every rank of one run, in rank order."""

    ranks: tuple[RankStats, ...]

    def this_run(self, modalities: Iterable[str]) -> dict[str, dict[str, int]]:
        """Per modality, the rows this run wrote, by :data:`COUNTED` status."""
        return {m: {s: sum(r.counts.get(m, {}).get(s, 0) for r in self.ranks) for s in COUNTED} for m in modalities}

    def seconds(self) -> dict[str, float]:
        """Each of :data:`TIMINGS`, summed over ranks."""
        return {t: sum(getattr(r, t) for r in self.ranks) for t in TIMINGS}

    @property
    def stored(self) -> int:
        """Vectors written by this run, every modality."""
        return sum(c.get("ok", 0) for r in self.ranks for c in r.counts.values())

    def to_json(self) -> list[dict[str, Any]]:
        return [r.to_json() for r in self.ranks]
