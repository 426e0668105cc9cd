"""Recall@K between modalities: a query's truth is the target item with the same key (the same sample).

Every ordered pair ``q->t`` of the space is scored (emergent pairs that never met in training,
such as audio<->points, included); the gallery is every ``t`` item of the split.
"""

from __future__ import annotations

import itertools
from typing import Any

import torch

from trainer.eval.space import Space, pair_items

QUERY_CHUNK = 4096


def ranks_of_truth(queries: torch.Tensor, gallery: torch.Tensor, truth: torch.Tensor) -> torch.Tensor:
    """0-based rank of ``gallery[truth[i]]`` among all gallery items for query ``i`` (cosine)."""
    ranks = []
    for i in range(0, len(queries), QUERY_CHUNK):
        sims = queries[i:i + QUERY_CHUNK] @ gallery.T
        own = sims.gather(1, truth[i:i + QUERY_CHUNK, None])
        ranks.append((sims > own).sum(1))
    return torch.cat(ranks) if ranks else torch.zeros(0, dtype=torch.long)


def topk_accuracy(ranks: torch.Tensor, ks: tuple[int, ...], prefix: str = "R@") -> dict[str, float]:
    return {f"{prefix}{k}": float((ranks < k).float().mean()) if len(ranks) else float("nan") for k in ks}


def ordered_pairs(space: Space) -> list[tuple[str, str]]:
    """Every ordered pair of the space's modalities, in evaluation order."""
    return list(itertools.permutations(space.mods, 2))


def recall(space: Space, split: str, ks: tuple[int, ...],
           pairs: list[tuple[str, str]] | None = None) -> dict[str, Any]:
    """Recall@K of ``pairs`` (default: every ordered pair of ``space.mods``) from ``space.vecs``."""
    out = {}
    for q, t in ordered_pairs(space) if pairs is None else pairs:
        if (items := pair_items(space, q, t, split)) is None:
            continue
        qsel, ti, truth = items
        ranks = ranks_of_truth(space.vecs[q][qsel], space.vecs[t][torch.as_tensor(ti)], truth)
        out[f"{q}->{t}"] = {**topk_accuracy(ranks, ks), "n": len(qsel)}
    return out
