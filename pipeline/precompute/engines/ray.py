"""``engine = "ray"``: every missing (shard, modality) part is a task for a pool of Ray actors.

The driver (this process) plans the parts, starts ``workers`` actors sized by ``cpus_per_worker`` /
``gpus_per_worker`` (:mod:`.ray_worker`), hands each idle actor the next part and collects its
figures. A part that raises is tried again, up to ``max_retries`` times; a part whose actor died (a
crash, a kill, an out-of-memory kill, a lost node) is tried again on a fresh actor in the dead one's
slot. A stop asked for by ``handler = "raise"`` is never retried: the input is at fault. The same
atomic part files as the local engine are the completion markers (datatrove's executors keep theirs
the same way), so a rerun on either engine does only what no run finished.

``ray.init`` joins the cluster at ``ray_address`` (or ``RAY_ADDRESS``; ``"auto"`` = the one
``ray start`` made on this machine); with neither, it starts a local one and shuts it down after.
"""

from __future__ import annotations

import logging
import math
import os
import time
from collections import deque
from dataclasses import dataclass, field, replace
from typing import Any

from pipeline.core.manifest import ManifestError, PrecomputeConfig
from pipeline.precompute.engines.base import EngineResult, Retry, StopRun
from pipeline.precompute.engines.ray_worker import PartResult, PartTask, PartWorker, RayJob
from pipeline.precompute.loader import ShardWork
from pipeline.precompute.stats import RankStats

log = logging.getLogger(__name__)

PART_HOOK = ""  # tests only: "module:function" called in the actor after a part's first batch


class PartFailed(RuntimeError):
    """A part failed on every one of its tries."""


def part_tasks(work: list[ShardWork]) -> list[PartTask]:
    """One task per missing (shard, modality) part; a shard's metadata part rides on its first one."""
    tasks = []
    for w in work:
        mods = w.modalities or ("",)
        tasks += [PartTask(w.shard, m, w.write_metadata and i == 0) for i, m in enumerate(mods)]
    return tasks


def connect(pc: PrecomputeConfig) -> bool:
    """Join or start a cluster (unless this process already has one); True when this call started it."""
    import ray

    if ray.is_initialized():
        return False
    address = pc.ray_address or os.environ.get("RAY_ADDRESS", "")
    if address:
        ray.init(address=address, log_to_driver=True)
        return False
    ray.init(address="local", include_dashboard=False)
    return True


def worker_count(pc: PrecomputeConfig, resources: dict[str, float], parts: int) -> int:
    """``workers`` (0 = as many as the cluster's CPUs and GPUs hold), at most one per part."""
    fits = math.floor(resources.get("CPU", 0.0) / pc.cpus_per_worker + 1e-9)
    if pc.gpus_per_worker:
        fits = min(fits, math.floor(resources.get("GPU", 0.0) / pc.gpus_per_worker + 1e-9))
    if fits < 1:
        raise ManifestError(
            f"precompute.cpus_per_worker / gpus_per_worker: one worker asks for {pc.cpus_per_worker} CPU and "
            f"{pc.gpus_per_worker} GPU, the Ray cluster has {resources.get('CPU', 0)} CPU and "
            f"{resources.get('GPU', 0)} GPU; ask for less, or join a larger cluster (precompute.ray_address)")
    return max(1, min(pc.workers or fits, parts))


@dataclass
class _Tally:
    """The driver's view of the run: figures per actor slot, retries, the cost of going through Ray."""

    stats: list[RankStats]
    retries: list[Retry] = field(default_factory=list)
    parts: int = 0
    skipped: int = 0
    actors_started: int = 0
    part_s: float = 0.0  # in the actors
    load_s: float = 0.0  # of which loading encoders
    actor_start_s: float = 0.0  # creation to ready, summed over actors (process start, imports)
    overhead_s: float = 0.0  # round trip less the time in the actor, summed over parts

    def add(self, slot: int, result: PartResult, round_trip: float) -> None:
        self.stats[slot].absorb(result.stats)
        self.parts += 1
        self.skipped += result.skipped
        self.part_s += result.seconds
        self.load_s += result.load_s
        self.overhead_s += round_trip - result.seconds

    def details(self) -> dict[str, Any]:
        return {"parts": self.parts, "skipped": self.skipped, "actors_started": self.actors_started,
                "part_s": self.part_s, "load_s": self.load_s, "actor_start_s": self.actor_start_s,
                "overhead_s_per_part": self.overhead_s / self.parts if self.parts else 0.0}


