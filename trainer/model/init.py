"""Where a run's heads start: random (PyTorch's default), the closed-form ridge map, or a finished run.

**Ridge init** (``train.init = "ridge"``; linear probing before fine-tuning, Kumar et al. 2022,
"Fine-Tuning can Distort Pretrained Features"): on a few hundred rows the closed-form ridge map
is a strong solution that InfoNCE from a random start does not reliably reach. Each head starts
as exactly that map, and training can only be kept where it scores better on the early-stopping
slice (the initial heads are scored as epoch 0, see :mod:`trainer.early_stop`).

A two-layer ReLU head holds a linear map exactly through ``z = relu(z) - relu(-z)``: with the
ridge map ``W = U S V^T`` (rank ``r``) the first layer's rows are ``+-(U sqrt(S))^T`` and the
second layer's columns ``+-(sqrt(S) V^T)^T``, which takes ``2 r`` hidden units. A narrower head
keeps the ``hidden // 2`` leading singular directions (the share of ``||W||_F^2`` kept is
reported). The hidden units left over keep their random input weights and get zero output
weights, so they start silent and still learn. A one-layer head is the map itself.

**Warm start** (``train.warm_start = "<run>"``): every head and the logit scale start from that
run's exported heads. Round 2 of the bootstrap recipe starts from round 1, so the round-1 heads
are the epoch-0 candidate and auto-pairs are kept only if they improve the truth-known slice.
"""

from __future__ import annotations

import logging
import math
from dataclasses import dataclass, field

import torch
from torch import nn

from pipeline.core.heads_file import linears, load_heads
from pipeline.core.layout import RunLayout
from pipeline.core.manifest import ManifestError
from trainer.data.rows import CachedData
from trainer.eval.baselines import cv_lambda, fit_ridge, training_pairs
from trainer.model.heads import Binder

log = logging.getLogger(__name__)


@dataclass
class InitReport:
    """What the heads started from, written into the train summary."""

    kind: str  # random | ridge | warm_start
    source: str = ""  # the warm-start run
    ridge_lambda: dict[str, float] = field(default_factory=dict)
    rank_kept: dict[str, int] = field(default_factory=dict)
    energy_kept: dict[str, float] = field(default_factory=dict)  # share of ||W||_F^2 the head holds

    def to_dict(self) -> dict:
        return {k: v for k, v in self.__dict__.items() if v not in ("", {})}


@torch.no_grad()
def set_linear_map(head: nn.Sequential, w: torch.Tensor, b: torch.Tensor) -> tuple[int, float]:
    """Make ``head(x) = x w + b`` (``w``: in x out) as far as its width allows (see the module
    docstring); returns the rank held and the share of ``||w||_F^2`` it holds."""
    layers = linears(head)
    if len(layers) == 1:
        layers[0].weight.copy_(w.T)
        layers[0].bias.copy_(b)
        return min(w.shape), 1.0
    first, second = layers
    u, s, vh = torch.linalg.svd(w.double(), full_matrices=False)
    rank = min(int((s > s[0] * 1e-12).sum()) if len(s) else 0, first.out_features // 2)
    root = s[:rank].sqrt()
    left = (u[:, :rank] * root).T.float()  # rank x in
    right = (root[:, None] * vh[:rank]).float()  # rank x out
    first.weight[:rank] = left
    first.weight[rank:2 * rank] = -left
    first.bias[:2 * rank] = 0.0
    second.weight.zero_()
    second.weight[:, :rank] = right.T
    second.weight[:, rank:2 * rank] = -right.T
    second.bias.copy_(b)
    total = float((s * s).sum())
    return rank, float((s[:rank] ** 2).sum()) / total if total else 1.0


def ridge_init(binder: Binder, data: CachedData, seed: int) -> InitReport:
    """Start every head of ``binder`` as the ridge map (λ by cross-validation) of the rows it is fitted on
    (``data.train_idx``: the early-stopping slice and the held-out split are not used)."""
    if data.streaming:
        raise ManifestError("train.init: \"ridge\" solves on every training pair at once, and this run streams its "
                            "vectors (train.in_memory / train.memory_gb); set train.init = \"random\" or give it the memory")
    report = InitReport("ridge")
    for m in binder.modalities:
        x, t = training_pairs(data, m)
        if len(x) < 4:
            log.warning("train.init = ridge: %d fitted rows pair %s with %s; its head starts random", len(x), m,
                        data.anchor)
            continue
        lam, _ = cv_lambda(x, t, seed)
        w, b = fit_ridge(x, t, lam)
        rank, energy = set_linear_map(binder.heads[m], w, b)
        report.ridge_lambda[m], report.rank_kept[m], report.energy_kept[m] = lam, rank, round(energy, 6)
        if energy < 0.999:
            log.info("train.init = ridge: %s's head (hidden %d) holds rank %d of the ridge map, %.1f %% of its "
                     "energy; hidden >= %d holds all of it", m, linears(binder.heads[m])[0].out_features, rank,
                     100 * energy, 2 * min(w.shape))
    return report


@torch.no_grad()
def warm_start(binder: Binder, run: RunLayout) -> InitReport:
    """Copy the exported heads (and logit scale) of ``run`` into ``binder``; shapes must match."""
    heads, config = load_heads(run)
    for m in binder.modalities:
        if m not in heads:
            raise ManifestError(f"train.warm_start: run {run.root.name!r} has no head for {m!r} "
                             f"(it has {sorted(heads)}); warm-start from a run with the same modalities")
        dst, src = linears(binder.heads[m]), linears(heads[m])
        shapes = [tuple(x.weight.shape) for x in dst], [tuple(x.weight.shape) for x in src]
        if shapes[0] != shapes[1]:
            raise ManifestError(f"train.warm_start: run {run.root.name!r}'s {m} head has layers {shapes[1]}, this run's "
                             f"{shapes[0]}; use the same train.hidden / train.depth or another run")
        for d, s in zip(dst, src, strict=True):
            d.load_state_dict(s.state_dict())
    if "logit_scale" in config:
        binder.logit_scale.copy_(torch.tensor(math.log(float(config["logit_scale"]))))
    return InitReport("warm_start", source=run.root.name)
