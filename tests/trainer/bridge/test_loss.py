"""BridgeLoss against formulas written here: the MOX InfoNCE terms per set, CyCLIP's terms between the
two heads at CyCLIP's scale, and the pivot terms left to the ordinary loss."""

from __future__ import annotations

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from pipeline.core.manifest import BridgeConfig
from trainer.batch import Features, ModalityBatch
from trainer.bridge.loss import BridgeLoss
from trainer.losses.cyclip import cyclip_terms
from trainer.losses.infonce import BindLoss


def features(n: int = 10, d: int = 6, seed: int = 0, grad: bool = False) -> Features:
    g = torch.Generator().manual_seed(seed)
    vec = {m: F.normalize(torch.randn(n, d, generator=g), dim=-1).requires_grad_(grad)
           for m in ("anchor", "image", "audio")}
    real = {"image": torch.tensor([True] * 4 + [False] * 5 + [False]),  # rows 0-3 D1, 4-8 D2, row 9 padding
            "audio": torch.tensor([False] * 4 + [True] * 5 + [False])}
    sides = {m: ModalityBatch(vec[m], real[m], torch.ones(n)) for m in ("image", "audio")}
    return Features(vec["anchor"], sides, torch.tensor(7.0))


def numpy_infonce(x: np.ndarray, y: np.ndarray, scale: float) -> float:
    """Mean of the x->y and y->x cross-entropies, row i's positive being column i."""
    def ce(logits):
        logits = logits - logits.max(1, keepdims=True)
        return float(np.mean(-np.diag(logits) + np.log(np.exp(logits).sum(1))))
    return (ce(scale * x @ y.T) + ce(scale * y @ x.T)) / 2


def numpy_cyclip(i: np.ndarray, t: np.ndarray) -> tuple[float, float]:
    """CyCLIP (goel-shashank/CyCLIP src/train.py): (1/N) sum_jk (<I_j,I_k> - <T_j,T_k>)^2 and
    (1/N) sum_jk (<I_j,T_k> - <I_k,T_j>)^2, with explicit loops."""
    n = len(i)
    in_modal = sum((i[j] @ i[k] - t[j] @ t[k]) ** 2 for j in range(n) for k in range(n)) / n
    cross = sum((i[j] @ t[k] - i[k] @ t[j]) ** 2 for j in range(n) for k in range(n)) / n
    return in_modal, cross


def test_cyclip_terms_have_cyclip_scale():
    out = features()
    i, t = out.modalities["image"].vectors[:7], out.modalities["audio"].vectors[:7]
    got = cyclip_terms(i, t)
    want = numpy_cyclip(i.double().numpy(), t.double().numpy())
    assert float(got[0]) == pytest.approx(want[0], rel=1e-5) and float(got[1]) == pytest.approx(want[1], rel=1e-5)


def test_bridge_loss_is_pivot_plus_mox_plus_cyclip():
    out = features()
    pivot = BindLoss(["image", "audio"], dim=6, gather=False)
    loss = BridgeLoss(pivot, "image", "audio", BridgeConfig(cyclip_in_modal=0.25, cyclip_cross_modal=0.5), gather=False)
    terms = loss(out)
    x, y = (out.modalities[m].vectors.double().numpy() for m in ("image", "audio"))
    d1, d2, both = slice(0, 4), slice(4, 9), slice(0, 9)  # the padded row 9 takes part in nothing
    assert float(terms["mox_d1"]) == pytest.approx(numpy_infonce(x[d1], y[d1], 7.0), rel=1e-5)
    assert float(terms["mox_d2"]) == pytest.approx(numpy_infonce(x[d2], y[d2], 7.0), rel=1e-5)
    c_in, c_cross = numpy_cyclip(x[both], y[both])
    assert float(terms["cyclip_in_bridge"]) == pytest.approx(c_in, rel=1e-5)
    assert float(terms["cyclip_cross_bridge"]) == pytest.approx(c_cross, rel=1e-5)
    pivot_only = pivot(out)  # the pivot terms: real partners only, the ordinary loss's own
    p = out.anchor.double().numpy()
    assert float(pivot_only["infonce_image"]) == pytest.approx(numpy_infonce(p[d1], x[d1], 7.0), rel=1e-5)
    assert float(pivot_only["infonce_audio"]) == pytest.approx(numpy_infonce(p[d2], y[d2], 7.0), rel=1e-5)
    expected = (float(pivot_only["loss"]) + numpy_infonce(x[d1], y[d1], 7.0) + numpy_infonce(x[d2], y[d2], 7.0)
                + 0.25 * c_in + 0.5 * c_cross)
    assert float(terms["loss"]) == pytest.approx(expected, rel=1e-5)


def test_mox_gradients_reach_both_heads():
    out = features(grad=True)
    loss = BridgeLoss(BindLoss(["image", "audio"], dim=6, gather=False), "image", "audio", BridgeConfig(),
                      gather=False)
    loss(out)["mox_d1"].backward()
    image, audio = out.modalities["image"].vectors.grad, out.modalities["audio"].vectors.grad
    assert image[:4].abs().sum() > 0 and audio[:4].abs().sum() > 0  # the pseudo side too
    assert image[4:].abs().sum() == 0  # D2 rows are not in the D1 term
