"""`bindery precompute`: every shard's declared modalities through their frozen encoders.

One Parquet part per (shard, modality) in the embedding store and in the status table; a
part is done when both exist, so a rerun (after a crash, a SIGKILL, a lost rank) redoes only
the missing parts. Shards are split round-robin over ranks (``accelerate launch`` /
``torchrun``) and again over each rank's DataLoader workers; parts are independent, so N
processes write the same stores as one. Rank 0 gathers every rank's figures and writes
``<output>/precompute.json``. See docs/precompute.md.
"""

from __future__ import annotations

import dataclasses
import json
import logging
import os
import time
from collections import defaultdict
from pathlib import Path
from typing import Any

import numpy as np
import torch

from pipeline.core.layout import part_name
from pipeline.core.manifest import Manifest, ManifestError
from pipeline.core.store import (
    atomic_write_text,
    embeddings_dir,
    read_metadata,
    status_dir,
    write_embeddings,
    write_status,
)
from pipeline.encoders.base import Encoder
from pipeline.encoders.registry import build_encoder
from pipeline.ingest.shards import expand_shards, split_by
from pipeline.precompute.loader import ModalityPlan, ShardDataset, ShardWork
from pipeline.precompute.outputs import (
    metadata_dir,
    read_faults,
    read_labels,
    record_fault,
    store_counts,
    write_classes,
    write_metadata,
)

log = logging.getLogger(__name__)

AUTOCAST = {"bf16": torch.bfloat16, "fp16": torch.float16}


IDENTITY = ("encoder", "digest", "dtype")  # store metadata that must match for a part to be reused


def part_done(output: Path, modality: str, shard_id: str, metadata: dict[str, Any] | None = None) -> bool:
    """Both parts exist; with ``metadata`` (the current encoder's), the embeddings part must match it."""
    name = part_name(shard_id)
    emb = embeddings_dir(output, modality) / name
    if not (emb.exists() and (status_dir(output, modality) / name).exists()):
        return False
    if metadata is not None:
        _check_same_encoder(emb, modality, metadata)
    return True


def _check_same_encoder(part: Path, modality: str, metadata: dict[str, Any]) -> None:
    old = read_metadata(part)
    diff = [f"{k} {old.get(k)!r} -> {metadata[k]!r}" for k in IDENTITY if old.get(k) != metadata[k]]
    if diff:
        raise ManifestError(
            f"modalities.{modality}.encoder: {part} was made by another encoder ({'; '.join(diff)}); "
            f"one store must not mix encoders: set a new dataset.output, or delete "
            f"{embeddings_dir(part.parents[2], modality)} to recompute {modality}")


def plan_work(manifest: Manifest, rank: int, world: int,
              metadata: dict[str, dict[str, Any]] | None = None) -> list[ShardWork]:
    """This rank's shards, each with only what is missing of it. With ``metadata`` (per modality,
    the current encoder's store metadata), a finished part made by another encoder is a ManifestError."""
    out = manifest.output
    work = []
    for shard in split_by(expand_shards(manifest.dataset.shards), rank, world):
        mods = tuple(m for m in manifest.modalities
                     if not part_done(out, m, shard.shard_id, metadata and metadata.get(m)))
        meta = not (metadata_dir(out) / part_name(shard.shard_id)).exists()
        if mods or meta:
            work.append(ShardWork(shard, mods, meta))
    return work


def _device(setting: str, state: Any) -> torch.device:
    if setting == "auto":
        return state.device if torch.cuda.is_available() else torch.device("cpu")
    if setting == "cuda":
        return torch.device("cuda", state.local_process_index)
    return torch.device(setting)


