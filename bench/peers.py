"""bindery precompute against clip-retrieval's clip_inference: same shards, same model, taken in turns.

* the tool: clip-retrieval 2.45.0 from PyPI in its own venv, built here once and cached under
  ``.peers/venv`` (gitignored; ``BINDERY_PEERS_DIR`` moves it): ``torch==2.14.1
  torchvision==0.29.1`` first (the pair that imports on these CPUs; clip-retrieval imports
  torchvision through all_clip), then ``setuptools<81`` (clip-anytorch imports pkg_resources);
* the data: 1,024 real images in 4 WebDataset shards of JPEGs -- Tux Paint's stamps (PNG, put
  on white), starters and template photos from ``/usr/share/tuxpaint`` (Debian packages
  tuxpaint-stamps-default and tuxpaint-data), topped up with the clip-art JPEGs of ``data/demo``
  and ``bench-data/``;
* the model: a transformers ``CLIPModel`` at ViT-B/32 size with random weights (seed 0), saved
  with a CLIP processor (a byte-level tokenizer: clip-retrieval loads the text side too);
  clip-retrieval loads it as ``hf_clip:<folder>``, bindery as ``hf:<folder>``;
* the runs: each tool's command with its default settings, alternating, ``--runs`` times each
  (default 3), timed end to end as a user waits for it (start-up and model load included);
  peak RSS summed over the process tree, sampled every 50 ms.

Reported: median samples/s of each, their ratio (bindery / clip-retrieval), peak RSS, the
cosine between the two tools' embeddings of each image, and the load average beside the figures
(the machine may be shared). ``python -m bench.peers [--runs 3] [--images 1024]``.
"""

from __future__ import annotations

import argparse
import io
import json
import logging
import os
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path
from typing import Any

import numpy as np

from pipeline.core.layout import OutputLayout

ROOT = Path(__file__).resolve().parents[1]
PEERS = Path(os.environ.get("BINDERY_PEERS_DIR", ROOT / ".peers"))
TUXPAINT = Path("/usr/share/tuxpaint")
CLIP_RETRIEVAL_KEYS = "*/metadata_*.parquet"  # clip-retrieval's writer: <out>/<folder>/metadata_<n>.parquet
REQUIREMENTS = (["torch==2.14.1", "torchvision==0.29.1"], ["setuptools<81", "clip-retrieval==2.45.0"])
log = logging.getLogger("bench.peers")


def peer_python() -> Path:
    """The cached venv's python, built on first use (minutes: torch with CUDA libraries is ~5.5 GB)."""
    venv = PEERS / "venv"
    if not (venv / ".complete").exists():
        log.info("building the clip-retrieval venv in %s", venv)
        subprocess.run([sys.executable, "-m", "venv", str(venv)], check=True)
        for reqs in REQUIREMENTS:  # torch first, so clip-retrieval's resolution keeps it
            subprocess.run([str(venv / "bin" / "python"), "-m", "pip", "install", "-q", *reqs], check=True)
        (venv / ".complete").touch()
    return venv / "bin" / "python"


def _jpeg(image: Any) -> bytes:
    from PIL import Image

    if image.mode in ("RGBA", "LA", "P"):
        image = image.convert("RGBA")
        white = Image.new("RGB", image.size, (255, 255, 255))
        white.paste(image, mask=image.getchannel("A"))
        image = white
    buf = io.BytesIO()
    image.convert("RGB").save(buf, "JPEG", quality=90)
    return buf.getvalue()


def real_images(count: int) -> list[bytes]:
    from PIL import Image

    from bench.feed_inputs import BENCH_DATA, DEMO, shard_members

    files = sorted(TUXPAINT.glob("stamps/**/*.png")) + sorted(TUXPAINT.glob("starters/*.png")) + \
        sorted(TUXPAINT.glob("templates/*.jpg"))
    out = [_jpeg(Image.open(f)) for f in files[:count]]
    for folder in (DEMO, BENCH_DATA):
        if len(out) < count and folder.is_dir():
            out += [m[2] for m in shard_members(folder, "image", count - len(out))]
    if len(out) < count:
        raise SystemExit(f"bench.peers: found {len(out)} real images, need {count}: apt-get install "
                         "tuxpaint-stamps-default tuxpaint-data (or `just bench-data`)")
    return out


