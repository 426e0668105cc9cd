"""Projection heads into the anchor space, and the module that trains them.

Default (EBind): ``Linear(in -> 2048) -> ReLU -> Linear(2048 -> anchor dim)`` then L2-normalise.
``depth`` counts Linear layers, ``hidden`` is their width, ``dropout`` follows each hidden
activation (dropped again at export, see :func:`to_plain`). The anchor and passthrough
modalities (already in the anchor's space) are only L2-normalised.
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import nn

from pipeline.core.heads_file import linears, plain_head
from trainer.batch import Batch, Features


def make_head(d_in: int, d_out: int, hidden: int = 2048, depth: int = 2, dropout: float = 0.0) -> nn.Sequential:
    """``depth`` Linear layers with ReLU (and optional Dropout) between them."""
    widths = [d_in] + [hidden] * (depth - 1) + [d_out]
    mods: list[nn.Module] = []
    for i in range(depth):
        if i:
            mods.append(nn.ReLU())
            if dropout > 0:
                mods.append(nn.Dropout(dropout))
        mods.append(nn.Linear(widths[i], widths[i + 1]))
    return nn.Sequential(*mods)


def to_plain(head: nn.Sequential) -> nn.Sequential:
    """The same head as a plain ``Linear, ReLU, Linear...`` Sequential (dropout removed), weights copied."""
    layers = linears(head)
    plain = plain_head([[m.in_features, m.out_features] for m in layers])
    for src, dst in zip(layers, linears(plain), strict=True):
        dst.load_state_dict(src.state_dict())
    return plain


class Binder(nn.Module):
    """Heads for the projected modalities plus the learnable logit scale.

    ``forward(batch)`` maps every projected modality (and its bad partners) into the anchor
    space and returns them L2-normalised as :class:`~trainer.batch.Features` (masks and weights
    passed through, plus the scale).
    """

    def __init__(self, dims: dict[str, int], anchor: str, modalities: list[str], hidden: int = 2048,
                 depth: int = 2, dropout: float = 0.0, out_dim: int = 0, init_scale: float = 1 / 0.07,
                 max_scale: float = 100.0):
        super().__init__()
        self.anchor, self.modalities, self.max_scale = anchor, list(modalities), max_scale
        out = out_dim or dims[anchor]
        if out != dims[anchor]:  # trainer.checks.check_train reports this as train.out_dim first
            raise ValueError(f"out_dim {out} differs from the anchor's dim {dims[anchor]}: heads map into the anchor space")
        self.heads = nn.ModuleDict({m: make_head(dims[m], out, hidden, depth, dropout) for m in modalities})
        self.logit_scale = nn.Parameter(torch.tensor(math.log(init_scale)))

    def scale(self) -> torch.Tensor:
        return self.logit_scale.exp().clamp(max=self.max_scale)

    def project_raw(self, modality: str, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """The head's output before and after L2-normalising (``train.regression_weight`` reads the first)."""
        raw = (self.heads[modality](x) if modality in self.heads else x).float()
        return raw, F.normalize(raw, dim=-1)

    def project(self, modality: str, x: torch.Tensor) -> torch.Tensor:
        return self.project_raw(modality, x)[1]

    def forward(self, batch: Batch) -> Features:
        sides = {}
        for m in self.modalities:
            side = batch.modalities[m]
            if side.bad is not None:  # rated hard negatives go through the same head in one call
                n = side.vectors.shape[0]
                raw, unit = self.project_raw(m, torch.cat([side.vectors, side.bad]))
                sides[m] = side.replace(vectors=unit[:n], bad=unit[n:], raw=raw[:n])
            else:
                raw, unit = self.project_raw(m, side.vectors)
                sides[m] = side.replace(vectors=unit, raw=raw)
        return Features(F.normalize(batch.anchor.float(), dim=-1), sides, self.scale())
