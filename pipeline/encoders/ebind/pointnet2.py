"""Torch versions of pointnet2's CUDA-only ops, with the CUDA kernels' exact semantics.

* furthest point sampling -- ebind 0.1.0 already ships one
  (``ebind.models.uni3d.pointnet2_ops.pointnet2_utils._furthest_point_sample_pytorch``: start
  at index 0, skip points with ``|p|^2 <= 1e-3``, first maximum wins) and uses it whenever the
  compiled extension is absent; tests/pipeline/encoders/ebind/test_pointnet2.py checks it against a
  NumPy transcription of ``sampling_gpu.cu``. Uni3D's grouping uses it (then a torch kNN).
* ball query -- ebind has no fallback; :func:`ball_query` follows ``ball_query_gpu.cu``: for
  each centre, the first ``nsample`` points (in index order) strictly within ``radius``; the
  remaining slots repeat the first one found; a centre with none gets zeros. Uni3D does not
  group by radius (it uses kNN), and ebind's ``pointnet2_utils`` defines neither ``ball_query``
  nor the ``QueryAndGroup`` its ``pointnet2_modules`` names; this is for point encoders built on
  PointNet++ set abstraction (plugins), on machines without the CUDA extension.
"""

from __future__ import annotations

import torch


def ball_query(radius: float, nsample: int, xyz: torch.Tensor, new_xyz: torch.Tensor) -> torch.Tensor:
    """(B, M, nsample) int32 indices into ``xyz`` (B, N, 3) for the centres ``new_xyz`` (B, M, 3)."""
    d2 = ((new_xyz.unsqueeze(2) - xyz.unsqueeze(1)) ** 2).sum(-1)  # (B, M, N)
    inside = d2 < radius * radius
    order = torch.cumsum(inside.to(torch.int64), dim=-1)  # 1-based rank of each inside point
    n = xyz.shape[1]
    slot = torch.where(inside & (order <= nsample), order - 1, torch.full_like(order, nsample))
    out = torch.full((*slot.shape[:2], nsample + 1), n, dtype=torch.int64, device=xyz.device)
    index = torch.arange(n, device=xyz.device).expand_as(slot)
    out.scatter_(2, slot, index)  # slot nsample collects everything not taken
    out = out[..., :nsample]
    first = out[..., :1]
    found = first < n
    out = torch.where(out < n, out, torch.where(found, first, torch.zeros_like(first)).expand_as(out))
    return out.to(torch.int32)

