"""The precompute stage's data side: an IterableDataset over one rank's (shard, work) items.

It runs in DataLoader workers: each worker takes a round-robin share of the rank's shards,
reads each shard once, decodes every needed modality of every sample, runs each modality's
preprocessor per batch, and yields typed messages in shard order:

* :class:`ModalityBatch` -- a preprocessed batch of one modality of one shard;
* :class:`JpegBatch` -- with ``[modalities.image] decode`` on the device: the still-encoded JPEGs
  of one batch, header-checked, to be decoded on the GPU in the main process
  (:mod:`pipeline.precompute.jpeg_device`);
* :class:`ShardDone` -- after the shard's last batch: per-modality status rows, the metadata
  rows (key, json) and the read fault.
"""

from __future__ import annotations

import dataclasses
import json
import logging
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import Any

import torch

from pipeline.core.hashing import bytes_sha256
from pipeline.core.manifest import MODALITIES, ModalityConfig, PrecomputeConfig
from pipeline.encoders.base import Batch
from pipeline.ingest.decode import DECODERS, DEVICE_DECODERS, DecodeError, decode_member, find_member
from pipeline.ingest.decode.jpeg_route import JpegBytes
from pipeline.ingest.shards import (
    DEFAULT_MAX_MEMBER_BYTES,
    DUPLICATE,
    Shard,
    ShardFault,
    iter_samples,
    split_by,
)
from pipeline.precompute.cores import CoreSplit
from pipeline.precompute.handlers import Handler, keep_going, record_and_continue

log = logging.getLogger(__name__)

StatusRow = tuple[str, str, str]  # key, status, error message


@dataclass(frozen=True)
class ShardWork:
    shard: Shard
    modalities: tuple[str, ...]  # modalities whose parts are missing
    write_metadata: bool  # the metadata part is missing


@dataclass(frozen=True)
class ModalityPlan:
    """What a worker needs to decode and preprocess one modality (picklable)."""

    config: ModalityConfig
    preprocess: Any  # the encoder's preprocessor: decoded items -> Batch
    sample_rate: int | None = None
    image_side: int = 0  # image encoders: the short side they resize to (JPEG draft decoding)
    image_decode: str = "cpu"  # "device": plain JPEGs leave the worker encoded (JpegBatch), see encoding.decode

    @property
    def decoders(self) -> dict[str, Any]:
        return DEVICE_DECODERS if self.image_decode == "device" else DECODERS


@dataclass(frozen=True)
class ModalityBatch:
    """A preprocessed batch: ``keys[i]`` is row ``i`` of every tensor in ``batch``."""

    shard: str
    modality: str
    keys: tuple[str, ...]
    batch: Batch

    def pin_memory(self) -> ModalityBatch:
        """Called by the DataLoader (``pin_memory=True``) so the device copy can be asynchronous."""
        pinned = {k: v.pin_memory() if isinstance(v, torch.Tensor) else v for k, v in self.batch.items()}
        return dataclasses.replace(self, batch=pinned)


@dataclass(frozen=True)
class JpegBatch:
    """Header-checked JPEGs still encoded: ``keys[i]`` is ``jpegs[i]`` (a batch of bytes, no pixels)."""

    shard: str
    modality: str
    keys: tuple[str, ...]
    jpegs: tuple[JpegBytes, ...]


@dataclass(frozen=True)
class ShardDone:
    """The end of a shard: everything its parts need besides the vectors."""

    shard: str
    status: dict[str, list[StatusRow]]  # per modality: rows of samples without a vector so far
    samples: int  # complete samples read
    metadata: list[tuple[str, str]] | None  # (key, json text); None when the metadata part exists
    fault: str | None  # the read fault, if the shard could not be read to its end
    read_s: float  # seconds this worker spent reading, decoding and preprocessing the shard

    @property
    def unread(self) -> bool:
        """A fault before a single sample was read (a missing file, a failing pipe)."""
        return self.fault is not None and not self.samples and not any(self.status.values())


Message = ModalityBatch | JpegBatch | ShardDone


