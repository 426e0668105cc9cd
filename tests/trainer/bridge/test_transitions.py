"""MOX's transitions against NumPy closed forms written here: ridge with a free bias, k-fold CV,
the cross-modal map, the sample-space route in kernel form, its push-through form and its
k-nearest-pivot form."""

from __future__ import annotations

import numpy as np
import pytest

from tests.trainer.bridge.conftest import numpy_ridge
from trainer.bridge import ridge, transitions
from trainer.bridge.neighbors import NeighborBank
from trainer.bridge.transitions import FitSettings, Pairing


def data(n: int = 300, d: int = 12, e: int = 7, seed: int = 0, noise: float = 0.2):
    rng = np.random.default_rng(seed)
    x = rng.standard_normal((n, d)) + 0.5
    y = x @ rng.standard_normal((d, e)) + 0.3 + noise * rng.standard_normal((n, e))
    return x, y


@pytest.mark.parametrize("bias", [True, False])
def test_ridge_from_moments_equals_the_closed_form(bias):
    x, y = data()
    m = ridge.Moments.zeros(x.shape[1], y.shape[1])
    m.add(x[:100], y[:100])
    m.add(x[100:], y[100:])  # moments add up over blocks
    f = ridge.solve(m, 3.0, bias)
    w, b = numpy_ridge(x, y, 3.0, bias)
    np.testing.assert_allclose(f.w, w, rtol=1e-9, atol=1e-10)
    np.testing.assert_allclose(f.b, b, rtol=1e-9, atol=1e-10)


def test_cross_validation_picks_the_numpy_k_fold_minimum():
    x, y = data(n=60, d=30, e=4, noise=3.0)  # few, noisy rows for 30 dims: lambda matters
    folds = np.arange(len(x)) % 4
    moments = ridge.group_moments(x, y, folds, 4, block=17)
    grid = [0.01, 0.1, 1.0, 10.0, 100.0, 1000.0]
    cv = ridge.cross_validate(moments, bias=True, grid=grid)
    errors = []
    for lam in grid:
        sse = 0.0
        for f in range(4):
            w, b = numpy_ridge(x[folds != f], y[folds != f], lam)
            sse += ((x[folds == f] @ w + b - y[folds == f]) ** 2).sum()
        errors.append(sse / len(x))
    np.testing.assert_allclose(cv.mse, errors, rtol=1e-8)
    assert cv.lam == grid[int(np.argmin(errors))] and cv.folds == 4
    assert not cv.at_edge  # the data make the minimum an interior one: the check can fail
    default = ridge.cross_validate(moments, bias=True)  # the relative grid: g * tr(S) / d
    s, _ = sum(moments[1:], moments[0]).centred(True)
    np.testing.assert_allclose(default.grid, ridge.GRID * np.trace(s) / 30)


def test_cross_modal_route_is_the_ridge_map_refit_on_the_whole_bank():
    bank_p, bank_y = data(n=200, seed=1)
    query, _ = data(n=50, seed=2)
    pseudo, fit = transitions.cross_modal(Pairing(bank_p, bank_y, query), FitSettings(ridge_lambda=2.0))
    w, b = numpy_ridge(bank_p, bank_y, 2.0)
    np.testing.assert_allclose(pseudo, query @ w + b, rtol=1e-5, atol=1e-5)
    assert fit.lam == 2.0 and fit.cv is None and fit.n_fit == 180 and len(fit.val_rows) == 20
    # the validation report is the fit slice's model on the held-out slice
    val = np.zeros(200, bool)
    val[fit.val_rows] = True
    w9, b9 = numpy_ridge(bank_p[~val], bank_y[~val], 2.0)
    np.testing.assert_allclose(fit.val_prediction, bank_p[val] @ w9 + b9, rtol=1e-9)
    truth = bank_y[val]
    r2 = 1 - ((truth - fit.val_prediction) ** 2).sum() / ((truth - truth.mean(0)) ** 2).sum()
    assert fit.summary(truth)["r2_val"] == pytest.approx(r2)
    chosen = transitions.cross_modal(Pairing(bank_p, bank_y, query), FitSettings(ridge_lambda=0.0))[1]
    assert chosen.cv is not None and chosen.lam == chosen.cv.lam


