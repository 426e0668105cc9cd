"""What every precompute engine shares: the result it hands back, the handler it runs parts under.

An engine takes one process's planned work (:class:`~pipeline.precompute.loader.ShardWork`, the
missing parts only) and writes those parts, each with the atomic rename of
:mod:`pipeline.core.store`: a part is complete or absent, so the plan of a rerun, or of a run on
the other engine, skips what any engine finished. :mod:`.local` runs the parts in this process
(and its DataLoader workers); :mod:`.ray` schedules them on Ray actors with retries.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import torch

from pipeline.core.manifest import ModalityConfig, PrecomputeConfig
from pipeline.encoders.registry import build_encoder
from pipeline.precompute.encoding import Encoding
from pipeline.precompute.handlers import Handler
from pipeline.precompute.loader import ShardDataset, ShardWork
from pipeline.precompute.stats import RankStats


@dataclass(frozen=True)
class Retry:
    """One failed attempt at a part that was tried again."""

    shard: str
    modality: str  # "" for a shard's metadata-only part
    attempt: int  # 0 = the first try
    reason: str  # "error" (the part raised) | "lost" (its worker died: a crash, a kill, a lost node)
    error: str

    def to_json(self) -> dict[str, Any]:
        return {"shard": self.shard, "modality": self.modality, "attempt": self.attempt, "reason": self.reason,
                "error": self.error}


@dataclass
class EngineResult:
    """What an engine did: figures per worker (a rank, or a Ray actor slot) and the retries."""

    engine: str
    stats: list[RankStats]
    workers: int
    retries: list[Retry] = field(default_factory=list)
    details: dict[str, Any] = field(default_factory=dict)  # engine-specific figures for precompute.json

    def to_json(self) -> dict[str, Any]:
        return {"name": self.engine, "workers": self.workers, "retries": len(self.retries),
                "retried_parts": [r.to_json() for r in self.retries], **self.details}


class StopRun(RuntimeError):
    """The bad-sample handler said stop: the input is at fault, so trying the part again cannot help."""


class StoppingHandler:
    """``handler`` with its stop turned into :class:`StopRun`, which an engine never retries.

    A class, not a closure, so it pickles into DataLoader workers and Ray actors."""

    def __init__(self, handler: Handler):
        self.handler = handler

    def __call__(self, exn: BaseException) -> bool:
        try:
            go_on = self.handler(exn)
        except StopRun:
            raise
        except BaseException as stop:
            raise StopRun(f"{type(stop).__name__}: {stop}") from stop
        if not go_on:
            raise StopRun(f"{type(exn).__name__}: {exn}") from exn
        return True


def load_encoding(modality: str, config: ModalityConfig, pc: PrecomputeConfig, dataset: str,
                  device: torch.device) -> Encoding:
    """One modality's frozen encoder on ``device``: the same construction on every engine."""
    return Encoding(modality, build_encoder(modality, config, pc.trust_code), config, pc, dataset, device)


def shard_dataset(work: list[ShardWork], encoders: dict[str, Encoding], handler: Handler,
                  pc: PrecomputeConfig) -> ShardDataset:
    """The dataset over ``work``, with a decode plan for each modality it needs."""
    needed = {m for w in work for m in w.modalities}
    plans = {m: e.plan() for m, e in encoders.items() if m in needed}
    return ShardDataset(work, plans, handler, int(pc.max_member_mb * 2**20))
