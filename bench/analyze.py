"""Analysis benchmark: the large path of `bindery analyze` on synthetic fused vectors.

Full size: 1M x 1024-d fused vectors (float32, 4.1 GB) -> randomized PCA to 8..128 dims ->
FAISS k-means at one k per dim -> silhouette on a seeded sample, Calinski–Harabasz and
Davies–Bouldin on every item. Each phase's wall time and the process's peak resident memory
after it (``ru_maxrss``) are printed. ``--compare N`` first runs the exact path (scikit-learn
PCA, k-means and the full silhouette) and the large path on the same N vectors and prints the
time ratio and how far the two agree (ARI between their clusterings, silhouette difference).
``--pca-compare N`` times the CPU large path's two PCA solvers on N vectors: the streamed covariance
(exact; the default up to 4096 dims) and scikit-learn's randomized PCA, with the memory each
allocates beyond the input (tracemalloc peak, NumPy allocations) and their explained variance.

The vectors: planted clusters (as many as ``--k``) whose centres span a random 64-d subspace,
plus isotropic noise, so the clusterings are about something.

    python -m bench.analyze                      # 1M x 1024, k 16, compare at 20k
    python -m bench.analyze --n 200000 --compare 0 --pca-compare 0
"""

from __future__ import annotations

import argparse
import json
import logging
import resource
import sys
import time
import tracemalloc
from typing import Any

import numpy as np

DIMS = (8, 16, 32, 64, 128)
SUBSPACE = 64
CHUNK = 65536


def peak_gb() -> float:
    """Peak resident memory of this process so far (Linux reports KiB)."""
    return round(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 2**20, 2)


def fused_vectors(n: int, dim: int, seed: int = 0, clusters: int = 16) -> np.ndarray:
    """(n, dim) float32: ``clusters`` planted clusters in a 64-d subspace plus noise, written chunk by chunk."""
    rng = np.random.default_rng(seed)
    basis = np.linalg.qr(rng.standard_normal((dim, SUBSPACE)))[0].T.astype(np.float32)  # (64, dim)
    centres = (rng.standard_normal((clusters, SUBSPACE)).astype(np.float32) * 3.0) @ basis
    out = np.empty((n, dim), np.float32)
    for i in range(0, n, CHUNK):
        m = min(CHUNK, n - i)
        out[i:i + m] = centres[rng.integers(0, clusters, m)]
        out[i:i + m] += rng.standard_normal((m, dim), dtype=np.float32) * (1.0 / np.sqrt(dim))
    return out


def timed(fn, *args) -> tuple[Any, float]:
    start = time.perf_counter()
    out = fn(*args)
    return out, round(time.perf_counter() - start, 2)


def run_path(x: np.ndarray, k: int, sample: int | None, large: bool, seed: int = 0) -> dict[str, Any]:
    """PCA to DIMS, k-means at ``k`` and the three scores per dim; times and peak memory."""
    from trainer.analyze.cluster import internal_scores, kmeans
    from trainer.analyze.reduce import reduce

    reduction, pca_s = timed(reduce, x, DIMS, seed, large)
    out: dict[str, Any] = {"n": len(x), "dim": x.shape[1], "path": "large" if large else "exact",
                           "pca_solver": reduction.solver, "pca_s": pca_s, "peak_gb_after_pca": peak_gb(),
                           "explained": {d: round(v, 4) for d, v in reduction.explained.items()}, "per_dim": {}}
    for d in DIMS:
        z = np.ascontiguousarray(reduction.at(d))
        (assignments, _), kmeans_s = timed(kmeans, z, k, seed, 4, large)
        (sil, ch, db), scores_s = timed(internal_scores, z, assignments, sample, seed)
        out["per_dim"][d] = {"kmeans_s": kmeans_s, "scores_s": scores_s, "silhouette": round(sil, 4),
                             "calinski_harabasz": round(ch, 1), "davies_bouldin": round(db, 4),
                             "assignments": assignments}
        logging.info("%s path, dim %d: k-means %.1f s, scores %.1f s", out["path"], d, kmeans_s, scores_s)
    out["total_s"] = round(pca_s + sum(v["kmeans_s"] + v["scores_s"] for v in out["per_dim"].values()), 2)
    out["peak_gb"] = peak_gb()
    return out


