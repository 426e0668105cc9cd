"""The precompute stage's data side: an IterableDataset over one rank's (shard, work) items.

It runs in DataLoader workers: each worker takes a round-robin share of the rank's shards,
reads each shard once, decodes every needed modality of every sample, runs each modality's
preprocessor per batch, and yields tagged messages in shard order:

* ``{"kind": "batch", "shard", "modality", "keys", "batch"}`` -- a preprocessed batch;
* ``{"kind": "end", "shard", "status", "metadata", "fault", "read_s", "samples"}`` -- after the
  shard's last batch: per-modality status rows, the metadata rows (key, json) and the read fault.
"""

from __future__ import annotations

import logging
import time
from dataclasses import dataclass, field
from typing import Any

import torch

from pipeline.ingest.decode import DecodeError, decode_member
from pipeline.ingest.shards import Shard, ShardFault, iter_samples, split_by

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class ShardWork:
    shard: Shard
    modalities: tuple[str, ...]  # modalities whose parts are missing
    write_metadata: bool  # the metadata part is missing


@dataclass
class ModalityPlan:
    """What a worker needs to decode and preprocess one modality (picklable)."""

    config: Any
    preprocess: Any
    sample_rate: int | None = None


@dataclass
class _Pending:
    keys: list[str] = field(default_factory=list)
    items: list[Any] = field(default_factory=list)


class ShardDataset(torch.utils.data.IterableDataset):
    def __init__(self, work: list[ShardWork], plans: dict[str, ModalityPlan], handler: str = "record"):
        super().__init__()
        self.work, self.plans, self.handler = work, plans, handler

    def __iter__(self):
        info = torch.utils.data.get_worker_info()
        work = split_by(self.work, info.id, info.num_workers) if info else self.work
        for item in work:
            yield from self._shard(item)

    def _batch(self, shard_id: str, modality: str, pending: _Pending, status: list):
        """Preprocess one batch; an item the preprocessor rejects becomes an error row, not a lost batch."""
        pre = self.plans[modality].preprocess
        try:
            batch = pre(pending.items)
            keys = pending.keys
        except Exception as exc:
            if self.handler == "raise":
                raise
            log.debug("batch preprocessing failed (%s); retrying item by item", exc)
            keys, good = [], []
            for key, it in zip(pending.keys, pending.items, strict=True):
                try:
                    pre([it])
                    keys.append(key)
                    good.append(it)
                except Exception as item_exc:
                    status[modality].append((key, "error", f"preprocess: {type(item_exc).__name__}: {item_exc}"))
            if not keys:
                return None
            batch = pre(good)
        return {"kind": "batch", "shard": shard_id, "modality": modality, "keys": keys, "batch": batch}

    def _shard(self, work: ShardWork):
        t0 = time.perf_counter()
        busy = 0.0
        mods = work.modalities
        pending = {m: _Pending() for m in mods}
        status: dict[str, list[tuple[str, str, str]]] = {m: [] for m in mods}
        metadata: list[tuple[str, str]] = []
        fault, samples = None, 0
        for sample in iter_samples(work.shard.url):
            if isinstance(sample, ShardFault):
                fault = sample.error
                if sample.partial_key is not None:
                    for m in mods:
                        status[m].append((sample.partial_key, "error", f"shard read fault: {sample.error}"))
                    metadata.append((sample.partial_key, ""))
                break
            samples += 1
            key = str(sample["__key__"])
            metadata.append((key, _json_text(sample.get("json"))))
            for m in mods:
                plan = self.plans[m]
                try:
                    item = decode_member(sample, m, plan.config, plan.sample_rate)
                except DecodeError as exc:
                    if self.handler == "raise" and exc.status != "missing":
                        raise
                    status[m].append((key, exc.status, str(exc)))
                    continue
                except Exception as exc:  # a decoder bug must not end the job either
                    if self.handler == "raise":
                        raise
                    status[m].append((key, "error", f"{m}: {type(exc).__name__}: {exc}"))
                    continue
                pending[m].keys.append(key)
                pending[m].items.append(item)
                if len(pending[m].keys) >= plan.config.batch_size:
                    msg = self._batch(work.shard.shard_id, m, pending[m], status)
                    pending[m] = _Pending()
                    if msg:
                        busy += time.perf_counter() - t0
                        yield msg
                        t0 = time.perf_counter()
        for m in mods:
            if pending[m].keys:
                msg = self._batch(work.shard.shard_id, m, pending[m], status)
                if msg:
                    busy += time.perf_counter() - t0
                    yield msg
                    t0 = time.perf_counter()
        busy += time.perf_counter() - t0
        yield {"kind": "end", "shard": work.shard.shard_id, "status": status, "samples": samples,
               "metadata": metadata if work.write_metadata else None, "fault": fault, "read_s": busy}


def _json_text(data: Any) -> str:
    if data is None:
        return ""
    if isinstance(data, bytes):
        return data.decode("utf-8", errors="replace")
    return str(data)
