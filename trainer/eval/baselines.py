"""Reference points for a run's Recall@K: chance, and a closed-form ridge regression per modality.

* **ridge**: for every projected modality ``m`` of the run, an affine map ``x -> x W + b`` into the
  anchor space minimising ``sum_i ||x_i W + b - t_i||^2 + lambda ||W||^2`` (the bias is not
  penalised); ``lambda`` is ``[eval] ridge_lambda``, or with 0 (the default) chosen per modality by
  :data:`CV_FOLDS`-fold cross-validation on the training rows over :data:`RIDGE_GRID` (the mean
  reciprocal rank of each held-back fold's true anchor among that fold's anchors, the quantity the
  baseline is compared on; ties go to the larger lambda), where ``(x_i, t_i)`` are the run's own training rows that pair ``m``
  with the anchor: the rows and split :func:`trainer.data.rows.load` gives the trainer (with the run's
  recorded ``[train]`` section), ``x`` the stored ``m`` vector as the head sees it and ``t`` the
  L2-normalised anchor vector, as in the loss. Every row counts once (a soft ``partial`` weight is
  not applied, rated bad partners are not used). Solved exactly in float64: with ``X1 = [X, 1]``,
  ``[W; b] = (X1^T X1 + lambda diag(1, ..., 1, 0))^-1 X1^T T``. The mapped vectors are L2-normalised
  and scored by :func:`trainer.eval.retrieval.recall`, the heads' own code, on the same pairs and split.
  Pairs whose two sides both pass through unmapped (the anchor, ``anchor_passthrough``) would score
  the same as the heads and are left out.
* **chance**: a query whose truth sits at a uniformly random rank among the gallery's ``N`` items:
  ``R@K = min(K, N) / N``, with ``N`` the gallery evaluate uses for that pair.
"""

from __future__ import annotations

import dataclasses
import logging
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F

from pipeline.core.layout import OutputLayout
from pipeline.core.manifest import TrainConfig
from trainer.data.rows import CachedData, load
from trainer.eval.retrieval import ordered_pairs, ranks_of_truth, recall
from trainer.eval.space import Space, pair_items

log = logging.getLogger(__name__)
CHUNK = 65536
RIDGE_GRID = tuple(10.0 ** e for e in range(-5, 4))  # 1e-5 ... 1e3: unit vectors need small penalties
CV_FOLDS = 5


def fit_ridge(x: torch.Tensor, t: torch.Tensor, lam: float) -> tuple[torch.Tensor, torch.Tensor]:
    """``(W, b)`` (float64) minimising ``||x W + b - t||^2 + lam ||W||^2`` (bias not penalised)."""
    x1 = torch.cat([x.double(), torch.ones(len(x), 1, dtype=torch.float64, device=x.device)], 1)
    penalty = torch.full((x1.shape[1],), float(lam), dtype=torch.float64, device=x.device)
    penalty[-1] = 0.0
    wb = torch.linalg.solve(x1.T @ x1 + torch.diag(penalty), x1.T @ t.double())
    return wb[:-1], wb[-1]


def ridge_path(x: torch.Tensor, t: torch.Tensor, grid: tuple[float, ...]
               ) -> list[tuple[torch.Tensor, torch.Tensor]]:
    """:func:`fit_ridge` for every penalty of ``grid`` from one SVD of the centred ``x`` (with the bias
    unpenalised, centring ``x`` and ``t`` and adding the means back is the same solution)."""
    x, t = x.double(), t.double()
    xm, tm = x.mean(0), t.mean(0)
    u, s, vh = torch.linalg.svd(x - xm, full_matrices=False)
    ut = u.T @ (t - tm)
    out = []
    for lam in grid:
        w = vh.T @ ((s / (s * s + lam))[:, None] * ut)
        out.append((w, tm - xm @ w))
    return out


def mean_reciprocal_rank(pred: torch.Tensor, t: torch.Tensor) -> float:
    """Mean of ``1 / (rank + 1)`` of each row's own target among all rows' targets (cosine)."""
    ranks = ranks_of_truth(F.normalize(pred, dim=-1), F.normalize(t, dim=-1), torch.arange(len(t)))
    return float((1.0 / (ranks.double() + 1)).mean())


