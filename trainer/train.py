"""`bindery train`: fit projection heads on cached vectors (one readable loop, nanoGPT style).

accelerate throughout: the same code runs on the CPU, one GPU, or several processes under
``accelerate launch`` / ``torchrun`` (DDP; features are gathered across ranks inside the loss).
Batches are index gathers on the device holding the stores, not a DataLoader. Every rank
draws the same seeded permutation per epoch and takes its own slice, so a step is fully
determined by (seed, epoch, step): ``save_state``/``load_state`` plus skipping the steps
already done makes a resumed run end with the same heads as an uninterrupted one.
"""

from __future__ import annotations

import hashlib
import json
import logging
import math
import shutil
import time
from pathlib import Path
from typing import Any

import numpy as np
import torch
from tqdm import tqdm

from pipeline.core.manifest import Manifest
from pipeline.core.store import atomic_write_text
from trainer.batch import Batch
from trainer.data.rows import CachedData, load, store_signature
from trainer.losses.registry import make_loss
from trainer.model.export import export
from trainer.model.heads import Binder
from trainer.tracking import CSVTracker

log = logging.getLogger(__name__)
STATE_FILE = "trainer_state.json"
EPOCH_SAVE_S = 120.0  # checkpoint_every = 0: save at an epoch's end if the last save is older than this


def run_dir(manifest: Manifest, run: str = "") -> Path:
    return manifest.output / "runs" / (run or manifest.train.run)


def lr_lambda(warmup: int, total: int):
    """Linear warm-up over ``warmup`` steps, then cosine decay to 0 at ``total``."""
    def f(step: int) -> float:
        if step < warmup:
            return (step + 1) / warmup
        return 0.5 * (1 + math.cos(math.pi * min(1.0, (step - warmup) / max(1, total - warmup))))
    return f


def epoch_blocks(n: int, epoch: int, seed: int, batch: int, world: int) -> torch.Tensor:
    """(steps, world, batch) indices into the training rows for one epoch; -1 pads the last step."""
    steps = max(1, math.ceil(n / (batch * world)))
    perm = torch.randperm(n, generator=torch.Generator().manual_seed(seed * 100_003 + epoch))
    pad = torch.full((steps * world * batch - n,), -1, dtype=torch.long)
    return torch.cat([perm, pad]).view(steps, world, batch)


def latest_checkpoint(folder: Path) -> Path | None:
    done = [p for p in folder.glob("step_*") if (p / STATE_FILE).is_file()]
    return max(done, key=lambda p: int(p.name.split("_")[1])) if done else None


def run_fingerprint(manifest: Manifest, data: CachedData) -> str:
    """What a checkpoint must match to be resumed: the [train] section, the training rows, and each
    used store's dim, encoder digest and part names and sizes. A second round with new quintuples
    (same run name), or a store re-encoded (another encoder or dim), therefore starts afresh instead
    of resuming the finished first round (or failing to load heads of another shape)."""
    rows = data.rows
    digest = hashlib.blake2b(digest_size=16)
    digest.update(json.dumps(manifest.to_dict()["train"], sort_keys=True, default=str).encode())
    stores = {m: {**store_signature(manifest.output, m), "dim": dim} for m, dim in data.dims().items()}
    digest.update(json.dumps(stores, sort_keys=True).encode())
    for arr in (rows.anchor, data.train_idx, *rows.partner.values(), *rows.weight.values(), *rows.bad.values()):
        digest.update(np.ascontiguousarray(arr).tobytes())
    return digest.hexdigest()


def train_rows(data: CachedData, idx: torch.Tensor) -> torch.Tensor:
    """Row-table indices of block entries ``idx`` (positions in ``train_idx``; -1 padding -> row 0's)."""
    return torch.as_tensor(data.train_idx)[idx.clamp(min=0)]


def make_batch(data: CachedData, idx: torch.Tensor, device: torch.device) -> Batch:
    """The batch of block entries ``idx``; padded entries (-1) take part in no pair."""
    return data.batch(train_rows(data, idx), device).keep_rows(idx >= 0)


def train_step(accelerator, model, loss_fn, optimizer, scheduler, batch: Batch) -> dict[str, torch.Tensor]:
    """One optimisation step (shared with bench/train.py); returns the loss terms."""
    with accelerator.autocast():
        terms = loss_fn(model(batch))
    accelerator.backward(terms["loss"])
    optimizer.step()
    scheduler.step()
    optimizer.zero_grad(set_to_none=True)
    return terms


def make_optimizer(model: torch.nn.Module, lr: float, weight_decay: float) -> torch.optim.Optimizer:
    """AdamW; biases and the logit scale get no weight decay."""
    decay = [p for p in model.parameters() if p.ndim > 1]
    no_decay = [p for p in model.parameters() if p.ndim <= 1]
    return torch.optim.AdamW([{"params": decay, "weight_decay": weight_decay},
                              {"params": no_decay, "weight_decay": 0.0}], lr=lr)


