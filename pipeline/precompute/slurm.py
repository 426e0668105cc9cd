"""Which slice of the shards this process takes: its torch.distributed rank, its Slurm array task, or both.

A Slurm job array (``sbatch --array=0-N``) starts independent single-process tasks that share no
world. Each task finds its place in the array in its environment, and precompute takes that slice
of the shards exactly as a rank would (:func:`pipeline.ingest.shards.split_by`): every shard goes to
one task, and the tasks' parts together are one run's. A task that runs a torch.distributed world of
its own (``srun torchrun ...`` inside an array) splits its slice again by rank.

The index comes from ``SLURM_ARRAY_TASK_ID`` and either ``SLURM_ARRAY_TASK_COUNT`` or
``SLURM_ARRAY_TASK_MIN`` / ``SLURM_ARRAY_TASK_MAX`` (with ``SLURM_ARRAY_TASK_STEP`` for
``--array=0-20:2``). An array given as a list (``--array=1,5,9``) has no such index: its task ids
do not map onto 0..count-1, and it is refused with the fix.
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from dataclasses import dataclass

from pipeline.core.manifest import ManifestError

ARRAY_VARIABLES = ("SLURM_ARRAY_TASK_ID", "SLURM_ARRAY_TASK_COUNT", "SLURM_ARRAY_TASK_MIN",
                   "SLURM_ARRAY_TASK_MAX", "SLURM_ARRAY_TASK_STEP")


@dataclass(frozen=True)
class ArrayTask:
    """This task's place in its Slurm array, as 0..count-1."""

    index: int
    count: int
    task_id: int  # SLURM_ARRAY_TASK_ID as Slurm gave it


@dataclass(frozen=True)
class Partition:
    """The slice of the shard list this process takes: ``split_by(shards, index, count)``."""

    index: int
    count: int
    rank: int  # torch.distributed rank and world, inside the array task
    world: int
    array: ArrayTask | None

    def to_json(self) -> dict[str, object]:
        return {"index": self.index, "count": self.count, "rank": self.rank, "world": self.world,
                "slurm_array_task": None if self.array is None else
                {"task_id": self.array.task_id, "index": self.array.index, "count": self.array.count}}


def _int(env: Mapping[str, str], name: str) -> int | None:
    value = env.get(name, "").strip()
    if not value:
        return None
    try:
        return int(value)
    except ValueError:
        raise ManifestError(f"{name}: expected an integer, got {value!r}; launch through sbatch --array, "
                            f"or unset {name} to run the whole shard list") from None


def array_task(env: Mapping[str, str] | None = None) -> ArrayTask | None:
    """This process's Slurm array task, or None outside an array (no ``SLURM_ARRAY_TASK_ID``)."""
    env = os.environ if env is None else env
    task_id = _int(env, "SLURM_ARRAY_TASK_ID")
    if task_id is None:
        return None
    lo, hi, count = (_int(env, f"SLURM_ARRAY_TASK_{k}") for k in ("MIN", "MAX", "COUNT"))
    step = _int(env, "SLURM_ARRAY_TASK_STEP") or 1
    lo = 0 if lo is None else lo
    if count is None and hi is not None:
        count = (hi - lo) // step + 1
    if count is None:
        raise ManifestError("SLURM_ARRAY_TASK_ID is set but neither SLURM_ARRAY_TASK_COUNT nor "
                            "SLURM_ARRAY_TASK_MAX is; launch through sbatch --array=0-N, or unset it")
    offset = task_id - lo
    if step < 1 or offset < 0 or offset % step or offset // step >= count:
        raise ManifestError(
            f"SLURM_ARRAY_TASK_ID={task_id} is not one of {count} evenly spaced ids from {lo} (step {step}): "
            "an array given as a list of ids cannot split the shards; use a range, sbatch --array=0-N[:step]")
    return ArrayTask(offset // step, count, task_id)


def partition(rank: int, world: int, env: Mapping[str, str] | None = None) -> Partition:
    """Array task ``a`` of ``A`` with rank ``r`` of ``W`` takes slice ``a * W + r`` of ``A * W``."""
    task = array_task(env)
    if task is None:
        return Partition(rank, world, rank, world, None)
    return Partition(task.index * world + rank, task.count * world, rank, world, task)
