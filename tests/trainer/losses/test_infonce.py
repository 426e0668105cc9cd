"""The loss against plain per-row references written here, on random unit vectors."""

from __future__ import annotations

import math
from pathlib import Path

import pytest
import torch
import torch.nn.functional as F

from tests.launch import torchrun
from trainer.batch import Features, ModalityBatch
from trainer.losses.infonce import BindLoss

SCALE = 1 / 0.07


def unit(n: int, d: int, seed: int) -> torch.Tensor:
    return F.normalize(torch.randn(n, d, generator=torch.Generator().manual_seed(seed), dtype=torch.float64), dim=-1)


def ref_ce(sims: list[float], pos: int) -> float:
    """-log softmax(sims)[pos], the plain way."""
    return -sims[pos] + math.log(sum(math.exp(s) for s in sims))


def ref_pair(a, x, rows, weight=None, bad=None, queue_x=None, queue_a=None, hard=0) -> float:
    """Symmetric InfoNCE over ``rows`` with optional extras, one row at a time."""
    weight = weight if weight is not None else {i: 1.0 for i in rows}
    total = [0.0, 0.0]
    for i in rows:
        for d, (q, c, qq) in enumerate(((a, x, queue_x), (x, a, queue_a))):
            sims = [SCALE * float(q[i] @ c[j]) for j in rows]
            pos = rows.index(i)
            if hard:
                negs = sorted((s for j, s in enumerate(sims) if j != pos), reverse=True)[:hard]
                sims = [sims[pos], *negs]
                pos = 0
            if d == 0 and bad is not None and i in bad:
                sims.append(SCALE * float(a[i] @ bad[i]))
            if qq is not None:
                sims += [SCALE * float(q[i] @ v) for v in qq]
            total[d] += weight[i] * ref_ce(sims, pos)
    wsum = sum(weight[i] for i in rows)
    return (total[0] + total[1]) / (2 * wsum)


def batch(n=8, d=6, mask=None, weight=None, bad=None, bad_mask=None) -> Features:
    side = ModalityBatch(unit(n, d, 2), torch.ones(n, dtype=torch.bool) if mask is None else mask,
                         torch.ones(n, dtype=torch.float64) if weight is None else weight, bad, bad_mask)
    return Features(unit(n, d, 1), {"audio": side}, torch.tensor(SCALE, dtype=torch.float64))


def audio(out: Features) -> torch.Tensor:
    return out.modalities["audio"].vectors


def test_symmetric_infonce_equals_reference():
    out = batch()
    got = BindLoss(["audio"], dim=6)(out)
    want = ref_pair(out.anchor, audio(out), list(range(8)))
    assert got["infonce_audio"].item() == pytest.approx(want, rel=1e-9)
    assert got["loss"].item() == pytest.approx(want, rel=1e-9)


def test_mask_drops_rows_lacking_the_modality():
    mask = torch.tensor([1, 0, 1, 1, 0, 1, 1, 1], dtype=torch.bool)
    out = batch(mask=mask)
    got = BindLoss(["audio"], dim=6)(out)["loss"].item()
    rows = [i for i in range(8) if mask[i]]
    assert got == pytest.approx(ref_pair(out.anchor, audio(out), rows), rel=1e-9)
    assert got != pytest.approx(ref_pair(out.anchor, audio(out), list(range(8))), rel=1e-3)


def test_modality_absent_from_batch_adds_nothing_but_keeps_graph():
    out = batch(mask=torch.zeros(8, dtype=torch.bool))
    audio(out).requires_grad_(True)
    loss = BindLoss(["audio"], dim=6)(out)["loss"]
    assert loss.item() == 0.0
    loss.backward()
    assert audio(out).grad is not None and audio(out).grad.abs().sum() == 0


def test_partial_weight_and_bad_negative():
    weight = torch.tensor([1, 1, 0.5, 1, 1, 1, 0.5, 1], dtype=torch.float64)
    bad_mask = torch.tensor([0, 1, 0, 0, 1, 0, 0, 0], dtype=torch.bool)
    out = batch(weight=weight, bad=unit(8, 6, 3), bad_mask=bad_mask)
    got = BindLoss(["audio"], dim=6)(out)["loss"].item()
    bad = {i: out.modalities["audio"].bad[i] for i in range(8) if bad_mask[i]}
    want = ref_pair(out.anchor, audio(out), list(range(8)), {i: float(weight[i]) for i in range(8)}, bad)
    assert got == pytest.approx(want, rel=1e-9)
    # an extra denominator term can only raise the loss; without bad partners it is the plain weighted loss
    assert BindLoss(["audio"], dim=6)(batch(weight=weight))["loss"].item() < got


def test_queue_adds_previous_batches_as_negatives():
    loss = BindLoss(["audio"], dim=6, queue_size=5)
    first = batch()
    loss(first)
    assert len(loss.queues["audio"]) == 5
    plain = batch()
    second = Features(unit(8, 6, 11), {"audio": plain.modalities["audio"].replace(vectors=unit(8, 6, 12))}, plain.scale)
    got = loss(second)["loss"].item()
    want = ref_pair(second.anchor, audio(second), list(range(8)),
                    queue_x=list(audio(first)[:5]), queue_a=list(first.anchor[:5]))
    assert got == pytest.approx(want, rel=1e-6)


def test_hard_negative_mining_keeps_the_k_hardest():
    out = batch()
    got = BindLoss(["audio"], dim=6, hard_negatives=3)(out)["loss"].item()
    assert got == pytest.approx(ref_pair(out.anchor, audio(out), list(range(8)), hard=3), rel=1e-9)
    assert got < BindLoss(["audio"], dim=6)(out)["loss"].item()