class Encoding:
    """One modality's encoder on the device: batches -> unit vectors (and the rows it could not encode)."""

    def __init__(self, modality: str, encoder: Encoder, manifest: Manifest, device: torch.device):
        self.modality, self.encoder, self.device = modality, encoder.to(device), device
        cfg = manifest.modalities[modality]
        pc = manifest.precompute
        self.dtype = cfg.dtype
        self.autocast = AUTOCAST.get(pc.precision) if device.type == "cuda" else None
        self.forward = torch.compile(encoder.encode, dynamic=True) if pc.compile else encoder.encode
        self.metadata = _json_safe({
            "encoder": encoder.name, "digest": encoder.digest(), "dim": encoder.dim, "dtype": cfg.dtype,
            "normalized": True, "modality": modality, "dataset": manifest.dataset.name,
            "precision": pc.precision if self.autocast else "fp32", "device": device.type,
            "preprocessing": {**dataclasses.asdict(cfg), **encoder.provenance(),
                              **({"sample_rate": encoder.sample_rate} if encoder.sample_rate else {})},
        })

    def __call__(self, batch: dict[str, torch.Tensor]) -> tuple[np.ndarray, np.ndarray]:
        """(unit vectors (B, dim) float32, finite mask (B,))."""
        batch = {k: v.to(self.device, non_blocking=True) for k, v in batch.items()}
        with torch.inference_mode(), torch.autocast(self.device.type, dtype=self.autocast or torch.bfloat16,
                                                    enabled=self.autocast is not None):
            feats = self.forward(batch)
        feats = feats.float()
        norms = feats.norm(dim=-1, keepdim=True)
        ok = torch.isfinite(feats).all(dim=-1) & (norms.squeeze(-1) > 0)
        unit = feats / norms.clamp(min=1e-12)
        return unit.cpu().numpy(), ok.cpu().numpy()

    def texts(self, texts: list[str], batch_size: int) -> np.ndarray:
        pre = self.encoder.preprocessor()
        parts = [self(pre(texts[i:i + batch_size])) for i in range(0, len(texts), batch_size)]
        if not all(ok.all() for _, ok in parts):
            raise ValueError("the text encoder gave a non-finite or zero vector for a class name")
        return np.concatenate([v for v, _ in parts])


def _json_safe(value: dict[str, Any]) -> dict[str, Any]:
    """Provenance as plain JSON (processor configs may hold their own mapping types)."""
    return json.loads(json.dumps(value, default=lambda o: dict(o) if hasattr(o, "items") else str(o)))


