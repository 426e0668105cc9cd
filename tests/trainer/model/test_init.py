"""Head starts: the ReLU-pair linear map against NumPy, ridge init against the ridge formula, warm start."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from trainer.model.heads import make_head
from trainer.model.init import set_linear_map


def _map(seed: int, d_in: int, d_out: int, rank: int) -> tuple[np.ndarray, np.ndarray]:
    rng = np.random.default_rng(seed)
    w = rng.normal(size=(d_in, rank)) @ rng.normal(size=(rank, d_out))
    return w, rng.normal(size=d_out)


@pytest.mark.parametrize("dropout", [0.0, 0.3])
def test_a_wide_two_layer_head_holds_the_linear_map_exactly(dropout):
    w, b = _map(0, 12, 6, 6)
    head = make_head(12, 6, hidden=16, depth=2, dropout=dropout).eval()
    rank, energy = set_linear_map(head, torch.tensor(w), torch.tensor(b))
    x = np.random.default_rng(1).normal(size=(50, 12))
    out = head(torch.tensor(x, dtype=torch.float32)).detach().double().numpy()
    np.testing.assert_allclose(out, x @ w + b, rtol=1e-4, atol=1e-4)
    assert rank == 6 and energy == pytest.approx(1.0)


def test_a_narrow_head_holds_the_leading_singular_directions():
    """hidden 6 holds rank 3 of a rank-5 map: the truncated SVD (NumPy), and its share of ||W||_F^2."""
    w, b = _map(2, 10, 8, 5)
    head = make_head(10, 8, hidden=6, depth=2).eval()
    rank, energy = set_linear_map(head, torch.tensor(w), torch.tensor(b))
    u, s, vh = np.linalg.svd(w, full_matrices=False)
    w3 = (u[:, :3] * s[:3]) @ vh[:3]
    x = np.random.default_rng(3).normal(size=(40, 10))
    out = head(torch.tensor(x, dtype=torch.float32)).detach().double().numpy()
    np.testing.assert_allclose(out, x @ w3 + b, rtol=1e-4, atol=1e-4)
    assert rank == 3 and energy == pytest.approx(float((s[:3] ** 2).sum() / (s ** 2).sum()), rel=1e-6)


def test_spare_hidden_units_start_silent_but_still_learn():
    """Units past 2 * rank keep random input weights and zero output weights: the map is unchanged,
    and a gradient step moves their output weights."""
    w, b = _map(4, 8, 4, 2)
    head = make_head(8, 4, hidden=10, depth=2)
    set_linear_map(head, torch.tensor(w), torch.tensor(b))
    first, second = head[0], head[2]
    assert torch.count_nonzero(second.weight[:, 4:]) == 0 and torch.count_nonzero(first.weight[4:]) > 0
    x = torch.randn(32, 8)
    head(x).pow(2).sum().backward()
    assert torch.count_nonzero(second.weight.grad[:, 4:]) > 0


def test_a_one_layer_head_is_the_map():
    w, b = _map(5, 7, 3, 3)
    head = make_head(7, 3, depth=1)
    set_linear_map(head, torch.tensor(w), torch.tensor(b))
    x = np.random.default_rng(6).normal(size=(9, 7))
    np.testing.assert_allclose(head(torch.tensor(x, dtype=torch.float32)).detach().numpy(), x @ w + b, rtol=1e-4,
                               atol=1e-4)
