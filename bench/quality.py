"""Retrieval quality on the held-out real benchmark: trained heads against ridge regression and chance.

The benchmark (``bench-data/``, built by ``just bench-data``; manifest ``manifests/bench.toml``) is
every source item that is not in the demo: real stamps, clips, sounds, speech and 3D models,
encoded by the demo's frozen encoders. This runs the whole recipe through the stages' own
``run(manifest)`` functions:

1. precompute (parts already written are skipped);
2. round 1: heads on the items' own captions only (``train.use_quintuples=false``, run ``captions``);
3. pair the captions with every modality through the round-1 heads (``pair.head_run=captions``);
4. round 2: heads on captions + the new quintuples (run ``bench``);
5. eval both runs (``metrics.json``: heads, and under ``baselines`` the ridge map fitted on the
   run's own training rows and chance ``K / gallery``).

It returns R@1/5/10 of text<->each modality and of audio<->points (emergent: the two never meet
in training) for the round-1 and round-2 heads, their ridge baselines and chance, on the held-out
split. ``small`` trains 10 epochs a round instead of the manifest's 30 (runs ``captions-small``,
``bench-small``): a quicker check of the same data, not a smaller dataset.

    python -m bench.quality [--small] [--device cpu|cuda]
"""

from __future__ import annotations

import argparse
import json
import logging
import sys
import time
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
MANIFEST = ROOT / "manifests" / "bench.toml"
BENCH_DATA = ROOT / "bench-data"
KS = ("R@1", "R@5", "R@10")
SMALL_EPOCHS = 10
log = logging.getLogger(__name__)


def table_pairs(metrics: dict[str, Any]) -> list[str]:
    """text<->each modality, then audio<->points, as far as the run scored them."""
    mods = [m for m in ("image", "video", "audio", "points") if f"text->{m}" in metrics or f"{m}->text" in metrics]
    pairs = [p for m in mods for p in (f"text->{m}", f"{m}->text")] + ["audio->points", "points->audio"]
    return [p for p in pairs if p in metrics]


def pick(scores: dict[str, Any]) -> dict[str, float]:
    return {k: round(float(scores[k]), 4) for k in KS}


def measure(small: bool, device: str) -> dict[str, Any]:
    """Run the benchmark recipe end to end; return the per-pair table and the stage times."""
    from pipeline.core.manifest import load
    from pipeline.pair import stage as pair
    from pipeline.precompute import stage as precompute
    from trainer import train
    from trainer.eval import evaluate

    shards = sorted(BENCH_DATA.glob("bench-*.tar"))
    if not shards:
        raise FileNotFoundError(f"{BENCH_DATA} holds no bench-*.tar shards; build the benchmark first: "
                                "`just bench-data` (or `python -m pipeline.demo.build --bench --out bench-data`)")
    suffix = "-small" if small else ""
    common = [f"precompute.device={device}", f"pair.device={device}",
              *([f"train.epochs={SMALL_EPOCHS}"] if small else [])]
    base = load(MANIFEST, common)
    runs = {"captions": f"captions{suffix}", "bench": f"{base.train.run}{suffix}"}
    round1 = load(MANIFEST, [*common, "train.use_quintuples=false", f"train.run={runs['captions']}"])
    paired = load(MANIFEST, [*common, f"pair.head_run={runs['captions']}"])
    round2 = load(MANIFEST, [*common, f"train.run={runs['bench']}"])

    seconds: dict[str, float] = {}
    results: dict[str, Any] = {}

    def timed(name: str, fn, *args):
        start = time.perf_counter()
        out = fn(*args)
        seconds[name] = round(time.perf_counter() - start, 1)
        log.info("quality: %s took %.1f s", name, seconds[name])
        return out

    pre = timed("precompute", precompute.run, base)
    results["precompute_this_run"] = {m: c.get("ok", 0) for m, c in pre.get("this_run", {}).items()}
    results["items"] = {m: c.get("ok", 0) for m, c in pre.get("counts", {}).items()}
    summaries = {"captions": timed("train_round1", train.run, round1)}
    pair_summary = timed("pair", pair.run, paired)
    summaries["bench"] = timed("train_round2", train.run, round2)
    metrics = {"captions": timed("eval_round1", evaluate.run, round1), "bench": timed("eval_round2", evaluate.run, round2)}

    table: dict[str, Any] = {}
    for p in table_pairs(metrics["bench"]):
        chance = metrics["bench"]["baselines"]["chance"][p]
        row: dict[str, Any] = {"n": metrics["bench"][p]["n"], "gallery": chance["gallery"], "chance": pick(chance)}
        for rnd, m in metrics.items():
            row[f"heads_{rnd}"] = pick(m[p])
            ridge = m["baselines"]["ridge"].get(p)
            if ridge is not None:
                row[f"ridge_{rnd}"] = pick(ridge)
        table[p] = row
    results.update({
        "manifest": str(MANIFEST.relative_to(ROOT)), "runs": runs, "split": round2.eval.split,
        "ridge_lambda": round2.eval.ridge_lambda,
        "train_rows": {r: {"train": s["train_rows"], "val": s["val_rows"]} for r, s in summaries.items()},
        "pair_queries": pair_summary.get("queries"), "table": table, "seconds": seconds,
        "wall_s": round(sum(seconds.values()), 1)})
    return results


def markdown(results: dict[str, Any]) -> str:
    """The table as Markdown: R@1 / R@5 / R@10 per column."""
    cols = ["chance", "ridge_captions", "heads_captions", "ridge_bench", "heads_bench"]
    names = {"chance": "chance", "ridge_captions": "ridge (r1 rows)", "heads_captions": "heads r1",
             "ridge_bench": "ridge (r2 rows)", "heads_bench": "heads r2"}
    lines = ["| pair | n | gallery | " + " | ".join(names[c] for c in cols) + " |",
             "|---|---:|---:|" + "---|" * len(cols)]
    for pair, row in results["table"].items():
        cells = ["/".join(f"{row[c][k]:.2f}" for k in KS) if c in row else "-" for c in cols]
        lines.append(f"| {pair} | {row['n']} | {row['gallery']} | " + " | ".join(cells) + " |")
    return "\n".join(lines) + "\n\n(R@1/R@5/R@10 on the held-out split; r1 = captions only, r2 = captions + quintuples)\n"


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--small", action="store_true", help=f"{SMALL_EPOCHS} epochs a round instead of the manifest's")
    parser.add_argument("--device", default="auto", help="auto | cpu | cuda")
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s: %(message)s")
    import torch

    device = args.device if args.device != "auto" else ("cuda" if torch.cuda.is_available() else "cpu")
    results = measure(args.small, device)
    sys.stdout.write(markdown(results))
    sys.stdout.write(json.dumps(results, indent=2) + "\n")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
