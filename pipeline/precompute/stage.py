"""`bindery precompute`: every shard's declared modalities through their frozen encoders.

One Parquet part per (shard, modality) in the embedding store and in the status table; a
part is done when both exist, so a rerun (after a crash, a SIGKILL, a lost rank) redoes only
the missing parts. Shards are split round-robin over ranks (``accelerate launch`` /
``torchrun``) and again over each rank's DataLoader workers; parts are independent, so N
processes write the same stores as one. Rank 0 holds the output's lock for the run (a second
run on the same output is refused, naming the holder), enforces each key once over the stores
(:mod:`.dedupe`) once every rank is done, gathers every rank's figures and writes
``<output>/precompute.json``. A Slurm array task takes its slice of the shards as a rank would
(:mod:`.slurm`); ``engine = "ray"`` schedules the parts on Ray actors with retries instead of
running them here (:mod:`.engines`). See docs/precompute.md.

This is the stage's entry: it checks what the manifest asks for (raising the
:class:`ManifestError` that names the key), picks the bad-sample handler once, and hands each
module below only its own section: :mod:`.plan` (what is missing), :mod:`.cores` (workers
against encoder threads), :mod:`.loader` (worker side), :mod:`.encoding` (device side), :mod:`.rank` (one rank's loop), :mod:`.stats`,
:mod:`.outputs`, :mod:`.dedupe`, :mod:`.lock`, :mod:`.slurm`, :mod:`.engines`.
"""

from __future__ import annotations

import dataclasses
import importlib.util
import json
import logging
import os
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import torch

from pipeline.core.layout import OutputLayout
from pipeline.core.manifest import DatasetConfig, Manifest, ManifestError, PrecomputeConfig, TextConfig
from pipeline.core.samples import label_names
from pipeline.core.store import atomic_write_text
from pipeline.ingest.shards import Shard, expand_shards
from pipeline.precompute.dedupe import dedupe
from pipeline.precompute.encoding import Encoding, pick_device
from pipeline.precompute.engines.base import EngineResult, load_encoding
from pipeline.precompute.engines.local import LocalEngine
from pipeline.precompute.handlers import HANDLERS, Handler, keep_going
from pipeline.precompute.loader import ShardWork
from pipeline.precompute.lock import OutputBusy, OutputLock
from pipeline.precompute.outputs import read_faults, store_counts, write_classes
from pipeline.precompute.plan import MixedEncoders, plan_work
from pipeline.precompute.slurm import Partition, partition
from pipeline.precompute.stats import RankStats, RunStats

log = logging.getLogger(__name__)


def _check_device(pc: PrecomputeConfig) -> None:
    if pc.engine == "ray":  # the actors' devices, not the driver's
        if pc.device.startswith("cuda") and not pc.gpus_per_worker:
            raise ManifestError(f"precompute.gpus_per_worker: 0 with device = {pc.device!r} under engine = \"ray\"; "
                                "give each actor a GPU (gpus_per_worker = 1), or use device = \"auto\" or \"cpu\"")
        return
    if pc.device.startswith("cuda") and not torch.cuda.is_available():
        raise ManifestError(f"precompute.device: {pc.device!r} but torch sees no CUDA GPU "
                            f"(torch {torch.__version__}, CUDA build {torch.version.cuda}); "
                            "use device = \"auto\" or \"cpu\", or run where a GPU is visible")


def _check_engine(pc: PrecomputeConfig, world: int) -> None:
    if pc.engine != "ray":
        return
    if importlib.util.find_spec("ray") is None:
        raise ManifestError("precompute.engine: \"ray\" needs Ray: pip install 'bindery[ray]', "
                            "or set engine = \"local\"")
    if world > 1:
        raise ManifestError(f"precompute.engine: \"ray\" schedules every part from one driver, but this is one "
                            f"of {world} torch.distributed processes; run `bindery precompute` once, not under "
                            "accelerate launch / torchrun, or set engine = \"local\"")


def _check_output(layout: OutputLayout) -> None:
    """The output is a folder, or can be made one (it is made when the run takes its lock)."""
    root = layout.root
    if root.exists() and not root.is_dir():
        raise ManifestError(f"dataset.output: {root} exists and is not a directory; give a folder "
                            "(it is created if missing)")
    parent = next((p for p in root.parents if p.exists()), None)
    if parent is not None and not (parent.is_dir() and os.access(parent, os.W_OK | os.X_OK)) and not root.exists():
        raise ManifestError(f"dataset.output: cannot create {root}: {parent} is not a folder this user can write "
                            "to; give a folder that can be written")