def test_cyclip_terms_follow_their_definition():
    out = batch()
    plain = BindLoss(["audio"], dim=6)(out)["loss"].item()
    terms = BindLoss(["audio"], dim=6, cyclip_in_modal=2.0, cyclip_cross_modal=3.0)(out)
    a, x, n = out.anchor, audio(out), 8
    # CyCLIP's scale: (1/N) sum over the N x N pairs (METHODS.md section 3), not the plain mean
    c_in = sum((float(a[i] @ a[j]) - float(x[i] @ x[j])) ** 2 for i in range(n) for j in range(n)) / n
    c_cross = sum((float(a[i] @ x[j]) - float(x[i] @ a[j])) ** 2 for i in range(n) for j in range(n)) / n
    assert terms["cyclip_in_audio"].item() == pytest.approx(c_in, rel=1e-9)
    assert terms["cyclip_cross_audio"].item() == pytest.approx(c_cross, rel=1e-9)
    assert terms["loss"].item() == pytest.approx(plain + 2 * c_in + 3 * c_cross, rel=1e-9)


def ref_local(a: torch.Tensor, x: torch.Tensor, pairs: list[int], queries: list[int]) -> torch.Tensor:
    """open_clip's local loss of one rank, one row at a time with autograd: its ``queries`` (rows
    that have a pair) against every paired column, both directions, mean over its queries."""
    total = a.new_zeros(())
    for i in queries:
        for q, c in ((a, x), (x, a)):
            sims = torch.stack([SCALE * (q[i] * c[j]).sum() for j in pairs])
            total = total + torch.logsumexp(sims, 0) - sims[pairs.index(i)]
    return total / (2 * len(queries))


MASK = [1, 1, 0, 1, 1, 1, 1, 0]  # 3 pairs on each of the 2 ranks (rows 0-3, 4-7)

GATHER_SCRIPT = r'''
import json, sys, torch
from accelerate import Accelerator
from trainer.batch import Features, ModalityBatch
from trainer.losses.infonce import BindLoss
from tests.trainer.losses.test_infonce import MASK, batch
acc = Accelerator(cpu=True)
full = batch(n=8, mask=torch.tensor(MASK, dtype=torch.bool))
r, w = acc.process_index, acc.num_processes
res = {"world": w}
for local in (False, True):
    sl = slice(r * 8 // w, (r + 1) * 8 // w)
    side = full.modalities["audio"]
    mine = ModalityBatch(side.vectors[sl].clone().requires_grad_(True), side.mask[sl], side.weight[sl])
    loss = BindLoss(["audio"], dim=6, local_loss=local)(Features(full.anchor[sl], {"audio": mine}, full.scale))["loss"]
    loss.backward()
    res[f"loss_{local}"] = loss.item()
    res[f"grad_{local}"] = mine.vectors.grad.tolist()
json.dump(res, open(sys.argv[1] + f"/rank{r}.json", "w"))
acc.wait_for_everyone()
torch.distributed.destroy_process_group()  # else gloo's threads may abort the exit
'''


def test_gathered_loss_with_two_processes(tmp_path: Path):
    """torchrun starts 2 CPU ranks; the gathered loss equals the single-process loss on the full batch,
    and each rank's gradient equals the single-process gradient of its slice.

    Local loss: a rank's rows are the queries against every rank's columns. Its gradient is that of
    its own local loss (the other ranks' features are constants there, as in open_clip without
    ``gather_with_grad``), checked against :func:`ref_local`; it is *not* the global loss's gradient,
    which also counts this rank's features as columns of the other ranks' queries. With as many
    pairs on each rank, the mean of the local losses is the global loss exactly."""
    script = tmp_path / "gather.py"
    script.write_text(GATHER_SCRIPT)
    proc = torchrun([str(script), str(tmp_path)], timeout=120)
    assert proc.returncode == 0, proc.stdout[-3000:]
    import json

    ranks = [json.loads((tmp_path / f"rank{r}.json").read_text()) for r in range(2)]
    assert [r["world"] for r in ranks] == [2, 2]
    full = batch(n=8, mask=torch.tensor(MASK, dtype=torch.bool))
    audio(full).requires_grad_(True)
    ref = BindLoss(["audio"], dim=6)(full)["loss"]
    ref.backward()
    for r in ranks:
        assert r["loss_False"] == pytest.approx(ref.item(), rel=1e-9)
    got_grad = torch.tensor(ranks[0]["grad_False"] + ranks[1]["grad_False"], dtype=torch.float64)
    assert torch.allclose(got_grad, audio(full).grad, atol=1e-12)
    # local loss: each rank's rows against all columns; the mean over ranks is the full loss
    local = [r["loss_True"] for r in ranks]
    assert local[0] != pytest.approx(local[1])
    assert sum(local) / 2 == pytest.approx(ref.item(), rel=1e-9)
    pairs = [i for i, m in enumerate(MASK) if m]
    for r, rows in enumerate((range(0, 4), range(4, 8))):
        x = audio(batch(n=8)).clone().requires_grad_(True)
        want = ref_local(full.anchor, x, pairs, [i for i in rows if MASK[i]])
        want.backward()
        assert ranks[r]["loss_True"] == pytest.approx(want.item(), rel=1e-9)
        got = torch.tensor(ranks[r]["grad_True"], dtype=torch.float64)
        assert torch.allclose(got, x.grad[list(rows)], atol=1e-12), r
        assert not torch.allclose(got, audio(full).grad[list(rows)], atol=1e-3), r  # not the global gradient
