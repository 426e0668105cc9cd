"""Head shapes, dropout placement and the plain copy used for export."""

from __future__ import annotations

import pytest
import torch
from torch import nn

from trainer.batch import Batch, ModalityBatch
from trainer.model.heads import Binder, make_head, to_plain


def test_default_head_is_ebind_projector():
    head = make_head(1024, 1024)
    assert [type(m) for m in head] == [nn.Linear, nn.ReLU, nn.Linear]
    assert (head[0].in_features, head[0].out_features, head[2].out_features) == (1024, 2048, 1024)


def test_depth_width_dropout_and_plain_copy():
    head = make_head(8, 4, hidden=16, depth=3, dropout=0.5)
    assert [type(m) for m in head] == [nn.Linear, nn.ReLU, nn.Dropout, nn.Linear, nn.ReLU, nn.Dropout, nn.Linear]
    plain = to_plain(head)
    assert [type(m) for m in plain] == [nn.Linear, nn.ReLU, nn.Linear, nn.ReLU, nn.Linear]
    x = torch.randn(5, 8)
    assert torch.allclose(plain(x), head.eval()(x))


def test_binder_projects_normalises_and_passes_anchor_through():
    binder = Binder({"text": 6, "audio": 4}, "text", ["audio"], hidden=8)
    batch = Batch(torch.randn(3, 6) * 5, {"audio": ModalityBatch(torch.randn(3, 4), torch.ones(3, dtype=torch.bool),
                                                                 torch.ones(3))})
    out = binder(batch)
    assert out.modalities["audio"].vectors.shape == (3, 6)
    assert torch.allclose(out.modalities["audio"].vectors.norm(dim=-1), torch.ones(3))
    assert torch.allclose(out.anchor, torch.nn.functional.normalize(batch.anchor, dim=-1))
    assert abs(out.scale.item() - 1 / 0.07) < 1e-4
    with torch.no_grad():
        binder.logit_scale.fill_(10.0)
    assert binder.scale().item() == 100.0  # clamped


def test_out_dim_other_than_the_anchor_dim_is_refused():
    """`bindery train` reports it as train.out_dim first (tests/trainer/test_checks.py)."""
    with pytest.raises(ValueError, match=r"out_dim 5 differs from the anchor's dim 6"):
        Binder({"text": 6, "audio": 4}, "text", ["audio"], hidden=8, out_dim=5)
    assert Binder({"text": 6, "audio": 4}, "text", ["audio"], hidden=8, out_dim=6).heads["audio"][-1].out_features == 6


def test_bad_partners_go_through_the_same_head_and_keep_their_mask():
    binder = Binder({"text": 6, "audio": 4}, "text", ["audio"], hidden=8)
    vectors, bad = torch.randn(3, 4), torch.randn(3, 4)
    side = ModalityBatch(vectors, torch.tensor([True, False, True]), torch.tensor([1.0, 1.0, 0.5]), bad,
                         torch.tensor([False, True, False]))
    out = binder(Batch(torch.randn(3, 6), {"audio": side})).modalities["audio"]
    head = binder.heads["audio"]
    assert torch.allclose(out.vectors, torch.nn.functional.normalize(head(vectors), dim=-1), atol=1e-6)
    assert torch.allclose(out.bad, torch.nn.functional.normalize(head(bad), dim=-1), atol=1e-6)
    assert out.mask.tolist() == [True, False, True] and out.bad_mask.tolist() == [False, True, False]
    assert out.weight.tolist() == [1.0, 1.0, 0.5]
    with pytest.raises(ValueError, match="bad and bad_mask"):
        ModalityBatch(vectors, side.mask, side.weight, bad)
