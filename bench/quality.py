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
split, and writes ``bench/results/quality.png`` (R@1 bars per pair) beside the Markdown table the
README's quality section is regenerated from (``--readme`` rewrites it in place). ``small`` trains 10 epochs a round instead of the manifest's 30 (runs ``captions-small``,
``bench-small``): a quicker check of the same data, not a smaller dataset.

    python -m bench.quality [--small] [--device cpu|cuda] [--readme]
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
PLOT = ROOT / "bench" / "results" / "quality.png"
README = ROOT / "README.md"
TABLE_START, TABLE_END = "<!-- quality-table:start -->", "<!-- quality-table:end -->"
MIN_QUERIES = 50  # the "done when" rules hold for pairs with at least this many held-out queries
SMALL_EPOCHS = 10
log = logging.getLogger(__name__)


def table_pairs(metrics: dict[str, Any]) -> list[str]:
    """text<->each modality, then audio<->points, as far as the run scored them."""
    mods = [m for m in ("image", "video", "audio", "points") if f"text->{m}" in metrics or f"{m}->text" in metrics]
    pairs = [p for m in mods for p in (f"text->{m}", f"{m}->text")] + ["audio->points", "points->audio"]
    return [p for p in pairs if p in metrics]


def pick(scores: dict[str, Any]) -> dict[str, float]:
    out = {k: round(float(scores[k]), 4) for k in KS}
    if "same_text" in scores:
        out["same_text_R@1"] = round(float(scores["same_text"]["R@1"]), 4)
    return out


def pair_rows(metrics: dict[str, Any]) -> dict[str, Any]:
    """Per pair: n, gallery, chance, and per round the heads' and the ridge baseline's scores."""
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
    return table


def checks(table: dict[str, Any], zero_shot: dict[str, Any]) -> dict[str, bool]:
    """The issue's "done when" rules, for pairs with at least MIN_QUERIES held-out queries."""
    out = {}
    for p, row in table.items():
        if row["n"] < MIN_QUERIES:
            continue
        r1, r2 = row["heads_captions"]["R@1"], row["heads_bench"]["R@1"]
        out[f"{p}: round 2 >= round 1 - 0.01"] = r2 >= r1 - 0.01
        if "ridge_captions" in row:
            out[f"{p}: heads r1 >= ridge"] = r1 >= row["ridge_captions"]["R@1"]
    if "image" in zero_shot:
        out["image zero-shot > majority"] = zero_shot["image"]["top1"] > zero_shot["image"]["majority"]
    return out


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
    round2 = load(MANIFEST, [*common, f"train.run={runs['bench']}", f"train.warm_start={runs['captions']}"])

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

    table = pair_rows(metrics)
    zero_shot = {rnd: m.get("zero_shot", {}) for rnd, m in metrics.items()}
    results.update({
        "manifest": str(MANIFEST.relative_to(ROOT)), "runs": runs, "split": round2.eval.split,
        "ridge_lambda": {rnd: m["baselines"]["ridge_lambda"] for rnd, m in metrics.items()},
        "accept": {m: s["acceptance"] for m, s in pair_summary.get("modalities", {}).items()},
        "zero_shot": zero_shot, "duplicates": metrics["bench"].get("duplicates"),
        "early_stopping": {rnd: {k: (m.get("early_stopping") or {}).get(k) for k in ("epoch_chosen", "curve")}
                           for rnd, m in metrics.items()},
        "checks": checks(table, zero_shot["captions"]),
        "train_rows": {r: {"train": s["train_rows"], "val": s["val_rows"]} for r, s in summaries.items()},
        "pair_queries": pair_summary.get("queries"), "table": table, "seconds": seconds,
        "wall_s": round(sum(seconds.values()), 1)})
    return results


COLUMNS = {"heads_captions": "heads r1", "heads_bench": "heads r2", "ridge_captions": "ridge (λ by CV)",
           "chance": "chance"}


def markdown(results: dict[str, Any]) -> str:
    """The table as Markdown: R@1 / R@5 / R@10 per column, and the identical-caption R@1 of the heads."""
    lines = ["| pair | n | " + " | ".join(COLUMNS.values()) + " | r1 / r2 R@1, same text |",
             "|---|---:|" + "---|" * (len(COLUMNS) + 1)]
    for pair, row in results["table"].items():
        cells = ["/".join(f"{row[c][k]:.2f}" for k in KS) if c in row else "-" for c in COLUMNS]
        same = [f"{row[c]['same_text_R@1']:.2f}" if "same_text_R@1" in row[c] else "-"
                for c in ("heads_captions", "heads_bench")]
        lines.append(f"| {pair} | {row['n']} | " + " | ".join(cells) + f" | {' / '.join(same)} |")
    zs = results["zero_shot"]["captions"]
    lam = results["ridge_lambda"]["captions"]
    thr = {m: a["threshold"] for m, a in results["accept"].items()}
    notes = ["", "R@1/R@5/R@10 on the held-out split; r1 = own captions only, r2 = captions + accepted auto-pairs.",
             "ridge λ by 5-fold CV: " + ", ".join(f"{m} {v:g}" for m, v in lam.items()) + ".",
             "accept thresholds (round 2): " + ", ".join(f"{m} {v:.3f}" if v is not None else f"{m} none"
                                                        for m, v in thr.items()) + ".",
             "zero-shot top-1 (r1) vs majority / chance: " + ", ".join(
                 f"{m} {z['top1']:.2f} vs {z['majority']:.2f} / {z['chance']:.2f}" for m, z in zs.items()) + "."]
    return "\n".join(lines) + "\n" + "\n".join(notes) + "\n"


def plot(results: dict[str, Any], path: Path = PLOT) -> None:
    """Grouped R@1 bars per pair: heads r1, heads r2, ridge (λ by CV), chance."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    import numpy as np

    pairs = list(results["table"])
    fig, ax = plt.subplots(figsize=(max(6, 1.1 * len(pairs)), 3.8), dpi=100)
    width = 0.8 / len(COLUMNS)
    for i, (col, name) in enumerate(COLUMNS.items()):
        vals = [results["table"][p].get(col, {}).get("R@1", 0.0) for p in pairs]
        ax.bar(np.arange(len(pairs)) + (i - (len(COLUMNS) - 1) / 2) * width, vals, width, label=name)
    ax.set_xticks(np.arange(len(pairs)))
    ax.set_xticklabels([f"{p}\nn={results['table'][p]['n']}" for p in pairs], fontsize=7)
    ax.set_ylabel("held-out R@1")
    ax.set_title("bench-data: heads vs ridge vs chance")
    ax.legend(fontsize=7)
    fig.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path)
    plt.close(fig)


def write_readme(table: str, path: Path = README) -> None:
    """Replace the README's quality table (between the markers) with ``table``."""
    text = path.read_text()
    start, end = text.index(TABLE_START) + len(TABLE_START), text.index(TABLE_END)
    path.write_text(text[:start] + "\n" + table + text[end:])


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--small", action="store_true", help=f"{SMALL_EPOCHS} epochs a round instead of the manifest's")
    parser.add_argument("--device", default="auto", help="auto | cpu | cuda")
    parser.add_argument("--readme", action="store_true", help="rewrite the README's quality table from this run")
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s: %(message)s")
    import torch

    device = args.device if args.device != "auto" else ("cuda" if torch.cuda.is_available() else "cpu")
    results = measure(args.small, device)
    plot(results)
    table = markdown(results)
    if args.readme:
        write_readme(table)
    sys.stdout.write(table)
    sys.stdout.write(json.dumps(results, indent=2) + "\n")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
