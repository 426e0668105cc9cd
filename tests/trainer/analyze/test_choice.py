"""The choice of (dim, k): the rule on hand-made scores, and the planted intrinsic dimension found."""

from __future__ import annotations

import numpy as np
import pytest

from pipeline.core.manifest import AnalyzeConfig
from trainer.analyze.choose import choose
from trainer.analyze.cluster import Clustering, Scores, Setting, cluster_all
from trainer.analyze.reduce import reduce


def _clusterings(table: dict[tuple[int, int], tuple[float, float, float]]) -> dict[Setting, Clustering]:
    empty = np.zeros(0, np.int32)
    return {Setting(d, k): Clustering(Setting(d, k), empty, np.zeros((k, d)), Scores(s, ch, db, 0.0))
            for (d, k), (s, ch, db) in table.items()}


def test_the_majority_of_the_three_scores_wins():
    # CH alone prefers (4, 3); silhouette and DB agree on (8, 3)
    c = choose(_clusterings({(4, 3): (0.5, 900.0, 0.6), (8, 3): (0.7, 500.0, 0.4), (8, 5): (0.6, 400.0, 0.5)}))
    assert c.setting == Setting(8, 3)
    assert c.best_by_score == {"silhouette": Setting(8, 3), "calinski_harabasz": Setting(4, 3),
                               "davies_bouldin": Setting(8, 3)}
    assert c.votes == {Setting(8, 3): 2, Setting(4, 3): 1}
    assert c.best_by_nmi is None


def test_a_three_way_split_goes_to_the_silhouette_and_nan_never_wins():
    c = choose(_clusterings({(4, 3): (0.5, 900.0, 0.6), (8, 3): (0.7, 500.0, 0.5), (8, 5): (0.6, 400.0, 0.4),
                             (16, 3): (float("nan"), float("nan"), float("nan"))}))
    assert c.setting == Setting(8, 3)


def test_ties_go_to_the_smaller_dim_then_k():
    c = choose(_clusterings({(16, 4): (0.5, 10.0, 0.5), (8, 6): (0.5, 10.0, 0.5), (8, 4): (0.5, 10.0, 0.5)}))
    assert c.setting == Setting(8, 4)


@pytest.mark.parametrize("seed", [0, 1])
def test_the_choice_finds_the_planted_intrinsic_dimension(seed):
    """16 clusters at +-6 e_i, i < 8, in 64-d with unit noise: the structure spans 8 dims.

    Below 8 PCA dims, pairs of clusters collapse onto each other; above, only noise is added. So
    the right setting is (8, 16), and NMI against the planted labels is 1 there.
    """
    rng = np.random.default_rng(seed)
    intrinsic, ambient, per = 8, 64, 25
    centres = np.concatenate([6.0 * np.eye(ambient)[:intrinsic], -6.0 * np.eye(ambient)[:intrinsic]])
    labels = np.repeat(np.arange(2 * intrinsic), per)
    x = (centres[labels] + rng.standard_normal((len(labels), ambient))).astype(np.float32)
    cfg = AnalyzeConfig(dims=(2, 4, 8, 16, 32), ks=(8, 16, 24), seed=seed)
    clusterings = cluster_all(reduce(x, cfg.dims, seed, large=False), cfg.ks,
                              np.array([f"c{i}" for i in labels], dtype=object), cfg, large=False)
    c = choose(clusterings)
    assert c.setting == Setting(intrinsic, 2 * intrinsic)
    assert clusterings[c.setting].scores.nmi == pytest.approx(1.0)
    assert c.best_by_nmi.dim == intrinsic
