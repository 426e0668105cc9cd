"""Cross-modal retrieval of listings: each item of a query modality (e.g. audio) retrieves the
``neighbors`` listings whose fused vectors are nearest by cosine in the analysed space.

A query never retrieves the listing its own sample belongs to: finding that one is the eval's
Recall@K; here the question is whether the *other* listings it finds are of its kind. With
labels, precision@k is the share of the k listings whose label is the query's, averaged over
the queries whose label some other listing carries, and chance is that share for k listings
drawn at random (the share of the other listings with the query's label), averaged the same way.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np
import torch

from trainer.analyze.space import Grouping, Items, Listings, unit

CHUNK = 4096


@dataclass
class QueryHit:
    query: str  # the query item's sample key
    label: str  # "" when none
    listings: list[str]  # the retrieved listing keys, best first
    scores: list[float]  # their cosine scores
    precision: float | None  # share of them with the query's label; None when not scored


@dataclass
class QueryResult:
    modality: str
    k: int
    queries: int
    scored: int  # queries whose label some other listing carries
    precision_at_k: float | None
    chance: float | None
    hits: list[QueryHit] = field(default_factory=list)


def _top_listings(queries: np.ndarray, gallery: np.ndarray, own: np.ndarray, k: int) -> tuple[np.ndarray, ...]:
    """(scores, indices) of the ``k`` best gallery rows per query, the ``own`` row (or -1) excluded;
    ``k`` is at most one less than the gallery, so an excluded row never fills a place."""
    k = min(k, len(gallery) - 1)
    g = torch.from_numpy(unit(gallery))
    scores, index = [], []
    for i in range(0, len(queries), CHUNK):
        sims = torch.from_numpy(unit(queries[i:i + CHUNK])) @ g.T
        rows = torch.from_numpy(own[i:i + CHUNK])
        mine = rows >= 0
        sims[torch.arange(len(sims))[mine], rows[mine]] = -torch.inf
        top = sims.topk(k, dim=1)
        scores.append(top.values.numpy())
        index.append(top.indices.numpy())
    empty = np.zeros((0, k))
    return (np.concatenate(scores) if scores else empty), (np.concatenate(index) if index else empty.astype(int))


def retrieve(items: Items, listings: Listings, grouping: Grouping, k: int) -> QueryResult:
    position = {key: i for i, key in enumerate(listings.keys)}
    own = np.array([position.get(grouping.listing(key), -1) for key in items.keys], dtype=np.int64)
    scores, index = _top_listings(items.vectors, listings.vectors, own, k)
    label_counts: dict[str, int] = {}
    for lab in listings.labels:
        label_counts[lab] = label_counts.get(lab, 0) + 1
    hits, precisions, chances = [], [], []
    for q, key in enumerate(items.keys):
        label = grouping.label_of.get(key, "")
        others = len(listings.keys) - (own[q] >= 0)
        same = label_counts.get(label, 0) - (own[q] >= 0 and listings.labels[own[q]] == label)
        precision = None
        if label and same > 0:
            precision = float(np.mean(listings.labels[index[q]] == label))
            precisions.append(precision)
            chances.append(same / others)
        hits.append(QueryHit(str(key), label, [str(listings.keys[j]) for j in index[q]],
                             [float(s) for s in scores[q]], precision))
    return QueryResult(items.modality, min(k, len(listings.keys) - 1), len(items.keys), len(precisions),
                       float(np.mean(precisions)) if precisions else None,
                       float(np.mean(chances)) if chances else None, hits)
