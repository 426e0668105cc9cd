"""The one-standard-error rule against a fitted start, with the paired standard error written here."""

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


def test_paired_gain_is_the_mean_difference_and_its_standard_error():
    rng = np.random.default_rng(0)
    start, new = rng.uniform(0, 1, 40), rng.uniform(0, 1, 40)
    gain, se = paired_gain(new, start)
    assert gain == pytest.approx(float(np.mean(new - start)))
    assert gain / se == pytest.approx(reference_z(new, start))


def test_a_gain_within_one_standard_error_keeps_the_start():
    rng = np.random.default_rng(1)
    start = rng.uniform(0.2, 0.8, 60)
    noisy = start + rng.normal(0.0, 0.05, 60)  # higher on average by chance at most: not a real gain
    noisy += 0.5 * 0.05 / math.sqrt(60) - (noisy - start).mean()  # a mean gain of half a standard error
    assert 0 < reference_z(noisy, start) < 1
    clear = start + 0.05 + rng.normal(0.0, 0.01, 60)
    best = BestEpoch(patience=5, start_margin_se=1.0)
    model = torch.nn.Linear(2, 2)
    best.start(scored(start), model)
    best.update(0, scored(noisy), model)
    assert best.best_epoch == -1  # higher value, but within noise of the start
    best.update(1, scored(clear), model)
    assert best.best_epoch == 1
    assert best.gains_se[0] == pytest.approx(reference_z(noisy, start), abs=1e-3)
    report = best.report(type("Slice", (), {"rows": 60, "pairs": {}})())
    assert report["start_margin_se"] == 1.0 and len(report["gain_over_start_se"]) == 2


def test_margin_zero_keeps_any_gain():
    start = np.full(10, 0.5)
    best = BestEpoch(patience=5, start_margin_se=0.0)
    model = torch.nn.Linear(2, 2)
    best.start(scored(start), model)
    best.update(0, scored(start + np.r_[0.01, np.zeros(9)]), model)
    assert best.best_epoch == 0


def test_without_a_scored_start_the_best_value_wins():
    best = BestEpoch(patience=5, start_margin_se=3.0)
    model = torch.nn.Linear(2, 2)
    for epoch, v in enumerate([0.3, 0.5, 0.4]):
        best.update(epoch, scored(np.full(4, v)), model)
    assert best.best_epoch == 1
