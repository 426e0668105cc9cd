"""Bare image encoder vs precompute end to end, same run, same encoder.

* bare: preprocessed tensors already on the device, encoder forward only (bf16 autocast on CUDA).
* end to end: ``pipeline.precompute.run`` over tar shards of photo-like JPEGs (decode in the
  DataLoader workers, preprocess, device transfer, encode, normalise, Parquet writes), timed
  from the first read to the last write (``ranks[0].loop_s``; model loading excluded).

Encoders: CLIP vision towers of ViT-B/16@224 and ViT-L/14@336 size with random weights
(``CLIPVisionConfig``, saved with ``save_pretrained`` and loaded through ``hf:``); ``--small``
uses a CPU-sized tower. ``python -m bench.precompute [--small] [--device cpu|cuda]``.
"""

from __future__ import annotations

import argparse
import io
import json
import logging
import tarfile
import tempfile
import time
from pathlib import Path
from typing import Any

import numpy as np
import torch

log = logging.getLogger(__name__)

CONFIGS = {  # name: (vision config, JPEG side, samples, batch size)
    "vit-b16-224": (dict(image_size=224, patch_size=16, hidden_size=768, intermediate_size=3072,
                         num_hidden_layers=12, num_attention_heads=12), 320, 8192, 256),
    "vit-l14-336": (dict(image_size=336, patch_size=14, hidden_size=1024, intermediate_size=4096,
                         num_hidden_layers=24, num_attention_heads=16), 448, 2048, 128),
}
SMALL = {"vit-tiny-64": (dict(image_size=64, patch_size=16, hidden_size=96, intermediate_size=192,
                              num_hidden_layers=2, num_attention_heads=2), 96, 1024, 32)}


