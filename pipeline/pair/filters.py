"""The filters between raw kNN lists and the chosen partner per query: min_score, mutual, max_uses.

Neighbour lists are flat arrays per target modality, grouped by query and best first within
a query: ``query`` (query index), ``target`` (target index), ``rank`` (0-based rank in the raw
top-k) and ``score``.
"""

from __future__ import annotations

import numpy as np


def keep_mask(query: np.ndarray, target: np.ndarray, score: np.ndarray, *, min_score: float,
              reverse: tuple[np.ndarray, np.ndarray] | None, n_queries: int) -> np.ndarray:
    """Rows that survive the score threshold and, when ``reverse`` is given, the mutual test.

    ``reverse = (target_index, query_index)`` rows of the reverse search (each target's top-k
    among the queries); a pair is mutual when it appears in both directions.
    """
    keep = (target >= 0) & (score >= min_score)
    if reverse is not None:
        rev_t, rev_q = reverse
        valid = rev_q >= 0
        rev_ids = rev_t[valid].astype(np.int64) * n_queries + rev_q[valid]
        keep &= np.isin(target.astype(np.int64) * n_queries + query, rev_ids)
    return keep


def first_choice(query: np.ndarray, n_queries: int) -> np.ndarray:
    """Row index of each query's best surviving neighbour (rows grouped, best first), -1 if none."""
    chosen = np.full(n_queries, -1, np.int64)
    if len(query):
        starts = np.flatnonzero(np.r_[True, query[1:] != query[:-1]])
        chosen[query[starts]] = starts
    return chosen


def capped_choice(query: np.ndarray, target: np.ndarray, score: np.ndarray, n_queries: int,
                  max_uses: int) -> np.ndarray:
    """Row index of each query's partner when one target may be chosen by at most ``max_uses`` queries.

    Query-proposing deferred acceptance: every unserved query proposes its next neighbour, a
    target keeps its ``max_uses`` best proposers (higher score, then lower query index) and
    releases the rest, who move down their lists. Because both sides rank a pair by the same
    score, the result equals the greedy one: pairs are served best score first, skipping
    queries already served and targets already full. A query whose list runs out gets -1.
    """
    held = np.full(n_queries, -1, np.int64)
    if not len(query):
        return held
    starts = np.flatnonzero(np.r_[True, query[1:] != query[:-1]])
    ends = np.r_[starts[1:], len(query)]
    owners = query[starts]
    ptr = np.full(n_queries, 0, np.int64)
    end = np.full(n_queries, 0, np.int64)
    ptr[owners], end[owners] = starts, ends
    active = owners.astype(np.int64)
    while active.size:
        proposals = ptr[active]
        hit = np.isin(target[held[held >= 0]], target[proposals])
        rows = np.concatenate([held[held >= 0][hit], proposals])
        order = np.lexsort((query[rows], -score[rows], target[rows]))
        rows = rows[order]
        t_sorted = target[rows]
        group_start = np.flatnonzero(np.r_[True, t_sorted[1:] != t_sorted[:-1]])
        place = np.arange(len(rows)) - np.repeat(group_start, np.diff(np.r_[group_start, len(rows)]))
        accepted = place < max_uses
        held[query[rows]] = -1
        held[query[rows[accepted]]] = rows[accepted]
        rejected = query[rows[~accepted]]
        ptr[rejected] += 1
        active = rejected[ptr[rejected] < end[rejected]]
    return held
