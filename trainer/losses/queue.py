"""A cross-batch memory of negatives (MoCo-style): the last ``size`` projected features of one modality.

Each :class:`NegativeQueue` holds a modality's features and the anchor features they were paired
with, newest first, so that earlier batches' items are extra negatives on both sides (anchor->m
against the held ``m`` features, m->anchor against the held anchors). It is module state: the
buffers are saved with the training checkpoint, so a resumed run continues with the same queue.
"""

from __future__ import annotations

import torch
from torch import nn


class NegativeQueue(nn.Module):
    def __init__(self, size: int, dim: int):
        super().__init__()
        self.size = size
        self.register_buffer("features", torch.zeros(size, dim))
        self.register_buffer("anchors", torch.zeros(size, dim))
        self.register_buffer("length", torch.zeros((), dtype=torch.long))

    def __len__(self) -> int:
        return int(self.length)

    def held(self) -> tuple[torch.Tensor, torch.Tensor]:
        """(features, anchors) currently held, newest first."""
        n = len(self)
        return self.features[:n], self.anchors[:n]

    @torch.no_grad()
    def push(self, features: torch.Tensor, anchors: torch.Tensor) -> None:
        """Put a batch's features in front; the buffers are replaced, not written in place, so this
        step's graph (which read the old ones) stays valid."""
        self.features = torch.cat([features.float(), self.features])[:self.size]
        self.anchors = torch.cat([anchors.float(), self.anchors])[:self.size]
        self.length = (self.length + len(features)).clamp(max=self.size)
