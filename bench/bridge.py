"""BrokenBind's transitions at scale: time and peak memory of one bridge on synthetic items.

Each side has ``n`` items of ``dim``-d pivots and ``dim``-d targets (float16, unit norm, as stores
hold them); the target is a noisy signed permutation of the pivot (a linear map that costs O(n d) to
make). One *run* fits both directions of one route exactly as ``bindery bridge`` does (lambda by
5-fold CV, R^2 on a validation slice, the whole-set refit, the pseudo vectors): pseudo ``c`` for side
1 from side 2 and pseudo ``a`` for side 2 from side 1. It runs in a fresh process so that its peak
resident memory (``ru_maxrss``) is its own; the input arrays are counted in it. Wall and CPU seconds
are both reported: on a shared machine the CPU seconds of a one-thread run (``OMP_NUM_THREADS=1``)
are what an idle core would take.

    python -m bench.bridge --n 1000000 --route cross-modal          # one configuration
    python -m bench.bridge --scaling                                 # the table for the README

``--scaling`` runs the cross-modal route at 1M x 1024 per side and the k-nearest-pivot route at
growing ``n``, and prints seconds and peak GB per configuration with the per-item cost.
"""

from __future__ import annotations

import argparse
import json
import logging
import resource
import subprocess
import sys
import time

import numpy as np
import torch

SCALING = [("cross-modal", 0, 1_000_000), ("cross-dataset", 64, 10_000), ("cross-dataset", 64, 30_000),
           ("cross-dataset", 64, 100_000)]
BLOCK = 65536


def side(n: int, dim: int, seed: int, noise: float = 0.3) -> tuple[np.ndarray, np.ndarray]:
    """``(pivots, targets)`` float16, unit rows, built block by block (no n x d float64 copy)."""
    rng = np.random.default_rng(seed)
    perm, signs = np.random.default_rng(99).permutation(dim), np.random.default_rng(98).choice([-1.0, 1.0], dim)
    p, y = np.empty((n, dim), np.float16), np.empty((n, dim), np.float16)
    for start in range(0, n, BLOCK):
        m = min(BLOCK, n - start)
        x = rng.standard_normal((m, dim), dtype=np.float32)
        x /= np.linalg.norm(x, axis=1, keepdims=True)
        t = x[:, perm] * signs + noise * rng.standard_normal((m, dim), dtype=np.float32) / np.sqrt(dim)
        p[start:start + m] = x
        y[start:start + m] = t / np.linalg.norm(t, axis=1, keepdims=True)
    return p, y


def peak_gb() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 2**20  # Linux: KiB


def one(n: int, dim: int, route: str, neighbors: int, memory_gb: float) -> dict:
    from trainer.bridge.transitions import FITS, FitSettings, Pairing

    start = time.perf_counter()
    p1, a1 = side(n, dim, 1)
    p2, c2 = side(n, dim, 2)
    made = time.perf_counter() - start
    s = FitSettings(neighbors=neighbors, memory_gb=memory_gb)
    seconds, cpu, quality = {}, {}, {}
    for name, pair in (("c_for_1", Pairing(p2, c2, p1)), ("a_for_2", Pairing(p1, a1, p2))):
        start, start_cpu = time.perf_counter(), time.process_time()
        pseudo, fit = FITS[route](pair, s)
        seconds[name] = round(time.perf_counter() - start, 1)
        cpu[name] = round(time.process_time() - start_cpu, 1)
        summary = fit.summary(pair.bank_targets[fit.val_rows])
        quality[name] = {k: round(v, 4) if isinstance(v, float) else v for k, v in summary.items()
                         if k in ("r2_val", "cosine_val", "lambda", "engine", "seconds")}
        del pseudo
    return {"n_per_side": n, "dim": dim, "route": route, "neighbors": neighbors, "memory_gb": memory_gb,
            "seconds": seconds, "seconds_total": round(sum(seconds.values()), 1), "cpu_s": cpu,
            "cpu_s_total": round(sum(cpu.values()), 1), "threads": torch.get_num_threads(), "data_s": round(made, 1),
            "peak_rss_gb": round(peak_gb(), 2), "quality": quality}


def scaling(dim: int, memory_gb: float) -> list[dict]:
    rows = []
    for route, k, n in SCALING:
        cmd = [sys.executable, "-m", "bench.bridge", "--n", str(n), "--dim", str(dim), "--route", route,
               "--neighbors", str(k), "--memory-gb", str(memory_gb)]
        done = subprocess.run(cmd, capture_output=True, text=True, check=True)
        rows.append(json.loads(done.stdout.strip().splitlines()[-1]))
        logging.info("bridge bench: %s", rows[-1])
    return rows


def markdown(rows: list[dict]) -> str:
    lines = ["| route | k | n per side x dim | wall s (both directions) | CPU s | CPU us per item | peak RSS GB | R^2 val |",
             "|---|---:|---|---:|---:|---:|---:|---:|"]
    for r in rows:
        per_item = 1e6 * r["cpu_s_total"] / (2 * r["n_per_side"])
        lines.append(f"| {r['route']} | {r['neighbors']} | {r['n_per_side']:,} x {r['dim']} | {r['seconds_total']} | "
                     f"{r['cpu_s_total']} | {per_item:.0f} | {r['peak_rss_gb']} | {r['quality']['c_for_1']['r2_val']} |")
    return "\n".join(lines) + "\n"


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--n", type=int, default=100_000, help="items per side")
    parser.add_argument("--dim", type=int, default=1024)
    parser.add_argument("--route", default="cross-modal", choices=("cross-modal", "cross-dataset"))
    parser.add_argument("--neighbors", type=int, default=64, help="0 = every other-set item (kernel form)")
    parser.add_argument("--memory-gb", type=float, default=2.0, help="bridge.memory_gb")
    parser.add_argument("--scaling", action="store_true", help="run the README's configurations, one process each")
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s: %(message)s", stream=sys.stderr)
    if args.scaling:
        rows = scaling(args.dim, args.memory_gb)
        sys.stdout.write(markdown(rows) + json.dumps(rows, indent=2) + "\n")
    else:
        sys.stdout.write(json.dumps(one(args.n, args.dim, args.route, args.neighbors, args.memory_gb)) + "\n")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
