"""What runs inside a Ray actor: one (shard, modality) part at a time.

An actor loads each modality's frozen encoder the first time it gets one of that modality's parts
and keeps it for the next. A part reads its shard, decodes and preprocesses the one modality (in the
actor's own process by default, or in DataLoader workers with ``num_workers`` > 0), encodes it and
writes the part through the same :class:`~pipeline.precompute.rank.RankLoop` as a local rank, with
the same atomic renames. Bad samples are status rows as ever; only a stop asked for by the handler
(:class:`~pipeline.precompute.engines.base.StopRun`) or a real failure leaves the part unwritten.

Plain Python: :mod:`.ray` wraps the class in ``ray.remote`` with the configured resources.
"""

from __future__ import annotations

import importlib
import logging
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import torch

from pipeline.core.layout import OutputLayout
from pipeline.core.manifest import ModalityConfig, PrecomputeConfig
from pipeline.ingest.shards import Shard
from pipeline.precompute.cores import CoreSplit, cores_per_rank
from pipeline.precompute.encoding import Encoding
from pipeline.precompute.engines.base import StoppingHandler, load_encoding, shard_dataset
from pipeline.precompute.handlers import HANDLERS
from pipeline.precompute.loader import ShardWork, make_loader
from pipeline.precompute.plan import part_done
from pipeline.precompute.rank import RankLoop
from pipeline.precompute.stats import RankStats

log = logging.getLogger(__name__)

PartHook = Callable[[str, str, int], None]  # (shard id, modality, attempt), after a part's first batch


@dataclass(frozen=True)
class PartTask:
    """One unit of work: a shard's part of one modality (``modality`` "" = its metadata part only)."""

    shard: Shard
    modality: str
    write_metadata: bool
    attempt: int = 0

    @property
    def name(self) -> str:
        return f"{self.shard.shard_id}/{self.modality or 'metadata'}"

    def work(self) -> ShardWork:
        return ShardWork(self.shard, (self.modality,) if self.modality else (), self.write_metadata)


@dataclass(frozen=True)
class RayJob:
    """Everything an actor needs, picklable: the manifest's sections, not the loaded encoders."""

    output: str
    dataset: str
    modalities: dict[str, ModalityConfig]
    pc: PrecomputeConfig
    hook: str = ""  # tests only: "module:function", a PartHook


@dataclass
class PartResult:
    stats: RankStats
    seconds: float  # in the actor, from receiving the part to returning it
    load_s: float  # of which loading encoders
    skipped: bool  # found already done (another run or engine wrote it meanwhile)


def actor_device(setting: str) -> torch.device:
    """``[precompute] device`` inside an actor: Ray exposes its assigned GPUs as cuda:0.."""
    if setting == "cpu" or (setting == "auto" and not torch.cuda.is_available()):
        return torch.device("cpu")
    return torch.device("cuda", 0)


def _load_hook(spec: str) -> PartHook | None:
    if not spec:
        return None
    module, _, name = spec.partition(":")
    return getattr(importlib.import_module(module), name)


class _Progress:
    """RankLoop's progress sink; calls the test hook once, after the part's first encoded batch."""

    def __init__(self, hook: PartHook | None, task: PartTask):
        self.hook, self.task = hook, task

    def update(self, _: int) -> None:
        if self.hook is not None:
            hook, self.hook = self.hook, None
            hook(self.task.shard.shard_id, self.task.modality, self.task.attempt)


class PartWorker:
    def __init__(self, job: RayJob, slot: int):
        self.job, self.slot = job, slot
        self.layout = OutputLayout(job.output)
        self.device = actor_device(job.pc.device)
        self.handler = StoppingHandler(HANDLERS[job.pc.handler])
        self.encoders: dict[str, Encoding] = {}
        self.hook = _load_hook(job.hook)
        if self.device.type == "cpu":
            torch.set_num_threads(max(1, round(job.pc.cpus_per_worker)))

    def _encoding(self, modality: str) -> Encoding:
        if modality not in self.encoders:
            self.encoders[modality] = load_encoding(modality, self.job.modalities[modality], self.job.pc,
                                                    self.job.dataset, self.device)
        return self.encoders[modality]

    def _done(self, task: PartTask) -> bool:
        meta_done = not task.write_metadata or self.layout.metadata_part(task.shard.shard_id).exists()
        return meta_done and (not task.modality or part_done(self.layout, task.modality, task.shard.shard_id))

    def run(self, task: PartTask) -> PartResult:
        t0 = time.perf_counter()
        mods = [task.modality] if task.modality else []
        stats = RankStats.start(self.slot, str(self.device), mods)
        if self._done(task):
            return PartResult(stats, time.perf_counter() - t0, 0.0, True)
        encoders = {m: self._encoding(m) for m in mods}
        load_s = time.perf_counter() - t0
        dataset = shard_dataset([task.work()], encoders, self.handler, self.job.pc)
        messages: Any = dataset
        if self.job.pc.num_workers > 0:
            # the actor's CPUs are Ray's to give: its threads stay as they are
            split = CoreSplit(self.job.pc.num_workers, torch.get_num_threads(), cores_per_rank(1), "ray")
            messages = make_loader(dataset, self.job.pc, split, self.device)
        RankLoop(self.layout, encoders, self.handler, stats).run(messages, _Progress(self.hook, task))
        stats.wall_s = time.perf_counter() - t0
        return PartResult(stats, stats.wall_s, load_s, False)
