"""The loss against plain per-row references written here, on random unit vectors."""

from __future__ import annotations

import math
from pathlib import Path

import pytest
import torch
import torch.nn.functional as F

from tests.launch import torchrun
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


def batch(n=8, d=6, mask=None, weight=None):
    out = {"anchor": unit(n, d, 1), "scale": torch.tensor(SCALE, dtype=torch.float64), "audio": unit(n, d, 2),
           "audio_mask": torch.ones(n, dtype=torch.bool) if mask is None else mask,
           "audio_weight": torch.ones(n, dtype=torch.float64) if weight is None else weight}
    return out


def test_symmetric_infonce_equals_reference():
    out = batch()
    got = BindLoss(["audio"], dim=6)(out)
    want = ref_pair(out["anchor"], out["audio"], list(range(8)))
    assert got["infonce_audio"].item() == pytest.approx(want, rel=1e-9)
    assert got["loss"].item() == pytest.approx(want, rel=1e-9)


def test_mask_drops_rows_lacking_the_modality():
    mask = torch.tensor([1, 0, 1, 1, 0, 1, 1, 1], dtype=torch.bool)
    out = batch(mask=mask)
    got = BindLoss(["audio"], dim=6)(out)["loss"].item()
    rows = [i for i in range(8) if mask[i]]
    assert got == pytest.approx(ref_pair(out["anchor"], out["audio"], rows), rel=1e-9)
    assert got != pytest.approx(ref_pair(out["anchor"], out["audio"], list(range(8))), rel=1e-3)


def test_modality_absent_from_batch_adds_nothing_but_keeps_graph():
    out = batch(mask=torch.zeros(8, dtype=torch.bool))
    out["audio"].requires_grad_(True)
    loss = BindLoss(["audio"], dim=6)(out)["loss"]
    assert loss.item() == 0.0
    loss.backward()
    assert out["audio"].grad is not None and out["audio"].grad.abs().sum() == 0


def test_partial_weight_and_bad_negative():
    weight = torch.tensor([1, 1, 0.5, 1, 1, 1, 0.5, 1], dtype=torch.float64)
    out = batch(weight=weight)
    bad_mask = torch.tensor([0, 1, 0, 0, 1, 0, 0, 0], dtype=torch.bool)
    out["audio_bad"], out["audio_bad_mask"] = unit(8, 6, 3), bad_mask
    got = BindLoss(["audio"], dim=6)(out)["loss"].item()
    bad = {i: out["audio_bad"][i] for i in range(8) if bad_mask[i]}
    want = ref_pair(out["anchor"], out["audio"], list(range(8)), {i: float(weight[i]) for i in range(8)}, bad)
    assert got == pytest.approx(want, rel=1e-9)
    # an extra denominator term can only raise the loss; without bad partners it is the plain weighted loss
    del out["audio_bad"], out["audio_bad_mask"]
    assert BindLoss(["audio"], dim=6)(out)["loss"].item() < got


def test_queue_adds_previous_batches_as_negatives():
    loss = BindLoss(["audio"], dim=6, queue_size=5)
    first = batch()
    loss(first)
    assert int(loss.queue_len_audio) == 5
    second = {**batch(), "anchor": unit(8, 6, 11), "audio": unit(8, 6, 12)}
    got = loss(second)["loss"].item()
    want = ref_pair(second["anchor"], second["audio"], list(range(8)),
                    queue_x=list(first["audio"][:5]), queue_a=list(first["anchor"][:5]))
    assert got == pytest.approx(want, rel=1e-6)


def test_hard_negative_mining_keeps_the_k_hardest():
    out = batch()
    got = BindLoss(["audio"], dim=6, hard_negatives=3)(out)["loss"].item()
    assert got == pytest.approx(ref_pair(out["anchor"], out["audio"], list(range(8)), hard=3), rel=1e-9)
    assert got < BindLoss(["audio"], dim=6)(out)["loss"].item()


def test_cyclip_terms_follow_their_definition():
    out = batch()
    plain = BindLoss(["audio"], dim=6)(out)["loss"].item()
    terms = BindLoss(["audio"], dim=6, cyclip_in_modal=2.0, cyclip_cross_modal=3.0)(out)
    a, x, n = out["anchor"], out["audio"], 8
    # CyCLIP's scale: (1/N) sum over the N x N pairs (METHODS.md section 3), not the plain mean
    c_in = sum((float(a[i] @ a[j]) - float(x[i] @ x[j])) ** 2 for i in range(n) for j in range(n)) / n
    c_cross = sum((float(a[i] @ x[j]) - float(x[i] @ a[j])) ** 2 for i in range(n) for j in range(n)) / n
    assert terms["cyclip_in_audio"].item() == pytest.approx(c_in, rel=1e-9)
    assert terms["cyclip_cross_audio"].item() == pytest.approx(c_cross, rel=1e-9)
    assert terms["loss"].item() == pytest.approx(plain + 2 * c_in + 3 * c_cross, rel=1e-9)


GATHER_SCRIPT = r'''
import json, sys, torch
from accelerate import Accelerator
from trainer.losses.infonce import BindLoss
from tests.trainer.losses.test_infonce import batch
acc = Accelerator(cpu=True)
full = batch(n=8, mask=torch.tensor([1, 1, 0, 1, 1, 1, 1, 0], dtype=torch.bool))
r, w = acc.process_index, acc.num_processes
res = {"world": w}
for local in (False, True):
    sl = slice(r * 8 // w, (r + 1) * 8 // w)
    mine = {k: (v[sl].clone() if v.ndim else v) for k, v in full.items()}
    mine["audio"].requires_grad_(True)
    loss = BindLoss(["audio"], dim=6, local_loss=local)(mine)["loss"]
    loss.backward()
    res[f"loss_{local}"] = loss.item()
    res[f"grad_{local}"] = mine["audio"].grad.tolist()
json.dump(res, open(sys.argv[1] + f"/rank{r}.json", "w"))
acc.wait_for_everyone()
torch.distributed.destroy_process_group()  # else gloo's threads may abort the exit
'''


def test_gathered_loss_with_two_processes(tmp_path: Path):
    """torchrun starts 2 CPU ranks; the gathered loss equals the single-process loss on the full batch,
    and each rank's gradient equals the single-process gradient of its slice."""
    script = tmp_path / "gather.py"
    script.write_text(GATHER_SCRIPT)
    proc = torchrun([str(script), str(tmp_path)], timeout=120)
    assert proc.returncode == 0, proc.stdout[-3000:]
    import json

    ranks = [json.loads((tmp_path / f"rank{r}.json").read_text()) for r in range(2)]
    assert [r["world"] for r in ranks] == [2, 2]
    full = batch(n=8, mask=torch.tensor([1, 1, 0, 1, 1, 1, 1, 0], dtype=torch.bool))
    full["audio"].requires_grad_(True)
    ref = BindLoss(["audio"], dim=6)(full)["loss"]
    ref.backward()
    for r in ranks:
        assert r["loss_False"] == pytest.approx(ref.item(), rel=1e-9)
    got_grad = torch.tensor(ranks[0]["grad_False"] + ranks[1]["grad_False"], dtype=torch.float64)
    assert torch.allclose(got_grad, full["audio"].grad, atol=1e-12)
    # local loss: each rank's rows against all columns; the mean over ranks is the full loss
    local = [r["loss_True"] for r in ranks]
    assert local[0] != pytest.approx(local[1])
    assert sum(local) / 2 == pytest.approx(ref.item(), rel=0.2)
