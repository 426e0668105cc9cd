"""CyCLIP's cycle terms against the formula of METHODS.md section 3, written with explicit loops."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from trainer.losses.cyclip import cyclip_terms


def unit_rows(n: int, d: int, seed: int) -> np.ndarray:
    v = np.random.default_rng(seed).standard_normal((n, d))
    return v / np.linalg.norm(v, axis=1, keepdims=True)


def reference(i_feat: np.ndarray, t_feat: np.ndarray) -> tuple[float, float]:
    """in-modal (1/N) sum_jk (<I_j,I_k> - <T_j,T_k>)^2, cross-modal (1/N) sum_jk (<I_j,T_k> - <I_k,T_j>)^2."""
    n = len(i_feat)
    in_modal = cross_modal = 0.0
    for j in range(n):
        for k in range(n):
            in_modal += (float(i_feat[j] @ i_feat[k]) - float(t_feat[j] @ t_feat[k])) ** 2
            cross_modal += (float(i_feat[j] @ t_feat[k]) - float(i_feat[k] @ t_feat[j])) ** 2
    return in_modal / n, cross_modal / n


@pytest.mark.parametrize("n", [1, 5, 16])
def test_terms_equal_cyclips_formula(n):
    a, x = unit_rows(n, 7, 1), unit_rows(n, 7, 2)
    got_in, got_cross = cyclip_terms(torch.from_numpy(a), torch.from_numpy(x))
    want_in, want_cross = reference(a, x)
    assert got_in.item() == pytest.approx(want_in, rel=1e-12, abs=1e-15)
    assert got_cross.item() == pytest.approx(want_cross, rel=1e-12, abs=1e-15)


def test_a_rotated_copy_is_in_modal_consistent_but_not_cross_modal():
    """x = a R with R orthogonal keeps every in-modal cosine (term 0); the cross-modal term is
    (1/N) sum_jk (a_j (R - R^T) a_k)^2, zero only for a symmetric R."""
    a = unit_rows(6, 4, 3)
    rot, _ = np.linalg.qr(np.random.default_rng(4).standard_normal((4, 4)))
    x = a @ rot
    got_in, got_cross = cyclip_terms(torch.from_numpy(a), torch.from_numpy(x))
    skew = a @ (rot - rot.T) @ a.T
    assert got_in.item() == pytest.approx(0.0, abs=1e-12)
    assert got_cross.item() == pytest.approx(float((skew**2).sum()) / 6, rel=1e-10)
    assert got_cross.item() > 1e-3


def test_gradient_matches_finite_differences():
    a = torch.from_numpy(unit_rows(4, 3, 5)).requires_grad_(True)
    x = torch.from_numpy(unit_rows(4, 3, 6)).requires_grad_(True)
    assert torch.autograd.gradcheck(lambda p, q: torch.stack(cyclip_terms(p, q)), (a, x))