def run(manifest: Manifest, stop_after_steps: int | None = None) -> dict[str, Any]:
    """Train ``[train]``'s heads; export them to ``runs/<run>/``; return a summary.

    ``stop_after_steps`` saves a checkpoint and stops early (used to test resuming).
    """
    from accelerate import Accelerator
    from accelerate.utils import set_seed

    t = manifest.train
    out_dir = run_dir(manifest)
    ckpt_dir = out_dir / "checkpoints"
    accelerator = Accelerator(cpu=not torch.cuda.is_available(), mixed_precision=t.precision,
                              log_with=[CSVTracker(out_dir)])
    accelerator.init_trackers("bindery")
    set_seed(t.seed)
    data = load(manifest, accelerator.device)
    dims = data.dims()
    model = Binder(dims, t.anchor, data.modalities, t.hidden, t.depth, t.dropout, t.out_dim)
    loss_fn = make_loss(t.loss, modalities=data.modalities, dim=dims[t.anchor], gather=t.gather,
                        local_loss=t.local_loss, hard_negatives=t.hard_negatives, queue_size=t.queue_size,
                        cyclip_in_modal=t.cyclip_in_modal, cyclip_cross_modal=t.cyclip_cross_modal)
    loss_fn.to(accelerator.device)
    optimizer = make_optimizer(model, t.lr, t.weight_decay)
    world, rank = accelerator.num_processes, accelerator.process_index
    n_train = len(data.train_idx)
    steps_per_epoch = epoch_blocks(n_train, 0, t.seed, t.batch_size, world).shape[0]
    total = steps_per_epoch * t.epochs
    # not prepared: accelerate would step a prepared scheduler once per process
    scheduler = torch.optim.lr_scheduler.LambdaLR(optimizer, lr_lambda(min(t.warmup_steps, total), total))
    model, optimizer = accelerator.prepare(model, optimizer)
    accelerator.register_for_checkpointing(scheduler, loss_fn)

    step = 0
    fingerprint = run_fingerprint(manifest, data)
    last = latest_checkpoint(ckpt_dir)
    if last is not None and json.loads((last / STATE_FILE).read_text()).get("fingerprint") == fingerprint:
        accelerator.load_state(str(last))
        step = json.loads((last / STATE_FILE).read_text())["step"]
        log.info("resumed from %s (step %d of %d)", last, step, total)
    elif last is not None:
        log.info("checkpoint %s is from another config or data; training from scratch", last)

    def checkpoint(at: int) -> None:
        path = ckpt_dir / f"step_{at:08d}"
        accelerator.save_state(str(path))
        accelerator.wait_for_everyone()  # every rank's part is on disk before the checkpoint is marked complete
        if accelerator.is_main_process:
            atomic_write_text(path / STATE_FILE, json.dumps({"step": at, "total": total, "fingerprint": fingerprint}))
            for old in ckpt_dir.glob("step_*"):
                if old != path:
                    shutil.rmtree(old, ignore_errors=True)
        accelerator.wait_for_everyone()

    model.train()
    resumed_from = step
    start, seen, last_loss = time.perf_counter(), 0, float("nan")
    saved_at = start
    bar = tqdm(total=total, initial=step, desc="train", disable=not accelerator.is_main_process)
    ahead = data.window_steps(t.batch_size)  # stream mode: steps read ahead at once (0 = none)
    if data.streaming:
        log.info("stream: reading %d step(s) ahead%s", ahead, "" if ahead else
                 " (one step's rows exceed train.memory_gb: every batch goes through the row-group cache)")
    for epoch in range(step // steps_per_epoch, t.epochs):
        blocks = epoch_blocks(n_train, epoch, t.seed, t.batch_size, world)
        first = step - epoch * steps_per_epoch
        for s in range(first, steps_per_epoch):
            if ahead and (s - first) % ahead == 0:
                data.prefetch(train_rows(data, blocks[s:s + ahead, rank]))
            terms = train_step(accelerator, model, loss_fn, optimizer, scheduler,
                               make_batch(data, blocks[s, rank], accelerator.device))
            step += 1
            seen += int((blocks[s, rank] >= 0).sum()) * world
            last_loss = float(terms["loss"].detach())
            bar.update(1)
            if step % 10 == 0 or step == total:
                accelerator.log({k: float(v.detach()) for k, v in terms.items()} | {"lr": scheduler.get_last_lr()[0],
                                "scale": float(accelerator.unwrap_model(model).scale().detach())}, step=step)
            if stop_after_steps is not None and step >= stop_after_steps:
                checkpoint(step)
                bar.close()
                finish(accelerator)
                return {"run": t.run, "stopped_at": step, "total_steps": total}
            if t.checkpoint_every and step % t.checkpoint_every == 0:
                checkpoint(step)
        if not t.checkpoint_every and (step == total or time.perf_counter() - saved_at > EPOCH_SAVE_S):
            checkpoint(step)
            saved_at = time.perf_counter()
    bar.close()
    seconds = time.perf_counter() - start
    accelerator.wait_for_everyone()
    summary = {"run": t.run, "steps": step, "resumed_from_step": resumed_from, "epochs": t.epochs, "world_size": world, "final_loss": last_loss,
               "rows": len(data.rows), "train_rows": n_train, "val_rows": len(data.val_idx),
               "modalities": data.modalities, "anchor": t.anchor, "seconds": round(seconds, 2),
               "samples_per_s": round(seen / seconds, 1) if seconds > 0 else None, "run_dir": str(out_dir)}
    if accelerator.is_main_process:
        export(out_dir, accelerator.unwrap_model(model), {"manifest": manifest.to_dict(), "train_summary": summary})
    finish(accelerator)
    return summary


def finish(accelerator) -> None:
    """End trackers; under several processes also tear the process group down, or gloo's threads
    may abort the interpreter's exit."""
    accelerator.wait_for_everyone()
    accelerator.end_training()  # accelerate 1.x also destroys the group here; older versions do not
    if torch.distributed.is_available() and torch.distributed.is_initialized():
        torch.distributed.destroy_process_group()
