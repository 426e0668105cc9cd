"""Recall@K between modalities: a query's truth is the target item with the same key (the same sample).

Every ordered pair ``q->t`` of the space is scored (emergent pairs that never met in training,
such as audio<->points, included); the gallery is every ``t`` item of the split.
"""

from __future__ import annotations

import itertools
from typing import Any

import numpy as np
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


def ranks_of_group(queries: torch.Tensor, gallery: torch.Tensor, truth: torch.Tensor,
                   groups: torch.Tensor) -> torch.Tensor:
    """0-based rank of the best gallery item in the truth's group (``groups[truth[i]]``) for query ``i``:
    how many items of other groups score above every item of the truth's group."""
    ranks = []
    for i in range(0, len(queries), QUERY_CHUNK):
        sims = queries[i:i + QUERY_CHUNK] @ gallery.T
        same = groups[None, :] == groups[truth[i:i + QUERY_CHUNK], None]
        best = sims.masked_fill(~same, float("-inf")).max(1, keepdim=True).values
        ranks.append(((sims > best) & ~same).sum(1))
    return torch.cat(ranks) if ranks else torch.zeros(0, dtype=torch.long)


def topk_accuracy(ranks: torch.Tensor, ks: tuple[int, ...], prefix: str = "R@") -> dict[str, float]:
    return {f"{prefix}{k}": float((ranks < k).float().mean()) if len(ranks) else float("nan") for k in ks}


def ordered_pairs(space: Space) -> list[tuple[str, str]]:
    """Every ordered pair of the space's modalities, in evaluation order."""
    return list(itertools.permutations(space.mods, 2))


def recall(space: Space, split: str, ks: tuple[int, ...], pairs: list[tuple[str, str]] | None = None,
           caption_groups: dict[str, np.ndarray] | None = None) -> dict[str, Any]:
    """Recall@K of ``pairs`` (default: every ordered pair of ``space.mods``) from ``space.vecs``.

    With ``caption_groups`` (per modality, a group id per item: equal = byte-identical captions), every
    pair with text on one side also gets ``same_text``: Recall@K where a retrieved item whose caption
    equals the true item's caption counts as a hit (titles repeat), beside the strict same-key score."""
    out = {}
    for q, t in ordered_pairs(space) if pairs is None else pairs:
        if (items := pair_items(space, q, t, split)) is None:
            continue
        qsel, ti, truth = items
        queries, gallery = space.vecs[q][qsel], space.vecs[t][torch.as_tensor(ti)]
        out[f"{q}->{t}"] = {**topk_accuracy(ranks_of_truth(queries, gallery, truth), ks), "n": len(qsel)}
        if caption_groups and "text" in (q, t) and t in caption_groups:
            groups = torch.as_tensor(caption_groups[t][ti])
            out[f"{q}->{t}"]["same_text"] = topk_accuracy(ranks_of_group(queries, gallery, truth, groups), ks)
    return out
