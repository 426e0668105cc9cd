"""Masked symmetric InfoNCE over projected features, open_clip ``loss.py`` style.

Pieces kept apart: :func:`~trainer.losses.gather.gather_features` (cross-rank, gradient kept for
the local slice), :func:`pair_logits` (logits and labels of one (anchor, modality) pair, masked to
the rows that have both), :func:`~trainer.losses.cyclip.cyclip_terms`, and the loss module.

:class:`BindLoss` (registry name ``infonce``) sums over every projected modality ``m`` present
in the batch the symmetric InfoNCE between the anchor and ``m``, with

* masks: a row lacking ``m`` takes no part in the (anchor, m) term (Trimodal-Bind);
* per-row weights (a ``partial`` human rating counts ``partial_weight``);
* an explicit rated bad partner as an extra column in that row's anchor->m denominator;
* optional in-batch hard-negative mining: only the ``hard_negatives`` most similar in-batch
  negatives stay in each row's denominator;
* an optional cross-batch memory queue of past features as extra negatives (:mod:`trainer.losses.queue`);
* optional CyCLIP in-modal and cross-modal cycle-consistency terms (:mod:`trainer.losses.cyclip`);
* an optional regression term, ridge's least-squares objective on the heads' unnormalised output
  (:mod:`trainer.losses.regression`).
"""

from __future__ import annotations

from collections.abc import Callable

import torch
import torch.nn.functional as F
from torch import nn

from trainer.batch import Features, ModalityBatch
from trainer.losses.cyclip import cyclip_terms
from trainer.losses.gather import gather_features, rank_and_world
from trainer.losses.queue import NegativeQueue
from trainer.losses.regression import regression_term

NEG_INF = float("-inf")


def pair_logits(a: torch.Tensor, x: torch.Tensor, mask: torch.Tensor, scale: torch.Tensor,
                local_rows: slice | None = None) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor]:
    """Logits anchor->x and x->anchor over the rows where ``mask`` holds, and their labels.

    ``a``, ``x``, ``mask`` are the (gathered) batch. With ``local_rows`` (open_clip's local loss)
    only those rows are queries and the columns stay global. Returns
    ``(logits_a2x, logits_x2a, labels, row_index)`` where ``row_index`` are the query rows' batch indices.
    """
    cols = torch.nonzero(mask, as_tuple=True)[0]
    if local_rows is None:
        rows, labels = cols, torch.arange(len(cols), device=a.device)
    else:
        local = torch.arange(a.shape[0], device=a.device)[local_rows]
        rows = local[mask[local_rows]]
        labels = (torch.cumsum(mask.long(), 0) - 1)[rows]
    return scale * a[rows] @ x[cols].T, scale * x[rows] @ a[cols].T, labels, rows


def keep_hardest(logits: torch.Tensor, labels: torch.Tensor, k: int) -> torch.Tensor:
    """Mask every in-batch negative but the ``k`` most similar of each row."""
    k = min(k, logits.shape[1] - 1)
    neg = logits.detach().clone()
    neg[torch.arange(len(labels)), labels] = NEG_INF
    keep = torch.zeros_like(logits, dtype=torch.bool)
    if k > 0:
        keep.scatter_(1, neg.topk(k, dim=1).indices, True)
    keep[torch.arange(len(labels)), labels] = True
    return logits.masked_fill(~keep, NEG_INF)


def weighted_ce(logits: torch.Tensor, labels: torch.Tensor, weight: torch.Tensor) -> torch.Tensor:
    ce = F.cross_entropy(logits, labels, reduction="none")
    return (ce * weight).sum() / weight.sum().clamp(min=1e-8)


def gather_side(side: ModalityBatch, gather: Callable[[torch.Tensor], torch.Tensor]) -> ModalityBatch:
    """A modality's batch side with every field gathered across ranks (masks travel as floats)."""
    def mask(t: torch.Tensor | None) -> torch.Tensor | None:
        return None if t is None else gather(t.float()).bool()
    return ModalityBatch(gather(side.vectors), mask(side.mask), gather(side.weight.float()),
                         None if side.bad is None else gather(side.bad), mask(side.bad_mask),
                         None if side.raw is None else gather(side.raw))


def same(t: torch.Tensor) -> torch.Tensor:
    return t


