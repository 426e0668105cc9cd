"""The choice of (dim, k) from the three internal scores; labels only check it afterwards.

Each score votes for its own best setting and the majority wins. Averaging the scores' ranks
instead lets Calinski–Harabasz decide alone more often than not: its within-cluster dispersion
is summed over the PCA dimensions, so it grows with dim and CH favours the smallest dim whatever
the structure (on planted clusters in an 8-d subspace CH picked dim 2, silhouette and
Davies–Bouldin dim 8; tests/trainer/analyze/test_choice.py).
"""

from __future__ import annotations

import math
from collections import Counter
from dataclasses import dataclass

from trainer.analyze.cluster import Clustering, Setting

# score -> True when higher is better
INTERNAL = {"silhouette": True, "calinski_harabasz": True, "davies_bouldin": False}
RULE = ("Each internal score votes for its best (dim, k) setting (silhouette and Calinski–Harabasz: highest; "
        "Davies–Bouldin: lowest; ties go to the smaller dim, then the smaller k). The setting with two or three "
        "votes is chosen; when all three differ, the silhouette's is (it is bounded; Calinski–Harabasz's "
        "within-cluster dispersion grows with dim, so it leans to the smallest dim). Labels never enter the choice: NMI/ARI/purity only "
        "say whether it was right.")


@dataclass
class Choice:
    setting: Setting
    rule: str
    votes: dict[Setting, int]  # settings with at least one vote
    best_by_score: dict[str, Setting]  # each internal score's own best setting
    best_by_nmi: Setting | None  # the setting the labels would have chosen; None without labels


def best(clusterings: dict[Setting, Clustering], score: str, higher_is_better: bool) -> Setting:
    """The setting with the best finite ``score`` (ties: smaller dim, then smaller k)."""
    def key(s: Setting) -> tuple:
        v = getattr(clusterings[s].scores, score)
        v = v if v is not None and math.isfinite(v) else -math.inf if higher_is_better else math.inf
        return (-v if higher_is_better else v, s.dim, s.k)

    return min(clusterings, key=key)


def choose(clusterings: dict[Setting, Clustering]) -> Choice:
    best_by_score = {name: best(clusterings, name, higher) for name, higher in INTERNAL.items()}
    votes = Counter(best_by_score.values())
    top, count = min(votes.items(), key=lambda sv: (-sv[1], sv[0].dim, sv[0].k))
    chosen = top if count >= 2 else best_by_score["silhouette"]
    labelled = {s: c for s, c in clusterings.items() if c.scores.nmi is not None}
    by_nmi = best(labelled, "nmi", True) if labelled else None
    return Choice(chosen, RULE, dict(votes), best_by_score, by_nmi)
