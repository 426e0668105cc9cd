"""Cross-modal retrieval of listings against a NumPy hand computation."""

from __future__ import annotations

import numpy as np
import pytest

from trainer.analyze.query import retrieve
from trainer.analyze.space import Grouping, Items, Listings


def test_top_k_precision_and_chance_by_hand():
    rng = np.random.default_rng(0)
    n, dim, k = 12, 6, 3
    keys = np.array([f"L{i:02d}" for i in range(n)], dtype=object)
    labels = np.array(["a"] * 5 + ["b"] * 4 + ["c"] * 2 + [""], dtype=object)
    fused = rng.standard_normal((n, dim)).astype(np.float32)
    listings = Listings(keys, fused, {}, labels, keys.copy(), {})
    # q0 belongs to L00 (label a); q1 to no listing (label b); q2 has a label no other listing has; q3 none
    qkeys = np.array(["q0", "q1", "q2", "q3"], dtype=object)
    qvecs = rng.standard_normal((4, dim)).astype(np.float32)
    grouping = Grouping({"q0": "L00", "q2": "L09"}, {"q0": "a", "q1": "b", "q2": "c", "q3": ""})
    got = retrieve(Items("audio", qkeys, qvecs, "as stored"), listings, grouping, k)

    unit = fused / np.linalg.norm(fused, axis=1, keepdims=True)
    sims = (qvecs / np.linalg.norm(qvecs, axis=1, keepdims=True)) @ unit.T
    sims[0, 0] = sims[2, 9] = -np.inf  # never the query's own listing
    top = np.argsort(-sims, axis=1)[:, :k]
    for q in range(4):
        assert got.hits[q].listings == [keys[j] for j in top[q]]
        np.testing.assert_allclose(got.hits[q].scores, sims[q, top[q]], rtol=1e-5)
    p0 = np.mean(labels[top[0]] == "a")
    p1 = np.mean(labels[top[1]] == "b")
    p2 = np.mean(labels[top[2]] == "c")  # L10 is the one other "c" listing
    assert [h.precision for h in got.hits] == [pytest.approx(p0), pytest.approx(p1), pytest.approx(p2), None]
    assert got.scored == 3 and got.queries == 4 and got.k == k
    assert got.precision_at_k == pytest.approx((p0 + p1 + p2) / 3)
    # chance: the share of the *other* listings with the query's label
    assert got.chance == pytest.approx((4 / 11 + 4 / 12 + 1 / 11) / 3)


def test_a_label_no_other_listing_has_is_not_scored():
    keys = np.array(["L0", "L1", "L2"], dtype=object)
    listings = Listings(keys, np.eye(3, dtype=np.float32), {}, np.array(["a", "b", "b"], dtype=object), keys, {})
    got = retrieve(Items("audio", np.array(["q"], dtype=object), np.ones((1, 3), np.float32), "as stored"),
                   listings, Grouping({"q": "L0"}, {"q": "a"}), 5)
    assert got.k == 2 and got.scored == 0 and got.precision_at_k is None and got.chance is None
    assert sorted(got.hits[0].listings) == ["L1", "L2"]  # never its own listing, even when k asks for all
