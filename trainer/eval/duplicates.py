"""Leaks across the split: held-out items that are copies of training items, exact or near.

* **exact**: the held-out item's member (the bytes its modality reads) has the sha256 of a training
  item's member (``metadata/``'s ``sha256`` column, written by precompute).
* **near**: the held-out item's stored vector, in the encoder's own space (before any head), has
  cosine ``>= [eval] near_duplicate`` with a training item's.

``[eval] drop_duplicates`` leaves those held-out items out of every score (:meth:`Space.drop`).
The same member hashes give the caption groups of the identical-text metric
(:func:`caption_groups`): two items whose samples' captions are byte-identical are one group.
"""

from __future__ import annotations

import logging
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F

from pipeline.core.layout import OutputLayout
from pipeline.core.store import read_store
from trainer.eval.space import Space

log = logging.getLogger(__name__)
CHUNK = 4096


def exact_copies(hashes: list[str | None], held: np.ndarray, train: np.ndarray) -> np.ndarray:
    """Positions in ``held`` whose hash is also a training item's."""
    seen = {hashes[i] for i in train if hashes[i]}
    return np.array([j for j, i in enumerate(held) if hashes[i] and hashes[i] in seen], np.int64)


def near_copies(vectors: torch.Tensor, held: np.ndarray, train: np.ndarray, threshold: float) -> np.ndarray:
    """Positions in ``held`` whose best cosine with a training vector is at least ``threshold``."""
    if not len(held) or not len(train):
        return np.zeros(0, np.int64)
    gallery = vectors[torch.as_tensor(train)]
    best = [(vectors[torch.as_tensor(held[i:i + CHUNK])] @ gallery.T).max(1).values for i in range(0, len(held), CHUNK)]
    return np.flatnonzero(torch.cat(best).numpy() >= threshold)


def find_duplicates(space: Space, layout: OutputLayout, hashes: dict[str, dict[str, str]], split: str,
                    threshold: float, drop: bool) -> dict[str, Any]:
    """Per evaluated modality: held-out items, exact and near copies of training items (dropped with ``drop``)."""
    out = {}
    if split == "all":
        return out
    for m in space.mods:
        held, train = space.side(m, split), space.side(m, split, held_out=False)
        member = [hashes.get(k, {}).get(m) for k in space.keys[m]]
        exact = exact_copies(member, held, train)
        store = read_store(layout.root, m)
        own = F.normalize(torch.from_numpy(np.array(store.vectors, np.float32)), dim=-1)
        near = near_copies(own, held, train, threshold)
        either = np.union1d(exact, near)
        out[m] = {"held_out": int(len(held)), "exact": int(len(exact)), "near": int(len(near)),
                  "either": int(len(either)), "hashed": int(sum(h is not None for h in member))}
        if drop and len(either):
            space.drop(m, held[either])
            log.info("eval: %d held-out %s item(s) duplicate a training item; left out of the scores", len(either), m)
    return {"near_threshold": threshold, "dropped": drop, "modalities": out}


def caption_groups(space: Space, hashes: dict[str, dict[str, str]], m: str) -> np.ndarray:
    """A group id per ``m`` item: equal ids = the items' samples have byte-identical captions (items
    without a recorded caption hash get a group of their own)."""
    ids: dict[str, int] = {}
    out = np.empty(len(space.keys[m]), np.int64)
    for i, k in enumerate(space.keys[m]):
        h = hashes.get(k, {}).get("text") or f"\0{k}"
        out[i] = ids.setdefault(h, len(ids))
    return out
