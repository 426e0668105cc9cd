"""MOX's two transitions (METHODS.md section 4), each fitted on the set that has the target modality.

A :class:`Pairing` is one direction: the *bank* set has pivot ``P`` and target ``Y`` (D2 with ``c``
when making pseudo ``c``), the *query* set has pivots only (D1's). Both routes:

* **cross-modal** (feature space): ``W_{p->y} = argmin ||P W + b - Y||^2 + lambda ||W||^2``, a ``d x d``
  solve from float64 moments (bias unpenalised); pseudo ``= P_query W + b``;
* **cross-dataset** (sample space): ``A = argmin ||A P - P_query||^2 + lambda ||A||^2``, pseudo ``= A Y``.
  With ``neighbors = 0`` every bank item takes part: the kernel form
  ``A = P_query P^T (P P^T + lambda I)^-1``, solved literally while the ``n x n`` kernel fits the memory
  budget, else through the push-through identity ``P^T (P P^T + lambda I)^-1 = (P^T P + lambda I)^-1 P^T``
  as a ``d x d`` solve with the same result. So the full sample-space route *is* ridge from pivot to
  target without a bias; only the local version (``neighbors = k``, :mod:`~trainer.bridge.neighbors`)
  combines differently: each item from its own ``k`` nearest bank pivots.

Lambda: ``ridge_lambda`` when it is > 0, else k-fold CV (``folds``) over the bank's fit slice. The
report's R^2 and cosine are those of the fit slice's model on a held-out validation slice of the bank
(``val_fraction``, at most :data:`VAL_MAX` items); the pseudo vectors then come from a refit on the
whole bank with the chosen lambda.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from trainer.bridge.neighbors import NeighborBank
from trainer.bridge.ridge import BLOCK, GRID, Affine, CrossValidation, cross_validate, group_moments, solve

log = logging.getLogger(__name__)

ROUTES = ("cross-modal", "cross-dataset")
VAL_MAX = 10_000  # validation items scored for R^2 at most
CV_QUERIES = 2048  # fit-slice items the neighbour route's CV predicts at most


@dataclass(frozen=True)
class FitSettings:
    ridge_lambda: float = 0.0  # 0 = k-fold CV
    neighbors: int = 64  # 0 = every bank item (kernel form)
    folds: int = 5
    val_fraction: float = 0.1
    memory_gb: float = 4.0
    seed: int = 0


@dataclass(frozen=True)
class Pairing:
    """``bank_pivots[i]`` belongs with ``bank_targets[i]``; ``query_pivots`` get pseudo targets."""

    bank_pivots: np.ndarray
    bank_targets: np.ndarray
    query_pivots: np.ndarray


@dataclass
class RouteFit:
    """How one route made one direction's pseudo vectors (``config.json`` reports it)."""

    route: str
    form: str  # primal | kernel | neighbors
    lam: float
    cv: CrossValidation | None
    n_fit: int
    val_rows: np.ndarray  # bank rows of the validation sample
    val_prediction: np.ndarray  # (len(val_rows), e) float64: the fit slice's model on them
    extra: dict[str, Any] = field(default_factory=dict)

    def summary(self, val_targets: np.ndarray) -> dict[str, Any]:
        out = {"form": self.form, "lambda": self.lam, "lambda_from": "cv" if self.cv else "manifest",
               "n_fit": self.n_fit, "n_val": len(self.val_rows), **quality(val_targets, self.val_prediction),
               **self.extra}
        if self.cv:
            out["cv"] = {"folds": self.cv.folds, "grid": self.cv.grid, "mse": self.cv.mse, "at_edge": self.cv.at_edge}
        return out


def quality(truth: np.ndarray, prediction: np.ndarray) -> dict[str, float]:
    """Variance-weighted R^2 (scikit-learn's ``variance_weighted``) and mean cosine of predictions."""
    truth, prediction = np.asarray(truth, np.float64), np.asarray(prediction, np.float64)
    if len(truth) < 2:
        return {"r2_val": float("nan"), "cosine_val": float("nan")}
    sst = float(((truth - truth.mean(0)) ** 2).sum())
    r2 = 1.0 - float(((truth - prediction) ** 2).sum()) / sst if sst > 0 else float("nan")
    cos = (truth * prediction).sum(1) / np.maximum(np.linalg.norm(truth, axis=1) * np.linalg.norm(prediction, axis=1),
                                                   1e-12)
    return {"r2_val": r2, "cosine_val": float(cos.mean())}


def holdout_groups(n: int, folds: int, val_fraction: float, seed: int) -> np.ndarray:
    """Group per bank row: ``0..folds-1`` = CV folds of the fit slice, ``folds`` = validation slice."""
    n_val = int(round(val_fraction * n))
    if n - n_val < max(folds, 2) or n_val < 2:
        raise ValueError(f"{n} items are too few for {folds}-fold CV plus a validation slice of {val_fraction:.0%}")
    perm = np.random.default_rng(seed).permutation(n)
    groups = np.empty(n, np.int64)
    groups[perm[:n_val]] = folds
    groups[perm[n_val:]] = np.arange(n - n_val) % folds
    return groups


def val_sample(groups: np.ndarray, folds: int, seed: int) -> np.ndarray:
    rows = np.flatnonzero(groups == folds)
    if len(rows) > VAL_MAX:
        rows = np.sort(np.random.default_rng(seed + 1).choice(rows, VAL_MAX, replace=False))
    return rows


