"""One rank's loop: the loader's messages -> the encoders -> one part per (shard, modality).

Batches of a shard are encoded as they come and held until its :class:`ShardDone`; then its
status and embeddings parts are written (each atomically), its fault marker set or cleared,
and its metadata part written. A batch the encoder rejects, or a vector that is not finite,
becomes ``error`` rows when the handler says go on.
"""

from __future__ import annotations

import logging
import time
from dataclasses import dataclass, field

import numpy as np
import torch

from pipeline.core.layout import OutputLayout
from pipeline.core.samples import write_metadata
from pipeline.core.store import write_embeddings, write_status
from pipeline.precompute.encoding import Encoding
from pipeline.precompute.handlers import Handler, keep_going
from pipeline.precompute.loader import JpegBatch, ModalityBatch, ShardDone, StatusRow
from pipeline.precompute.outputs import record_fault
from pipeline.precompute.stats import RankStats

log = logging.getLogger(__name__)


class ShardReadError(RuntimeError):
    """A shard could not be read to its end (handed to the handler like a bad sample)."""


@dataclass
class _PartRows:
    """What one (shard, modality) part has gathered so far."""

    keys: list[str] = field(default_factory=list)
    vectors: list[np.ndarray] = field(default_factory=list)
    bad: list[StatusRow] = field(default_factory=list)


class RankLoop:
    def __init__(self, layout: OutputLayout, encoders: dict[str, Encoding], handler: Handler, stats: RankStats):
        self.layout, self.encoders, self.handler, self.stats = layout, encoders, handler, stats
        self.parts: dict[tuple[str, str], _PartRows] = {}

    def run(self, messages, progress) -> None:
        """Consume every message; ``progress.update(n)`` per encoded batch."""
        t_loop = t_wait = time.perf_counter()
        for msg in messages:
            self.stats.wait_s += time.perf_counter() - t_wait
            if isinstance(msg, ShardDone):
                self.finish_shard(msg)
            else:
                self.encode(msg)
                progress.update(len(msg.keys))
            t_wait = time.perf_counter()
        self.stats.loop_s = time.perf_counter() - t_loop  # reading to last write, models already loaded

    def encode(self, msg: ModalityBatch | JpegBatch) -> None:
        m, keys, batch, undecoded = msg.modality, msg.keys, getattr(msg, "batch", None), []
        t0 = time.perf_counter()
        if isinstance(msg, JpegBatch):  # decoded on the device; what it cannot decode becomes status rows
            keys, batch, undecoded = self.encoders[m].decode_jpegs(msg, self.handler)
        part = self.parts.setdefault((msg.shard, m), _PartRows())
        part.bad.extend(undecoded)
        if not keys:
            self.stats.add_encode(m, time.perf_counter() - t0)
            return
        try:
            vecs, ok = self.encoders[m](batch)
            why = f"{m}: the encoder gave a non-finite or zero vector"
        except Exception as exc:
            keep_going(self.handler, exc)
            log.warning("%s batch of shard %s failed to encode: %s", m, msg.shard, exc)
            vecs, ok = None, np.zeros(len(keys), bool)
            why = f"{m}: encoder failed on its batch: {type(exc).__name__}: {exc}"[:2000]
            if self.encoders[m].device.type == "cuda":
                torch.cuda.empty_cache()  # after an OOM, the next batch gets the memory back
        self.stats.add_encode(m, time.perf_counter() - t0)
        part.keys.extend(k for k, good in zip(keys, ok, strict=True) if good)
        if vecs is not None and ok.any():
            part.vectors.append(vecs[ok])
        part.bad.extend((k, "error", why) for k, good in zip(keys, ok, strict=True) if not good)

    def finish_shard(self, done: ShardDone) -> None:
        self.stats.read_s += done.read_s
        self.stats.samples_read += done.samples
        self.stats.shards.append(done.shard)
        if done.fault:
            keep_going(self.handler, ShardReadError(f"shard {done.shard}: {done.fault}"))
        t0 = time.perf_counter()
        self._write_shard(done)
        self.stats.write_s += time.perf_counter() - t0

    def _write_shard(self, done: ShardDone) -> None:
        shard = done.shard
        record_fault(self.layout, shard, done.fault)
        if done.fault:
            self.stats.faults[shard] = done.fault
            if done.unread:
                # Not one sample read (a missing file, a failing pipe): no parts, so a rerun retries it.
                log.warning("shard %s could not be read; its parts are left for a rerun", shard)
                return
        for m, rows in done.status.items():
            part = self.parts.pop((shard, m), _PartRows())
            enc = self.encoders[m]
            vectors = np.concatenate(part.vectors) if part.vectors else np.zeros((0, enc.encoder.dim), np.float32)
            all_rows = rows + part.bad
            write_status(self.layout.status_part(m, shard), all_rows)
            write_embeddings(self.layout.embedding_part(m, shard), part.keys, vectors, dtype=enc.dtype,
                             metadata={**enc.metadata, "shard": shard})
            self.stats.add_part(m, len(part.keys), (status for _, status, _ in all_rows))
        if done.metadata is not None:
            write_metadata(self.layout, shard, done.metadata)