def compare(n: int, dim: int, k: int, sample: int) -> dict[str, Any]:
    """The exact and the large path on the same vectors: time ratio and agreement."""
    from sklearn.metrics import adjusted_rand_score

    x = fused_vectors(n, dim, seed=1, clusters=k)
    exact, large = run_path(x, k, None, False), run_path(x, k, sample, True)
    agree = {d: {"ari_exact_vs_large": round(adjusted_rand_score(exact["per_dim"][d]["assignments"],
                                                                 large["per_dim"][d]["assignments"]), 4),
                 "silhouette_exact": exact["per_dim"][d]["silhouette"],
                 "silhouette_large": large["per_dim"][d]["silhouette"]} for d in DIMS}
    return {"n": n, "dim": dim, "k": k, "silhouette_sample": sample, "exact_s": exact["total_s"],
            "large_s": large["total_s"], "exact_over_large": round(exact["total_s"] / large["total_s"], 2),
            "pca_s": {"exact": exact["pca_s"], "large": large["pca_s"]}, "agreement": agree}


def pca_solvers(n: int, dim: int, seed: int = 2) -> dict[str, Any]:
    """The streamed covariance PCA against scikit-learn's randomized PCA on the same vectors."""
    from trainer.analyze.large import covariance_pca, sklearn_randomized_pca

    x = fused_vectors(n, dim, seed=seed)
    top = max(DIMS)
    out: dict[str, Any] = {"n": n, "dim": dim, "components": top}
    for name, fn in (("covariance", lambda: covariance_pca(x, top)),
                     ("sklearn_randomized", lambda: sklearn_randomized_pca(x, top, 0)[:2])):
        tracemalloc.start()
        (_, ratio), seconds = timed(fn)
        peak = tracemalloc.get_traced_memory()[1]
        tracemalloc.stop()
        out[name] = {"s": seconds, "extra_memory_gb": round(peak / 1e9, 2),
                     "explained_at_32": round(float(ratio[:32].sum()), 4)}
        logging.info("PCA %s at %d x %d: %.1f s, %.2f GB beyond the input", name, n, dim, seconds, peak / 1e9)
    out["randomized_over_covariance_s"] = round(out["sklearn_randomized"]["s"] / out["covariance"]["s"], 2)
    return out


def strip(result: dict[str, Any]) -> dict[str, Any]:
    for v in result.get("per_dim", {}).values():
        v.pop("assignments", None)
    return result


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--n", type=int, default=1_000_000, help="fused vectors (default 1M)")
    parser.add_argument("--dim", type=int, default=1024)
    parser.add_argument("--k", type=int, default=16, help="k-means clusters at every dim")
    parser.add_argument("--sample", type=int, default=10_000, help="silhouette sample of the large path")
    parser.add_argument("--compare", type=int, default=20_000, help="exact vs large on this many vectors; 0 = skip")
    parser.add_argument("--pca-compare", type=int, default=200_000,
                        help="covariance vs randomized PCA on this many vectors; 0 = skip")
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s: %(message)s")
    results: dict[str, Any] = {}
    if args.compare:
        results["compare"] = compare(args.compare, args.dim, args.k, args.sample)
        c = results["compare"]
        print(f"exact vs large path at {c['n']} x {c['dim']}: {c['exact_s']} s vs {c['large_s']} s "
              f"(exact / large = {c['exact_over_large']}x)", flush=True)
    if args.pca_compare:
        results["pca_solvers"] = p = pca_solvers(args.pca_compare, args.dim)
        print(f"CPU PCA at {p['n']} x {p['dim']} to {p['components']}: covariance {p['covariance']['s']} s "
              f"(+{p['covariance']['extra_memory_gb']} GB), sklearn randomized {p['sklearn_randomized']['s']} s "
              f"(+{p['sklearn_randomized']['extra_memory_gb']} GB): randomized / covariance = "
              f"{p['randomized_over_covariance_s']}x", flush=True)
    x, gen_s = timed(fused_vectors, args.n, args.dim, 0, args.k)
    logging.info("generated %d x %d float32 (%.1f GB) in %.1f s", args.n, args.dim, x.nbytes / 1e9, gen_s)
    big = strip(run_path(x, args.k, args.sample, True))
    big.update({"generate_s": gen_s, "vectors_gb": round(x.nbytes / 1e9, 2), "k": args.k,
                "silhouette_sample": args.sample})
    results["large"] = big
    print(f"large path at {args.n} x {args.dim}, k {args.k}: PCA ({big['pca_solver']}) {big['pca_s']} s, "
          f"k-means + scores over {len(DIMS)} dims {round(big['total_s'] - big['pca_s'], 2)} s, "
          f"total {big['total_s']} s, peak memory {big['peak_gb']} GiB (vectors {big['vectors_gb']} GB)")
    sys.stdout.write(json.dumps(results, indent=2, default=str) + "\n")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
