"""``engine = "local"``: this process's parts through its own DataLoader workers and encoders.

Under ``accelerate launch`` / ``torchrun`` every rank runs one of these over its slice of the
shards; the stage gathers the ranks' figures.
"""

from __future__ import annotations

import torch

from pipeline.core.layout import OutputLayout
from pipeline.core.manifest import PrecomputeConfig
from pipeline.precompute.cores import CoreSplit, choose_split, first_samples, measure_costs
from pipeline.precompute.encoding import Encoding
from pipeline.precompute.engines.base import EngineResult, shard_dataset
from pipeline.precompute.handlers import Handler
from pipeline.precompute.loader import ShardWork, decode_item, make_loader
from pipeline.precompute.rank import RankLoop
from pipeline.precompute.stats import RankStats


class LocalEngine:
    def __init__(self, encoders: dict[str, Encoding], layout: OutputLayout, pc: PrecomputeConfig,
                 handler: Handler, rank: int, world: int, device: torch.device):
        self.encoders, self.layout, self.pc, self.handler = encoders, layout, pc, handler
        self.rank, self.world, self.device = rank, world, device

    def run(self, work: list[ShardWork]) -> EngineResult:
        from tqdm import tqdm

        stats = RankStats.start(self.rank, str(self.device), self.encoders)
        stats.decode = {m: e.decode for m, e in self.encoders.items() if m == "image"}
        if work:
            dataset = shard_dataset(work, self.encoders, self.handler, self.pc)
            split = self._split(work, dataset.plans)
            stats.cores = split.to_json()
            loader = make_loader(dataset, self.pc, split, self.device)
            with tqdm(desc=f"precompute rank {self.rank}", unit="item", disable=self.rank != 0,
                      dynamic_ncols=True) as bar:
                RankLoop(self.layout, self.encoders, self.handler, stats).run(loader, bar)
        return EngineResult("local", [stats], self.world)

    def _split(self, work: list[ShardWork], plans: dict) -> CoreSplit:
        """Workers against encoder threads (a calibration on the first shard with parts to encode)."""
        probe = next((w for w in work if w.modalities), work[0])
        return choose_split(self.pc.num_workers, self.world, self.device, len(work), lambda: measure_costs(
            first_samples(probe.shard.url), {m: plans[m] for m in probe.modalities}, self.encoders, decode_item))
