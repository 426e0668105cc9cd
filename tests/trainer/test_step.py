"""One optimisation step of the trainer moves the learnable logit scale the way the loss demands."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch

from trainer.batch import Batch, ModalityBatch
from trainer.losses.infonce import BindLoss
from trainer.model.heads import Binder
from trainer.train import lr_lambda, make_optimizer, train_step


def dloss_dscale(sims: np.ndarray, scale: float) -> float:
    """d/ds of mean_i CE(s * sims[i], i): mean_i (sum_j softmax(s sims[i])_j sims[i, j] - sims[i, i])."""
    logits = scale * sims
    p = np.exp(logits - logits.max(1, keepdims=True))
    p /= p.sum(1, keepdims=True)
    return float(np.mean((p * sims).sum(1) - np.diag(sims)))


@pytest.mark.parametrize("aligned", [True, False])
def test_one_step_moves_the_logit_scale_against_its_gradient(aligned):
    """The symmetric InfoNCE's gradient in ``log s`` is ``s * (dL/ds(a->x) + dL/ds(x->a)) / 2``, computed
    here in NumPy from the projected features. AdamW's first step moves a parameter by
    ``-lr * g / (|g| + eps)`` (bias-corrected moments; the scale has no weight decay), so the scale must
    move by ``-lr`` times that gradient's sign: up when the pairs are already the most similar
    (a sharper softmax lowers the loss), down when they are not."""
    gen = torch.Generator().manual_seed(0)
    binder = Binder({"text": 6, "audio": 6}, "text", ["audio"], hidden=12)
    audio = torch.randn(16, 6, generator=gen)
    eye, head = torch.eye(6), binder.heads["audio"]
    with torch.no_grad():  # the head starts as the identity (ReLU(x) - ReLU(-x) = x): aligned partners are nearest
        head[0].weight.copy_(torch.cat([eye, -eye])), head[0].bias.zero_()
        head[2].weight.copy_(torch.cat([eye, -eye], 1)), head[2].bias.zero_()
    anchor = audio + 0.05 * torch.randn(16, 6, generator=gen) if aligned else torch.randn(16, 6, generator=gen)
    batch = Batch(anchor, {"audio": ModalityBatch(audio, torch.ones(16, dtype=torch.bool), torch.ones(16))})
    with torch.no_grad():
        out = binder(batch)
    a, x, s = out.anchor.double().numpy(), out.modalities["audio"].vectors.double().numpy(), float(out.scale)
    grad = s * (dloss_dscale(a @ x.T, s) + dloss_dscale(x @ a.T, s)) / 2
    assert abs(grad) > 1e-3  # a clear direction either way

    from accelerate import Accelerator

    lr = 1e-2
    optimizer = make_optimizer(binder, lr, weight_decay=0.01)
    scheduler = torch.optim.lr_scheduler.LambdaLR(optimizer, lr_lambda(1, 10))  # full lr at the first step
    before = float(binder.logit_scale.detach())
    train_step(Accelerator(cpu=True), binder, BindLoss(["audio"], dim=6), optimizer, scheduler, batch)
    moved = float(binder.logit_scale.detach()) - before
    assert moved == pytest.approx(-lr * grad / (abs(grad) + 1e-8), rel=1e-4)
    assert (moved > 0) == aligned
    assert math.isclose(float(binder.scale().detach()), math.exp(before + moved), rel_tol=1e-6)
