"""`bindery train`: fit projection heads on cached vectors (one readable loop, nanoGPT style).

accelerate throughout: the same code runs on the CPU, one GPU, or several processes under
``accelerate launch`` / ``torchrun`` (DDP; features are gathered across ranks inside the loss).
Batches are index gathers on the device holding the stores, not a DataLoader. Every rank
draws the same seeded permutation per epoch and takes its own slice, so a step is fully
determined by (seed, epoch, step): ``save_state``/``load_state`` plus skipping the steps
already done makes a resumed run end with the same heads as an uninterrupted one.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import logging
import math
import shutil
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch
from tqdm import tqdm

from pipeline.core.layout import OutputLayout, RunLayout
from pipeline.core.manifest import Manifest, TrainConfig
from pipeline.core.store import atomic_write_text, store_fingerprint
from trainer.batch import Batch
from trainer.bridge import hooks as bridge
from trainer.checks import check_rows, check_train
from trainer.data.rows import CachedData, load
from trainer.early_stop import BestEpoch, StopSlice, carve, plot_curve, score
from trainer.losses.registry import make_loss
from trainer.model.export import export
from trainer.model.heads import Binder
from trainer.model.init import InitReport, ridge_init, warm_start
from trainer.tracking import CSVTracker

log = logging.getLogger(__name__)
STATE_FILE = "trainer_state.json"
BEST_FILE = "best_epoch.pt"  # the early-stopping curve and best weights, so a resumed run exports the best epoch
EPOCH_SAVE_S = 120.0  # checkpoint_every = 0: save at an epoch's end if the last save is older than this


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


def latest_checkpoint(run: RunLayout) -> Path | None:
    """The newest checkpoint marked complete (its state file written after every rank saved)."""
    done = [p for p in run.checkpoints.glob(RunLayout.CHECKPOINT_GLOB) if (p / STATE_FILE).is_file()]
    return max(done, key=RunLayout.checkpoint_step) if done else None


def run_fingerprint(train: TrainConfig, layout: OutputLayout, data: CachedData) -> str:
    """What a checkpoint must match to be resumed: the [train] section, the training rows, and each
    used store's fingerprint (identity, part names and sizes) and dim. A second round with new quintuples
    (same run name), or a store re-encoded (another encoder or dim), therefore starts afresh instead
    of resuming the finished first round (or failing to load heads of another shape)."""
    rows = data.rows
    digest = hashlib.blake2b(digest_size=16)
    digest.update(json.dumps(dataclasses.asdict(train), sort_keys=True, default=str).encode())
    stores = {m: {**store_fingerprint(layout.root, m), "dim": dim} for m, dim in data.dims().items()}
    digest.update(json.dumps(stores, sort_keys=True).encode())
    for arr in (rows.anchor, data.train_idx, *rows.partner.values(), *rows.weight.values(), *rows.bad.values()):
        digest.update(np.ascontiguousarray(arr).tobytes())
    digest.update(getattr(data, "fingerprint", bytes)())  # a bridge run: the bridge it trains on
    if train.warm_start:  # a retrained source must not be taken for the one this run started from
        source = layout.run(train.warm_start)
        for heads in (source.first_fit.heads, source.heads):
            digest.update(heads.read_bytes() if heads.is_file() else b"-")
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


@dataclass
class Trainer:
    """Everything one run's loop works with, built by :func:`setup`."""

    train: TrainConfig
    run: RunLayout
    accelerator: Any
    data: CachedData
    model: torch.nn.Module  # prepared by accelerate (DDP-wrapped under several processes)
    loss_fn: torch.nn.Module
    optimizer: torch.optim.Optimizer
    scheduler: torch.optim.lr_scheduler.LambdaLR
    steps_per_epoch: int
    total: int  # steps of the whole run
    fingerprint: str  # what a checkpoint must match to be resumed
    init: InitReport = field(default_factory=lambda: InitReport("random"))
    stop: StopSlice | None = None  # the early-stopping slice (None: train every epoch, keep the last)
    best: BestEpoch | None = None
    finished: bool = False  # resumed from a checkpoint of a run that ended (last step or early stop)
    until_epoch: int | None = None  # train epochs [start, until_epoch) only (the refit); None = all
    checkpoints: bool = True  # the refit saves none: the run's ended checkpoint stays the first fit's

    @property
    def binder(self) -> Binder:
        return self.accelerator.unwrap_model(self.model)


