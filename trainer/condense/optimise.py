"""The condensation loop: synthetic pairs as ``unit(theta)``, moved by Adam to match each class's real
distribution (:func:`trainer.losses.cf.condense_loss`).

One step draws fresh CFD frequencies per modality (shared by every class of the step), a real batch
per class, and takes one Adam step on every class's synthetic items. Classes never interact, so
this equals NCFM's one step per class (Adam is per coordinate) while each frequency matrix is used
in one product for many classes. Classes go through in chunks sized to ``condense.memory_gb``
(the ``frequencies x items`` projections dominate), gradients accumulating over chunks, so the
number of classes and the dataset size bound time, not memory.
"""

from __future__ import annotations

import logging
import math
import time
from dataclasses import dataclass, field

import numpy as np
import torch
import torch.nn.functional as F
from tqdm import tqdm

from pipeline.core.manifest import CondenseConfig
from trainer.condense.sets import ClassSampler, LabelledPairs, initial_sets
from trainer.losses.cf import LossWeights, condense_loss, draw_frequencies

log = logging.getLogger(__name__)
# float32 tensors of (frequencies x items) held per modality in one chunk's forward and backward
# (the projection, its cosine and sine, their gradients), and of (batch x items) Gram matrices per
# pair of modalities (the joint term's)
PROJECTION_COPIES = 6
GRAM_COPIES = 4


@dataclass
class Curves:
    """Mean per-class value of each loss term at every step."""

    total: list[float] = field(default_factory=list)
    uni: list[float] = field(default_factory=list)
    cross: list[float] = field(default_factory=list)
    joint: list[float] = field(default_factory=list)

    def add(self, sums: torch.Tensor, classes: int) -> None:
        for name, value in zip(("total", "uni", "cross", "joint"), (sums / classes).tolist(), strict=True):
            getattr(self, name).append(value)


@dataclass
class Condensed:
    vectors: dict[str, np.ndarray]  # modality -> (classes, per_class, d) float32, unit norm
    classes: list[str]
    curves: Curves
    seconds: float  # the optimisation loop's wall time
    chunks: int  # class chunks per step

    @property
    def per_class(self) -> int:
        return next(iter(self.vectors.values())).shape[1]


def class_chunks(classes: int, batch: int, per_class: int, frequencies: int, modalities: int,
                 memory_gb: float) -> list[np.ndarray]:
    """Class indices split so one chunk's projections and Gram matrices fit ``memory_gb``."""
    items = batch + per_class
    pairs = modalities * (modalities - 1) // 2
    per_class_bytes = 4 * (PROJECTION_COPIES * frequencies * items * modalities + GRAM_COPIES * pairs * batch * items)
    size = max(1, min(classes, int(memory_gb * 2**30 // per_class_bytes)))
    return np.array_split(np.arange(classes), math.ceil(classes / size))


def weights_of(c: CondenseConfig) -> LossWeights:
    return LossWeights(alpha=c.alpha, beta=c.beta, cross=c.cross_weight, joint=c.joint_weight)


def condense(train: LabelledPairs, c: CondenseConfig, per_class: int, device: torch.device | str = "cpu",
             progress: bool = True) -> Condensed:
    """Optimise ``per_class`` synthetic pairs for every class of ``train``."""
    device = torch.device(device)
    seed = c.seed * 1_000_003 + per_class
    theta = {m: torch.nn.Parameter(torch.from_numpy(v).to(device))
             for m, v in initial_sets(train, per_class, c.init, seed).items()}
    optimizer = torch.optim.Adam(theta.values(), lr=c.lr)
    sampler = ClassSampler(train, c.batch_size, seed, device)
    gen = torch.Generator().manual_seed(seed)
    n_classes, weights = len(train.classes), weights_of(c)
    chunks = class_chunks(n_classes, min(c.batch_size, int(train.counts().max())), per_class, c.frequencies,
                          len(theta), c.memory_gb)
    curves = Curves()
    start = time.perf_counter()
    for _ in tqdm(range(c.steps), desc=f"condense {per_class}/class", disable=not progress):
        freqs = {m: draw_frequencies(c.frequencies, p.shape[-1], c.sigma, gen, device) for m, p in theta.items()}
        optimizer.zero_grad(set_to_none=True)
        sums = torch.zeros(4)
        for chunk in chunks:
            real, group = sampler.draw(chunk)
            syn = {m: F.normalize(p[torch.as_tensor(chunk, device=device)], dim=-1) for m, p in theta.items()}
            terms = condense_loss(real, group, syn, freqs, weights)
            (terms.total.sum() / n_classes).backward()
            sums += torch.stack([t.detach().sum().cpu() for t in (terms.total, terms.uni, terms.cross, terms.joint)])
        optimizer.step()
        curves.add(sums, n_classes)
    seconds = time.perf_counter() - start
    vectors = {m: F.normalize(p.detach(), dim=-1).cpu().numpy() for m, p in theta.items()}
    log.info("condensed %d classes x %d in %.1f s (%d steps, %d class chunk(s)/step), loss %.4f -> %.4f",
             n_classes, per_class, seconds, c.steps, len(chunks), curves.total[0], curves.total[-1])
    return Condensed(vectors, list(train.classes), curves, seconds, len(chunks))
