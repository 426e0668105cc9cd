"""Bare encoder vs precompute end to end, per modality, same run, same encoder.

For every row (a modality and an encoder):

* bare: one preprocessed batch already on the device (the encoder's own preprocessor over
  decoded members of the row's shards, then its device-side ``prepare``), encoder forward only, bf16 autocast on CUDA,
  warm-up excluded, CUDA synchronised; the same batch size as the end-to-end run;
* end to end: ``pipeline.precompute.stage.run`` over tar shards of real-looking members (decode in
  the DataLoader workers, preprocess, device transfer, encode, normalise, Parquet writes),
  timed from the first read to the last write (``ranks[0].loop_s``; model loading excluded);
* their ratio, and the peak GPU memory of each (``null`` off CUDA).

Rows: image at ViT-B/16@224 and ViT-L/14@336; text on a 24-layer x 1024 CLIP text tower over
~32-token captions; audio on a ViT-B-sized AST over 5 s FLAC; video as 8 frames of MP4 clips
through the ViT-B/16 tower; points as 6 depth renders of ``.npy`` clouds through the ViT-B/16
tower. Random weights, saved with ``save_pretrained`` and loaded through ``hf:`` (see
:mod:`bench.precompute_data`). ``--small`` runs the same rows with tiny towers and inputs.
EBind's backbones (PE-Core-L14-336, ImageBind-huge audio, Uni3D-g) run at their real sizes
with ``weights = "random"``; with ``--small`` on small inputs (``EBIND_SMALL`` says which), and
only when named: ``python -m bench.precompute --small --device cpu --only pe-core,imagebind,uni3d``
(``just bench-ebind``; many minutes on 2 cores).
``python -m bench.precompute [--small] [--device cpu|cuda]``.
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import tempfile
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from functools import partial
from pathlib import Path
from typing import Any

import numpy as np
import torch

from bench import precompute_data as data

log = logging.getLogger(__name__)

VIT_B16 = dict(image_size=224, patch_size=16, hidden_size=768, intermediate_size=3072, num_hidden_layers=12,
               num_attention_heads=12)
VIT_L14_336 = dict(image_size=336, patch_size=14, hidden_size=1024, intermediate_size=4096, num_hidden_layers=24,
                   num_attention_heads=16)
VIT_TINY = dict(image_size=64, patch_size=16, hidden_size=96, intermediate_size=192, num_hidden_layers=2,
                num_attention_heads=2)
MODELS: dict[str, Callable[[Path], Path]] = {  # name: folder -> saved model folder
    "vit-b16-224": partial(data.save_vision, **VIT_B16),
    "vit-l14-336": partial(data.save_vision, **VIT_L14_336),
    "text-l24-1024": partial(data.save_text, hidden_size=1024, intermediate_size=4096, num_hidden_layers=24,
                             num_attention_heads=16),
    "ast-b16": partial(data.save_audio),  # ASTConfig defaults: ViT-B, 128 mel bins x 1024 frames
    "vit-tiny-64": partial(data.save_vision, **VIT_TINY),
    "text-tiny": partial(data.save_text, hidden_size=64, intermediate_size=128, num_hidden_layers=2,
                         num_attention_heads=2),
    "ast-tiny": partial(data.save_audio, hidden_size=96, intermediate_size=192, num_hidden_layers=2,
                        num_attention_heads=2, num_mel_bins=32, max_length=128),
}


@dataclass(frozen=True)
class Row:
    modality: str
    model: str  # key of MODELS
    ext: str  # member extension in the shards
    member: Callable[[np.random.Generator], bytes]  # one member's bytes
    samples: int  # samples in the end-to-end run
    batch_size: int
    options: dict[str, Any] = field(default_factory=dict)  # more [modalities.<m>] keys
    pool: int = 256  # distinct members made (and reused) for the shards
    spec: str = ""  # a registered encoder instead of the hf: folder of MODELS[model] (EBind's backbones)


RANDOM = {"weights": "random"}


ROWS = {
    "image-vit-b16-224": Row("image", "vit-b16-224", "jpg", partial(data.photo_jpeg, side=320), 8192, 256),
    "image-vit-l14-336": Row("image", "vit-l14-336", "jpg", partial(data.photo_jpeg, side=448), 2048, 128),
    "text-l24-1024": Row("text", "text-l24-1024", "txt", data.caption_txt, 32768, 512, pool=4096),
    "audio-ast-b16": Row("audio", "ast-b16", "flac", partial(data.tone_flac, seconds=5.0), 2048, 64,
                         {"seconds": 10.0}, pool=64),
    "video-vit-b16-224": Row("video", "vit-b16-224", "mp4", partial(data.pan_mp4, width=320, height=240, frames=48),
                             1024, 32, {"frames": 8}, pool=32),
    "points-vit-b16-224": Row("points", "vit-b16-224", "npy", partial(data.shape_npy, points=16384), 2048, 64,
                              {"points": 8192, "views": 6}, pool=64),
    # EBind's backbones at their real sizes, random weights (GPU sizes)
    "image-pe-core-l14-336": Row("image", "pe-core-l14-336", "jpg", partial(data.photo_jpeg, side=448), 2048, 128,
                                 RANDOM, spec="pe-core-l14-336"),
    "audio-imagebind-huge": Row("audio", "imagebind-huge-audio", "flac", partial(data.tone_flac, seconds=10.0), 2048,
                                64, {**RANDOM, "seconds": 10.0, "pad": False}, pool=64, spec="imagebind-huge-audio"),
    "points-uni3d-g": Row("points", "uni3d-g", "npy", partial(data.shape_npy, points=16384), 1024, 32,
                          {**RANDOM, "points": 10000, "normalize": False}, pool=64, spec="uni3d-g"),
}
SMALL = {
    "image-vit-tiny-64": Row("image", "vit-tiny-64", "jpg", partial(data.photo_jpeg, side=96), 1024, 32),
    "text-tiny": Row("text", "text-tiny", "txt", data.caption_txt, 1024, 64),
    "audio-ast-tiny": Row("audio", "ast-tiny", "flac", partial(data.tone_flac, seconds=2.0), 256, 16,
                          {"seconds": 2.0}, pool=32),
    "video-vit-tiny-64": Row("video", "vit-tiny-64", "mp4", partial(data.pan_mp4, width=96, height=64, frames=16),
                             256, 8, {"frames": 8}, pool=16),
    "points-vit-tiny-64": Row("points", "vit-tiny-64", "npy", partial(data.shape_npy, points=4096), 256, 16,
                              {"points": 2048, "views": 6}, pool=32),
}
# EBind's backbones at their real sizes with small inputs, for the CPU: 8 photos of 224 px (PE-Core still
# runs at 336), 16 two-second clips, 4 clouds of 1024 points (Uni3D still groups 512 x 64)
EBIND_SMALL = {
    "image-pe-core-l14-336": Row("image", "pe-core-l14-336", "jpg", partial(data.photo_jpeg, side=224), 8, 4,
                                 RANDOM, pool=8, spec="pe-core-l14-336"),
    "audio-imagebind-huge": Row("audio", "imagebind-huge-audio", "flac", partial(data.tone_flac, seconds=2.0), 16, 8,
                                {**RANDOM, "seconds": 2.0, "pad": False}, pool=16, spec="imagebind-huge-audio"),
    "points-uni3d-g": Row("points", "uni3d-g", "npy", partial(data.shape_npy, points=2048), 4, 2,
                          {**RANDOM, "points": 1024, "normalize": False}, pool=4, spec="uni3d-g"),
}


def _sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def _peak_gb(device: torch.device) -> float | None:
    return torch.cuda.max_memory_allocated(device) / 2**30 if device.type == "cuda" else None


def _reset_peak(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.empty_cache()
        torch.cuda.reset_peak_memory_stats(device)


def bare(encoder, batch: dict[str, torch.Tensor], device: torch.device, seconds: float) -> float:
    """Forward-only samples/s on a device-resident preprocessed batch (warm-up excluded)."""
    from pipeline.encoders.wrappers import COUNTS  # video/points: images per sample

    samples = len(batch[COUNTS]) if COUNTS in batch else len(next(iter(batch.values())))
    amp = dict(device_type=device.type, dtype=torch.bfloat16, enabled=device.type == "cuda")

    def step():
        with torch.inference_mode(), torch.autocast(**amp):
            encoder.encode(batch)

    for _ in range(3):
        step()
    _sync(device)
    n, t0 = 0, time.perf_counter()
    while time.perf_counter() - t0 < seconds or n < 3:
        step()
        n += 1
    _sync(device)
    return n * samples / (time.perf_counter() - t0)


def device_batch(encoder, cfg: Any, row: Row, pattern_dir: Path, device: torch.device) -> dict[str, torch.Tensor]:
    """One batch of the row's own members, decoded and preprocessed as the pipeline does, on the device."""
    import tarfile

    from pipeline.ingest.decode import decode_member

    rate = getattr(cfg, "sample_rate", 0) or encoder.sample_rate
    items = []
    with tarfile.open(pattern_dir / "bench-0000.tar") as tar:
        for info in tar:
            if len(items) == row.batch_size:
                break
            sample = {"__key__": info.name.split(".")[0], row.ext: tar.extractfile(info).read()}
            items.append(decode_member(sample, row.modality, cfg, rate))
    while len(items) < row.batch_size:  # a shard smaller than a batch: repeat
        items += items[:row.batch_size - len(items)]
    on_device = {k: v.to(device) for k, v in encoder.preprocessor()(items).items()}
    with torch.inference_mode():
        return encoder.prepare(on_device)  # the bare figure is the forward alone


