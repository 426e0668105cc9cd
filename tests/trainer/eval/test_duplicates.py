"""Leak checks and the identical-caption metric, against brute-force references."""

from __future__ import annotations

import numpy as np
import torch

from trainer.eval.duplicates import exact_copies, near_copies
from trainer.eval.retrieval import ranks_of_group, ranks_of_truth


def brute_group_rank(sims: np.ndarray, truth: int, groups: np.ndarray) -> int:
    same = groups == groups[truth]
    best = sims[same].max()
    return int(sum(1 for j in range(len(sims)) if not same[j] and sims[j] > best))


def test_group_rank_counts_identical_captions_as_hits():
    rng = np.random.default_rng(0)
    q, g = rng.normal(size=(40, 8)), rng.normal(size=(30, 8))
    groups = rng.integers(0, 12, size=30)  # ~2.5 items per caption text
    truth = rng.integers(0, 30, size=40)
    got = ranks_of_group(torch.from_numpy(q), torch.from_numpy(g), torch.from_numpy(truth), torch.from_numpy(groups))
    sims = q @ g.T
    assert got.tolist() == [brute_group_rank(sims[i], truth[i], groups) for i in range(40)]
    strict = ranks_of_truth(torch.from_numpy(q), torch.from_numpy(g), torch.from_numpy(truth))
    assert (got <= strict).all() and (got < strict).any()  # never worse, and better where a twin outranks
    singles = torch.arange(30)  # every caption unique: the strict rank
    assert ranks_of_group(torch.from_numpy(q), torch.from_numpy(g), torch.from_numpy(truth), singles).tolist() \
        == strict.tolist()


def test_exact_and_near_copies_across_the_split():
    hashes = ["a", "b", "c", None, "a", "d", "b"]
    train, held = np.array([0, 1, 2, 3]), np.array([4, 5, 6])
    assert exact_copies(hashes, held, train).tolist() == [0, 2]  # items 4 and 6 copy 0 and 1
    rng = np.random.default_rng(1)
    v = torch.nn.functional.normalize(torch.from_numpy(rng.normal(size=(7, 16))), dim=-1)
    v[5] = torch.nn.functional.normalize(v[2] + 0.05 * v[3], dim=0)  # cosine ~0.999 with item 2
    near = near_copies(v, held, train, 0.98)
    cos = (v[held] @ v[train].T).max(1).values.numpy()
    assert near.tolist() == np.flatnonzero(cos >= 0.98).tolist() and 1 in near.tolist()
