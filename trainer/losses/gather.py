"""Features across ranks, as open_clip's ``gather_features``: the local slice keeps its gradient.

With several processes (DDP) every rank gathers the projected features of all ranks, so each
contrastive term sees the global batch; the rank's own slice is its local tensor, not the
gathered copy, so the gradient flows back into this rank's heads (the other slices are constants
here and get their gradient on their own rank). One process: the tensor itself.
"""

from __future__ import annotations

import torch
import torch.distributed as dist


def rank_and_world() -> tuple[int, int]:
    """(rank, world size) of the initialised process group; (0, 1) without one."""
    if dist.is_available() and dist.is_initialized():
        return dist.get_rank(), dist.get_world_size()
    return 0, 1


def gather_features(t: torch.Tensor) -> torch.Tensor:
    """Concatenate ``t`` across ranks in rank order; the local slice is ``t`` itself, so its gradient flows."""
    rank, world = rank_and_world()
    if world == 1:
        return t
    gathered = [torch.zeros_like(t) for _ in range(world)]
    dist.all_gather(gathered, t.contiguous())
    gathered[rank] = t
    return torch.cat(gathered)