def cv_lambda(x: torch.Tensor, t: torch.Tensor, seed: int, grid: tuple[float, ...] = RIDGE_GRID,
              folds: int = CV_FOLDS) -> tuple[float, dict[str, float]]:
    """The ``grid`` penalty with the best mean held-back-fold reciprocal rank, and every penalty's score."""
    folds = max(2, min(folds, len(x) // 2))
    fold = torch.randperm(len(x), generator=torch.Generator().manual_seed(seed)) % folds
    scores = torch.zeros(len(grid), dtype=torch.float64)
    for f in range(folds):
        fit, held = fold != f, fold == f
        for i, (w, b) in enumerate(ridge_path(x[fit], t[fit], grid)):
            scores[i] += mean_reciprocal_rank(x[held].double() @ w + b, t[held]) / folds
    best = max(range(len(grid)), key=lambda i: (round(float(scores[i]), 9), grid[i]))
    return grid[best], {f"{lam:g}": round(float(v), 6) for lam, v in zip(grid, scores, strict=True)}


def training_pairs(data: CachedData, m: str) -> tuple[torch.Tensor, torch.Tensor]:
    """``(x, t)``: the ``m`` vectors and L2-normalised anchor vectors of the training rows pairing ``m``."""
    rows = data.rows
    sel = data.train_idx[rows.partner[m][data.train_idx] >= 0]
    x = data.vectors[m][torch.as_tensor(rows.partner[m][sel])].double()
    t = F.normalize(data.vectors[data.anchor][torch.as_tensor(rows.anchor[sel])].double(), dim=-1)
    return x, t


def apply_ridge(vectors: torch.Tensor, w: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
    """Map stored vectors (in chunks) with ``x W + b`` and L2-normalise (float32, like the heads)."""
    out = [F.normalize(vectors[i:i + CHUNK].double() @ w + b, dim=-1).float() for i in range(0, len(vectors), CHUNK)]
    return torch.cat(out) if out else torch.zeros(0, w.shape[1])


@dataclass
class RidgeMaps:
    """Per projected modality: the whole store mapped into the anchor space, the penalty used and
    (when chosen by cross-validation) every grid penalty's CV score."""

    vectors: dict[str, torch.Tensor]
    keys: dict[str, np.ndarray]
    lambdas: dict[str, float]
    cv: dict[str, dict[str, float]]


def ridge_vectors(train: TrainConfig, layout: OutputLayout, lam: float) -> RidgeMaps:
    """Fit a ridge map per projected modality with the training rows of ``train`` (the run's section) and
    map that modality's whole store with it; ``lam = 0`` chooses each penalty by cross-validation."""
    data = load(train, layout, "cpu")
    maps = RidgeMaps({}, data.keys, {}, {})
    for m in data.modalities:
        x, t = training_pairs(data, m)
        if len(x) < 4:
            log.warning("ridge baseline: %d training rows pair %s with %s; no ridge map", len(x), m, data.anchor)
            continue
        chosen = lam
        if not lam:
            chosen, maps.cv[m] = cv_lambda(x, t, train.seed)
        maps.lambdas[m] = chosen
        maps.vectors[m] = apply_ridge(data.vectors[m], *fit_ridge(x, t, chosen))
        log.info("ridge baseline: %s -> %s fitted on %d rows (lambda %g%s)", m, data.anchor, len(x), chosen,
                 "" if lam else ", by CV")
    return maps


def chance(space: Space, split: str, ks: tuple[int, ...]) -> dict[str, dict[str, float]]:
    """R@K of a random ranking, ``min(K, N) / N``, for every pair evaluation scores (``N`` = its gallery)."""
    out = {}
    for q, t in ordered_pairs(space):
        if (items := pair_items(space, q, t, split)) is not None:
            n = len(items[1])
            out[f"{q}->{t}"] = {**{f"R@{k}": min(k, n) / n for k in ks}, "gallery": n}
    return out


def baselines(train: TrainConfig, layout: OutputLayout, space: Space, split: str, ks: tuple[int, ...],
              lam: float, caption_groups: dict[str, np.ndarray] | None = None) -> dict[str, Any]:
    """``{"ridge": {"q->t": {"R@K": ..., "n": ...}}, "ridge_lambda": {m: lambda}, "ridge_cv": {m: {lambda:
    score}}, "chance": {"q->t": {"R@K": ...,
    "gallery": N}}}`` for the run loaded in ``space`` (its heads' vectors are left as they are); ``train``
    is the run's recorded ``[train]`` section."""
    maps = ridge_vectors(train, layout, lam)
    vecs = {m: v for m, v in maps.vectors.items() if m in space.mods}
    for m in vecs:
        if not np.array_equal(maps.keys[m], space.keys[m]):
            raise RuntimeError(f"ridge baseline: {m}'s store changed during evaluation; rerun `bindery eval`")
    ridge_space = dataclasses.replace(space, vecs={**space.vecs, **vecs})
    pairs = [(q, t) for q, t in ordered_pairs(space) if q in vecs or t in vecs]
    return {"ridge": recall(ridge_space, split, ks, pairs, caption_groups), "ridge_lambda": maps.lambdas,
            "ridge_lambda_by": "cv" if not lam else "manifest", "ridge_cv": maps.cv,
            "chance": chance(space, split, ks)}