@dataclass
class _Pending:
    keys: list[str] = field(default_factory=list)
    items: list[Any] = field(default_factory=list)


class _BusyClock:
    """Seconds spent working, not counting the time a generator is suspended at a yield."""

    def __init__(self) -> None:
        self.total, self._since = 0.0, time.perf_counter()

    def pause(self) -> None:
        self.total += time.perf_counter() - self._since

    def resume(self) -> None:
        self._since = time.perf_counter()


class ShardDataset(torch.utils.data.IterableDataset):
    def __init__(self, work: list[ShardWork], plans: dict[str, ModalityPlan],
                 handler: Handler = record_and_continue, max_member_bytes: int = DEFAULT_MAX_MEMBER_BYTES):
        super().__init__()
        self.work, self.plans, self.handler, self.max_member_bytes = work, plans, handler, max_member_bytes

    def __iter__(self) -> Iterator[Message]:
        info = torch.utils.data.get_worker_info()
        work = split_by(self.work, info.id, info.num_workers) if info else self.work
        for item in work:
            yield from _ShardReader(item, self.plans, self.handler, self.max_member_bytes).messages()


class _ShardReader:
    """One shard read once: decoded members gathered into batches, the rest into status rows."""

    def __init__(self, work: ShardWork, plans: dict[str, ModalityPlan], handler: Handler, max_member_bytes: int):
        self.work, self.plans, self.handler, self.max_member_bytes = work, plans, handler, max_member_bytes
        self.shard_id = work.shard.shard_id
        self.pending = {m: _Pending() for m in work.modalities}
        self.status: dict[str, list[StatusRow]] = {m: [] for m in work.modalities}
        self.metadata: list[tuple[str, str]] = []
        self.fault: str | None = None
        self.samples = 0

    def messages(self) -> Iterator[Message]:
        clock = _BusyClock()
        for batch in self._batches():
            clock.pause()
            yield batch
            clock.resume()
        clock.pause()
        yield ShardDone(self.shard_id, self.status, self.samples,
                        self.metadata if self.work.write_metadata else None, self.fault, clock.total)

    def _batches(self) -> Iterator[ModalityBatch | JpegBatch]:
        for sample in iter_samples(self.work.shard.url, self.max_member_bytes):
            if isinstance(sample, ShardFault):
                self._record_fault(sample)
                break
            self.samples += 1
            key = str(sample["__key__"])
            if DUPLICATE not in sample:  # a key repeated in its shard: one metadata row, its first
                self.metadata.append((key, _json_text(sample.get("json")), member_hashes(sample)))
            for m in self.work.modalities:
                if self._decode(sample, key, m) and len(self.pending[m].keys) >= self.plans[m].config.batch_size:
                    yield from self._flush(m)
        for m in self.work.modalities:
            if self.pending[m].keys:
                yield from self._flush(m)

    def _record_fault(self, fault: ShardFault) -> None:
        self.fault = fault.error
        if fault.partial_key is not None:
            for m in self.work.modalities:
                self.status[m].append((fault.partial_key, "error", f"shard read fault: {fault.error}"))
            self.metadata.append((fault.partial_key, "", "{}"))

    def _decode(self, sample: dict[str, Any], key: str, modality: str) -> bool:
        """Decode one member into the pending batch; False (and a status row) when it is bad."""
        plan = self.plans[modality]
        try:
            item = decode_member(sample, modality, plan.config, plan.sample_rate, plan.image_side, plan.decoders)
        except Exception as exc:
            self.status[modality].append(status_row(self.handler, key, modality, exc))
            return False
        self.pending[modality].keys.append(key)
        self.pending[modality].items.append(item)
        return True

    def _flush(self, modality: str) -> Iterator[ModalityBatch | JpegBatch]:
        pending, self.pending[modality] = self.pending[modality], _Pending()
        encoded = [i for i, item in enumerate(pending.items) if isinstance(item, JpegBytes)]
        if encoded:  # the device decodes these; the rest of the batch is preprocessed here as ever
            yield JpegBatch(self.shard_id, modality, tuple(pending.keys[i] for i in encoded),
                            tuple(pending.items[i] for i in encoded))
            rest = [(k, item) for k, item in zip(pending.keys, pending.items, strict=True)
                    if not isinstance(item, JpegBytes)]
            pending = _Pending([k for k, _ in rest], [item for _, item in rest])
            if not pending.keys:
                return
        keys, batch = self._preprocess(modality, pending)
        if keys:
            yield ModalityBatch(self.shard_id, modality, tuple(keys), batch)

    def _preprocess(self, modality: str, pending: _Pending) -> tuple[list[str], Batch | None]:
        """Preprocess one batch; an item the preprocessor rejects becomes an error row, not a lost batch."""
        pre = self.plans[modality].preprocess
        try:
            return pending.keys, _tensors(pre(pending.items))
        except Exception as exc:
            keep_going(self.handler, exc)
            log.debug("batch preprocessing failed (%s); retrying item by item", exc)
        keys, good = [], []
        for key, item in zip(pending.keys, pending.items, strict=True):
            try:
                pre([item])
            except Exception as item_exc:
                self.status[modality].append((key, "error", f"preprocess: {type(item_exc).__name__}: {item_exc}"))
                continue
            keys.append(key)
            good.append(item)
        return (keys, _tensors(pre(good))) if keys else ([], None)