class _Pool:
    """``count`` actor slots. A slot takes parts once its actor is placed and up (so actors that find no
    room on the cluster never hold parts back), and a slot whose actor died gets a fresh one."""

    def __init__(self, job: RayJob, count: int, tally: _Tally):
        import ray

        self.remote = ray.remote(num_cpus=job.pc.cpus_per_worker, num_gpus=job.pc.gpus_per_worker,
                                 max_restarts=0)(PartWorker)
        self.job, self.tally = job, tally
        self.actors: list[Any] = [None] * count
        self.starting: dict[Any, tuple[int, float]] = {}  # ready ref -> (slot, creation time)
        self.failed_starts = [0] * count
        for slot in range(count):
            self._start(slot)

    def _start(self, slot: int) -> None:
        self.tally.actors_started += 1
        self.actors[slot] = self.remote.remote(self.job, slot)
        self.starting[self.actors[slot].__ray_ready__.remote()] = (slot, time.perf_counter())

    def replace(self, slot: int) -> None:
        import ray

        ray.kill(self.actors[slot], no_restart=True)
        self._start(slot)

    def up(self, ref: Any) -> int | None:
        """The slot whose actor came up with ``ref``; None when it died starting (then it is started again)."""
        import ray
        from ray.exceptions import RayError

        slot, t0 = self.starting.pop(ref)
        try:
            ray.get(ref)
        except RayError as exc:
            self.failed_starts[slot] += 1
            if self.failed_starts[slot] > self.job.pc.max_retries:
                raise PartFailed(f"a Ray actor could not start {self.failed_starts[slot]} time(s): {exc}") from None
            self.replace(slot)
            return None
        self.tally.actor_start_s += time.perf_counter() - t0
        return slot

    def close(self) -> None:
        import ray

        for actor in self.actors:
            ray.kill(actor, no_restart=True)


class RayEngine:
    def __init__(self, job: RayJob):
        self.job, self.pc = job, job.pc

    def run(self, work: list[ShardWork]) -> EngineResult:
        import ray

        tasks = part_tasks(work)
        if not tasks:
            return EngineResult("ray", [], 0)
        t0 = time.perf_counter()
        started = connect(self.pc)
        cluster_s = time.perf_counter() - t0
        try:
            count = worker_count(self.pc, ray.cluster_resources(), len(tasks))
            log.info("ray: %d parts on %d actors (%s CPU, %s GPU each)", len(tasks), count,
                     self.pc.cpus_per_worker, self.pc.gpus_per_worker)
            tally = _Tally([RankStats.start(i, "", self.job.modalities) for i in range(count)])
            pool = _Pool(replace(self.job, hook=PART_HOOK), count, tally)
            try:
                self._schedule(tasks, pool, tally)
            finally:
                pool.close()
        finally:
            if started:
                ray.shutdown()
        return EngineResult("ray", tally.stats, count, tally.retries,
                            {"address": self.pc.ray_address or os.environ.get("RAY_ADDRESS", "") or "local",
                             "cluster_start_s": cluster_s, **tally.details()})

    def _schedule(self, tasks: list[PartTask], pool: _Pool, tally: _Tally) -> None:
        """Hand each idle slot the next part until every part is written (or one may not be retried)."""
        import ray
        from tqdm import tqdm

        queue, idle, running = deque(tasks), [], {}
        with tqdm(total=len(tasks), desc="precompute parts (ray)", unit="part", dynamic_ncols=True) as bar:
            while queue or running:
                while queue and idle:
                    slot, task = idle.pop(), queue.popleft()
                    running[pool.actors[slot].run.remote(task)] = (slot, task, time.perf_counter())
                (ref,), _ = ray.wait([*running, *pool.starting], num_returns=1)
                if ref in pool.starting:
                    slot = pool.up(ref)
                    idle += [] if slot is None else [slot]
                    continue
                slot, task, t0 = running.pop(ref)
                retry, alive = self._collect(ref, slot, task, t0, pool, tally)
                idle += [slot] if alive else []
                if retry is None:
                    bar.update(1)
                else:
                    queue.appendleft(retry)

    def _collect(self, ref: Any, slot: int, task: PartTask, t0: float, pool: _Pool,
                 tally: _Tally) -> tuple[PartTask | None, bool]:
        """Record a finished part: (the task to try again if it failed, whether the slot's actor lives)."""
        import ray
        from ray.exceptions import RayError, RayTaskError

        alive = True
        try:
            tally.add(slot, ray.get(ref), time.perf_counter() - t0)
            return None, alive
        except RayTaskError as exc:
            if isinstance(exc.cause, StopRun) or isinstance(exc, StopRun):
                raise StopRun(f"part {task.name}: {exc.cause}") from None
            reason, error = "error", f"{type(exc.cause).__name__}: {exc.cause}"
        except RayError as exc:  # the actor died with the part: a crash, a kill, a lost node
            pool.replace(slot)
            alive, reason = False, "lost"
            error = f"{type(exc).__name__}: {str(exc).splitlines()[0] if str(exc) else ''}"
        if task.attempt >= self.pc.max_retries:
            raise PartFailed(f"part {task.name} failed {task.attempt + 1} time(s) (precompute.max_retries = "
                             f"{self.pc.max_retries}); the last error: {error}")
        log.warning("part %s: attempt %d %s (%s); trying again", task.name, task.attempt, reason, error)
        tally.retries.append(Retry(task.shard.shard_id, task.modality, task.attempt, reason, error[:2000]))
        return replace(task, attempt=task.attempt + 1), alive