def write_shards(folder: Path, images: list[bytes], shards: int = 4) -> str:
    from tests.conftest import write_tar

    folder.mkdir(parents=True, exist_ok=True)
    per = -(-len(images) // shards)
    for s in range(shards):
        # a json member per sample, as img2dataset writes: clip-retrieval drops samples without one
        # when it writes metadata (which carries the keys the agreement is joined on)
        write_tar(folder / f"peers-{s:04d}.tar",
                  [(f"{i:06d}", {"jpg": images[i], "json": json.dumps({"key": f"{i:06d}"}).encode()})
                   for i in range(s * per, min(len(images), (s + 1) * per))])
    return str(folder / f"peers-{{0000..{shards - 1:04d}}}.tar")


SAVE_MODEL = """
import json, sys
import torch
from transformers import CLIPConfig, CLIPImageProcessor, CLIPModel, CLIPProcessor, CLIPTokenizer
folder = sys.argv[1]
torch.manual_seed(0)
CLIPModel(CLIPConfig()).save_pretrained(folder)  # ViT-B/32 vision, 512-d text, random weights
chars = [chr(c) for c in range(33, 127)]
vocab = {t: i for i, t in enumerate(chars + [c + "</w>" for c in chars] + ["<|startoftext|>", "<|endoftext|>"])}
json.dump(vocab, open(folder + "/vocab.json", "w"))
open(folder + "/merges.txt", "w").write("#version: 0.2\\n")
tok = CLIPTokenizer(folder + "/vocab.json", folder + "/merges.txt")
CLIPProcessor(image_processor=CLIPImageProcessor(), tokenizer=tok).save_pretrained(folder)
"""


def peak_rss_mb(proc: subprocess.Popen, stop: threading.Event, out: list[float]) -> None:
    import psutil

    peak = 0.0
    try:
        root = psutil.Process(proc.pid)
        while not stop.is_set():
            try:
                tree = [root, *root.children(recursive=True)]
                peak = max(peak, sum(p.memory_info().rss for p in tree if p.is_running()) / 2**20)
            except psutil.Error:
                pass
            time.sleep(0.05)
    finally:
        out.append(peak)


def timed(cmd: list[str], env: dict[str, str] | None = None) -> tuple[float, float]:
    """(seconds, peak RSS MB) of a command run to its end."""
    stop, peak = threading.Event(), []
    t0 = time.perf_counter()
    proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, env=env, cwd=ROOT)
    watcher = threading.Thread(target=peak_rss_mb, args=(proc, stop, peak))
    watcher.start()
    output = proc.communicate()[0].decode(errors="replace")
    seconds = time.perf_counter() - t0
    stop.set()
    watcher.join()
    if proc.returncode != 0:
        raise RuntimeError(f"{cmd[:3]} failed ({proc.returncode}):\n{output[-3000:]}")
    return seconds, peak[0]


CLIP_INFERENCE = """
import sys
from clip_retrieval.clip_inference.main import main
main(input_dataset=sys.argv[1], output_folder=sys.argv[2], input_format="webdataset", clip_model="hf_clip:" + sys.argv[3],
     enable_text=False, enable_metadata=True)
"""


def run_clip_retrieval(python: Path, pattern: str, model: Path, out: Path) -> tuple[float, float]:
    import shutil

    shutil.rmtree(out, ignore_errors=True)
    return timed([str(python), "-c", CLIP_INFERENCE, pattern, str(out), str(model)])


