"""Ridge's own objective as a loss term: the squared distance of a head's output to its anchor.

``train.regression_weight = w`` adds, per projected modality ``m``, ``w`` times the weighted mean over
the rows pairing the anchor with ``m`` of ``||head_m(x) - a||^2``, where ``head_m(x)`` is the head's
output *before* L2-normalising and ``a`` the L2-normalised anchor: the least-squares term the ridge
baseline (:mod:`trainer.eval.baselines`) minimises, without its penalty (weight decay plays that part).

Why: on a few hundred rows, InfoNCE fine-tuning from the ridge start (``train.init = "ridge"``)
sharpens m->anchor retrieval but gives back anchor->m retrieval, which the regression map does well
(issue 12's curves: text->image falls below ridge while image->text rises above it). The term keeps
the head near the regression solution while InfoNCE separates the items; ``w = 0`` is plain InfoNCE,
a large ``w`` holds the ridge start.
"""

from __future__ import annotations

import torch

from trainer.batch import ModalityBatch


def regression_term(anchor: torch.Tensor, side: ModalityBatch) -> torch.Tensor:
    """Weighted mean of ``||raw - anchor||^2`` over the rows of ``side`` that have a partner (local rows:
    the term is per row, so it needs no gather across ranks)."""
    if side.raw is None:
        raise ValueError("regression_term: the side carries no raw head output (Binder.forward fills it)")
    weight = side.weight.float() * side.mask.float()
    sq = ((side.raw - anchor.to(side.raw.dtype)) ** 2).sum(-1)
    return (sq * weight).sum() / weight.sum().clamp(min=1e-8)
