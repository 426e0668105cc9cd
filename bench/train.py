"""Training throughput on synthetic cached vectors at EBind's scale.

EBind trains on 6.7 M quintuples: 1024-d anchors (PE's text space) and two projected 1024-d
modalities (audio, points), heads 1024->2048->1024. The vectors are made on the device in
float16 (41 GB at full scale: it fits one H100), rows are index-gathered there (no DataLoader),
and the step is the trainer's own :func:`trainer.train.train_step` under accelerate (bf16 on CUDA).
Target (DESIGN.md): one epoch over 6.7 M quintuples in under 60 s on one H100.

``--small``: 16,384 rows, same shapes, for a CPU run of about a minute.
"""

from __future__ import annotations

import argparse
import json
import logging
import math
import time

import numpy as np
import torch

log = logging.getLogger(__name__)
EBIND_ROWS = 6_700_000
DIM = 1024


def synthetic_data(rows: int, device: torch.device, dtype: torch.dtype = torch.float16):
    """A :class:`~trainer.data.rows.CachedData` of ``rows`` quintuples (text anchor; audio, points partners)."""
    from trainer.data.rows import CachedData, Rows

    gen = torch.Generator(device=device).manual_seed(0)
    vectors = {}
    for m in ("text", "audio", "points"):
        v = torch.empty(rows, DIM, dtype=dtype, device=device)
        for i in range(0, rows, 1 << 20):  # in chunks: no float32 copy of the whole store
            v[i:i + (1 << 20)] = torch.randn(min(1 << 20, rows - i), DIM, generator=gen, device=device).to(dtype)
        vectors[m] = v
    idx = np.arange(rows, dtype=np.int64)
    mods = ["audio", "points"]
    table = Rows(idx, {m: idx for m in mods}, {m: np.ones(rows, np.float32) for m in mods},
                 {m: np.full(rows, -1, np.int64) for m in mods})
    keys = {m: np.array([], dtype=object) for m in vectors}
    return CachedData("text", mods, vectors, keys, table, idx, np.zeros(0, np.int64), device)


def measure(small: bool, device: str, batch_size: int | None = None, rows: int | None = None) -> dict:
    """One timed epoch (after 3 warm-up steps) of the trainer's step over synthetic quintuples."""
    from accelerate import Accelerator

    from trainer.losses.registry import make_loss
    from trainer.model.heads import Binder
    from trainer.train import epoch_blocks, lr_lambda, make_batch, make_optimizer, train_step

    cuda = device.startswith("cuda") and torch.cuda.is_available()
    accelerator = Accelerator(cpu=not cuda, mixed_precision="bf16" if cuda else "no")
    dev = accelerator.device
    rows = rows or (16_384 if small else EBIND_ROWS)
    batch_size = batch_size or (1024 if small else 8192)
    torch.manual_seed(0)
    start = time.perf_counter()
    data = synthetic_data(rows, dev)
    build_s = time.perf_counter() - start
    model = Binder({"text": DIM, "audio": DIM, "points": DIM}, "text", ["audio", "points"])
    loss_fn = make_loss("infonce", modalities=["audio", "points"], dim=DIM).to(dev)
    optimizer = make_optimizer(model, 1e-3, 0.01)
    blocks = epoch_blocks(rows, 0, 0, batch_size, 1)
    scheduler = torch.optim.lr_scheduler.LambdaLR(optimizer, lr_lambda(50, len(blocks)))
    model, optimizer = accelerator.prepare(model, optimizer)

    def step(i: int) -> dict:
        return train_step(accelerator, model, loss_fn, optimizer, scheduler, make_batch(data, blocks[i, 0], dev))

    for i in range(3):
        step(i)
    if cuda:
        torch.cuda.synchronize()
        torch.cuda.reset_peak_memory_stats()
    start = time.perf_counter()
    for i in range(len(blocks)):
        terms = step(i)
    loss = float(terms["loss"].detach())  # also waits for the GPU
    if cuda:
        torch.cuda.synchronize()
    epoch_s = time.perf_counter() - start
    sps = rows / epoch_s
    out = {"rows": rows, "batch_size": batch_size, "steps": len(blocks), "dim": DIM, "hidden": 2048,
           "data_on": str(data.device), "store_dtype": "float16", "precision": "bf16" if cuda else "fp32",
           "build_s": round(build_s, 2), "epoch_s": round(epoch_s, 2), "samples_per_s": round(sps, 1),
           "ebind_epoch_s_projected": round(EBIND_ROWS / sps, 1), "final_loss": round(loss, 4),
           "target_epoch_s": 60}
    if cuda:
        out["peak_gpu_gb"] = round(torch.cuda.max_memory_allocated() / 1e9, 2)
    log.info("train bench: %s", out)
    if not math.isfinite(loss):
        raise RuntimeError(f"train bench: loss is {loss}")
    return out


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--small", action="store_true", help="16,384 rows on the CPU (about a minute)")
    parser.add_argument("--device", default="auto", help="auto | cpu | cuda")
    parser.add_argument("--batch-size", type=int, default=None)
    parser.add_argument("--rows", type=int, default=None)
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s: %(message)s")
    device = args.device if args.device != "auto" else ("cuda" if torch.cuda.is_available() else "cpu")
    result = measure(args.small, device, args.batch_size, args.rows)
    print(json.dumps(result, indent=2))  # noqa: T201 - a CLI's output
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
