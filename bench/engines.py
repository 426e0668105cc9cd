"""Precompute on the local engine against the ray engine: wall time and what Ray adds per part.

Each configuration is one fresh ``bindery precompute`` process over the same manifest (by default
the demo) into its own empty output, as a user would run it, so the figures include Python and
model start-up, and for Ray the local cluster's start and its actors' imports. The summary
``precompute.json`` gives the engine's own split: seconds in the actors (``part_s``; of which
``load_s`` loading encoders), each actor's start (``actor_start_s``: its first part's round trip
less its time in the actor) and, per later part, the driver's round trip less the actor's time
(``overhead_s_per_part``: dispatch, argument and result pickling, scheduling).

The machine's load average is printed beside every figure: on a shared machine it moves them.
Ray runs its workers at nice 15 by default; the bench sets ``RAY_worker_niceness=0`` (unless it
is set) so that on a shared machine the actors compete for the CPUs as the local engine does.
``python -m bench.engines [--manifest manifests/demo.toml] [--configs local,ray,ray-dl1]``
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
CONFIGS = {  # name -> --set overrides
    "local": [],  # one process, DataLoader workers sized from the CPUs
    "ray": ["precompute.engine=ray"],  # one actor per CPU, decoding in the actor
    "ray-dl1": ["precompute.engine=ray", "precompute.num_workers=1"],  # + one DataLoader worker per actor
    "ray-1x2": ["precompute.engine=ray", "precompute.workers=1", "precompute.cpus_per_worker=2"],
}


def run_one(manifest: str, name: str, output: Path) -> dict:
    sets = [f"dataset.output={output}", *CONFIGS[name]]
    cmd = [sys.executable, "-m", "pipeline.cli", "precompute", manifest, *(a for s in sets for a in ("--set", s))]
    load_before = os.getloadavg()
    t0 = time.perf_counter()
    proc = subprocess.run(cmd, cwd=ROOT, capture_output=True, text=True, env={"RAY_worker_niceness": "0", **os.environ})
    wall = time.perf_counter() - t0
    if proc.returncode:
        raise SystemExit(f"{name}: exit {proc.returncode}\n{proc.stderr[-3000:]}")
    from pipeline.core.layout import OutputLayout

    summary = json.loads(OutputLayout(output).precompute_summary.read_text())
    row = {"config": name, "wall_s": round(wall, 1), "stage_wall_s": round(summary["wall_s"], 1),
           "stored": sum(c["ok"] for c in summary["this_run"].values()),
           "loadavg_before": [round(x, 2) for x in load_before], "loadavg_after": [round(x, 2) for x in os.getloadavg()]}
    engine = summary["engine"]
    if engine["name"] == "ray":
        row.update({k: round(engine[k], 3) if isinstance(engine[k], float) else engine[k]
                    for k in ("workers", "parts", "cluster_start_s", "part_s", "load_s", "actor_start_s",
                              "overhead_s_per_part") if k in engine})
    return row


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--manifest", default="manifests/demo.toml")
    parser.add_argument("--configs", default="local,ray", help=f"comma list of {', '.join(CONFIGS)}")
    parser.add_argument("--json", help="also write the rows here")
    args = parser.parse_args(argv)
    rows = []
    with tempfile.TemporaryDirectory(prefix="bench-engines-") as tmp:
        for name in args.configs.split(","):
            rows.append(run_one(args.manifest, name, Path(tmp) / name))
            print(json.dumps(rows[-1]), flush=True)
    base = rows[0]["wall_s"]
    for r in rows:
        print(f"{r['config']:>8}: {r['wall_s']:7.1f} s wall ({r['wall_s'] / base:.2f}x {rows[0]['config']}), "
              f"{r['stored']} vectors, load {r['loadavg_before'][0]:.1f} -> {r['loadavg_after'][0]:.1f}"
              + (f"; per later part {r['overhead_s_per_part'] * 1000:.0f} ms over the actor's time, "
                 f"actor starts {r['actor_start_s']:.1f} s, encoder loads {r['load_s']:.1f} s" if "parts" in r else ""))
    if args.json:
        Path(args.json).write_text(json.dumps({"cpu_count": os.cpu_count(), "rows": rows}, indent=1))
    return 0


if __name__ == "__main__":
    sys.exit(main())
