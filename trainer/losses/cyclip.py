"""CyCLIP's cycle-consistency terms (Goel et al. 2022), at the scale of CyCLIP's own code.

With unit features ``I`` (here the anchor side) and ``T`` (the modality) of the ``N`` rows of a
batch that have both (METHODS.md, section 3; ``goel-shashank/CyCLIP`` ``src/train.py``):

* in-modal    ``(1/N) sum_jk (<I_j, I_k> - <T_j, T_k>)^2``
* cross-modal ``(1/N) sum_jk (<I_j, T_k> - <I_k, T_j>)^2``

i.e. the mean over the ``N x N`` matrix times ``N`` (CyCLIP divides its logit matrices by the
squared logit scale, which leaves plain cosines). CyCLIP's README weights both terms 0.25 at this
scale. Before this module the terms were the plain mean (a factor ``N`` smaller), so a weight
tuned for CyCLIP did ``1/N`` of what it does there.
"""

from __future__ import annotations

import torch


def cyclip_terms(a: torch.Tensor, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """``(in_modal, cross_modal)`` of the paired rows ``a[i] <-> x[i]`` (both L2-normalised)."""
    n = a.shape[0]
    in_modal = (a @ a.T - x @ x.T).square().mean() * n
    cross_modal = (a @ x.T - x @ a.T).square().mean() * n
    return in_modal, cross_modal
