"""The ridge-regression and chance baselines in metrics.json, on planted stores.

The planted audio (32-d) and points (24-d) stores are noisy random linear maps of a 16-d text
anchor, so an affine map back into the text space exists and ridge regression should find it;
image (16-d) is a noisy copy of text and passes through unmapped.
"""

from __future__ import annotations

import dataclasses

import numpy as np
import pytest
import torch

from pipeline.core.manifest import ManifestError, from_dict
from pipeline.core.split import is_val
from tests.planted import unit, write_planted_stores
from tests.trainer.conftest import make_manifest
from trainer import train
from trainer.eval import evaluate
from trainer.eval.baselines import cv_lambda, fit_ridge, ridge_path

DIMS = {"text": 16, "image": 16, "audio": 32, "points": 24}
N, VAL, LAM = 400, 0.3, 0.5
DROPPED_POINTS = list(range(0, N, 4))  # a quarter of the samples have no point cloud


@pytest.fixture(scope="module")
def run(tmp_path_factory):
    out = tmp_path_factory.mktemp("baselines")
    vectors = write_planted_stores(out, n=N, dims=DIMS, noise=0.1, seed=1, drop={"points": DROPPED_POINTS})
    manifest = make_manifest(out, epochs=2, val_fraction=VAL, anchor_passthrough=["image"])
    manifest = dataclasses.replace(manifest, eval=dataclasses.replace(manifest.eval, ridge_lambda=LAM))
    train.run(manifest)
    return manifest, vectors, evaluate.run(manifest)


def reference_ridge(x: np.ndarray, t: np.ndarray, lam: float) -> tuple[np.ndarray, np.ndarray]:
    """Textbook ridge with an unpenalised bias: centre, W = (Xc^T Xc + lam I)^-1 Xc^T Tc, b = mean(T) - mean(X) W."""
    mx, mt = x.mean(0), t.mean(0)
    xc, tc = x - mx, t - mt
    w = np.linalg.inv(xc.T @ xc + lam * np.eye(x.shape[1])) @ xc.T @ tc
    return w, mt - mx @ w


def recall_at(queries: np.ndarray, gallery: np.ndarray, ks=(1, 5, 10)) -> dict[str, float]:
    """R@K when query i's truth is gallery item i (numpy, independent of evaluate.py)."""
    sims = queries @ gallery.T
    ranks = (sims > np.diag(sims)[:, None]).sum(1)
    return {f"R@{k}": float((ranks < k).mean()) for k in ks}


def test_ridge_matches_a_numpy_closed_form(run):
    """The training rows are the captions (no quintuples): every training-split key with audio.
    W and b must equal the centred closed form, and the held-out R@K must equal numpy's."""
    _, vectors, metrics = run
    keys = [f"s{i:05d}" for i in range(N)]
    val = is_val(keys, 0, VAL)
    text = unit(vectors["text"])
    w_ref, b_ref = reference_ridge(vectors["audio"][~val], text[~val], LAM)
    w, b = fit_ridge(torch.from_numpy(vectors["audio"][~val]), torch.from_numpy(text[~val]), LAM)
    np.testing.assert_allclose(w.numpy(), w_ref, atol=1e-9)
    np.testing.assert_allclose(b.numpy(), b_ref, atol=1e-9)
    w_other, _ = reference_ridge(vectors["audio"][~val], text[~val], 50.0)
    assert np.abs(w_other - w_ref).max() > 1e-3  # lambda matters at this scale: the check above is not vacuous
    mapped = unit(vectors["audio"] @ w_ref + b_ref)
    want = recall_at(mapped[val], text[val])
    got = metrics["baselines"]["ridge"]["audio->text"]
    assert got["n"] == int(val.sum())
    for k in ("R@1", "R@5", "R@10"):
        assert got[k] == pytest.approx(want[k], abs=1e-12)
    assert metrics["baselines"]["ridge_lambda"] == {"audio": LAM, "points": LAM}
    assert metrics["baselines"]["ridge_lambda_by"] == "manifest"


def test_ridge_recovers_the_planted_linear_map(run):
    """Noise 0.1 (norm) on unit signals in 32-d (audio) / 24-d (points), ~280 training rows for
    33 / 25 parameters per output: the affine map back to text is nearly exact, so among ~120
    held-out items the true one comes first. Measured R@1 = 1.0 on all ten mapped pairs (audio<->points,
    both sides mapped, included) for planted seeds 1, 2 and 3. Floor 0.95 (chance R@1 is 1/87 to 1/120)."""
    _, _, metrics = run
    ridge, chance = metrics["baselines"]["ridge"], metrics["baselines"]["chance"]
    for pair in ("text->audio", "audio->text", "text->points", "points->text", "audio->points", "points->audio"):
        assert ridge[pair]["R@1"] >= 0.95, (pair, ridge[pair])
        assert ridge[pair]["R@1"] > 50 * chance[pair]["R@1"]