def _check_shards(pattern: str) -> list[Shard]:
    """Every shard the pattern names; a pattern of local paths none of which exists is a ManifestError
    (a `pipe:` command can only be tried; one missing shard among others is a fault, retried by a rerun)."""
    shards = expand_shards(pattern)
    local = [s for s in shards if not s.url.startswith("pipe:")]
    if not shards or (len(local) == len(shards) and not any(Path(s.url).expanduser().exists() for s in local)):
        first = shards[0].url if shards else ""
        raise ManifestError(f"dataset.shards: {pattern!r} matches no shard: none of its {len(shards)} path(s) "
                            f"exists (the first is {first!r}); check the folder and the brace range")
    return shards


def _take_locks(layout: OutputLayout, part: Partition) -> list[OutputLock]:
    """The output's lock; for a Slurm array task, shared, with its slice's lock exclusive (:mod:`.lock`)."""
    if part.array is None:
        return [OutputLock(layout.lock).acquire()]
    task = part.array
    shared = OutputLock(layout.lock, shared=True, holder=f"Slurm array tasks, the latest task {task.task_id}: ").acquire()
    try:
        return [shared, OutputLock(layout.slice_lock(task.index, task.count)).acquire()]
    except OutputBusy:
        shared.release()
        raise


def _lock(layout: OutputLayout, state: Any, part: Partition) -> list[OutputLock]:
    """Rank 0 makes the output folder, takes its lock(s) and tells every rank whether it got them."""
    locks, refused = [], None
    if state.is_main_process:
        try:
            layout.root.mkdir(parents=True, exist_ok=True)
            locks = _take_locks(layout, part)
        except OutputBusy as exc:
            refused = str(exc)
        except OSError as exc:
            refused = f"cannot create {layout.root} ({exc.strerror or exc}); give a folder that can be written"
    if state.num_processes > 1:
        from accelerate.utils import broadcast_object_list

        refused = broadcast_object_list([refused])[0]
    if refused:
        raise ManifestError(f"dataset.output: {refused}")
    return locks


def _plan(shards: list[Shard], encoders: dict[str, Encoding], layout: OutputLayout, part: Partition) -> list[ShardWork]:
    """This process's missing parts; a finished part made by another encoder names the key to change."""
    try:
        return plan_work(shards, list(encoders), layout, part.index, part.count,
                         {m: e.metadata for m, e in encoders.items()})
    except MixedEncoders as exc:
        raise ManifestError(
            f"modalities.{exc.modality}.encoder: {exc}; one store must not mix encoders: set a new "
            f"dataset.output, or delete {layout.embeddings(exc.modality)} to recompute {exc.modality}") from None


def _encode(work: list[ShardWork], manifest: Manifest, encoders: dict[str, Encoding], handler: Handler,
            rank: int, world: int, device: torch.device) -> EngineResult:
    """This process's missing parts through the configured engine."""
    pc = manifest.precompute
    if pc.engine == "ray":
        from pipeline.precompute.engines.ray import RayEngine
        from pipeline.precompute.engines.ray_worker import RayJob

        job = RayJob(str(manifest.layout.root), manifest.dataset.name, dict(manifest.modalities), pc)
        return RayEngine(job).run(work)
    return LocalEngine(encoders, manifest.layout, pc, handler, rank, world, device).run(work)


def _write_class_names(text: TextConfig | None, layout: OutputLayout, label_key: str,
                       text_encoding: Callable[[], Encoding]) -> int:
    """Embed the class names found under ``label_key`` with the text encoder; the number written."""
    if text is None:
        return 0
    labels = label_names(layout, label_key)
    if not labels:
        return 0
    enc = text_encoding()
    write_classes(layout, labels, text.class_prompt, lambda t: enc.texts(t, text.batch_size),
                  text.dtype, {**enc.metadata, "label_key": label_key})
    return len(labels)


def _class_names(text: TextConfig | None, layout: OutputLayout, label_key: str,
                 text_encoding: Callable[[], Encoding], handler: Handler) -> tuple[int, str]:
    """(class names embedded, the error that stopped them or ""): a side output, the stores stand without it."""
    try:
        return _write_class_names(text, layout, label_key, text_encoding), ""
    except Exception as exc:
        keep_going(handler, exc)
        log.error("class-name embeddings not written: %s", exc)
        return 0, f"{type(exc).__name__}: {exc}"