@pytest.mark.parametrize("memory_gb", [4.0, 1e-6])
def test_full_sample_space_route_is_the_kernel_form(memory_gb):
    """A = Q P^T (P P^T + lam I)^-1, pseudo = A Y; with a tiny budget the d x d push-through form
    must give the same vectors."""
    bank_p, bank_y = data(n=150, seed=3)
    query, _ = data(n=40, seed=4)
    lam = 5.0
    pseudo, fit = transitions.cross_dataset(Pairing(bank_p, bank_y, query),
                                            FitSettings(ridge_lambda=lam, neighbors=0, memory_gb=memory_gb))
    a = query @ bank_p.T @ np.linalg.inv(bank_p @ bank_p.T + lam * np.eye(150))
    np.testing.assert_allclose(pseudo, a @ bank_y, rtol=1e-4, atol=1e-4)
    assert fit.form == ("kernel" if memory_gb > 1 else "primal")


def brute_force_local(query, bank_p, bank_y, k, lam, excluded=None):
    """For each query: its k most cosine-similar bank pivots (ties to the lower index), then
    alpha = (P_N P_N^T + lam I)^-1 P_N q and pseudo = alpha^T Y_N."""
    unit = bank_p / np.linalg.norm(bank_p, axis=1, keepdims=True)
    out = []
    for i, q in enumerate(query):
        sims = unit @ (q / np.linalg.norm(q))
        if excluded is not None:
            sims[excluded[i]] = -np.inf
        nn = np.lexsort((np.arange(len(sims)), -sims))[:k]
        pn = bank_p[nn]
        alpha = np.linalg.solve(pn @ pn.T + lam * np.eye(k), pn @ q)
        out.append(alpha @ bank_y[nn])
    return np.array(out)


def test_local_sample_space_route_equals_the_brute_force():
    bank_p, bank_y = data(n=120, seed=5)
    query, _ = data(n=30, seed=6)
    pseudo, fit = transitions.cross_dataset(Pairing(bank_p, bank_y, query),
                                            FitSettings(ridge_lambda=0.5, neighbors=8))
    np.testing.assert_allclose(pseudo, brute_force_local(query, bank_p, bank_y, 8, 0.5), rtol=1e-4, atol=1e-4)
    assert fit.form == "neighbors" and fit.extra["neighbors"] == 8 and fit.extra["engine"] == "faiss-flat"
    # validation: the fit slice's neighbours only (never another validation item)
    val = np.zeros(120, bool)
    val[fit.val_rows] = True
    excluded = np.tile(val, (len(fit.val_rows), 1))
    expect = brute_force_local(bank_p[val], bank_p, bank_y, 8, 0.5, excluded)
    np.testing.assert_allclose(fit.val_prediction, expect, rtol=1e-4, atol=1e-4)  # float32 products (module doc)


def test_neighbour_filter_keeps_the_first_k_allowed_and_pads():
    bank_p, bank_y = data(n=40, seed=7)
    bank = NeighborBank(bank_p, bank_y, k=5, memory_gb=1.0)
    ids = bank.neighbors(bank_p[:3], allowed=lambda ids: ids % 2 == 0, extra=30)
    assert (ids % 2 == 0).all() and ids.shape == (3, 5)
    few = bank.neighbors(bank_p[:3], allowed=lambda ids: ids < 3, extra=35)
    assert ((few[:, :3] >= 0) & (few[:, :3] < 3)).all() and (few[:, 3:] == -1).all()
    # zero rows for -1 neighbours leave the combination unchanged
    p, y = bank.gather(few)
    assert float(np.abs(p[:, 3:].numpy()).sum()) == 0.0
    full = bank.predict(bank_p[:3], [0.5], allowed_for=lambda r: lambda ids: ids < 3, extra=35)[0]
    k3 = NeighborBank(bank_p[:3], bank_y[:3], k=3, memory_gb=1.0).predict(bank_p[:3], [0.5])[0]
    np.testing.assert_allclose(full, k3, rtol=1e-6, atol=1e-6)
