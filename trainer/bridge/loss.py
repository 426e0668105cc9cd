"""``train.bridge``'s objective (METHODS.md section 4): ``L = L_MOX + L_CyCLIP``.

Over a bridge batch (:mod:`~trainer.bridge.data`: each row has a real partner in exactly one of
``a`` and ``c``, its mask on, and the pseudo partner in the other slot):

* the pivot terms: the run's ordinary loss (``train.loss``, masked to real partners), i.e. each
  modality's symmetric InfoNCE against the pivot, as in every run;
* MOX: symmetric InfoNCE between the two heads, ``h_a(a_i) <-> h_c(c^_i)`` over the batch's D1 rows
  and ``h_a(a^_j) <-> h_c(c_j)`` over its D2 rows (in-batch negatives from the same set), with the
  run's logit scale;
* CyCLIP between the two heads over those rows together, at CyCLIP's scale (METHODS.md section 3),
  weighted ``bridge.cyclip_in_modal`` and ``bridge.cyclip_cross_modal``.

Padded rows (both masks off) take part in none of them. Features are gathered across ranks.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from pipeline.core.manifest import BridgeConfig
from trainer.batch import Features
from trainer.losses.cyclip import cyclip_terms
from trainer.losses.gather import gather_features, rank_and_world
from trainer.losses.infonce import pair_logits


def symmetric_infonce(x: torch.Tensor, y: torch.Tensor, rows: torch.Tensor, scale: torch.Tensor) -> torch.Tensor:
    """Mean of the x->y and y->x cross-entropies over the rows where ``rows`` holds (row i pairs with row i)."""
    l_xy, l_yx, labels, _ = pair_logits(x, y, rows, scale)
    return (F.cross_entropy(l_xy, labels) + F.cross_entropy(l_yx, labels)) / 2


class BridgeLoss(nn.Module):
    """The pivot loss plus the MOX and CyCLIP terms between the heads of ``a`` and ``c`` (module doc)."""

    def __init__(self, pivot_loss: nn.Module, a: str, c: str, bridge: BridgeConfig, gather: bool = True):
        super().__init__()
        self.pivot_loss, self.a, self.c, self.gather = pivot_loss, a, c, gather
        self.cyclip_in, self.cyclip_cross = bridge.cyclip_in_modal, bridge.cyclip_cross_modal

    def forward(self, out: Features) -> dict[str, torch.Tensor]:
        terms = self.pivot_loss(out)
        _, world = rank_and_world() if self.gather else (0, 1)
        g = gather_features if world > 1 else (lambda t: t)
        side_a, side_c = out.modalities[self.a], out.modalities[self.c]
        x, y, scale = g(side_a.vectors), g(side_c.vectors), out.scale
        real_a, real_c = g(side_a.mask.float()).bool(), g(side_c.mask.float()).bool()
        total = terms["loss"]
        for name, rows in (("mox_d1", real_a & ~real_c), ("mox_d2", ~real_a & real_c)):
            if rows.sum() > 1:
                terms[name] = symmetric_infonce(x, y, rows, scale)
                total = total + terms[name]
        both = (real_a ^ real_c).nonzero(as_tuple=True)[0]
        if len(both) > 1 and (self.cyclip_in or self.cyclip_cross):
            terms["cyclip_in_bridge"], terms["cyclip_cross_bridge"] = cyclip_terms(x[both], y[both])
            total = total + self.cyclip_in * terms["cyclip_in_bridge"] + self.cyclip_cross * terms["cyclip_cross_bridge"]
        terms["loss"] = total
        return terms