class BindLoss(nn.Module):
    """Masked symmetric InfoNCE of every projected modality against the anchor (see module doc)."""

    def __init__(self, modalities: list[str], dim: int, gather: bool = True, local_loss: bool = False,
                 hard_negatives: int = 0, queue_size: int = 0, cyclip_in_modal: float = 0.0,
                 cyclip_cross_modal: float = 0.0, regression_weight: float = 0.0):
        super().__init__()
        self.regression_weight = regression_weight
        self.modalities, self.gather, self.local_loss = list(modalities), gather, local_loss
        self.hard_negatives, self.queue_size = hard_negatives, queue_size
        self.cyclip_in, self.cyclip_cross = cyclip_in_modal, cyclip_cross_modal
        # the queues are state, saved with the checkpoint for an exact resume
        self.queues = nn.ModuleDict({m: NegativeQueue(queue_size, dim) for m in self.modalities})

    def forward(self, out: Features) -> dict[str, torch.Tensor]:
        """``out`` is :class:`~trainer.model.heads.Binder`'s output; returns ``loss`` and its named terms."""
        rank, world = rank_and_world() if self.gather else (0, 1)
        g = gather_features if world > 1 else same
        a, n_local = g(out.anchor), out.anchor.shape[0]
        local_rows = slice(rank * n_local, (rank + 1) * n_local) if self.local_loss and world > 1 else None
        terms: dict[str, torch.Tensor] = {}
        total = out.scale * 0.0
        for m in self.modalities:
            side = out.modalities[m]
            total = total + 0.0 * side.vectors.sum()  # keeps every head in the graph when m is absent (DDP)
            side = gather_side(side, g)
            if not side.mask.any():
                continue
            m_terms, m_total = self.modality_terms(m, a, side, out.scale, local_rows)
            terms.update(m_terms)
            total = total + m_total
        terms["loss"] = total
        return terms

    def modality_terms(self, m: str, a: torch.Tensor, side: ModalityBatch, scale: torch.Tensor,
                       local_rows: slice | None) -> tuple[dict[str, torch.Tensor], torch.Tensor]:
        """The (anchor, ``m``) terms of a (gathered) batch, and their weighted sum; updates ``m``'s queue."""
        term = self.infonce(m, a, side, scale, local_rows)
        terms, total = {f"infonce_{m}": term}, term
        if self.regression_weight:
            # over the same rows as the InfoNCE queries (gathered, or local with local_loss), so that DDP's
            # averaging scales both terms alike
            rows = slice(None) if local_rows is None else local_rows
            terms[f"regression_{m}"] = regression_term(a[rows], side.raw[rows], side.mask[rows], side.weight[rows])
            total = total + self.regression_weight * terms[f"regression_{m}"]
        if self.cyclip_in or self.cyclip_cross:
            cols = torch.nonzero(side.mask, as_tuple=True)[0]
            c_in, c_cross = cyclip_terms(a[cols], side.vectors[cols])
            terms[f"cyclip_in_{m}"], terms[f"cyclip_cross_{m}"] = c_in, c_cross
            total = total + self.cyclip_in * c_in + self.cyclip_cross * c_cross
        if self.queue_size:
            self.queues[m].push(side.vectors[side.mask].detach(), a[side.mask].detach())
        return terms, total

    def infonce(self, m: str, a: torch.Tensor, side: ModalityBatch, scale: torch.Tensor,
                local_rows: slice | None) -> torch.Tensor:
        """Symmetric weighted InfoNCE of the rows pairing the anchor with ``m``, with the hard-negative,
        rated-bad-partner and queue options."""
        x = side.vectors
        l_ax, l_xa, labels, rows = pair_logits(a, x, side.mask, scale, local_rows)
        if self.hard_negatives:
            l_ax, l_xa = (keep_hardest(logits, labels, self.hard_negatives) for logits in (l_ax, l_xa))
        if side.bad is not None:
            extra = (scale * (a[rows] * side.bad[rows]).sum(-1)).masked_fill(~side.bad_mask[rows], NEG_INF)
            l_ax = torch.cat([l_ax, extra[:, None]], 1)
        if len(self.queues[m]):
            held_x, held_a = self.queues[m].held()
            l_ax = torch.cat([l_ax, scale * a[rows] @ held_x.T.to(a.dtype)], 1)
            l_xa = torch.cat([l_xa, scale * x[rows] @ held_a.T.to(x.dtype)], 1)
        weight = side.weight[rows]
        return (weighted_ce(l_ax, labels, weight) + weighted_ce(l_xa, labels, weight)) / 2