def status_row(handler: Handler, key: str, modality: str, exc: BaseException) -> StatusRow:
    """The status row of a member that could not be decoded, after asking the handler whether to go on
    (it raises to stop). A DecodeError carries its status; anything else (a decoder bug) is ``error``.
    The worker and the main process's device-decode fallback both make their rows here."""
    if isinstance(exc, DecodeError):
        if exc.status != "missing":  # an absent member is never a fault of the input
            keep_going(handler, exc)
        return key, exc.status, str(exc)
    keep_going(handler, exc)  # a decoder bug must not end the job either
    return key, "error", f"{modality}: {type(exc).__name__}: {exc}"


def _tensors(batch: Batch) -> Batch:
    """NumPy values as tensors: the DataLoader's own conversion, which passes a dataclass by."""
    return torch.utils.data.default_convert(batch)


def member_hashes(sample: dict[str, Any]) -> str:
    """``{modality: sha256}`` of the member each modality reads (the one :func:`find_member` picks), as
    json: what the trainer's leak and duplicate checks compare (exact copies, identical captions)."""
    found = {m: find_member(sample, m) for m in MODALITIES}
    return json.dumps({m: bytes_sha256(f[1] if isinstance(f[1], bytes) else f[1].encode())
                       for m, f in found.items() if f is not None and isinstance(f[1], bytes | str)},
                      sort_keys=True)


def _json_text(data: Any) -> str:
    if data is None or not isinstance(data, bytes | str):  # absent, or not read (over the member limit)
        return ""
    if isinstance(data, bytes):
        return data.decode("utf-8", errors="replace")
    return str(data)


# ----------------------------------------------------------------------------- the DataLoader


def _worker_init(_: int) -> None:
    torch.set_num_threads(1)


def decode_item(sample: dict[str, Any], modality: str, plan: ModalityPlan) -> Any:
    """The decoded member, or None when it is bad or absent (the calibration's decoder)."""
    try:
        return decode_member(sample, modality, plan.config, plan.sample_rate, plan.image_side)
    except Exception:
        return None


def make_loader(dataset: ShardDataset, pc: PrecomputeConfig, split: CoreSplit,
                device: torch.device) -> torch.utils.data.DataLoader:
    """The rank's DataLoader over ``dataset``: one message at a time, ``split.workers`` workers of one
    thread each; on the CPU the encoder gets ``split.threads`` (oversubscribed intra-op threads spin
    against the decoders and slow the encoder many-fold)."""
    workers = split.workers
    if device.type == "cpu" and split.rule in ("calibrated", "num_workers"):
        torch.set_num_threads(split.threads)
    extra = {"prefetch_factor": pc.prefetch_factor, "worker_init_fn": _worker_init} if workers else {}
    return torch.utils.data.DataLoader(dataset, batch_size=None, num_workers=workers,
                                       pin_memory=device.type == "cuda", **extra)
