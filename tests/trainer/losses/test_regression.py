"""The regression term against a per-row formula written here, and its place in BindLoss."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F

from trainer.batch import Batch, Features, ModalityBatch
from trainer.losses.infonce import BindLoss
from trainer.losses.regression import regression_term
from trainer.model.heads import Binder


def side(n: int = 6, d: int = 4, seed: int = 0) -> tuple[torch.Tensor, ModalityBatch]:
    g = torch.Generator().manual_seed(seed)
    anchor = F.normalize(torch.randn(n, d, generator=g, dtype=torch.float64), dim=-1)
    raw = 3 * torch.randn(n, d, generator=g, dtype=torch.float64)
    mask = torch.tensor([True, False, True, True, False, True])
    weight = torch.tensor([1.0, 1.0, 0.5, 1.0, 1.0, 0.25], dtype=torch.float64)
    return anchor, ModalityBatch(F.normalize(raw, dim=-1), mask, weight, raw=raw)


def test_regression_term_is_the_weighted_mean_squared_distance_of_the_raw_output():
    anchor, s = side()
    rows = [i for i in range(6) if s.mask[i]]
    expected = sum(float(s.weight[i]) * sum((float(s.raw[i, k]) - float(anchor[i, k])) ** 2 for k in range(4))
                   for i in rows) / sum(float(s.weight[i]) for i in rows)
    assert float(regression_term(anchor, s.raw, s.mask, s.weight)) == pytest.approx(expected, rel=1e-12)


def test_regression_term_needs_the_raw_output():
    anchor, s = side()
    with pytest.raises(ValueError, match="raw"):
        regression_term(anchor, None, s.mask, s.weight)


def test_bindloss_adds_the_weighted_regression_term_to_infonce():
    anchor, s = side()
    out = Features(anchor, {"audio": s}, torch.tensor(10.0, dtype=torch.float64))
    plain = BindLoss(["audio"], dim=4, gather=False)(out)
    mixed = BindLoss(["audio"], dim=4, gather=False, regression_weight=0.3)(out)
    assert "regression_audio" not in plain
    assert float(mixed["regression_audio"]) == pytest.approx(float(regression_term(anchor, s.raw, s.mask, s.weight)))
    assert float(mixed["loss"]) == pytest.approx(float(plain["loss"]) + 0.3 * float(mixed["regression_audio"]))


def test_binder_passes_the_unnormalised_head_output():
    torch.manual_seed(0)
    binder = Binder({"text": 4, "audio": 5}, "text", ["audio"], hidden=8)
    x = torch.randn(3, 5)
    out = binder(Batch(torch.randn(3, 4), {"audio": ModalityBatch(x, torch.ones(3, dtype=torch.bool), torch.ones(3))}))
    raw = binder.heads["audio"](x)
    torch.testing.assert_close(out.modalities["audio"].raw, raw)
    torch.testing.assert_close(out.modalities["audio"].vectors, raw / raw.norm(dim=-1, keepdim=True))