def measure_row(name: str, row: Row, model_dir: Path, device: torch.device, root: Path, workers: int,
                threads: int, seconds: float) -> dict[str, Any]:
    from pipeline.core.manifest import from_dict
    from pipeline.encoders.registry import build_encoder
    from pipeline.precompute.stage import run

    shards = root / name / "shards"
    pattern = data.write_shards(shards, row.ext, row.member, row.samples, row.pool)
    manifest = from_dict({
        "dataset": {"name": f"bench-{name}", "shards": pattern, "output": str(root / name / "out")},
        "modalities": {row.modality: {"encoder": row.spec or f"hf:{model_dir}", "batch_size": row.batch_size,
                                      **row.options}},
        "precompute": {"device": str(device), "precision": "bf16"},  # default split: calibrated on the CPU
    })
    cfg = manifest.modalities[row.modality]
    enc = build_encoder(row.modality, cfg).to(device)
    batch = device_batch(enc, cfg, row, shards, device)
    _reset_peak(device)
    # on the CPU the run leaves its DataLoader workers their cores (fewer intra-op threads), and
    # with a busy core fewer threads can be faster: the bare figure is the better of the two
    bare_sps = 0.0
    for n_threads in sorted({threads, max(1, threads - workers)} if device.type == "cpu" else {threads}):
        torch.set_num_threads(n_threads)
        bare_sps = max(bare_sps, bare(enc, batch, device, seconds))
    torch.set_num_threads(threads)
    bare_peak = _peak_gb(device)
    del enc, batch
    _reset_peak(device)
    summary = run(manifest)
    e2e_peak = _peak_gb(device)
    counts = summary["counts"][row.modality]
    if counts.get("ok", 0) != row.samples:
        raise RuntimeError(f"{name}: {counts} of {row.samples} samples; the bench inputs should all encode")
    loop = summary["ranks"][0]["loop_s"]
    e2e = row.samples / loop
    return {"modality": row.modality, "encoder": row.model, "samples": row.samples, "batch_size": row.batch_size,
            "bare_samples_per_s": bare_sps, "e2e_samples_per_s": e2e, "ratio": e2e / bare_sps,
            "bare_peak_gpu_gb": bare_peak, "e2e_peak_gpu_gb": e2e_peak,
            "read_s": summary["read_s"], "wait_s": summary["wait_s"], "encode_s": summary["encode_s"],
            "write_s": summary["write_s"], "loop_s": loop, "num_workers": summary["ranks"][0]["cores"]["workers"],
            "encoder_threads": summary["ranks"][0]["cores"]["threads"]}


