"""Feeding the encoder: CPU milliseconds per sample outside the encoder, and the feed rate they allow.

For every row (a modality and the preprocessing of one encoder) and every source of real
inputs (:mod:`bench.feed_inputs`: the demo shards, the bench data, real photos, larger files
built here), the pipeline's own steps are run and timed per sample in CPU time
(``time.process_time``, one intra-op thread, as in a DataLoader worker), so a busy machine
inflates them less than wall time:

* ``decode_ms``     -- the decoder of the member (worker side);
* ``preprocess_ms`` -- the encoder's preprocessor over a batch, per sample (worker side);
* ``h2d_ms``        -- the batch to the encoder's device (main process; ``h2d_kb``: bytes moved);
* ``device_ms``     -- the encoder's own preparation on its device (resampling, features, resize);
  on a GPU that is GPU time, on the CPU it is CPU time of the main process;
* ``write_ms``      -- the embeddings part written (Parquet, the encoder's dim and dtype).

The projection: a host with ``--cores`` cores runs one main process (device copies, launches,
writes) and ``cores - 1`` DataLoader workers (decode + preprocess), so it feeds
``min((cores - 1) * 1000 / worker_ms, 1000 / main_ms)`` samples/s, ``main_ms = h2d_ms +
write_ms``. Against the bare encoder's samples/s on an H100 in bf16 (issue 17's table:
ViT-L/14@336 1,200, ViT-B/16 11,000, an ImageBind-size audio tower 8,800; video and points
through ViT-B/16 at 8 frames and 6 views per sample) it is printed as a ratio: >= 0.9 keeps
the GPU busy. A row's headline is its slowest source. The towers are tiny random models
with the full-size preprocessing (input size, mel bins, frames): the encoder's weights do not
change what the CPU spends. ``python -m bench.feed [--small] [--cores 16] [--device cpu]``.
"""

from __future__ import annotations

import argparse
import json
import logging
import tempfile
import time
from dataclasses import dataclass, field
from functools import partial
from pathlib import Path
from typing import Any

import numpy as np
import torch

from bench import feed_inputs
from bench import precompute_data as data
from bench.run import cpu_model

log = logging.getLogger(__name__)

TINY = dict(hidden_size=32, intermediate_size=64, num_hidden_layers=1, num_attention_heads=2)
MODELS = {  # name: folder -> saved model folder (tiny towers, full-size preprocessing)
    "vit-224": partial(data.save_vision, image_size=224, patch_size=16, **TINY),
    "vit-336": partial(data.save_vision, image_size=336, patch_size=14, **TINY),
    "clip-text": partial(data.save_text, **TINY),
    "ast": partial(data.save_audio, **TINY),  # ASTFeatureExtractor defaults: 128 mel bins x 1024 frames
}
VIT_B16, VIT_L14_336, AUDIO_TOWER = 11_000.0, 1_200.0, 8_800.0  # bare samples/s, H100, bf16 (issue 17)


@dataclass(frozen=True)
class FeedRow:
    modality: str
    encoder: str  # a key of MODELS (loaded as hf:<folder>) or a registered encoder name
    gpu_model: str  # the encoder of the GPU table this row's preprocessing feeds
    gpu_rate: float | None  # its bare samples/s (None: not in the table)
    batch_size: int
    options: dict[str, Any] = field(default_factory=dict)  # more [modalities.<m>] keys


ROWS = {
    "image-vit-b16-224": FeedRow("image", "vit-224", "ViT-B/16", VIT_B16, 256),
    "image-vit-l14-336": FeedRow("image", "vit-336", "ViT-L/14@336", VIT_L14_336, 128),
    "image-mobilenet-v2": FeedRow("image", "mobilenet-v2", "", None, 64),
    "text-clip": FeedRow("text", "clip-text", "", None, 512),
    "audio-ast": FeedRow("audio", "ast", "ImageBind-size audio tower", AUDIO_TOWER, 64, {"seconds": 10.0}),
    "audio-aisfx": FeedRow("audio", "aisfx", "", None, 32, {"seconds": 10.0}),
    "video-vit-b16-224": FeedRow("video", "vit-224", "ViT-B/16 x 8 frames", VIT_B16 / 8, 32, {"frames": 8}),
    "points-vit-b16-224": FeedRow("points", "vit-224", "ViT-B/16 x 6 views", VIT_B16 / 6, 64,
                                  {"points": 8192, "views": 6}),
}


