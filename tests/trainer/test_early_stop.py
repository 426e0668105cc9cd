"""The start test of early stopping: the best epoch against a fitted start, with the paired standard
error written here."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch

from trainer.early_stop import BestEpoch, SliceScore, paired_gain


def scored(per_pair: np.ndarray) -> SliceScore:
    return SliceScore(float(per_pair.mean()), {}, per_pair)


def reference_z(new: np.ndarray, start: np.ndarray) -> float:
    d = [a - b for a, b in zip(new, start, strict=True)]
    mean = sum(d) / len(d)
    sd = math.sqrt(sum((x - mean) ** 2 for x in d) / (len(d) - 1))
    return mean / (sd / math.sqrt(len(d)))


def with_z(start: np.ndarray, z: float, rng: np.random.Generator) -> np.ndarray:
    """``start`` plus noise, shifted so the paired gain is exactly ``z`` standard errors."""
    diff = rng.normal(0.0, 0.05, len(start))
    diff -= diff.mean()
    return start + diff + z * diff.std(ddof=1) / math.sqrt(len(start))


def heads(value: float) -> torch.nn.Linear:
    layer = torch.nn.Linear(2, 2)
    torch.nn.init.constant_(layer.weight, value)
    return layer


def test_paired_gain_is_the_mean_difference_and_its_standard_error():
    rng = np.random.default_rng(0)
    start, new = rng.uniform(0, 1, 40), rng.uniform(0, 1, 40)
    gain, se = paired_gain(new, start)
    assert gain == pytest.approx(float(np.mean(new - start)))
    assert gain / se == pytest.approx(reference_z(new, start))


@pytest.mark.parametrize(("z", "kept_start"), [(0.5, True), (1.5, False)])
def test_the_best_epoch_replaces_the_start_only_beyond_the_margin(z, kept_start):
    rng = np.random.default_rng(1)
    start = rng.uniform(0.2, 0.8, 60)
    best_pairs = with_z(start, z, rng)
    assert reference_z(best_pairs, start) == pytest.approx(z)
    best = BestEpoch(patience=5, start_margin_se=1.0)
    best.start(scored(start), heads(0.0))
    best.update(0, scored(start - 0.01), heads(1.0))
    best.update(1, scored(best_pairs), heads(2.0))
    best.update(2, scored(start - 0.02), heads(3.0))
    model = heads(9.0)
    best.restore(model)
    assert best.start_test["epoch_by_value"] == 2 and best.start_test["kept_start"] is kept_start
    assert best.start_test["gain"] / best.start_test["se"] == pytest.approx(z, rel=1e-4)
    assert best.best_epoch == (-1 if kept_start else 1)
    assert float(model.weight.detach()[0, 0]) == (0.0 if kept_start else 2.0)
    report = best.report(type("Slice", (), {"rows": 60, "pairs": {}})())
    assert report["epoch_chosen"] == (0 if kept_start else 2)


def test_a_resumed_state_settles_the_same_way():
    rng = np.random.default_rng(2)
    start = rng.uniform(0.2, 0.8, 30)
    first = BestEpoch(patience=5, start_margin_se=1.0)
    first.start(scored(start), heads(0.0))
    first.update(0, scored(with_z(start, 0.7, rng)), heads(1.0))
    again = BestEpoch(patience=5, start_margin_se=1.0)
    again.load(first.dump())
    first.settle()
    again.settle()
    assert again.start_test == first.start_test and again.best_epoch == first.best_epoch == -1


def test_without_a_scored_start_the_best_value_wins():
    best = BestEpoch(patience=5, start_margin_se=3.0)
    for epoch, v in enumerate([0.3, 0.5, 0.4]):
        best.update(epoch, scored(np.full(4, v)), heads(v))
    best.settle()
    assert best.best_epoch == 1 and best.start_test is None


def test_a_slice_that_changed_length_is_an_error():
    best = BestEpoch(patience=5, start_margin_se=1.0)
    best.start(scored(np.full(4, 0.5)), heads(0.0))
    best.update(0, scored(np.full(5, 0.9)), heads(1.0))
    with pytest.raises(RuntimeError, match="slice changed"):
        best.settle()
