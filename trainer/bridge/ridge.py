"""Ridge regression in float64 from sufficient statistics, with the bias unpenalised and lambda
chosen by k-fold cross-validation (METHODS.md: "Ridge always means...").

Everything is computed from :class:`Moments` (``n, sum x, sum y, X^T X, X^T Y, sum ||y||^2``),
accumulated over row blocks, so a million rows never sit in memory as float64 and every fold's
fit and error come from the per-fold statistics alone:

* the fit with an unpenalised bias is the ridge on centred data,
  ``W = (S + lambda I)^-1 T`` with ``S = X^T X - n mx mx^T``, ``T = X^T Y - n mx my^T``, and
  ``b = my - mx W`` (``bias=False``: ``W = (X^T X + lambda I)^-1 X^T Y``, ``b = 0``);
* a fold's squared error ``sum ||x W + b - y||^2`` expands into traces of its moments;
* one eigendecomposition of each training fold's ``S`` gives ``W`` for every lambda of the grid.

The grid is relative: ``lambda = g * tr(S) / d`` for ``g`` in :data:`GRID`, so it follows the
data's scale (the mean eigenvalue of ``S``) whatever ``n`` and the vectors' norms.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass

import numpy as np
import torch

log = logging.getLogger(__name__)

GRID = np.logspace(-6, 4, 21)  # lambda / (mean eigenvalue of the centred Gram), tried by CV
BLOCK = 16384  # rows cast to float64 at once


@dataclass
class Moments:
    """Sufficient statistics of the rows ``(x_i, y_i)`` of a linear regression ``y ~ x W + b``."""

    n: int
    sx: np.ndarray  # (d,) sum of x
    sy: np.ndarray  # (e,) sum of y
    xx: np.ndarray  # (d, d) X^T X
    xy: np.ndarray  # (d, e) X^T Y
    yy: float  # sum of ||y||^2

    @staticmethod
    def zeros(d: int, e: int) -> Moments:
        return Moments(0, np.zeros(d), np.zeros(e), np.zeros((d, d)), np.zeros((d, e)), 0.0)

    def add(self, x: np.ndarray, y: np.ndarray) -> None:
        x, y = as_float64(x), as_float64(y)
        self.n += len(x)
        self.sx += x.sum(0)
        self.sy += y.sum(0)
        self.xx += x.T @ x
        self.xy += x.T @ y
        self.yy += float(np.einsum("ij,ij->", y, y))

    def __add__(self, other: Moments) -> Moments:
        return Moments(self.n + other.n, self.sx + other.sx, self.sy + other.sy, self.xx + other.xx,
                       self.xy + other.xy, self.yy + other.yy)

    def __sub__(self, other: Moments) -> Moments:
        return Moments(self.n - other.n, self.sx - other.sx, self.sy - other.sy, self.xx - other.xx,
                       self.xy - other.xy, self.yy - other.yy)

    def centred(self, bias: bool) -> tuple[np.ndarray, np.ndarray]:
        """``(S, T)``: the Gram and cross products the penalised part of the fit solves with."""
        if not bias or self.n == 0:
            return self.xx, self.xy
        mx, my = self.sx / self.n, self.sy / self.n
        return self.xx - self.n * np.outer(mx, mx), self.xy - self.n * np.outer(mx, my)

    def total_squares(self) -> float:
        """``sum_i ||y_i - mean(y)||^2``: the denominator of R^2."""
        return self.yy - float(self.sy @ self.sy) / max(self.n, 1)


def as_float64(x: np.ndarray) -> np.ndarray:
    """``x`` as float64 (torch widens float16 with SIMD, numpy's ``astype`` does not)."""
    x = np.asarray(x)
    if x.dtype == np.float64:
        return x
    return torch.from_numpy(np.ascontiguousarray(x)).to(torch.float64).numpy()


def group_moments(x: np.ndarray, y: np.ndarray, groups: np.ndarray, n_groups: int,
                  block: int = BLOCK) -> list[Moments]:
    """One :class:`Moments` per group id ``0..n_groups-1`` of ``groups`` (one id per row; -1 = unused)."""
    out = [Moments.zeros(x.shape[1], y.shape[1]) for _ in range(n_groups)]
    for start in range(0, len(x), block):
        g = groups[start:start + block]
        xb, yb = as_float64(x[start:start + block]), as_float64(y[start:start + block])
        for k in range(n_groups):
            sel = g == k
            if sel.any():
                out[k].add(xb[sel], yb[sel])
    return out


@dataclass(frozen=True)
class Affine:
    """``y = x W + b`` (float64)."""

    w: np.ndarray  # (d, e)
    b: np.ndarray  # (e,)

    def __call__(self, x: np.ndarray) -> np.ndarray:
        return as_float64(x) @ self.w + self.b

    def then(self, other: Affine) -> Affine:
        """The composition ``x -> other(self(x))``."""
        return Affine(self.w @ other.w, self.b @ other.w + other.b)


def solve(m: Moments, lam: float, bias: bool = True) -> Affine:
    """The ridge fit ``argmin sum ||x W + b - y||^2 + lam ||W||^2`` (``b`` free, or 0 without bias)."""
    s, t = m.centred(bias)
    w = np.linalg.solve(s + lam * np.eye(len(s)), t)
    b = (m.sy - m.sx @ w) / m.n if bias and m.n else np.zeros(t.shape[1])
    return Affine(w, b)


def lambda_grid(m: Moments, bias: bool) -> np.ndarray:
    s, _ = m.centred(bias)
    return GRID * max(float(np.trace(s)) / len(s), 1e-12)


@dataclass(frozen=True)
class CrossValidation:
    """What k-fold CV tried and chose."""

    lam: float
    grid: list[float]
    mse: list[float]  # mean squared error per held-out row, one per grid value
    folds: int

    @property
    def at_edge(self) -> bool:
        return self.lam in (self.grid[0], self.grid[-1])


def fold_errors(train: Moments, held: Moments, lams: np.ndarray, bias: bool) -> np.ndarray:
    """``sum ||x W_lambda + b_lambda - y||^2`` over the held-out rows, for every lambda, from one
    eigendecomposition ``S = V diag(e) V^T`` of the training fold: with ``T' = V^T T`` and
    ``D = diag(1 / (e + lambda))``, ``W = V D T'``, and each trace of the error expansion
    (``sum ||x W + b - y||^2`` written with the moments) is a weighted sum over the eigenbasis, O(d^2) per lambda."""
    s, t = train.centred(bias)
    evals, vecs = np.linalg.eigh(s)
    evals = np.maximum(evals, 0.0)
    rot = vecs.T @ t  # T'
    gram_held = vecs.T @ held.xx @ vecs  # V^T X_h^T X_h V
    quad_w = gram_held * (rot @ rot.T)  # elementwise; tr(W^T G W) = sum_ij D_i D_j quad_w_ij
    cross_w = np.einsum("ie,ie->i", rot, vecs.T @ held.xy)  # tr(W^T X_h^T Y_h) = sum_i D_i cross_w_i
    sx_t, sx_h = vecs.T @ train.sx, vecs.T @ held.sx
    out = np.empty(len(lams))
    for i, lam in enumerate(lams):
        d = 1.0 / (evals + lam)
        b = (train.sy - (sx_t * d) @ rot) / train.n if bias else np.zeros(t.shape[1])
        out[i] = (d @ quad_w @ d + 2 * float(b @ ((sx_h * d) @ rot)) + held.n * float(b @ b)
                  - 2 * float(d @ cross_w) - 2 * float(b @ held.sy) + held.yy)
    return out


def cross_validate(folds: list[Moments], bias: bool = True, grid: np.ndarray | None = None) -> CrossValidation:
    """Pick lambda from ``grid`` (default :func:`lambda_grid` of all folds) by k-fold CV: fit on all
    folds but one, score the squared error on that one, summed over folds; the smallest wins."""
    total = sum(folds[1:], folds[0])
    grid = lambda_grid(total, bias) if grid is None else np.asarray(grid, np.float64)
    errors = sum(fold_errors(total - held, held, grid, bias) for held in folds)
    mse = errors / max(total.n, 1)
    best = int(np.argmin(mse))
    result = CrossValidation(float(grid[best]), [float(g) for g in grid], [float(e) for e in mse], len(folds))
    if result.at_edge:
        log.warning("ridge CV chose lambda %.3g at the edge of its grid [%.3g, %.3g]", result.lam, grid[0], grid[-1])
    return result