@dataclass
class Costs:
    """CPU seconds summed over the samples of one source, per step."""

    samples: int = 0
    failed: int = 0
    decode: float = 0.0
    preprocess: float = 0.0
    h2d: float = 0.0
    h2d_bytes: int = 0
    device: float = 0.0
    write: float = 0.0
    wall: float = 0.0

    def per_sample(self) -> dict[str, float]:
        n = max(self.samples, 1)
        ms = {f"{k}_ms": 1000 * getattr(self, k) / n for k in ("decode", "preprocess", "h2d", "device", "write")}
        return {"samples": self.samples, "failed": self.failed, **ms, "h2d_kb": self.h2d_bytes / 1024 / n,
                "worker_ms": ms["decode_ms"] + ms["preprocess_ms"], "main_ms": ms["h2d_ms"] + ms["write_ms"],
                "wall_ms": 1000 * self.wall / n}


def _cpu(fn, *args):
    """(result, CPU seconds of this process)."""
    t0 = time.process_time()
    out = fn(*args)
    return out, time.process_time() - t0


def _sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def _decode(plan, modality: str, members) -> tuple[list[str], list[Any], float, int]:
    from pipeline.ingest.decode import DecodeError, decode_member

    keys, items, spent, failed = [], [], 0.0, 0
    for key, ext, raw in members:
        t0 = time.process_time()
        try:
            items.append(decode_member({"__key__": key, ext: raw}, modality, plan.config, plan.sample_rate,
                                       plan.image_side))
            keys.append(key)
        except DecodeError as exc:
            failed += 1
            log.warning("%s %s: %s", modality, key, exc)
        spent += time.process_time() - t0
    return keys, items, spent, failed


def _to_device(batch: dict[str, torch.Tensor], device: torch.device) -> dict[str, torch.Tensor]:
    out = {k: v.to(device, non_blocking=True) for k, v in batch.items()}
    _sync(device)
    return out


def _prepare(encoding, batch: dict[str, torch.Tensor], device: torch.device) -> None:
    with torch.inference_mode():
        encoding.prepare(batch)
    _sync(device)


def measure_source(encoding, members, batch_size: int, device: torch.device, folder: Path) -> Costs:
    """Every step of the pipeline outside the encoder over ``members``, timed per step."""
    from pipeline.core.store import write_embeddings
    from pipeline.precompute.loader import _tensors

    plan, m = encoding.plan(), encoding.modality
    costs, wall0, keys_all = Costs(), time.perf_counter(), []
    for start in range(0, len(members), batch_size):
        keys, items, spent, failed = _decode(plan, m, members[start:start + batch_size])
        costs.decode, costs.failed = costs.decode + spent, costs.failed + failed
        if not items:
            continue
        batch, spent = _cpu(lambda xs: _tensors(plan.preprocess(xs)), items)
        costs.preprocess += spent
        on_device, spent = _cpu(_to_device, batch, device)
        costs.h2d += spent
        costs.h2d_bytes += sum(v.numel() * v.element_size() for v in batch.values())
        _, spent = _cpu(_prepare, encoding, on_device, device)
        costs.device += spent
        keys_all += keys
        costs.samples += len(keys)
    vectors = np.random.default_rng(0).normal(size=(len(keys_all), encoding.encoder.dim)).astype(np.float32)
    vectors /= np.linalg.norm(vectors, axis=1, keepdims=True)
    _, costs.write = _cpu(write_embeddings, folder / "part-feed.parquet", keys_all, vectors, encoding.dtype,
                          encoding.metadata)
    costs.wall = time.perf_counter() - wall0
    return costs


def project(figures: dict[str, float], cores: int, gpu_rate: float | None) -> dict[str, Any]:
    """The feed rate of a ``cores``-core host and its ratio to the bare GPU encoder."""
    workers = max(cores - 1, 1)
    feed = min(workers * 1000 / max(figures["worker_ms"], 1e-9), 1000 / max(figures["main_ms"], 1e-9))
    out: dict[str, Any] = {"cores": cores, "feed_per_s": feed}
    if gpu_rate:
        out.update(gpu_rate=gpu_rate, ratio=feed / gpu_rate, worker_budget_ms=workers * 1000 / (0.9 * gpu_rate))
    return out


def _encoding(name: str, row: FeedRow, models: dict[str, Path], device: torch.device):
    from pipeline.core.manifest import from_dict
    from pipeline.encoders.registry import build_encoder
    from pipeline.precompute.encoding import Encoding

    spec = f"hf:{models[row.encoder]}" if row.encoder in MODELS else row.encoder
    manifest = from_dict({
        "dataset": {"name": "bench-feed", "shards": "none.tar", "output": "none"},
        "modalities": {row.modality: {"encoder": spec, "batch_size": row.batch_size, **row.options}},
        "precompute": {"device": str(device)},
    })
    cfg = manifest.modalities[row.modality]
    return Encoding(row.modality, build_encoder(row.modality, cfg), cfg, manifest.precompute, "bench-feed", device)


