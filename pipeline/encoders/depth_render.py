"""Depth views of point clouds rendered on the encoder's device (the points fallback's renderer).

:func:`pipeline.encoders.wrappers.render_depth` draws a cloud's views one by one in NumPy in a
DataLoader worker (``np.maximum.at`` z-buffers: most of the points row's CPU). Here the worker
only stacks the decoded clouds (:class:`CloudCollate`) and :func:`render_views` draws every view
of every cloud of the batch at once, as a ``scatter_reduce(amax)`` z-buffer on the device, with
the same rotation, pixel rounding and depth shading; the uint8 images go straight into the image
encoder's device step. It is used when the image preprocessing is a resize-free split
(:class:`~pipeline.encoders.image_prep.CropPreprocessor` at the render size): other image
encoders keep the worker renderer.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch

from pipeline.encoders.base import Batch
from pipeline.encoders.image_prep import PIXELS, CropPreprocessor

CLOUDS = "points_xyz"  # the worker's batch entry: (B, N, 3) float32


def rotations(views: int, device: torch.device) -> torch.Tensor:
    """(views, 3, 3): turns about the vertical axis by 2 pi v / views."""
    out = []
    for v in range(views):
        a = 2 * math.pi * v / views
        out.append([[math.cos(a), 0, math.sin(a)], [0, 1, 0], [-math.sin(a), 0, math.cos(a)]])
    return torch.tensor(out, dtype=torch.float32, device=device)


def render_views(xyz: torch.Tensor, views: int, size: int) -> torch.Tensor:
    """(B, N, 3) unit-sphere clouds -> (B * views, 3, size, size) uint8 depth images (near = bright),
    cloud-major like the worker renderer's order."""
    b, n, _ = xyz.shape
    p = torch.einsum("bnk,vjk->bvnj", xyz, rotations(views, xyz.device))  # p = xyz @ rot.T per view
    col = ((p[..., 0] + 1) / 2 * (size - 1)).round().long().clamp(0, size - 1)
    row = ((1 - p[..., 1]) / 2 * (size - 1)).round().long().clamp(0, size - 1)
    shade = 0.2 + 0.8 * ((p[..., 2] + 1) / 2).clamp(0, 1)
    depth = torch.zeros(b * views, size * size, device=xyz.device)
    depth.scatter_reduce_(1, (row * size + col).reshape(b * views, n), shade.reshape(b * views, n), "amax")
    img = (depth.reshape(b * views, 1, size, size) * 255).to(torch.uint8)
    return img.expand(-1, 3, -1, -1).contiguous()


@dataclass(frozen=True)
class CloudCollate:
    """Picklable worker side: decoded clouds (N, 3|6), all of ``points`` points -> {CLOUDS, counts}."""

    views: int
    counts_key: str

    def __call__(self, clouds: list[np.ndarray]) -> Batch:
        xyz = torch.from_numpy(np.stack([np.asarray(c, np.float32)[:, :3] for c in clouds]))
        return {CLOUDS: xyz, self.counts_key: torch.full((len(clouds),), self.views, dtype=torch.long)}


@dataclass(frozen=True)
class DeviceRender:
    """Device side: {CLOUDS} -> {PIXELS} at ``size``, for the image encoder's own device step."""

    views: int
    size: int

    def __call__(self, batch: Batch) -> Batch:
        rest = {k: v for k, v in batch.items() if k != CLOUDS}
        return {**rest, PIXELS: render_views(batch[CLOUDS], self.views, self.size)}


def renders_on_device(image_pre: Any, size: int) -> bool:
    """Whether the image preprocessing takes a ``size`` x ``size`` render as it is (no resize, no crop)."""
    return isinstance(image_pre, CropPreprocessor) and image_pre.shortest == size and image_pre.crop == (size, size)
