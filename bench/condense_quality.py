"""ImageBindDC on the real benchmark: condensed vs random real pairs vs herding vs full data.

Runs ``manifests/condense.toml`` end to end through the stages' own ``run(manifest)`` functions:
precompute (parts already written are skipped), the run whose heads give the condensation space
(``train.run``, skipped when it is exported and ``--retrain`` is not given), then, for each seed,
`bindery condense` with ``evaluate = true`` into ``condensed/<name>-seed<s>-<n>/``. It prints one
table over the seeds: the probe's held-out accuracy and share of full data (condensed: mean and
spread over seeds; random: mean over seeds x draws; herding: mean over seeds), the heads' R@1
(mean of both directions) and the condensation wall time per set.

    python -m bench.condense_quality [--seeds 3] [--bench-data DIR] [--set condense.key=value ...]
"""

from __future__ import annotations

import argparse
import json
import logging
import time
from pathlib import Path
from typing import Any

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
MANIFEST = ROOT / "manifests" / "condense.toml"
log = logging.getLogger(__name__)


def mean_r1(recall: dict[str, Any]) -> float:
    return float(np.mean([v["R@1"] for v in recall.values()]))


def table(reports: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """One row per size, aggregated over the seeds' reports."""
    rows = []
    full = reports[0]["probe"]["full_accuracy"]
    for i, size in enumerate(reports[0]["sizes"]):
        per = [r["sizes"][i] for r in reports]
        cond = [s["condensed"]["accuracy"] for s in per]
        rand = [a for s in per for a in s["random"]["accuracies"]]
        herd = [s["herding"]["accuracy"] for s in per]
        rows.append({
            "per_class": size["per_class"], "items": size["items"], "full": full,
            "condensed_mean": float(np.mean(cond)), "condensed_std": float(np.std(cond)),
            "random_mean": float(np.mean(rand)), "random_std": float(np.std(rand)),
            "herding_mean": float(np.mean(herd)), "herding_std": float(np.std(herd)),
            "heads_r1_condensed": float(np.mean([mean_r1(s["heads"]["condensed"]) for s in per])),
            "heads_r1_random": float(np.mean([mean_r1(s["heads"]["random"]) for s in per])),
            "heads_r1_full": mean_r1(reports[0]["heads"]["full"]),
            "condense_seconds": float(np.mean([s["condense_seconds"] for s in per])),
        })
    return rows


def cell(row: dict[str, Any], name: str) -> str:
    """``mean ± std (share of full)``."""
    return f"{row[name + '_mean']:.3f} ± {row[name + '_std']:.3f} ({row[name + '_mean'] / row['full']:.0%})"


def markdown(rows: list[dict[str, Any]]) -> str:
    lines = ["| per class | condensed | random real | herding (k-means) | full | heads R@1 cond / random / full | condense s |",
             "|---:|---|---|---|---|---|---:|"]
    for r in rows:
        lines.append(f"| {r['per_class']} | {cell(r, 'condensed')} | {cell(r, 'random')} | {cell(r, 'herding')} | "
                     f"{r['full']:.3f} | {r['heads_r1_condensed']:.3f} / {r['heads_r1_random']:.3f} / "
                     f"{r['heads_r1_full']:.3f} | {r['condense_seconds']:.0f} |")
    return "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seeds", type=int, default=3)
    parser.add_argument("--bench-data", default=str(ROOT / "bench-data"), help="folder of bench-*.tar")
    parser.add_argument("--retrain", action="store_true", help="retrain the space's run even when exported")
    parser.add_argument("--set", dest="overrides", action="append", default=[], metavar="KEY=VALUE")
    args = parser.parse_args()
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    from pipeline.core.manifest import load
    from pipeline.precompute import stage as precompute
    from trainer import train
    from trainer.condense import stage as condense

    shards = f"dataset.shards={Path(args.bench_data).resolve()}/bench-{{000000..000004}}.tar"
    manifest = load(MANIFEST, [shards, *args.overrides])
    start = time.perf_counter()
    precompute.run(manifest)
    space = manifest.condense.space
    if space != "store" and (args.retrain or not manifest.layout.run(space).heads.is_file()):
        train.run(load(MANIFEST, [shards, *args.overrides, f"train.run={space}"]))
    reports = []
    for seed in range(args.seeds):
        name = f"{manifest.condense.name}-seed{seed}"
        m = load(MANIFEST, [shards, *args.overrides, f"condense.seed={seed}", f"condense.name={name}",
                            "condense.evaluate=true"])
        reports.append(condense.run(m)["report"])
    rows = table(reports)
    out = {"manifest": str(MANIFEST), "overrides": args.overrides, "seeds": args.seeds,
           "classes": reports[0]["classes"], "train_pairs": reports[0]["train_pairs"],
           "held_out_pairs": reports[0]["held_out_pairs"], "rows": rows,
           "wall_s": round(time.perf_counter() - start, 1)}
    print(json.dumps(out, indent=2))
    print(markdown(rows))


if __name__ == "__main__":
    main()