def _warm_up(encoding, folder: Path) -> None:
    """One untimed write: the first Parquet write of a process pays for imports and set-up."""
    from pipeline.core.store import write_embeddings

    folder.mkdir(parents=True, exist_ok=True)
    vec = np.ones((1, encoding.encoder.dim), np.float32) / np.sqrt(encoding.encoder.dim)
    write_embeddings(folder / "warm-up.parquet", ["warm-up"], vec, encoding.dtype, encoding.metadata)


def measure_row(name: str, row: FeedRow, models: dict[str, Path], device: torch.device, root: Path,
                limit: int, cores: int) -> dict[str, Any]:
    encoding = _encoding(name, row, models, device)
    _warm_up(encoding, root / name)
    out: dict[str, Any] = {"modality": row.modality, "encoder": row.encoder, "gpu_model": row.gpu_model,
                           "batch_size": row.batch_size, "sources": {}}
    for source, members in feed_inputs.sources(row.modality, limit).items():
        folder = root / name / source
        folder.mkdir(parents=True, exist_ok=True)
        figures = measure_source(encoding, members, row.batch_size, device, folder).per_sample()
        out["sources"][source] = figures
        log.info("%s / %s: %s", name, source, {k: round(v, 3) for k, v in figures.items()})
    slowest = max(out["sources"], key=lambda s: out["sources"][s]["worker_ms"] + out["sources"][s]["main_ms"])
    out["headline_source"] = slowest
    out.update({k: out["sources"][slowest][k] for k in ("worker_ms", "main_ms", "device_ms")})
    out["projected"] = project(out["sources"][slowest], cores, row.gpu_rate)
    return out


def measure(small: bool, device: str, cores: int = 16) -> dict[str, Any]:
    from pipeline.encoders.base import EncoderError

    dev = torch.device("cuda" if device == "auto" and torch.cuda.is_available() else
                       ("cpu" if device == "auto" else device))
    threads = torch.get_num_threads()
    torch.set_num_threads(1)  # one intra-op thread: what a DataLoader worker gets
    results: dict[str, Any] = {"device": str(dev), "cores": cores}
    try:
        with tempfile.TemporaryDirectory(prefix="bench-feed-") as tmp:
            root, models = Path(tmp), {}
            for name, row in ROWS.items():
                if row.encoder in MODELS and row.encoder not in models:
                    models[row.encoder] = MODELS[row.encoder](root / "models" / row.encoder)
                log.info("feed bench %s on %s", name, dev)
                try:
                    results[name] = measure_row(name, row, models, dev, root, 24 if small else 128, cores)
                except EncoderError as exc:  # a built-in whose weights package is not installed here
                    log.warning("feed bench %s skipped: %s", name, exc)
                    results[name] = {"skipped": str(exc)}
    finally:
        torch.set_num_threads(threads)
    return results


def table(res: dict[str, Any]) -> str:
    lines = [f"{'row':<20}{'source':<11}{'decode':>8}{'prep':>8}{'h2d':>7}{'device':>8}{'write':>7}{'worker':>8}"
             f"  (CPU ms/sample)   feed@{res['cores']}c/s  GPU/s   ratio"]
    for name, r in res.items():
        if not isinstance(r, dict) or "skipped" in r:
            continue
        for source, f in r["sources"].items():
            p = r["projected"] if source == r["headline_source"] else None
            tail = (f"{p['feed_per_s']:>14,.0f}{p.get('gpu_rate') or 0:>8,.0f}"
                    f"{p['ratio'] if 'ratio' in p else float('nan'):>8.2f}") if p else ""
            lines.append(f"{name:<20}{source:<11}{f['decode_ms']:>8.2f}{f['preprocess_ms']:>8.2f}{f['h2d_ms']:>7.2f}"
                         f"{f['device_ms']:>8.2f}{f['write_ms']:>7.3f}{f['worker_ms']:>8.2f}{'':<18}{tail}")
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--small", action="store_true", help="fewer inputs per source: a minute or two")
    parser.add_argument("--device", default="auto")
    parser.add_argument("--cores", type=int, default=16, help="cores of the GPU host the projection is for")
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s: %(message)s")
    res = measure(args.small, args.device, args.cores)
    res["cpu"] = cpu_model()  # bench.run names the CPU in its own report; a standalone run names it here
    print(table(res))
    print(json.dumps(res, indent=2))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