def _num_workers(setting: int, world: int) -> int:
    if setting >= 0:
        return setting
    return max(1, min(8, (os.cpu_count() or 2) // max(world, 1) - 1))


def _worker_init(_: int) -> None:
    torch.set_num_threads(1)


def _share_cpu(workers: int, world: int, device: torch.device) -> None:
    """On the CPU, leave the DataLoader workers their cores: oversubscribed intra-op threads
    spin against the decoders and the encoder slows down many-fold. OMP_NUM_THREADS wins."""
    if device.type == "cpu" and workers and "OMP_NUM_THREADS" not in os.environ:
        torch.set_num_threads(max(1, (os.cpu_count() or 2) // max(world, 1) - workers))


def _loader(dataset: ShardDataset, manifest: Manifest, world: int, device: torch.device):
    workers = _num_workers(manifest.precompute.num_workers, world)
    _share_cpu(workers, world, device)
    extra = {"prefetch_factor": manifest.precompute.prefetch_factor, "worker_init_fn": _worker_init} if workers else {}
    return torch.utils.data.DataLoader(dataset, batch_size=None, num_workers=workers,
                                       pin_memory=device.type == "cuda", **extra)


def _write_shard(manifest: Manifest, msg: dict, acc: dict, encoders: dict[str, Encoding], stats: dict) -> None:
    out, shard = manifest.output, msg["shard"]
    record_fault(out, shard, msg["fault"])
    if msg["fault"]:
        stats["faults"][shard] = msg["fault"]
        if not msg["samples"] and not any(msg["status"].values()):
            # Not one sample read (a missing file, a failing pipe): no parts, so a rerun retries it.
            log.warning("shard %s could not be read; its parts are left for a rerun", shard)
            return
    for m, rows in msg["status"].items():
        keys, vecs, bad = acc.pop((shard, m), ([], [], []))
        dim = encoders[m].encoder.dim
        vectors = np.concatenate(vecs) if vecs else np.zeros((0, dim), np.float32)
        all_rows = rows + bad
        write_status(status_dir(out, m) / part_name(shard), all_rows)
        write_embeddings(embeddings_dir(out, m) / part_name(shard), keys, vectors, dtype=encoders[m].dtype,
                         metadata={**encoders[m].metadata, "shard": shard})
        stats["parts_written"] += 1
        stats["counts"][m]["ok"] += len(keys)
        for _, status, _ in all_rows:
            stats["counts"][m][status] += 1
    if msg["metadata"] is not None:
        write_metadata(out, shard, msg["metadata"])


def _encode_rank(manifest: Manifest, work: list[ShardWork], device: torch.device, rank: int,
                 world: int, stats: dict, encoders: dict[str, Encoding]) -> None:
    from tqdm import tqdm

    needed = {m for w in work for m in w.modalities}
    plans = {m: ModalityPlan(manifest.modalities[m], e.encoder.preprocessor(),
                             getattr(manifest.modalities[m], "sample_rate", 0) or e.encoder.sample_rate)
             for m, e in encoders.items() if m in needed}
    if not work:
        return
    handler = manifest.precompute.handler
    loader = _loader(ShardDataset(work, plans, handler), manifest, world, device)
    acc: dict[tuple[str, str], tuple[list, list, list]] = {}
    bar = tqdm(desc=f"precompute rank {rank}", unit="item", disable=rank != 0, dynamic_ncols=True)
    t_loop = t_wait = time.perf_counter()
    for msg in loader:
        stats["wait_s"] += time.perf_counter() - t_wait
        if msg["kind"] == "end":
            stats["read_s"] += msg["read_s"]
            stats["samples_read"] += msg["samples"]
            stats["shards"].append(msg["shard"])
            if msg["fault"] and handler == "raise":
                raise RuntimeError(f"shard {msg['shard']}: {msg['fault']}")
            t0 = time.perf_counter()
            _write_shard(manifest, msg, acc, encoders, stats)
            stats["write_s"] += time.perf_counter() - t0
        else:
            m, keys = msg["modality"], msg["keys"]
            t0 = time.perf_counter()
            try:
                vecs, ok = encoders[m](msg["batch"])
            except Exception as exc:
                if handler == "raise":
                    raise
                log.warning("%s batch of shard %s failed to encode: %s", m, msg["shard"], exc)
                vecs, ok = None, np.zeros(len(keys), bool)
                why = f"{m}: encoder failed on its batch: {type(exc).__name__}: {exc}"[:2000]
                if device.type == "cuda":
                    torch.cuda.empty_cache()  # after an OOM, the next batch gets the memory back
            else:
                why = f"{m}: the encoder gave a non-finite or zero vector"
            spent = time.perf_counter() - t0
            stats["encode_s"] += spent
            stats["encode_s_by_modality"][m] = stats["encode_s_by_modality"].get(m, 0.0) + spent
            k_list, v_list, bad = acc.setdefault((msg["shard"], m), ([], [], []))
            k_list.extend(k for k, good in zip(keys, ok, strict=True) if good)
            if vecs is not None and ok.any():
                v_list.append(vecs[ok])
            bad.extend((k, "error", why) for k, good in zip(keys, ok, strict=True) if not good)
            bar.update(len(keys))
        t_wait = time.perf_counter()
    bar.close()
    stats["loop_s"] = time.perf_counter() - t_loop  # reading to last write, models already loaded


def _write_class_names(manifest: Manifest, encoders: dict[str, Encoding], device: torch.device) -> int:
    text = manifest.modalities.get("text")
    if text is None:
        return 0
    labels = read_labels(manifest.output, manifest.eval.label_key)
    if not labels:
        return 0
    enc = encoders.get("text") or Encoding("text", build_encoder("text", text), manifest, device)
    write_classes(manifest.output, labels, text.class_prompt, lambda t: enc.texts(t, text.batch_size),
                  text.dtype, {**enc.metadata, "label_key": manifest.eval.label_key})
    return len(labels)


def _new_stats(manifest: Manifest, rank: int, device: torch.device) -> dict[str, Any]:
    return {"rank": rank, "device": str(device), "shards": [], "parts_written": 0, "samples_read": 0,
            "counts": {m: defaultdict(int) for m in manifest.modalities}, "faults": {},
            "read_s": 0.0, "wait_s": 0.0, "encode_s": 0.0, "write_s": 0.0, "loop_s": 0.0,
            "encode_s_by_modality": {}}


def run(manifest: Manifest) -> dict[str, Any]:
    from accelerate import PartialState
    from accelerate.utils import gather_object

    os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
    if manifest.precompute.device.startswith("cuda") and not torch.cuda.is_available():
        raise ManifestError(f"precompute.device: {manifest.precompute.device!r} but torch sees no CUDA GPU "
                            f"(torch {torch.__version__}, CUDA build {torch.version.cuda}); "
                            "use device = \"auto\" or \"cpu\", or run where a GPU is visible")
    want_cpu = manifest.precompute.device == "cpu" or not torch.cuda.is_available()
    state = PartialState(cpu=want_cpu)
    rank, world = state.process_index, state.num_processes
    device = _device(manifest.precompute.device, state)
    t_start = time.perf_counter()
    # Every modality's encoder, even with nothing to encode: a finished part is reused only if it
    # was made by the same encoder (name, weights digest, dtype).
    encoders = {m: Encoding(m, build_encoder(m, cfg), manifest, device) for m, cfg in manifest.modalities.items()}
    work = plan_work(manifest, rank, world, {m: e.metadata for m, e in encoders.items()})
    log.info("rank %d/%d on %s: %d shards with missing parts", rank, world, device, len(work))
    stats = _new_stats(manifest, rank, device)
    _encode_rank(manifest, work, device, rank, world, stats, encoders)
    stats["wall_s"] = time.perf_counter() - t_start
    stats["counts"] = {m: dict(c) for m, c in stats["counts"].items()}
    all_stats = gather_object([stats]) if world > 1 else [stats]
    state.wait_for_everyone()
    if rank != 0:
        return {"rank": rank, "world_size": world}
    try:
        classes, classes_error = _write_class_names(manifest, encoders, device), ""
    except Exception as exc:  # class names are a side output: the stores stand without them
        if manifest.precompute.handler == "raise":
            raise
        log.error("class-name embeddings not written: %s", exc)
        classes, classes_error = 0, f"{type(exc).__name__}: {exc}"
    summary = _summary(manifest, all_stats, world, classes, time.perf_counter() - t_start)
    if classes_error:
        summary["classes_error"] = classes_error
    # atomic: concurrent runs over shard slices (a Slurm array) never leave half a file
    atomic_write_text(manifest.output / "precompute.json", json.dumps(summary, indent=2))
    log.info("precompute done: %s", json.dumps(summary["counts"]))
    return summary


def _summary(manifest: Manifest, ranks: list[dict], world: int, classes: int, wall: float) -> dict[str, Any]:
    items = sum(sum(c.get("ok", 0) for c in r["counts"].values()) for r in ranks)
    return {
        "dataset": manifest.dataset.name,
        "output": str(manifest.output),
        "world_size": world,
        "counts": store_counts(manifest.output, list(manifest.modalities)),  # the whole store, every run
        "this_run": {m: {s: sum(r["counts"][m].get(s, 0) for r in ranks) for s in ("ok", "missing", "corrupt", "error")}
                     for m in manifest.modalities},
        "faults": read_faults(manifest.output),  # the whole store's, like counts
        "classes": classes,
        "read_s": sum(r["read_s"] for r in ranks),
        "wait_s": sum(r["wait_s"] for r in ranks),
        "encode_s": sum(r["encode_s"] for r in ranks),
        "write_s": sum(r["write_s"] for r in ranks),
        "wall_s": wall,
        "items_per_s": items / wall if wall > 0 else 0.0,
        "ranks": sorted(ranks, key=lambda r: r["rank"]),
    }
