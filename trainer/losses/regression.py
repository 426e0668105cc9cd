"""Ridge's own objective as a loss term: the squared distance of a head's output to its anchor.

``train.regression_weight = w`` adds, per projected modality ``m``, ``w`` times the weighted mean over
the rows pairing the anchor with ``m`` of ``||head_m(x) - a||^2``, where ``head_m(x)`` is the head's
output *before* L2-normalising and ``a`` the L2-normalised anchor: the least-squares term of the ridge
baseline (:mod:`trainer.eval.baselines`), here on the head in training mode (dropout), with the rows'
loss weights, and with AdamW's weight decay in place of ridge's penalty, so it is ridge's objective in
spirit rather than exactly. It is taken over the same rows as the InfoNCE queries (the gathered batch,
or the local rows with ``local_loss``), so that DDP's gradient averaging scales the two terms alike.

Why: on a few hundred rows, InfoNCE fine-tuning from the ridge start (``train.init = "ridge"``)
sharpens m->anchor retrieval but gives back anchor->m retrieval, which the regression map does well
(issue 12's curves: text->image falls below ridge while image->text rises above it). The term keeps
the head near the regression solution while InfoNCE separates the items; ``w = 0`` is plain InfoNCE,
a large ``w`` holds the ridge start.
"""

from __future__ import annotations

import torch


def regression_term(anchor: torch.Tensor, raw: torch.Tensor | None, mask: torch.Tensor,
                    weight: torch.Tensor) -> torch.Tensor:
    """Weighted mean of ``||raw - anchor||^2`` over the rows where ``mask`` holds (``raw``: the heads' output
    before L2-normalising, row-aligned with ``anchor``; zero when no row has a partner)."""
    if raw is None:
        raise ValueError("regression_term: the side carries no raw head output (Binder.forward fills it)")
    w = weight.to(raw.dtype) * mask.to(raw.dtype)
    sq = ((raw - anchor.to(raw.dtype)) ** 2).sum(-1)
    return (sq * w).sum() / w.sum().clamp(min=1e-8)