def run_bindery(pattern: str, model: Path, out: Path) -> tuple[float, float]:
    import shutil

    shutil.rmtree(out, ignore_errors=True)
    manifest = out.with_suffix(".toml")
    manifest.write_text(f'[dataset]\nname = "peers"\nshards = "{pattern}"\noutput = "{out}"\n'
                        f'[modalities.image]\nencoder = "hf:{model}"\n')
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    return timed([sys.executable, "-m", "pipeline.cli", "precompute", str(manifest)], env)


def agreement(cr_out: Path, bindery_out: Path) -> dict[str, float]:
    """Cosine between the two tools' vectors of each image (joined on the sample key)."""
    import pyarrow.parquet as pq

    from pipeline.core.store import read_store

    theirs = np.concatenate([np.load(p) for p in sorted(cr_out.glob("img_emb/*.npy"))]).astype(np.float32)
    keys = [k for p in sorted(cr_out.glob(CLIP_RETRIEVAL_KEYS)) for k in pq.read_table(p)["image_path"].to_pylist()]
    ours = read_store(bindery_out, "image")
    index = {k: i for i, k in enumerate(ours.keys)}
    mine = np.asarray(ours.vectors, dtype=np.float32)[[index[k] for k in keys]]
    theirs /= np.linalg.norm(theirs, axis=1, keepdims=True)
    mine /= np.linalg.norm(mine, axis=1, keepdims=True)
    cos = (theirs * mine).sum(axis=1)
    return {"images": len(keys), "cosine_min": float(cos.min()), "cosine_median": float(np.median(cos)),
            "cosine_ge_0.9999": int((cos >= 0.9999).sum())}


def measure(runs: int = 3, images: int = 1024) -> dict[str, Any]:
    python = peer_python()
    with tempfile.TemporaryDirectory(prefix="bench-peers-") as tmp:
        root = Path(tmp)
        pattern = write_shards(root / "shards", real_images(images))
        model = root / "clip-vit-b32"
        subprocess.run([str(python), "-c", SAVE_MODEL, str(model)], check=True, capture_output=True)
        times: dict[str, list[tuple[float, float]]] = {"clip-retrieval": [], "bindery": []}
        loads = []
        for i in range(runs):
            for tool in ("clip-retrieval", "bindery") if i % 2 == 0 else ("bindery", "clip-retrieval"):
                loads.append(os.getloadavg()[0])
                out = root / tool.replace("-", "_")
                res = (run_clip_retrieval(python, pattern, model, out) if tool == "clip-retrieval"
                       else run_bindery(pattern, model, out))
                times[tool].append(res)
                log.info("%s run %d: %.1f s, peak RSS %.0f MB, load %.2f", tool, i + 1, res[0], res[1], loads[-1])
        summary = json.loads(OutputLayout(root / "bindery").precompute_summary.read_text())
        result: dict[str, Any] = {"images": images, "runs": runs, "cores": os.cpu_count(),
                                  "load_avg_1min_at_starts": [round(x, 2) for x in loads]}
        for tool, rows in times.items():
            result[tool] = {"seconds": [round(s, 2) for s, _ in rows],
                            "median_samples_per_s": images / statistics.median(s for s, _ in rows),
                            "peak_rss_mb": max(m for _, m in rows)}
        result["ratio_bindery_over_clip_retrieval"] = (result["bindery"]["median_samples_per_s"]
                                                       / result["clip-retrieval"]["median_samples_per_s"])
        result["bindery_cores"] = summary["ranks"][0]["cores"]
        result["agreement"] = agreement(root / "clip_retrieval", root / "bindery")
    return result


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--runs", type=int, default=3)
    parser.add_argument("--images", type=int, default=1024)
    parser.add_argument("--out", default=str(ROOT / "bench" / "results" / "peers-cpu.json"))
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s: %(message)s")
    res = measure(args.runs, args.images)
    Path(args.out).write_text(json.dumps(res, indent=2))
    print(json.dumps(res, indent=2))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