def apply_affine(f: Affine, x: np.ndarray) -> np.ndarray:
    """``f(x)`` in row blocks, float32 out."""
    out = np.empty((len(x), f.w.shape[1]), np.float32)
    for start in range(0, len(x), BLOCK):
        out[start:start + BLOCK] = f(x[start:start + BLOCK])
    return out


def kernel_transform(bank_p: np.ndarray, bank_y: np.ndarray, query_p: np.ndarray, lam: float) -> np.ndarray:
    """``Q P^T (P P^T + lambda I)^-1 Y`` literally (float64 kernel, float32 out)."""
    p = np.asarray(bank_p, np.float64)
    z = np.linalg.solve(p @ p.T + lam * np.eye(len(p)), np.asarray(bank_y, np.float64))
    out = np.empty((len(query_p), bank_y.shape[1]), np.float32)
    for start in range(0, len(query_p), BLOCK):
        out[start:start + BLOCK] = (np.asarray(query_p[start:start + BLOCK], np.float64) @ p.T) @ z
    return out


def fit_linear(x: np.ndarray, y: np.ndarray, s: FitSettings, bias: bool = True) -> tuple[Affine, RouteFit]:
    """The ridge map ``x -> y`` from moments (the cross-modal route with ``bias``; the full sample-space
    route without): the whole-set refit with the chosen lambda, and the validation report."""
    groups = holdout_groups(len(x), s.folds, s.val_fraction, s.seed)
    moments = group_moments(x, y, groups, s.folds + 1)
    fit_slice = sum(moments[1:s.folds], moments[0])
    cv = cross_validate(moments[:s.folds], bias) if s.ridge_lambda == 0 else None
    lam = cv.lam if cv else s.ridge_lambda
    rows = val_sample(groups, s.folds, s.seed)
    report = RouteFit("", "primal", lam, cv, fit_slice.n, rows, solve(fit_slice, lam, bias)(x[rows]))
    return solve(fit_slice + moments[s.folds], lam, bias), report


def cross_modal(pair: Pairing, s: FitSettings) -> tuple[np.ndarray, RouteFit]:
    final, report = fit_linear(pair.bank_pivots, pair.bank_targets, s, bias=True)
    report.route = "cross-modal"
    return apply_affine(final, pair.query_pivots), report


def cross_dataset(pair: Pairing, s: FitSettings) -> tuple[np.ndarray, RouteFit]:
    if s.neighbors > 0:
        return cross_dataset_neighbors(pair, s)
    final, report = fit_linear(pair.bank_pivots, pair.bank_targets, s, bias=False)
    report.route, lam = "cross-dataset", report.lam
    n = len(pair.bank_pivots)
    if n * n * 8 * 3 <= s.memory_gb * 2**30:
        report.form = "kernel"
        return kernel_transform(pair.bank_pivots, pair.bank_targets, pair.query_pivots, lam), report
    log.info("bridge: %d x %d kernel exceeds bridge.memory_gb; solving its d x d push-through form", n, n)
    return apply_affine(final, pair.query_pivots), report


def cross_dataset_neighbors(pair: Pairing, s: FitSettings) -> tuple[np.ndarray, RouteFit]:
    """The local sample-space route; CV predicts a sample of fit-slice items from the other folds'
    neighbours only (never their own fold, never the validation slice)."""
    n = len(pair.bank_pivots)
    groups = holdout_groups(n, s.folds, s.val_fraction, s.seed)
    queries = len(pair.query_pivots) + CV_QUERIES + min(VAL_MAX, int(s.val_fraction * n) + 1)
    bank = NeighborBank(pair.bank_pivots, pair.bank_targets, s.neighbors, s.memory_gb, queries)
    extra = s.neighbors + 8  # candidates beyond k: the excluded fold and validation slice drop ~30 %
    cv = None
    if s.ridge_lambda == 0:
        fit_rows = np.flatnonzero(groups < s.folds)
        rng = np.random.default_rng(s.seed + 2)
        cv_rows = np.sort(rng.choice(fit_rows, min(CV_QUERIES, len(fit_rows)), replace=False))
        grid = GRID * bank.mean_square_norm
        pred = bank.predict(pair.bank_pivots[cv_rows], list(grid), extra=extra, desc="bridge CV",
                            allowed_for=lambda r: lambda ids: (groups[ids] != groups[cv_rows[r]][:, None])
                            & (groups[ids] != s.folds))
        mse = ((pred - np.asarray(pair.bank_targets[cv_rows], np.float64)[None]) ** 2).sum(-1).mean(-1)
        best = int(np.argmin(mse))
        cv = CrossValidation(float(grid[best]), [float(g) for g in grid], [float(e) for e in mse], s.folds)
    lam = cv.lam if cv else s.ridge_lambda
    rows = val_sample(groups, s.folds, s.seed)
    val_pred = bank.predict(pair.bank_pivots[rows], [lam], extra=extra, desc="bridge R^2",
                            allowed_for=lambda r: lambda ids: groups[ids] != s.folds)[0]
    pseudo = bank.predict(pair.query_pivots, [lam], dtype=np.float32, desc="bridge pseudo")[0]
    report = RouteFit("cross-dataset", "neighbors", lam, cv, int((groups < s.folds).sum()), rows, val_pred,
                      {"neighbors": s.neighbors, "engine": bank.engine,
                       "seconds": {k: round(v, 2) for k, v in bank.seconds.items()}})
    return pseudo, report


FITS = {"cross-modal": cross_modal, "cross-dataset": cross_dataset}
