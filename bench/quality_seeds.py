"""Round-1 heads against the ridge baseline over several seeds, for recipes given as ``--set`` lists.

One held-out split of ~100 queries moves R@1 by ±0.03 from noise alone, so a recipe choice made on
``bench.quality``'s single seed is a coin toss. Here every recipe is trained on the benchmark's own
captions (round 1) for each seed, where the seed moves the held-out split, the early-stopping slice,
the init and the shuffling, and the ridge baseline is refitted on each seed's training rows. It prints,
per recipe, the mean held-out R@1 of the heads and of ridge on text<->image and text<->audio (the
pairs with >= 50 held-out queries), the share of (pair, seed) cells where heads >= ridge, the
mean difference, and the mean best score of the early-stopping slice (training-side), which is what a
recipe should be chosen by, with the slice's worst direction: the least gain over the fitted start
(epoch 0, the ridge map with ``train.init = "ridge"``) of any of those four directions at the kept epoch, which says
whether a recipe trades one direction away for the average. Needs ``just bench-data`` and the stores (``just precompute manifests/bench.toml``).

    python -m bench.quality_seeds "train.init=random" "train.init=ridge" [--seeds 0 1 2]
"""

from __future__ import annotations

import argparse
import logging
import sys

import numpy as np

from bench.quality import MANIFEST

PAIRS = ("text->image", "image->text", "text->audio", "audio->text")


def worst_gain(stop: dict) -> float:
    """The least gain over epoch 0 at the kept epoch of the slice directions of :data:`PAIRS` (NaN without
    a scored start)."""
    curves = {d: c for d, c in (stop.get("curve_by_direction") or {}).items() if d in PAIRS}
    if stop.get("first_epoch") != 0 or stop.get("epoch_chosen") is None or not curves:
        return float("nan")
    kept = stop["epoch_chosen"]
    return min(c[kept] - c[0] for c in curves.values())


def run_recipe(overrides: list[str], seed: int, name: str) -> tuple[list[float], list[float], int | None, float, float]:
    """Held-out R@1 of the heads and of ridge per pair, the epoch early stopping kept, the slice's best
    score and its worst direction's gain over the start (what a recipe may be chosen by: the held-out
    split is for reporting)."""
    from pipeline.core.manifest import load
    from trainer import train
    from trainer.eval import evaluate

    manifest = load(MANIFEST, ["precompute.device=cpu", "train.use_quintuples=false", f"train.run={name}",
                               f"train.seed={seed}", *overrides])
    summary = train.run(manifest)
    metrics = evaluate.run(manifest)
    heads = [metrics[p]["R@1"] for p in PAIRS]
    ridge = [metrics["baselines"]["ridge"][p]["R@1"] for p in PAIRS]
    stop = summary.get("early_stopping") or {}
    return heads, ridge, stop.get("epoch_chosen"), max(stop.get("curve") or [float("nan")]), worst_gain(stop)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("recipes", nargs="+", help='a recipe: space-separated --set overrides, e.g. "train.init=ridge"')
    parser.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.WARNING)
    sys.stdout.write(f"| recipe | epochs kept | slice MRR | slice worst-direction gain | heads R@1 ({', '.join(PAIRS)}) | ridge R@1 | "
                     "heads >= ridge | mean heads - ridge |\n|---|---|---|---|---|---|---|---|\n")
    for i, recipe in enumerate(args.recipes):
        rows = [run_recipe(recipe.split(), seed, f"seeds-{i}-{seed}") for seed in args.seeds]
        heads, ridge = np.array([r[0] for r in rows]), np.array([r[1] for r in rows])
        sys.stdout.write(f"| `{recipe}` | {[r[2] for r in rows]} | {np.mean([r[3] for r in rows]):.3f} | "
                         f"{np.mean([r[4] for r in rows]):+.3f} | "
                         f"{' / '.join(f'{v:.3f}' for v in heads.mean(0))} | "
                         f"{' / '.join(f'{v:.3f}' for v in ridge.mean(0))} | {int((heads >= ridge).sum())}/{heads.size} | "
                         f"{(heads - ridge).mean():+.3f} |\n")
        sys.stdout.flush()
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