@dataclass
class Progress:
    step: int
    seen: int = 0  # samples trained on in this call (all ranks)
    last_loss: float = float("nan")
    stopped: bool = False  # stopped early by stop_after_steps
    saved_at: float = field(default_factory=time.perf_counter)  # last checkpoint save


def make_accelerator(train: TrainConfig, run: RunLayout):
    from accelerate import Accelerator
    from accelerate.utils import set_seed

    accelerator = Accelerator(cpu=not torch.cuda.is_available(), mixed_precision=train.precision,
                              log_with=[CSVTracker(run.log)])
    accelerator.init_trackers("bindery")
    set_seed(train.seed)
    return accelerator


def setup(train: TrainConfig, layout: OutputLayout, accelerator, data: CachedData, refitting: bool = False) -> Trainer:
    """Heads, loss, optimiser and schedule for ``data``; prepared by accelerate, the scheduler and the
    loss (its queue) registered for checkpointing."""
    dims = data.dims()
    model = Binder(dims, train.anchor, data.modalities, train.hidden, train.depth, train.dropout, train.out_dim)
    init = initialise(train, layout, model, data, refitting)
    loss_fn = make_loss(train.loss, modalities=data.modalities, dim=dims[train.anchor], gather=train.gather,
                        local_loss=train.local_loss, hard_negatives=train.hard_negatives,
                        queue_size=train.queue_size, cyclip_in_modal=train.cyclip_in_modal,
                        cyclip_cross_modal=train.cyclip_cross_modal,
                        regression_weight=train.regression_weight).to(accelerator.device)
    optimizer = make_optimizer(model, train.lr, train.weight_decay)
    steps_per_epoch = epoch_blocks(len(data.train_idx), 0, train.seed, train.batch_size,
                                   accelerator.num_processes).shape[0]
    total = steps_per_epoch * train.epochs
    # not prepared: accelerate would step a prepared scheduler once per process
    scheduler = torch.optim.lr_scheduler.LambdaLR(optimizer, lr_lambda(min(train.warmup_steps, total), total))
    model, optimizer = accelerator.prepare(model, optimizer)
    accelerator.register_for_checkpointing(scheduler, loss_fn)
    # a refit never saves or resumes a checkpoint, so it has no fingerprint to match
    fingerprint = "" if refitting else run_fingerprint(train, layout, data)
    return Trainer(train, layout.run(train.run), accelerator, data, model, loss_fn, optimizer, scheduler,
                   steps_per_epoch, total, fingerprint, init)


def initialise(train: TrainConfig, layout: OutputLayout, model: Binder, data: CachedData,
               refitting: bool = False) -> InitReport:
    """Start the heads as ``train.init`` / ``train.warm_start`` say (:mod:`trainer.model.init`). A warm start's
    first fit starts from the source run's first-fit heads when it was refitted: its final heads were trained
    on the early-stopping slice this run scores its start on (the same keys for the same seed and fraction)."""
    if train.warm_start:
        source = layout.run(train.warm_start)
        if not refitting and source.first_fit.heads.is_file():
            source = source.first_fit
        return warm_start(model, source)
    if train.init == "ridge":
        return ridge_init(model, data, train.seed)
    return InitReport("random")


def resume(tr: Trainer) -> int:
    """Load the latest checkpoint when it matches this run's fingerprint; the step to start from."""
    last = latest_checkpoint(tr.run)
    if last is None:
        return 0
    state = json.loads((last / STATE_FILE).read_text())
    if state.get("fingerprint") != tr.fingerprint:
        log.info("checkpoint %s is from another config or data; training from scratch", last)
        return 0
    best = torch.load(last / BEST_FILE, weights_only=True) if tr.best is not None and (last / BEST_FILE).is_file() else None
    if best is not None and best.get("format") != BestEpoch.FORMAT:
        log.info("checkpoint %s keeps early-stopping state of an older format; training from scratch", last)
        return 0
    tr.accelerator.load_state(str(last))
    if best is not None:
        tr.best.load(best)
    tr.finished = bool(state.get("finished"))
    log.info("resumed from %s (step %d of %d%s)", last, state["step"], tr.total, ", finished" if tr.finished else "")
    return state["step"]