def measure(small: bool, device: str, only: str = "") -> dict[str, Any]:
    dev = torch.device("cuda" if device == "auto" and torch.cuda.is_available() else
                       ("cpu" if device == "auto" else device))
    workers = max(1, min(16, (os.cpu_count() or 2) - 1))
    threads = torch.get_num_threads()
    results: dict[str, Any] = {"device": str(dev)}
    with tempfile.TemporaryDirectory(prefix="bench-precompute-") as tmp:
        root, models = Path(tmp), {}
        # EBind's real-size rows take many minutes on a CPU: with --small they run only when asked for by name
        rows = ({**SMALL, **EBIND_SMALL} if only else SMALL) if small else ROWS
        wanted = [w for w in only.split(",") if w]
        for name, row in rows.items():
            if wanted and not any(w in name for w in wanted):
                continue
            if not row.spec and row.model not in models:
                models[row.model] = MODELS[row.model](root / "models" / row.model)
            log.info("precompute bench %s on %s", name, dev)
            results[name] = measure_row(name, row, models.get(row.model), dev, root, workers, threads,
                                        seconds=2.0 if small else 5.0)
    torch.set_num_threads(threads)
    return results


def _gb(value: float | None, width: int) -> str:
    return f"{value:>{width}.2f}" if value is not None else f"{'-':>{width}}"


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--small", action="store_true", help="tiny towers and inputs: minutes on a CPU")
    parser.add_argument("--device", default="auto")
    parser.add_argument("--only", default="", help="comma list: only rows whose name contains one, e.g. "
                        "pe-core,imagebind,uni3d (with --small, EBind's rows run only when named)")
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s: %(message)s")
    start = time.perf_counter()
    res = measure(args.small, args.device, args.only)
    print(f"{'row':<24}{'batch':>6}{'bare/s':>10}{'e2e/s':>10}{'ratio':>7}{'bare GB':>9}{'e2e GB':>8}")
    for name, r in res.items():
        if isinstance(r, dict):
            print(f"{name:<24}{r['batch_size']:>6}{r['bare_samples_per_s']:>10,.1f}{r['e2e_samples_per_s']:>10,.1f}"
                  f"{r['ratio']:>7.2f}{_gb(r['bare_peak_gpu_gb'], 9)}{_gb(r['e2e_peak_gpu_gb'], 8)}")
    print(f"device {res['device']}, wall {time.perf_counter() - start:.0f} s")
    print(json.dumps(res, indent=2))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