def _driver_side(cfg: Any, pc: PrecomputeConfig) -> Any:
    """A ray driver's encoders stay on the CPU and never decode images: the actors check and use
    ``[modalities.image] decode`` on their own devices (a ManifestError there, on a CPU actor)."""
    return dataclasses.replace(cfg, decode="cpu") if pc.engine == "ray" and hasattr(cfg, "decode") else cfg


def run(manifest: Manifest) -> dict[str, Any]:
    from accelerate import PartialState

    pc, layout = manifest.precompute, manifest.layout
    _check_device(pc)
    shards = _check_shards(manifest.dataset.shards)
    _check_output(layout)
    os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
    state = PartialState(cpu=pc.device == "cpu" or not torch.cuda.is_available())
    _check_engine(pc, state.num_processes)
    part = partition(state.process_index, state.num_processes)
    # the driver of a ray run keeps its encoders on the CPU: it only plans and embeds class names
    device = torch.device("cpu") if pc.engine == "ray" else pick_device(pc.device, state)
    t_start = time.perf_counter()
    # Every modality's encoder, even with nothing to encode: a finished part is reused only if it
    # was made by the same encoder (STORE_IDENTITY: name, weights digest, dim, dtype, normalisation).
    encoders = {m: load_encoding(m, _driver_side(cfg, pc), pc, manifest.dataset.name, device)
                for m, cfg in manifest.modalities.items()}
    locks = _lock(layout, state, part)  # nothing is written before this
    try:
        return _run(manifest, shards, state, part, encoders, t_start)
    finally:
        for lock in locks:
            lock.release()


def _run(manifest: Manifest, shards: list[Shard], state: Any, part: Partition, encoders: dict[str, Encoding],
         t_start: float) -> dict[str, Any]:
    from accelerate.utils import gather_object

    pc, layout = manifest.precompute, manifest.layout
    handler = HANDLERS[pc.handler]
    rank, world = state.process_index, state.num_processes
    device = next(iter(encoders.values())).device
    work = _plan(shards, encoders, layout, part)
    log.info("slice %d/%d (rank %d/%d) on %s: %d shards with missing parts", part.index, part.count, rank, world,
             device, len(work))
    result = _encode(work, manifest, encoders, handler, rank, world, device)
    if result.engine == "local":  # a ray worker's wall is the sum of its parts'
        result.stats[0].wall_s = time.perf_counter() - t_start
    all_stats = [s for r in gather_object([result.stats]) for s in r] if world > 1 else result.stats
    state.wait_for_everyone()
    if rank != 0:
        return {"rank": rank, "world_size": world}
    # an array task sees only its slice finished: the pass over the whole store is the plain run's (docs)
    deduplicated = dedupe(layout, list(manifest.modalities), [s.shard_id for s in shards]) if part.array is None else None
    text = manifest.modalities.get("text")
    classes, classes_error = _class_names(text, layout, manifest.eval.label_key, lambda: encoders["text"], handler)
    summary = _summary(manifest.dataset, list(manifest.modalities), RankStats.merge(all_stats), world, classes,
                       time.perf_counter() - t_start)
    summary["deduplicated"] = deduplicated  # occurrences moved to `duplicate` rows by the post-pass, this run
    summary["engine"] = result.to_json()
    summary["partition"] = part.to_json()
    if classes_error:
        summary["classes_error"] = classes_error
    atomic_write_text(layout.precompute_summary, json.dumps(summary, indent=2))
    log.info("precompute done: %s", json.dumps(summary["counts"]))
    return summary


def _summary(dataset: DatasetConfig, modalities: list[str], ranks: RunStats, world: int, classes: int,
             wall: float) -> dict[str, Any]:
    layout = OutputLayout(dataset.output)
    return {
        "dataset": dataset.name,
        "output": str(layout.root),
        "world_size": world,
        "counts": store_counts(layout, modalities),  # the whole store, every run
        "this_run": ranks.this_run(modalities),
        "faults": read_faults(layout),  # the whole store's, like counts
        "classes": classes,
        **ranks.seconds(),
        "wall_s": wall,
        "items_per_s": ranks.stored / wall if wall > 0 else 0.0,
        "ranks": ranks.to_json(),
    }