def save_checkpoint(tr: Trainer, step: int, finished: bool = False) -> None:
    """Every rank saves, then (after a barrier) the main process writes the early-stopping state and marks
    the checkpoint complete with its state file (step, whether the run ended, fingerprint, the [train]
    section) and deletes the older ones."""
    acc, path = tr.accelerator, tr.run.checkpoint(step)
    acc.save_state(str(path))
    acc.wait_for_everyone()  # every rank's part is on disk before the checkpoint is marked complete
    if acc.is_main_process:
        if tr.best is not None:
            torch.save(tr.best.dump(), path / BEST_FILE)
        state = {"step": step, "total": tr.total, "finished": finished, "fingerprint": tr.fingerprint,
                 "train": dataclasses.asdict(tr.train)}
        atomic_write_text(path / STATE_FILE, json.dumps(state, default=str))
        for old in tr.run.checkpoints.glob(RunLayout.CHECKPOINT_GLOB):
            if old != path:
                shutil.rmtree(old, ignore_errors=True)
    acc.wait_for_everyone()


def log_terms(tr: Trainer, step: int, terms: dict[str, torch.Tensor]) -> None:
    values = {k: float(v.detach()) for k, v in terms.items()}
    tr.accelerator.log(values | {"lr": tr.scheduler.get_last_lr()[0], "scale": float(tr.binder.scale().detach())},
                       step=step)


def read_ahead(tr: Trainer) -> int:
    """Stream mode: how many steps' rows are read at once (0 = none; logged)."""
    ahead = tr.data.window_steps(tr.train.batch_size)
    if tr.data.streaming:
        log.info("stream: reading %d step(s) ahead%s", ahead, "" if ahead else
                 " (one step's rows exceed train.memory_gb: every batch goes through the row-group cache)")
    return ahead


def end_of_epoch(tr: Trainer, epoch: int, progress: Progress) -> bool:
    """Score the early-stopping slice (True: stop now) and save a checkpoint when due."""
    done = False
    if tr.best is not None and tr.stop is not None:
        scored = score(tr.binder, tr.data, tr.stop)
        tr.accelerator.log({"val_mrr": scored.value}, step=progress.step)
        done = tr.best.update(epoch, scored, tr.binder)
        if done:
            log.info("early stop after epoch %d: no better validation score since epoch %d",
                     epoch + 1, tr.best.best_epoch + 1)  # epoch 0: the initial heads
    last = done or progress.step == tr.total
    if not tr.checkpoints:
        return done
    every = tr.train.checkpoint_every
    if last or (every and progress.step % every == 0) or (
            not every and time.perf_counter() - progress.saved_at > EPOCH_SAVE_S):
        save_checkpoint(tr, progress.step, finished=last)
        progress.saved_at = time.perf_counter()
    return done


def resumed_at_unscored_epoch_end(tr: Trainer, step: int) -> bool:
    """Whether ``step`` ends an epoch the early-stopping curve lacks: a checkpoint saved on an epoch's last
    step (``checkpoint_every``, ``stop_after_steps``) before that epoch was scored. The loaded weights are
    that epoch's, so it is scored before training goes on."""
    if tr.best is None or tr.stop is None or not step or step % tr.steps_per_epoch:
        return False
    last = tr.best.last_scored
    return last is None or last < step // tr.steps_per_epoch - 1