def photo_like(rng: np.random.Generator, side: int) -> bytes:
    """A JPEG with smooth gradients, a few blurred blobs and sensor noise (compresses like a photo)."""
    from PIL import Image, ImageDraw, ImageFilter

    y, x = np.mgrid[0:side, 0:side] / side
    base = np.stack([(c0 + c1 * x + c2 * y) for c0, c1, c2 in rng.uniform(0, 1, (3, 3)) * [200, 55, 55]], -1)
    img = Image.fromarray(np.clip(base, 0, 255).astype(np.uint8))
    draw = ImageDraw.Draw(img)
    for _ in range(6):
        x0, y0 = rng.integers(0, side, 2)
        r = int(rng.integers(side // 16, side // 4))
        draw.ellipse([x0 - r, y0 - r, x0 + r, y0 + r], fill=tuple(int(v) for v in rng.integers(0, 255, 3)))
    img = img.filter(ImageFilter.GaussianBlur(side / 100))
    arr = np.asarray(img).astype(np.int16) + rng.normal(0, 6, (side, side, 3)).astype(np.int16)
    buf = io.BytesIO()
    Image.fromarray(np.clip(arr, 0, 255).astype(np.uint8)).save(buf, format="JPEG", quality=90)
    return buf.getvalue()


def write_shards(folder: Path, n: int, side: int, per_shard: int = 512) -> str:
    rng = np.random.default_rng(0)
    pool = [photo_like(rng, side) for _ in range(min(n, 256))]  # reuse bytes: decode cost is the same
    shards = (n + per_shard - 1) // per_shard
    for s in range(shards):
        with tarfile.open(folder / f"bench-{s:04d}.tar", "w") as tar:
            for i in range(s * per_shard, min(n, (s + 1) * per_shard)):
                data = pool[i % len(pool)]
                info = tarfile.TarInfo(f"{i:08d}.jpg")
                info.size = len(data)
                tar.addfile(info, io.BytesIO(data))
    return str(folder / f"bench-{{0000..{shards - 1:04d}}}.tar")


def save_tower(folder: Path, vision: dict) -> Path:
    from transformers import CLIPImageProcessor, CLIPVisionConfig, CLIPVisionModel

    torch.manual_seed(0)
    CLIPVisionModel(CLIPVisionConfig(**vision)).save_pretrained(folder)
    side = vision["image_size"]
    CLIPImageProcessor(size={"shortest_edge": side}, crop_size={"height": side, "width": side}).save_pretrained(folder)
    return folder


def bare(encoder, batch_size: int, side: int, device: torch.device, seconds: float = 5.0) -> float:
    """Forward-only samples/s on device-resident preprocessed tensors."""
    x = {"pixel_values": torch.randn(batch_size, 3, side, side, device=device)}
    amp = dict(device_type=device.type, dtype=torch.bfloat16, enabled=device.type == "cuda")

    def step():
        with torch.inference_mode(), torch.autocast(**amp):
            encoder.encode(x)

    for _ in range(3):
        step()
    if device.type == "cuda":
        torch.cuda.synchronize()
    n, t0 = 0, time.perf_counter()
    while time.perf_counter() - t0 < seconds or n < 3:
        step()
        n += 1
    if device.type == "cuda":
        torch.cuda.synchronize()
    return n * batch_size / (time.perf_counter() - t0)


def measure_one(name: str, spec: tuple, device: torch.device, root: Path, workers: int) -> dict[str, Any]:
    from pipeline.encoders.registry import build_encoder
    from pipeline.manifest import ImageConfig, from_dict
    from pipeline.precompute import run

    vision, jpeg_side, n, batch = spec
    model_dir = save_tower(root / name / "model", vision)
    shards_dir = root / name / "shards"
    shards_dir.mkdir(parents=True)
    pattern = write_shards(shards_dir, n, jpeg_side)
    if device.type == "cuda":
        torch.cuda.reset_peak_memory_stats(device)
    enc = build_encoder("image", ImageConfig(encoder=f"hf:{model_dir}", batch_size=batch)).to(device)
    bare_before = bare(enc, batch, vision["image_size"], device)
    manifest = from_dict({
        "dataset": {"name": f"bench-{name}", "shards": pattern, "output": str(root / name / "out")},
        "modalities": {"image": {"encoder": f"hf:{model_dir}", "batch_size": batch}},
        "precompute": {"device": str(device), "num_workers": workers, "precision": "bf16"},
    })
    summary = run(manifest)
    # again after the run, with the thread count the run chose: the better of the two is the bare figure
    bare_sps = max(bare_before, bare(enc, batch, vision["image_size"], device))
    del enc
    loop = summary["ranks"][0]["loop_s"]
    e2e = summary["counts"]["image"]["ok"] / loop
    out = {"samples": n, "batch_size": batch, "bare_samples_per_s": bare_sps, "e2e_samples_per_s": e2e,
           "ratio": e2e / bare_sps, "read_s": summary["read_s"], "wait_s": summary["wait_s"],
           "encode_s": summary["encode_s"], "write_s": summary["write_s"], "loop_s": loop,
           "num_workers": summary["ranks"][0].get("num_workers", workers)}
    if device.type == "cuda":
        out["peak_gpu_mem_gb"] = torch.cuda.max_memory_allocated(device) / 2**30
    return out


def measure(small: bool, device: str) -> dict[str, Any]:
    import os

    dev = torch.device("cuda" if device == "auto" and torch.cuda.is_available() else
                       ("cpu" if device == "auto" else device))
    workers = max(1, min(16, (os.cpu_count() or 2) - 1))
    results = {}
    with tempfile.TemporaryDirectory(prefix="bench-precompute-") as tmp:
        for name, spec in (SMALL if small else CONFIGS).items():
            log.info("precompute bench %s on %s", name, dev)
            results[name] = measure_one(name, spec, dev, Path(tmp), workers)
    return {"device": str(dev), **results}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--small", action="store_true", help="a CPU-sized tower that runs in a minute")
    parser.add_argument("--device", default="auto")
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s: %(message)s")
    res = measure(args.small, args.device)
    print(f"{'encoder':<14}{'bare/s':>10}{'e2e/s':>10}{'ratio':>8}{'peak GB':>9}")
    for name, r in res.items():
        if isinstance(r, dict):
            print(f"{name:<14}{r['bare_samples_per_s']:>10.1f}{r['e2e_samples_per_s']:>10.1f}{r['ratio']:>8.2f}"
                  f"{r.get('peak_gpu_mem_gb', float('nan')):>9.2f}")
    print(json.dumps(res, indent=2))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