def test_chance_is_k_over_the_gallery(run):
    """chance R@K = K / N exactly, N = the held-out items of the target modality (points lacks a quarter)."""
    _, _, metrics = run
    keys = np.array([f"s{i:05d}" for i in range(N)])
    val = is_val(keys, 0, VAL)
    has_points = np.ones(N, bool)
    has_points[DROPPED_POINTS] = False
    n_all, n_points = int(val.sum()), int((val & has_points).sum())
    assert n_points < n_all
    chance = metrics["baselines"]["chance"]
    pairs = {k for k in metrics if "->" in k}
    assert set(chance) == pairs and len(pairs) == 12  # the same pairs the heads are scored on
    for pair, c in chance.items():
        n = n_points if pair.endswith("->points") else n_all
        assert c == {"R@1": 1 / n, "R@5": 5 / n, "R@10": 10 / n, "gallery": n}, pair


def test_ridge_skips_pairs_that_no_map_touches(run):
    """text and image both pass through unmapped: ridge would equal the heads there, so it is left out."""
    _, _, metrics = run
    ridge = metrics["baselines"]["ridge"]
    assert "text->image" not in ridge and "image->text" not in ridge
    assert len(ridge) == 10 and "image->audio" in ridge
    assert set(ridge["text->audio"]) == {"R@1", "R@5", "R@10", "n"}


def test_ridge_lambda_zero_means_cross_validation(tmp_path):
    raw = {"dataset": {"name": "x", "shards": "a.tar", "output": str(tmp_path)},
           "modalities": {"text": {"encoder": "minilm-l6"}}}
    assert from_dict({**raw, "eval": {"ridge_lambda": "2.5"}}).eval.ridge_lambda == 2.5
    assert from_dict(raw).eval.ridge_lambda == 0.0
    with pytest.raises(ManifestError, match="eval.ridge_lambda: must be >= 0"):
        from_dict({**raw, "eval": {"ridge_lambda": -1.0}})


def test_ridge_path_equals_the_closed_form_at_every_penalty():
    rng = np.random.default_rng(0)
    x, t = rng.normal(size=(60, 12)), unit(rng.normal(size=(60, 5)))
    grid = (1e-4, 0.1, 10.0)
    for lam, (w, b) in zip(grid, ridge_path(torch.from_numpy(x), torch.from_numpy(t), grid), strict=True):
        w_ref, b_ref = reference_ridge(x, t, lam)
        np.testing.assert_allclose(w.numpy(), w_ref, atol=1e-8)
        np.testing.assert_allclose(b.numpy(), b_ref, atol=1e-8)


def numpy_cv(x, t, seed, grid, folds):
    """The CV score per penalty, written out with numpy: the held-back fold's mean reciprocal rank."""
    fold = torch.randperm(len(x), generator=torch.Generator().manual_seed(seed)).numpy() % folds
    scores = np.zeros(len(grid))
    for f in range(folds):
        fit, held = fold != f, fold == f
        for i, lam in enumerate(grid):
            w, b = reference_ridge(x[fit], t[fit], lam)
            sims = unit(x[held] @ w + b) @ unit(t[held]).T
            ranks = (sims > np.diag(sims)[:, None]).sum(1)
            scores[i] += np.mean(1.0 / (ranks + 1)) / folds
    return scores


def test_cv_picks_the_penalty_numpy_scores_best():
    """Few noisy rows in many dims: a moderate penalty must win over both ends of the grid, and the
    chosen penalty and every score must equal a numpy re-computation."""
    rng = np.random.default_rng(3)
    t = unit(rng.normal(size=(120, 8)))
    x = t @ rng.normal(size=(8, 100)) + 1.5 * rng.normal(size=(120, 100))
    grid = tuple(10.0 ** e for e in range(-5, 4))
    lam, scores = cv_lambda(torch.from_numpy(x), torch.from_numpy(t), seed=7, grid=grid, folds=5)
    ref = numpy_cv(x, t, 7, grid, 5)
    np.testing.assert_allclose([scores[f"{g:g}"] for g in grid], ref, atol=1e-6)
    assert lam == grid[int(np.argmax(np.round(ref, 9)))]
    assert grid[0] < lam < grid[-1]