def loop(tr: Trainer, step: int, stop_after_steps: int | None = None) -> Progress:
    """Train from ``step`` to the end: each epoch's seeded blocks, this rank's slice of each step,
    stream read-ahead, a log row every 10 steps, checkpoints every ``checkpoint_every`` steps (or at
    an epoch's end when the last save is older than EPOCH_SAVE_S), an early stop after ``stop_after_steps``,
    and the early-stopping slice scored after every epoch (:func:`end_of_epoch`)."""
    t, acc, data = tr.train, tr.accelerator, tr.data
    world, rank = acc.num_processes, acc.process_index
    ahead, progress = read_ahead(tr), Progress(step)
    if tr.finished:  # the checkpoint is of an ended run: nothing left to train
        return progress
    unscored = resumed_at_unscored_epoch_end(tr, step)
    if tr.best is not None and not tr.best.curve:
        tr.best.first = step // tr.steps_per_epoch - unscored
    if unscored and end_of_epoch(tr, step // tr.steps_per_epoch - 1, progress):
        return progress
    end = t.epochs if tr.until_epoch is None else min(t.epochs, tr.until_epoch)
    with tqdm(total=end * tr.steps_per_epoch, initial=step, desc="train" if tr.checkpoints else "refit",
              disable=not acc.is_main_process) as bar:
        for epoch in range(step // tr.steps_per_epoch, end):
            blocks = epoch_blocks(len(data.train_idx), epoch, t.seed, t.batch_size, world)
            first = progress.step - epoch * tr.steps_per_epoch
            for s in range(first, tr.steps_per_epoch):
                if ahead and (s - first) % ahead == 0:
                    data.prefetch(train_rows(data, blocks[s:s + ahead, rank]))
                batch = make_batch(data, blocks[s, rank], acc.device)
                terms = train_step(acc, tr.model, tr.loss_fn, tr.optimizer, tr.scheduler, batch)
                progress.step += 1
                progress.seen += int((blocks[s, rank] >= 0).sum()) * world
                progress.last_loss = float(terms["loss"].detach())
                bar.update(1)
                if progress.step % 10 == 0 or progress.step == tr.total:
                    log_terms(tr, progress.step, terms)
                if stop_after_steps is not None and progress.step >= stop_after_steps:
                    save_checkpoint(tr, progress.step)
                    progress.stopped = True
                    return progress
                # an epoch's last step is saved by end_of_epoch, after the epoch is scored (and only once)
                if (tr.checkpoints and t.checkpoint_every and progress.step % t.checkpoint_every == 0
                        and progress.step % tr.steps_per_epoch):
                    save_checkpoint(tr, progress.step)
            if end_of_epoch(tr, epoch, progress):
                break
    return progress


def summarize(tr: Trainer, resumed_from: int, progress: Progress, seconds: float) -> dict[str, Any]:
    t, data = tr.train, tr.data
    return {"run": t.run, "steps": progress.step, "resumed_from_step": resumed_from, "epochs": t.epochs,
            "world_size": tr.accelerator.num_processes, "final_loss": progress.last_loss,
            "rows": len(data.rows), "train_rows": len(data.train_idx), "val_rows": len(data.val_idx),
            "modalities": data.modalities, "anchor": t.anchor, "seconds": round(seconds, 2),
            "samples_per_s": round(progress.seen / seconds, 1) if seconds > 0 else None,
            "run_dir": str(tr.run.root), "init": tr.init.to_dict(),
            "early_stopping": tr.best.report(tr.stop) if tr.best is not None and tr.stop is not None else None}


def hold_back(t: TrainConfig, data: CachedData) -> tuple[CachedData, StopSlice | None]:
    """Carve the early-stopping slice out of the training rows (None when off or when it holds no
    truth-known pair: then every training row is trained on and the last epoch is kept)."""
    if not t.early_stop_fraction:
        return data, None
    fit, stop = carve(data, t.early_stop_fraction, t.seed)
    if stop.empty or not len(fit):
        log.warning("early stopping off: the train.early_stop_fraction=%g slice holds no own-caption pair",
                    t.early_stop_fraction)
        return data, None
    log.info("early stopping on %d training-side rows (%s); fitting on %d", stop.rows,
             {m: len(a) for m, (a, _) in stop.pairs.items()}, len(fit))
    return dataclasses.replace(data, train_idx=fit), stop


def refit(t: TrainConfig, layout: OutputLayout, accelerator, data: CachedData, epochs: int) -> Trainer:
    """Train afresh on every training row, the early-stopping slice included, for the ``epochs`` the slice
    chose (0: the start itself, e.g. the ridge map of all training rows), on the same schedule as the first
    fit. Re-seeded, so a re-run of an ended run refits to the same heads; it saves no checkpoint."""
    from accelerate.utils import set_seed

    set_seed(t.seed)
    tr = setup(t, layout, accelerator, data, refitting=True)
    tr.until_epoch, tr.checkpoints = epochs, False
    loop(tr, 0)
    return tr


def run(manifest: Manifest, stop_after_steps: int | None = None, pivot_only: bool = False) -> dict[str, Any]:
    """Train ``[train]``'s heads; export them to the run's folder; return a summary.

    ``stop_after_steps`` saves a checkpoint and stops early (used to test resuming). With ``train.bridge``
    the emergent route is trained first (``pivot_only``), then the MOX heads (:mod:`trainer.bridge.hooks`).
    """
    t, layout = manifest.train, manifest.layout
    check_train(t, layout)
    if t.bridge:
        bridge.check(manifest)
    emergent = run(bridge.emergent_manifest(manifest), pivot_only=True) if bridge.trains_emergent(
        manifest, pivot_only) else None
    accelerator = make_accelerator(t, layout.run(t.run))
    data = bridge.load_data(manifest, accelerator.device, pivot_only) if t.bridge else load(t, layout, accelerator.device)
    check_rows(t, data)
    every_row = data
    data, stop = (data, None) if t.bridge else hold_back(t, data)  # a bridge run keeps its own rows
    tr = setup(t, layout, accelerator, data)
    if t.bridge:  # the loss state (a queue) stays the registered inner loss's
        tr.loss_fn = bridge.wrap_loss(tr.loss_fn, manifest, data, pivot_only)
    if stop is not None:
        tr.stop, tr.best = stop, BestEpoch(t.patience, t.start_margin_se)
    resumed_from = resume(tr)
    if tr.best is not None and tr.stop is not None and resumed_from == 0 and tr.init.kind != "random":
        tr.best.start(score(tr.binder, data, tr.stop), tr.binder)  # a fitted start is a candidate too
    start = time.perf_counter()
    progress = loop(tr, resumed_from, stop_after_steps)
    if progress.stopped:
        finish(accelerator)
        return {"run": t.run, "stopped_at": progress.step, "total_steps": tr.total}
    seconds = time.perf_counter() - start
    accelerator.wait_for_everyone()
    if tr.best is not None:
        tr.best.restore(tr.binder)  # every rank holds the same best weights
    summary = summarize(tr, resumed_from, progress, seconds)
    summary |= bridge.summary(manifest, data, pivot_only, emergent) if t.bridge else {}
    final = tr.binder
    if t.refit and tr.best is not None and tr.best.best_epoch is not None:
        if accelerator.is_main_process:
            export(tr.run.first_fit.root, tr.binder, {"manifest": manifest.to_dict(), "train_summary": summary})
        start, kept = time.perf_counter(), tr.best.best_epoch + 1
        second = refit(t, layout, accelerator, every_row, kept)
        final = second.binder
        summary["refit"] = {"epochs": kept, "train_rows": len(every_row.train_idx), "init": second.init.to_dict(),
                            "seconds": round(time.perf_counter() - start, 2)}
        log.info("refit on all %d training rows for the %d epoch(s) early stopping kept", len(every_row.train_idx), kept)
    if accelerator.is_main_process:
        if "refit" not in summary:  # no refit: a first fit left by an earlier config would be stale
            shutil.rmtree(tr.run.first_fit.root, ignore_errors=True)
        if summary["early_stopping"]:
            plot_curve(tr.run.validation_curve, summary["early_stopping"], t.run)
        export(tr.run.root, final, {"manifest": manifest.to_dict(), "train_summary": summary})
    finish(accelerator)
    return summary


def finish(accelerator) -> None:
    """End trackers; under several processes also tear the process group down, or gloo's threads
    may abort the interpreter's exit."""
    accelerator.wait_for_everyone()
    accelerator.end_training()  # accelerate 1.x also destroys the group here; older versions do not
    if torch.distributed.is_available() and torch.distributed.is_initialized():
        torch.distributed.destroy_process_group()
