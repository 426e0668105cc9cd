"""BrokenBind on the real held-out benchmark: image <-> sound bound through captions only.

``manifests/brokenbind.toml`` over ``bench-data/`` (``just bench-data``): the tuxpaint stamps with
image, caption and sound are the evaluation items; image-caption items form D1, sound-caption items
D2. For each MOX route (cross-modal, cross-dataset, both) this runs, through the stages' own
``run(manifest)``: ``bindery bridge`` (bridge ``mox-<route>``), ``bindery train`` with
``train.bridge`` (run ``brokenbind-<route>``, which also trains its emergent route) and
``bindery eval``; then it prints image->audio and audio->image R@1/5/10 and EShot top-1/top-5 for
MOX (each route), the emergent route, the ridge composition ``a -> p -> c`` and chance, from the
runs' ``metrics.json`` ``bridge`` sections, and :func:`transfer_check` (does D2's caption -> sound
relation hold for the evaluation items at all?).

    python -m bench.brokenbind [--device cpu|cuda] [--epochs N]
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import logging
import sys
import time
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
MANIFEST = ROOT / "manifests" / "brokenbind.toml"
BENCH_DATA = ROOT / "bench-data"
ROUTES = ("cross-modal", "cross-dataset", "both")
KS = ("R@1", "R@5", "R@10")
log = logging.getLogger(__name__)


def cells(section: dict[str, Any]) -> dict[str, dict[str, float]]:
    """``direction -> {R@K..., top1, top5}`` of one method in a ``bridge`` section."""
    out = {}
    for direction, r in section.items():
        row = {k: round(float(r[k]), 4) for k in KS}
        row.update({k: round(float(v), 4) for k, v in r.get("eshot", {}).items() if k.startswith("top")})
        out[direction] = row
    return out


def transfer_check(manifest) -> dict[str, Any]:
    """Does the pivot -> c relation that D2 teaches hold for the evaluation items? A ridge map text -> c
    fitted on D2 (the bridge's own lambda rule) applied to the evaluation captions: the centred cosine of
    its output to the true c against a shuffled pairing, and caption -> c R@1/R@10. For reference the
    same map fitted (5-fold) on the other evaluation items, which BrokenBind itself may never use."""
    import numpy as np

    from pipeline.core.store import read_store
    from trainer.bridge.splits import load_split
    from trainer.bridge.stage import rows_of, settings
    from trainer.bridge.transitions import fit_linear

    b = manifest.bridge
    split = load_split(manifest.output, b.pivot, *b.modalities)
    stores = {m: read_store(manifest.output, m) for m in (b.pivot, split.c)}
    p2, c2 = rows_of(stores[b.pivot], split.d2), rows_of(stores[split.c], split.d2)
    pe, ce = rows_of(stores[b.pivot], split.evaluation), rows_of(stores[split.c], split.evaluation)

    def unit(x):
        x = np.asarray(x, np.float64)
        return x / np.linalg.norm(x, axis=1, keepdims=True)

    def recall(pred, k):
        sims = unit(pred) @ unit(ce).T
        return float(((sims > np.diag(sims)[:, None]).sum(1) < k).mean())

    pred = fit_linear(p2, c2, settings(b))[0](pe)
    mean = np.asarray(c2, np.float64).mean(0)
    centred = (unit(pred - mean) * unit(ce - mean)).sum(1)
    shuffled = (unit(pred - mean) * unit(np.roll(ce, 1, axis=0) - mean)).sum(1)
    folds, ref = np.arange(len(pe)) % 5, np.zeros_like(pred)
    for f in range(5):
        ref[folds == f] = fit_linear(pe[folds != f], ce[folds != f], dataclasses.replace(settings(b), folds=3))[0](
            pe[folds == f])
    return {"d2_fit": {"centred_cosine_true": round(float(centred.mean()), 3),
                       "centred_cosine_shuffled": round(float(shuffled.mean()), 3),
                       "R@1": round(recall(pred, 1), 3), "R@10": round(recall(pred, 10), 3)},
            "evaluation_items_fit_5fold": {"R@1": round(recall(ref, 1), 3), "R@10": round(recall(ref, 10), 3)}}


def measure(device: str, epochs: int | None) -> dict[str, Any]:
    from pipeline.core.manifest import load
    from pipeline.precompute import stage as precompute
    from trainer import train
    from trainer.bridge import stage as bridge
    from trainer.eval import evaluate

    if not sorted(BENCH_DATA.glob("bench-*.tar")):
        raise FileNotFoundError(f"{BENCH_DATA} holds no bench-*.tar shards; build the benchmark first: `just bench-data`")
    common = [f"precompute.device={device}", *([f"train.epochs={epochs}"] if epochs else [])]
    seconds: dict[str, float] = {}
    start = time.perf_counter()
    precompute.run(load(MANIFEST, common))
    seconds["precompute"] = round(time.perf_counter() - start, 1)
    table: dict[str, Any] = {}
    sections = {}
    for route in ROUTES:
        m = load(MANIFEST, [*common, f"bridge.name=mox-{route}", f"bridge.route={route}",
                            f"train.bridge=mox-{route}", f"train.run=brokenbind-{route}"])
        for name, fn in (("bridge", bridge.run), ("train", train.run), ("eval", evaluate.run)):
            start = time.perf_counter()
            out = fn(m)
            seconds[f"{name}_{route}"] = round(time.perf_counter() - start, 1)
        sections[route] = out["bridge"]
        table[f"MOX {route}"] = cells(out["bridge"]["mox"])
    last = sections["both"]
    for method in ("emergent", "ridge", "chance"):
        if method in last:
            table[method] = cells(last[method])
    return {"manifest": str(MANIFEST.relative_to(ROOT)), "items": last["items"], "sizes": last["sizes"],
            "table": table, "transfer": transfer_check(m), "seconds": seconds}


def markdown(results: dict[str, Any]) -> str:
    directions = list(next(iter(results["table"].values())))
    head = " | ".join(f"{d} R@1/5/10 | {d} EShot top-1/top-5" for d in directions)
    lines = [f"| method | {head} |", "|---|" + "---|---|" * len(directions)]
    for method, row in results["table"].items():
        parts = []
        for d in directions:
            r = row[d]
            parts.append("/".join(f"{r[k]:.2f}" for k in KS))
            parts.append("/".join(f"{r[k]:.2f}" for k in ("top1", "top5")) if "top1" in r else "-")
        lines.append(f"| {method} | " + " | ".join(parts) + " |")
    sizes = results["sizes"]
    return "\n".join(lines) + (f"\n\n({sizes['evaluation']} evaluation items; D1 {sizes['d1']}, D2 {sizes['d2']})\n")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--device", default="auto", help="auto | cpu | cuda")
    parser.add_argument("--epochs", type=int, default=None, help="override train.epochs")
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s: %(message)s")
    import torch

    device = args.device if args.device != "auto" else ("cuda" if torch.cuda.is_available() else "cpu")
    results = measure(device, args.epochs)
    sys.stdout.write(markdown(results))
    sys.stdout.write(json.dumps(results, indent=2) + "\n")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
