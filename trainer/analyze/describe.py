"""What each cluster of the chosen setting holds: its size, its commonest labels, and the listings
nearest its centroid (Euclidean, in the PCA space the clustering saw) with their captions."""

from __future__ import annotations

from collections import Counter
from dataclasses import dataclass

import numpy as np

from trainer.analyze.cluster import Clustering
from trainer.analyze.space import Listings

TOP_LABELS = 3


@dataclass
class Neighbour:
    key: str  # listing key
    distance: float  # to the centroid
    label: str
    caption: str


@dataclass
class ClusterInfo:
    cluster: int
    size: int
    labels: list[tuple[str, int]]  # the commonest labels of its listings, with counts
    neighbours: list[Neighbour]


def nearest_to_centroids(clustering: Clustering, z: np.ndarray, n: int) -> dict[int, list[tuple[int, float]]]:
    """cluster -> its ``n`` members nearest the centroid, as (listing index, distance), nearest first."""
    out = {}
    for c, centre in enumerate(clustering.centroids):
        members = np.flatnonzero(clustering.assignments == c)
        dist = np.linalg.norm(z[members] - centre, axis=1)
        order = np.argsort(dist, kind="stable")[:n]
        out[c] = [(int(members[i]), float(dist[i])) for i in order]
    return out


def describe(clustering: Clustering, nearest: dict[int, list[tuple[int, float]]], listings: Listings,
             captions: dict[str, str]) -> list[ClusterInfo]:
    """One :class:`ClusterInfo` per cluster, largest first (ties by cluster id)."""
    sizes = np.bincount(clustering.assignments, minlength=len(clustering.centroids))
    infos = []
    for c in sorted(range(len(sizes)), key=lambda c: (-sizes[c], c)):
        labels = Counter(lab for lab in listings.labels[clustering.assignments == c] if lab)
        neighbours = [Neighbour(str(listings.keys[i]), d, str(listings.labels[i]),
                                captions.get(str(listings.caption_keys[i]), "")) for i, d in nearest[c]]
        infos.append(ClusterInfo(c, int(sizes[c]), sorted(labels.items(), key=lambda t: (-t[1], t[0]))[:TOP_LABELS],
                                 neighbours))
    return infos
